//! The per-layer profile: log10 ‖δ^l‖ (rms and mean over the batch) against the layer l,
//! beside the bound (**), its tight form and the mean-field prediction.

use std::path::Path;

use plotters::prelude::*;

use super::figure::{DrawResult, Fonts, draw_svg};
use super::lines::{Dash, Line, LineChart, draw_lines};
use super::{Format, check_size, write_figure};
use crate::error::{Error, Result};
use crate::stats::Report;

/// One network's per-layer log10 values, indexed by layer: `layers[i]` is the layer of
/// entry i of every other field.
pub(crate) struct Profile<'a> {
    pub layers: Vec<f64>,
    pub grad_b_rms: Vec<f64>,
    pub grad_b_mean: Vec<f64>,
    pub bound: Vec<f64>,
    pub bound_tight: Vec<f64>,
    /// The mean-field prediction of `log10_grad_b_rms`, entry l−1 for layer l.
    pub predicted: Option<&'a [f64]>,
}

impl<'a> Profile<'a> {
    pub(crate) fn from_report(report: &Report, predicted: Option<&'a [f64]>) -> Profile<'a> {
        let col = |f: fn(&crate::stats::LayerStats) -> f64| report.layers.iter().map(f).collect();
        Profile {
            layers: report.layers.iter().map(|l| l.layer as f64).collect(),
            grad_b_rms: col(|l| l.log10_grad_b_rms),
            grad_b_mean: col(|l| l.log10_grad_b_mean),
            bound: col(|l| l.log10_bound),
            bound_tight: col(|l| l.log10_bound_tight),
            predicted,
        }
    }

    fn lines(&self) -> Vec<Line> {
        let pts = |v: &[f64]| self.layers.iter().copied().zip(v.iter().copied()).collect::<Vec<_>>();
        let mut lines = vec![
            Line {
                label: "bound (**)".into(),
                points: pts(&self.bound),
                color: RGBColor(0, 0, 0),
                // Wider, so its longer dashes still show where bound_tight lies on it (γ = the
                // observed max σ′, as for tanh near the origin).
                width: 3,
                dash: Dash::Dashed,
            },
            Line {
                label: "bound_tight".into(),
                points: pts(&self.bound_tight),
                color: RGBColor(213, 94, 0),
                width: 2,
                dash: Dash::Dashed,
            },
            Line {
                label: "grad_b_rms (measured)".into(),
                points: pts(&self.grad_b_rms),
                color: RGBColor(0, 114, 178),
                width: 3,
                dash: Dash::Solid,
            },
            Line {
                label: "grad_b_mean (measured)".into(),
                points: pts(&self.grad_b_mean),
                color: RGBColor(86, 180, 233),
                width: 2,
                dash: Dash::Solid,
            },
        ];
        if let Some(p) = self.predicted {
            lines.push(Line {
                label: "mean-field prediction (grad_b_rms)".into(),
                points: p.iter().enumerate().map(|(i, &v)| ((i + 1) as f64, v)).collect(),
                color: RGBColor(0, 158, 115),
                width: 3,
                dash: Dash::Dotted,
            });
        }
        lines
    }

    /// Draws the profile as an SVG string.
    pub(crate) fn draw(&self, title: &str, size: (u32, u32)) -> DrawResult<String> {
        let lines = self.lines();
        let any = lines.iter().any(|l| l.points.iter().any(|p| p.0.is_finite() && p.1.is_finite()));
        let chart = LineChart {
            title,
            x_desc: "layer l",
            y_desc: "log10 ‖δ^l‖",
            lines: &lines,
            x_integer: true,
            note: (!any).then(|| "no finite value to plot (zero or overflowed gradients)".to_string()),
        };
        let fonts = Fonts::for_size(size);
        draw_svg(size, |root| draw_lines(root, &chart, &fonts))
    }
}

/// [`super::plot_profile`] at a chosen size in pixels.
///
/// # Errors
/// As [`super::plot_profile`], and [`Error::InvalidArgument`] for a size outside
/// 200×150 ..= [`super::MAX_SIDE`]².
pub fn plot_profile_sized(
    report: &Report,
    predicted: Option<&[f64]>,
    title: &str,
    path: &Path,
    size: (u32, u32),
) -> Result<()> {
    let format = Format::from_path(path)?;
    check_size(size)?;
    let svg = Profile::from_report(report, predicted)
        .draw(title, size)
        .map_err(|e| Error::file(path, format!("cannot draw the plot: {e}")))?;
    write_figure(&svg, size, format, path)
}
