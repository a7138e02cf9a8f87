//! What every figure shares: the embedded font, the SVG canvas, colours, axis ranges and the
//! splitting of a series at non-finite values.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// A drawing error: plotters' errors are only shown to the user, so a boxed error will do.
pub(crate) type DrawResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The font family every text element names; registered with plotters as DejaVu Sans and
/// mapped to DejaVu Sans again when the SVG is rasterised.
pub(crate) const FONT: &str = "sans-serif";

/// Registers DejaVu Sans (regular and bold) with plotters' `ab_glyph` font table, once.
/// plotters measures text with it to place labels and size legends; without a registered
/// font it fails rather than falling back to a system font.
fn register_fonts() -> DrawResult {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bad = |_| "the embedded DejaVu Sans font could not be parsed".to_string();
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).map_err(bad)?;
        plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).map_err(bad)?;
        Ok(())
    })
    .clone()
    .map_err(Into::into)
}

/// Draws a figure of `size` pixels into an SVG string.
pub(crate) fn draw_svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> DrawResult<String> {
    register_fonts()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(svg)
}

/// Text sizes (plotters' sizes: the SVG font-size is this / 1.24), scaled with the figure.
pub(crate) struct Fonts {
    pub caption: f64,
    pub label: f64,
    pub desc: f64,
    pub legend: f64,
}

impl Fonts {
    pub(crate) fn for_size((w, h): (u32, u32)) -> Fonts {
        // Sized for the 1000 × 640 default; larger figures get larger text, within limits.
        let s = (f64::from(w.min(h * 3 / 2)) / 1000.0).clamp(0.6, 4.0);
        Fonts { caption: 30.0 * s, label: 20.0 * s, desc: 23.0 * s, legend: 19.0 * s }
    }
}

/// Okabe & Ito's colour-blind-safe palette (black last), then the Tableau 10 colours.
const PALETTE: [RGBColor; 14] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(214, 39, 40),
];

/// The colour of series `i` of `n`: the palette while it lasts, then evenly spaced viridis.
pub(crate) fn series_color(i: usize, n: usize) -> RGBColor {
    if n <= PALETTE.len() {
        PALETTE[i % PALETTE.len()]
    } else {
        // Viridis' last tenth is too pale on white.
        ViridisRGB::get_color(0.9 * i as f64 / (n - 1).max(1) as f64)
    }
}

/// The pieces of a series between its non-finite points: each piece is drawn as one line, so
/// a zero gradient (−∞) or an overflow (NaN) leaves a gap instead of a wild jump.
pub(crate) fn finite_runs(points: impl IntoIterator<Item = (f64, f64)>) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = vec![];
    let mut current = vec![];
    for (x, y) in points {
        if x.is_finite() && y.is_finite() {
            current.push((x, y));
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// An axis range covering the finite values, padded by `pad` of its span on both sides;
/// (−1, 1) around the value for a single value, (0, 1) when there is none.
pub(crate) fn padded_range(values: impl IntoIterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= 1e-12 * lo.abs().max(1.0) {
        return (lo - 1.0, hi + 1.0);
    }
    (lo - pad * span, hi + pad * span)
}

/// A short, exact-enough label for a configuration value (1.7610 → "1.761", 2 → "2").
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{:.4}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// An axis tick label: integers as integers, others with up to 3 decimals.
pub(crate) fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_non_finite_values() {
        let pts = [(1.0, 1.0), (2.0, f64::NAN), (3.0, 3.0), (4.0, 4.0), (5.0, f64::NEG_INFINITY)];
        assert_eq!(finite_runs(pts), vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]);
        assert!(finite_runs([(1.0, f64::INFINITY)]).is_empty());
    }

    #[test]
    fn ranges_and_labels() {
        assert_eq!(padded_range([f64::NAN], 0.1), (0.0, 1.0));
        assert_eq!(padded_range([2.0, 2.0], 0.1), (1.0, 3.0));
        assert_eq!(padded_range([0.0, 10.0, f64::INFINITY], 0.1), (-1.0, 11.0));
        assert_eq!(num(1.76100), "1.761");
        assert_eq!(num(2.0), "2");
        assert_eq!(tick(-300.0), "-300");
        assert_eq!(tick(0.25), "0.25");
    }
}
