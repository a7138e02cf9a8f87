//! Plots of probes and sweeps, as SVG or PNG: the per-layer profile, the first-layer gradient
//! against depth, and the (σ_w², depth) heatmap with the χ₁ = 1 line and the trainable
//! depth ≈ 6ξ_c.
//!
//! Every figure is drawn once, by `plotters` into an SVG string; a `.png` path rasterises that
//! SVG with `resvg`. Text is measured (plotters, through `ab_glyph`) and drawn (resvg) with
//! DejaVu Sans embedded in the binary, so no system font is needed and the PNG shows exactly
//! what the SVG does. All values are already base-10 logarithms and are plotted on linear
//! axes labelled `log10 …`; non-finite values (a zero gradient, an overflow) leave gaps.

mod figure;
mod lines;
mod profile;
mod raster;
mod sweep;
mod training;

use std::path::Path;

pub use self::profile::plot_profile_sized;
pub use self::sweep::{plot_sweep_dir, plot_sweep_dir_sized};
pub use self::training::plot_training;
use crate::error::{Error, Result};
use crate::stats::Report;

/// The size, in pixels, of a figure when none is asked for (the PNG's size; the SVG's
/// viewBox).
pub const DEFAULT_SIZE: (u32, u32) = (1000, 640);

/// The largest figure side accepted, in pixels (a 8000 × 8000 RGBA PNG is 256 MB in memory).
pub const MAX_SIDE: u32 = 8000;

/// An output format, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// The format a path's extension asks for: `.svg` or `.png` (any case).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other extension.
    pub fn from_path(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(Error::arg(
                "--plot",
                format!("'{}' must end in .svg or .png", path.display()),
            )),
        }
    }

    /// The format named `svg` or `png` (any case), as `gradscope plot --format` takes it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for another name.
    pub fn from_name(name: &str, flag: &str) -> Result<Format> {
        match name.trim().to_ascii_lowercase().as_str() {
            "svg" => Ok(Format::Svg),
            "png" => Ok(Format::Png),
            _ => Err(Error::arg(flag, format!("'{name}' is not a plot format (svg, png)"))),
        }
    }

    /// The extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

/// Plots a probe's per-layer profile to `path` (`.svg` or `.png`, [`DEFAULT_SIZE`]):
/// `log10_grad_b_rms` and `log10_grad_b_mean` against the layer l, with `log10_bound`,
/// `log10_bound_tight` and, when given, the mean-field prediction of `log10_grad_b_rms`
/// (`predicted[l-1]` for layer l) on the same axes. Non-finite values are left out.
///
/// # Errors
/// [`Error::InvalidArgument`] for an extension other than .svg/.png; [`Error::File`] when
/// the file cannot be written.
///
/// ```no_run
/// # fn f(report: &gradscope::stats::Report) -> gradscope::Result<()> {
/// gradscope::plot::plot_profile(report, None, "tanh, depth 100", "profile.svg".as_ref())?;
/// # Ok(()) }
/// ```
pub fn plot_profile(report: &Report, predicted: Option<&[f64]>, title: &str, path: &Path) -> Result<()> {
    plot_profile_sized(report, predicted, title, path, DEFAULT_SIZE)
}

/// Parses a figure size written `WIDTHxHEIGHT` in pixels, e.g. `1000x640`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `flag` for a malformed or out-of-range size.
///
/// ```
/// assert_eq!(gradscope::plot::parse_size("800x500", "--size").unwrap(), (800, 500));
/// assert!(gradscope::plot::parse_size("800", "--size").is_err());
/// ```
pub fn parse_size(s: &str, flag: &str) -> Result<(u32, u32)> {
    let bad = || Error::arg(flag, format!("'{s}' is not WIDTHxHEIGHT in pixels, e.g. 1000x640"));
    let (w, h) = s.trim().split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let size = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
    check_size(size).map_err(|_| Error::arg(flag, format!("{s} is outside 200x150 ..= {MAX_SIDE}x{MAX_SIDE} pixels")))?;
    Ok(size)
}

/// The σ_w² at which χ₁ = 1 for an activation (as `summary.csv` names it) and σ_b², from
/// mean-field theory ([`crate::theory::critical_sigma_w2`]); `None` for an activation the
/// theory does not know or a σ_b² without a critical point. The `critical` argument of
/// [`plot_sweep_dir`] for the heatmaps' χ₁ = 1 line.
///
/// ```
/// let c = gradscope::plot::mean_field_critical_sigma_w2("tanh", 0.05).unwrap();
/// assert!((c - 1.7610).abs() < 1e-3);
/// assert_eq!(gradscope::plot::mean_field_critical_sigma_w2("relu", 0.0), Some(2.0));
/// ```
pub fn mean_field_critical_sigma_w2(activation: &str, sigma_b2: f64) -> Option<f64> {
    let act: crate::model::activation::Activation = activation.parse().ok()?;
    match crate::theory::critical_sigma_w2(act, sigma_b2) {
        Ok(crate::theory::Critical::At(w)) if w.is_finite() => Some(w),
        _ => None,
    }
}

/// The trainable depth ≈ 6ξ_c of mean-field theory (Schoenholz et al. 2017: networks train
/// up to about six correlation depth scales) for an activation (as `summary.csv` names it)
/// at (σ_w², σ_b²); `None` where ξ_c is undefined (q* = 0, no fixed point) or the activation
/// is unknown; +∞ at criticality.
///
/// ```
/// let d = gradscope::plot::mean_field_trainable_depth("tanh", 1.0, 0.05).unwrap();
/// assert!((d - 6.0 * 3.627).abs() < 1e-2);
/// ```
pub fn mean_field_trainable_depth(activation: &str, sigma_w2: f64, sigma_b2: f64) -> Option<f64> {
    let act: crate::model::activation::Activation = activation.parse().ok()?;
    let xi = crate::theory::MeanField::new(act, sigma_w2, sigma_b2).ok()?.xi_c().ok()?;
    (xi > 0.0).then_some(6.0 * xi)
}

/// Checks a figure size against [`MAX_SIDE`].
fn check_size((w, h): (u32, u32)) -> Result<()> {
    if w < 200 || h < 150 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::arg(
            "plot size",
            format!("{w}x{h} is outside 200x150 ..= {MAX_SIDE}x{MAX_SIDE} pixels"),
        ));
    }
    Ok(())
}

/// Writes a drawn SVG to `path` in `format`, atomically.
fn write_figure(svg: &str, size: (u32, u32), format: Format, path: &Path) -> Result<()> {
    let bytes = match format {
        Format::Svg => svg.as_bytes().to_vec(),
        Format::Png => raster::svg_to_png(svg, size).map_err(|m| Error::file(path, m))?,
    };
    crate::export::write_atomic(path, &bytes)
}

// For figures drawn outside this module (the spectrum's histogram and the isometry figure):
// the shared canvas, fonts, line chart and writer.
pub(crate) use self::figure::{DrawResult, FONT, Fonts};
pub(crate) use self::lines::{Dash, Line, LineChart, draw_lines};

/// Draws a figure of `size` pixels with `draw` and writes it to `path` (SVG or PNG by its
/// extension), atomically.
pub(crate) fn draw_to_path(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&plotters::drawing::DrawingArea<plotters::prelude::SVGBackend, plotters::coord::Shift>) -> DrawResult,
) -> Result<()> {
    let format = Format::from_path(path)?;
    check_size(size)?;
    let svg = figure::draw_svg(size, draw).map_err(|e| Error::file(path, format!("cannot draw the plot: {e}")))?;
    write_figure(&svg, size, format, path)
}
