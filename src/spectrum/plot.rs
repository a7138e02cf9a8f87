//! `spectrum --plot`: a histogram of log10 s over the examples, with the predicted
//! √(mean λ) = χ₁^{L/2} marked and the predicted density of log10 s drawn over it where
//! the theory covers the network.

use std::path::Path;

use plotters::prelude::*;

use super::DepthSpectrum;
use super::density::Solver;
use super::predict::SpectrumPrediction;
use crate::error::Result;
use crate::plot::{FONT, Fonts, draw_to_path};

/// Draws the histogram (share of singular values per bin, nonzero values only) to `path`,
/// with `solver`'s predicted density over it, scaled to the same share per bin of the
/// nonzero values (ρ(u) · bin width / (1 − the predicted share of exact zeros)).
///
/// # Errors
/// A bad extension or an unwritable path.
pub fn histogram(d: &DepthSpectrum, pred: Option<&SpectrumPrediction>, solver: Option<&Solver>, title: &str, path: &Path) -> Result<()> {
    let v: Vec<f64> = d.examples.iter().flat_map(|e| e.log10_singular_values.iter().copied()).filter(|x| x.is_finite()).collect();
    let zeros = d.examples.iter().map(|e| e.log10_singular_values.len()).sum::<usize>() - v.len();
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = if v.is_empty() { (-1.0, 1.0) } else if hi - lo < 1e-9 { (lo - 0.5, hi + 0.5) } else { (lo, hi) };
    let bins = ((v.len() as f64).sqrt().ceil() as usize).clamp(10, 80);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &x in &v {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let total = v.len().max(1) as f64;
    let mark = pred.map(|p| 0.5 * p.log10_mean_lambda);
    let (x0, x1) = match mark {
        Some(m) if m.is_finite() => (lo.min(m) - width, hi.max(m) + width),
        _ => (lo - width, hi + width),
    };
    let curve: Vec<(f64, f64)> = match solver {
        Some(s) if s.zero_mass() < 1.0 => {
            let grid: Vec<f64> = (0..=400).map(|i| x0 + (x1 - x0) * i as f64 / 400.0).collect();
            let dens = s.density(&grid);
            let scale = width / (1.0 - s.zero_mass());
            grid.iter().zip(&dens.density).filter(|(_, r)| r.is_finite()).map(|(&u, &r)| (u, r * scale)).collect()
        }
        _ => Vec::new(),
    };
    let ymax = (counts.iter().copied().max().unwrap_or(1) as f64 / total).max(curve.iter().map(|p| p.1).fold(0.0, f64::max)) * 1.1;
    let size = crate::plot::DEFAULT_SIZE;
    let fonts = Fonts::for_size(size);
    draw_to_path(path, size, |root| {
        let area = root.margin((fonts.label * 0.5) as i32, 0, 0, 0).titled(title, (FONT, fonts.caption * 0.8))?;
        let mut cc = ChartBuilder::on(&area)
            .margin((fonts.label * 0.9) as u32)
            .x_label_area_size((fonts.label * 3.2) as u32)
            .y_label_area_size((fonts.label * 5.0) as u32)
            .build_cartesian_2d(x0..x1, 0.0..ymax)?;
        cc.configure_mesh()
            .x_desc("log10 s (singular values of the Jacobian)")
            .y_desc("share of singular values")
            .label_style((FONT, fonts.label))
            .axis_desc_style((FONT, fonts.desc))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let fill = RGBColor(70, 110, 180);
        let label = if zeros > 0 { format!("measured ({} values; {zeros} exact zeros left out)", v.len()) } else { format!("measured ({} values)", v.len()) };
        cc.draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let a = lo + i as f64 * width;
            Rectangle::new([(a, 0.0), (a + width, c as f64 / total)], fill.mix(0.7).filled())
        }))?
        .label(label)
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], fill.mix(0.7).filled()));
        if !curve.is_empty() {
            let black = RGBColor(20, 20, 20);
            let reached = match pred.map(|p| p.q_star_reached_at_layer) {
                Some(Some(1)) | None => String::new(),
                Some(Some(l)) => format!("; q within 1% of q* from layer {l} only"),
                Some(None) => "; q has not reached q* in this chain".into(),
            };
            cc.draw_series(std::iter::once(PathElement::new(curve.clone(), black.stroke_width(2))))?
                .label(match solver.map(|s| s.zero_mass()).filter(|z| *z > 0.0) {
                    Some(z) => format!("predicted density of the nonzero values (free probability, wide limit, q = q*{reached}; predicted zero share {z:.2})"),
                    None => format!("predicted density (free probability, wide limit, q = q*{reached})"),
                })
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], black.stroke_width(2)));
        }
        if let Some(m) = mark.filter(|m| m.is_finite()) {
            let red = RGBColor(200, 40, 40);
            cc.draw_series(std::iter::once(PathElement::new(vec![(m, 0.0), (m, ymax)], red.stroke_width(3))))?
                .label("predicted √(mean λ) = χ₁^(L/2) (free probability, q = q*)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(3)));
        }
        cc.configure_series_labels()
            .label_font((FONT, fonts.legend))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        Ok(())
    })
}
