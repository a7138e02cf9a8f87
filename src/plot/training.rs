//! The figures of a training run: Nielsen's ‖∂C/∂b^l‖ per hidden layer against epoch (log
//! axis), the first/last hidden-layer ratio, and the cost beside the accuracy.

use std::path::{Path, PathBuf};

use ndarray::Array3;

use super::figure::{DrawResult, Fonts, draw_svg, series_color};
use super::lines::{Dash, Line, LineChart, draw_lines};
use super::{DEFAULT_SIZE, Format, write_figure};
use crate::error::{Error, Result};
use crate::train::history::field;

fn line(label: String, points: Vec<(f64, f64)>, i: usize, n: usize) -> Line {
    Line { label, points, color: series_color(i, n), width: 2, dash: Dash::Solid }
}

/// The layers whose ‖∂C/∂b^l‖ Nielsen plots: the hidden ones (1..L−1), or layer 1 alone.
fn hidden_layers(big_l: usize) -> std::ops::RangeInclusive<usize> {
    if big_l >= 2 { 1..=big_l - 1 } else { 1..=1 }
}

/// Draws a history (records × layers × fields of `history::HISTORY_FIELDS`) into `dir` as
/// grad_b_mean, ratio and cost_accuracy, each as .svg and .png.
///
/// # Errors
/// A folder or file that cannot be written, a figure that cannot be drawn.
pub fn plot_training(h: &Array3<f64>, title: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let (records, big_l) = (h.shape()[0], h.shape()[1]);
    let at = |r: usize, l: usize, f: &str| h[(r, l, field(f))];
    let epochs: Vec<f64> = (0..records).map(|r| at(r, 0, "epoch")).collect();
    let series = |l: usize, f: &str| epochs.iter().enumerate().map(|(r, &e)| (e, at(r, l, f))).collect::<Vec<_>>();
    let hidden = hidden_layers(big_l);
    let n = hidden.clone().count();
    let grad: Vec<Line> = hidden.clone().enumerate().map(|(i, l)| line(format!("layer {l}"), series(l - 1, "log10_grad_b_mean"), i, n)).collect();
    let (first, last) = (*hidden.start(), *hidden.end());
    let ratio = vec![line(
        format!("‖∂C/∂b^{first}‖ / ‖∂C/∂b^{last}‖"),
        (0..records).map(|r| (epochs[r], at(r, first - 1, "log10_grad_b_mean") - at(r, last - 1, "log10_grad_b_mean"))).collect(),
        0,
        1,
    )];
    let cost = vec![line("cost C".into(), series(0, "log10_cost"), 0, 2)];
    let acc = vec![line("accuracy".into(), series(0, "accuracy"), 1, 2)];
    let fonts = Fonts::for_size(DEFAULT_SIZE);
    let chart = |t: &'static str, y: &'static str, lines: &Vec<Line>| -> DrawResult<String> {
        let c = LineChart { title: t, x_desc: "epoch", y_desc: y, lines, x_integer: false, note: Some(title.to_string()) };
        draw_svg(DEFAULT_SIZE, |root| draw_lines(root, &c, &fonts))
    };
    let both = || -> DrawResult<String> {
        let (w, hgt) = DEFAULT_SIZE;
        let size = (w, hgt * 2);
        draw_svg(size, |root| {
            let (top, bottom) = root.split_vertically(hgt);
            let t2 = "accuracy on the evaluation set (none for targets that are not one-hot)";
            draw_lines(&top, &LineChart { title: "cost C on the evaluation set", x_desc: "epoch", y_desc: "log10 C", lines: &cost, x_integer: false, note: Some(title.to_string()) }, &fonts)?;
            draw_lines(&bottom, &LineChart { title: t2, x_desc: "epoch", y_desc: "accuracy", lines: &acc, x_integer: false, note: None }, &fonts)
        })
    };
    let figures: Vec<(&str, DrawResult<String>, (u32, u32))> = vec![
        ("grad_b_mean", chart("‖∂C/∂b^l‖ per hidden layer (Nielsen's speed of learning)", "log10 ‖∂C/∂b^l‖", &grad), DEFAULT_SIZE),
        ("ratio", chart("‖∂C/∂b^l‖ of the first hidden layer over the last", "log10 ratio", &ratio), DEFAULT_SIZE),
        ("cost_accuracy", both(), (DEFAULT_SIZE.0, DEFAULT_SIZE.1 * 2)),
    ];
    let mut written = Vec::new();
    for (name, svg, size) in figures {
        let svg = svg.map_err(|e| Error::file(dir.join(name), format!("cannot draw the plot: {e}")))?;
        for format in [Format::Svg, Format::Png] {
            let path = dir.join(format!("{name}.{}", format.extension()));
            write_figure(&svg, size, format, &path)?;
            written.push(path);
        }
    }
    Ok(written)
}
