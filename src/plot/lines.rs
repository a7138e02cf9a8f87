//! A line chart of log10 values: labelled axes, a legend placed where the lines are not, and
//! gaps at non-finite values. The profile and the depth plots are both drawn with it.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{DrawResult, FONT, Fonts, finite_runs, padded_range, tick};

/// How a line is stroked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// One labelled series.
pub(crate) struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub width: u32,
    pub dash: Dash,
}

/// A whole chart.
pub(crate) struct LineChart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub lines: &'a [Line],
    /// The x axis counts (layers, depths): ticks between integers are left unlabelled.
    pub x_integer: bool,
    /// Shown under the title when set (e.g. why a series is missing).
    pub note: Option<String>,
}

/// The corner of the plotting area that the fewest points fall in, for the legend.
fn emptiest_corner(lines: &[Line], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    // The legend covers roughly the outer 40% of each axis in its corner.
    let corners = [
        (SeriesLabelPosition::UpperRight, 0.6, 1.0, 0.6, 1.0),
        (SeriesLabelPosition::LowerRight, 0.6, 1.0, 0.0, 0.4),
        (SeriesLabelPosition::UpperLeft, 0.0, 0.4, 0.6, 1.0),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.4, 0.0, 0.4),
    ];
    let mut counts = [0usize; 4];
    for (x, y) in lines.iter().flat_map(|l| l.points.iter()) {
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let (u, v) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
        for (c, &(_, ua, ub, va, vb)) in corners.iter().enumerate() {
            if (ua..=ub).contains(&u) && (va..=vb).contains(&v) {
                counts[c] += 1;
            }
        }
    }
    let best = (0..4).min_by_key(|&c| counts[c]).unwrap_or(0);
    corners.into_iter().nth(best).map(|c| c.0).unwrap_or(SeriesLabelPosition::UpperRight)
}

/// Segment offsets (in pixels, along x) that draw a legend sample in a line's dash pattern.
fn legend_segments(dash: Dash) -> [(i32, i32); 3] {
    match dash {
        Dash::Solid => [(0, 10), (10, 20), (20, 30)],
        Dash::Dashed => [(0, 7), (11, 18), (22, 29)],
        Dash::Dotted => [(0, 3), (13, 16), (26, 29)],
    }
}

/// Draws `chart` on `root`.
pub(crate) fn draw_lines(root: &DrawingArea<SVGBackend, Shift>, chart: &LineChart, fonts: &Fonts) -> DrawResult {
    let xs = chart.lines.iter().flat_map(|l| l.points.iter().filter(|p| p.1.is_finite()).map(|p| p.0));
    let x_range = padded_range(xs, 0.02);
    let ys = chart.lines.iter().flat_map(|l| l.points.iter().filter(|p| p.0.is_finite()).map(|p| p.1));
    let y_range = padded_range(ys, 0.06);

    let top = (fonts.label * 0.5) as i32;
    let area = root.margin(top, 0, 0, 0).titled(chart.title, (FONT, fonts.caption))?;
    let area = match &chart.note {
        Some(note) => {
            let (top, rest) = area.split_vertically((fonts.label * 1.4) as u32);
            top.draw(&Text::new(
                note.clone(),
                ((top.dim_in_pixel().0 / 2) as i32, 0),
                (FONT, fonts.label * 0.9).into_font().color(&RGBColor(90, 90, 90)).pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
            rest
        }
        None => area,
    };

    let x_fmt = |v: &f64| if chart.x_integer && (v - v.round()).abs() > 1e-9 { String::new() } else { tick(*v) };
    let mut cc = ChartBuilder::on(&area)
        .margin((fonts.label * 0.9) as u32)
        .margin_top((fonts.label * 0.4) as u32)
        .x_label_area_size((fonts.label * 3.2) as u32)
        .y_label_area_size((fonts.label * 5.0) as u32)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)?;
    cc.configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc)
        .label_style((FONT, fonts.label))
        .axis_desc_style((FONT, fonts.desc))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()?;

    for line in chart.lines {
        let style = ShapeStyle::from(&line.color).stroke_width(line.width);
        let runs = finite_runs(line.points.iter().copied());
        // Runs of one point would draw nothing as a line: they get a dot.
        let dots: Vec<(f64, f64)> = runs.iter().filter(|r| r.len() == 1).map(|r| r[0]).collect();
        let paths: Vec<Vec<(f64, f64)>> = runs.into_iter().filter(|r| r.len() > 1).collect();
        let anno = match line.dash {
            Dash::Solid => cc.draw_series(paths.into_iter().map(|p| PathElement::new(p, style)))?,
            Dash::Dashed => cc.draw_series(
                paths.into_iter().map(|p| DashedPathElement::new(p, 4 * line.width + 6, 3 * line.width + 2, style)),
            )?,
            Dash::Dotted => cc.draw_series(
                paths.into_iter().map(|p| DashedPathElement::new(p, line.width + 1, 2 * line.width + 4, style)),
            )?,
        };
        let dash = line.dash;
        anno.label(line.label.clone()).legend(move |(x, y)| {
            let [a, b, c] = legend_segments(dash);
            EmptyElement::at((x, y))
                + PathElement::new(vec![(a.0, 0), (a.1, 0)], style)
                + PathElement::new(vec![(b.0, 0), (b.1, 0)], style)
                + PathElement::new(vec![(c.0, 0), (c.1, 0)], style)
        });
        cc.draw_series(dots.into_iter().map(|p| Circle::new(p, line.width + 2, style.filled())))?;
    }

    if !chart.lines.is_empty() {
        // Many lines: a smaller legend font, so the legend still fits the plotting area.
        let plot_h = f64::from(cc.plotting_area().dim_in_pixel().1);
        let legend_font = fonts.legend.min(0.85 * plot_h / (1.45 * chart.lines.len() as f64)).max(7.0);
        cc.configure_series_labels()
            .label_font((FONT, legend_font))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .legend_area_size(36)
            .position(emptiest_corner(chart.lines, x_range, y_range))
            .draw()?;
    }
    Ok(())
}
