//! Plots of a sweep directory: its `summary.csv` (one row per point) and its per-layer
//! profiles (`profiles/*.npy`, one NaN-padded row per point, in the same order).
//!
//! Three kinds of figure, written to `DIR/plots/` as SVG and PNG:
//! - `grad_first_vs_depth`: the first-layer gradient against depth, one panel per
//!   activation/init, one line per (σ_w², σ_b²);
//! - `heatmap_<activation>_<init>…`: the first-layer gradient over (σ_w², depth), with the
//!   χ₁ = 1 line where the critical σ_w² is known and the trainable depth ≈ 6ξ_c;
//! - `profile_<configuration>`: the per-layer profile of each configuration's deepest point.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figure::{DrawResult, FONT, Fonts, draw_svg, num, padded_range, series_color, tick};
use super::lines::{Dash, Line, LineChart, draw_lines};
use super::profile::Profile;
use super::{DEFAULT_SIZE, Format, MAX_SIDE, check_size, write_figure};
use crate::error::{Error, Result};

/// An f64 ordered by `total_cmp`, so configurations can key a sorted map.
#[derive(Debug, Clone, Copy)]
struct Key(f64);

impl PartialEq for Key {
    fn eq(&self, o: &Self) -> bool {
        self.0.total_cmp(&o.0) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// The columns that make a panel (or a heatmap, with σ_b²): everything but σ_w², seed, depth.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    activation: String,
    init: String,
    cost: String,
    width: String,
    batch: String,
}

/// One configuration: a line of the depth plot, a profile file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Config {
    group: Group,
    sigma_b2: Key,
    sigma_w2: Key,
}

/// One row of `summary.csv`, the columns the plots use.
#[derive(Debug, Clone)]
struct Row {
    config: Config,
    seed: String,
    depth: usize,
    log10_grad_b_rms_first: f64,
}

/// Which of the secondary columns take more than one value (only those go into labels).
#[derive(Debug, Clone, Copy, Default)]
struct Varying {
    cost: bool,
    width: bool,
    batch: bool,
    seeds: usize,
}

/// `summary.csv`, read.
struct Summary {
    rows: Vec<Row>,
    varying: Varying,
}

/// Parses a number as the sweep writes it: `nan`, `inf`, `-inf` included; empty is NaN.
fn parse_num(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() { Some(f64::NAN) } else { s.parse::<f64>().ok() }
}

impl Summary {
    fn read(path: &Path) -> Result<Summary> {
        let mut rdr = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let headers = rdr.headers().map_err(|e| Error::file(path, format!("cannot read the header: {e}")))?.clone();
        let col = |name: &str| headers.iter().position(|h| h == name);
        let need = |name: &str| col(name).ok_or_else(|| Error::file(path, format!("no column '{name}'")));
        // σ² columns are written beside σ; either can stand in for the other.
        let sigma = |sq: &str, plain: &str| -> Result<(usize, bool)> {
            match (col(sq), col(plain)) {
                (Some(i), _) => Ok((i, false)),
                (None, Some(i)) => Ok((i, true)),
                (None, None) => Err(Error::file(path, format!("no column '{sq}' (or '{plain}')"))),
            }
        };
        let (activation, init, depth, first) =
            (need("activation")?, need("init")?, need("depth")?, need("log10_grad_b_rms_first")?);
        let (sw, sw_plain) = sigma("sigma_w2", "sigma_w")?;
        let (sb, sb_plain) = sigma("sigma_b2", "sigma_b")?;
        let (cost, width, batch, seed) = (col("cost"), col("width"), col("batch"), col("seed"));

        let mut rows = vec![];
        for (i, rec) in rdr.records().enumerate() {
            let line = i + 2;
            let rec = rec.map_err(|e| Error::file(path, format!("line {line}: {e}")))?;
            let text = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").to_string();
            let number = |c: usize, name: &str| -> Result<f64> {
                let s = rec.get(c).unwrap_or("");
                parse_num(s).ok_or_else(|| Error::file(path, format!("line {line}: {name} '{s}' is not a number")))
            };
            let square = |v: f64, plain: bool| if plain { v * v } else { v };
            let d = number(depth, "depth")?;
            if !(d >= 1.0 && d.fract() == 0.0 && d <= 1e9) {
                return Err(Error::file(path, format!("line {line}: depth {d} is not a positive integer")));
            }
            rows.push(Row {
                config: Config {
                    group: Group {
                        activation: text(Some(activation)),
                        init: text(Some(init)),
                        cost: text(cost),
                        width: text(width),
                        batch: text(batch),
                    },
                    sigma_b2: Key(square(number(sb, "sigma_b2")?, sb_plain)),
                    sigma_w2: Key(square(number(sw, "sigma_w2")?, sw_plain)),
                },
                seed: text(seed),
                depth: d as usize,
                log10_grad_b_rms_first: number(first, "log10_grad_b_rms_first")?,
            });
        }
        if rows.is_empty() {
            return Err(Error::file(path, "holds no finished points yet"));
        }
        let distinct = |f: &dyn Fn(&Row) -> &str| {
            let mut v: Vec<&str> = rows.iter().map(f).collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        let varying = Varying {
            cost: distinct(&|r| &r.config.group.cost) > 1,
            width: distinct(&|r| &r.config.group.width) > 1,
            batch: distinct(&|r| &r.config.group.batch) > 1,
            seeds: distinct(&|r| &r.seed),
        };
        Ok(Summary { rows, varying })
    }

    /// The rows' indices by configuration, in sorted order.
    fn by_config(&self) -> BTreeMap<&Config, Vec<usize>> {
        let mut m: BTreeMap<&Config, Vec<usize>> = BTreeMap::new();
        for (i, r) in self.rows.iter().enumerate() {
            m.entry(&r.config).or_default().push(i);
        }
        m
    }

    /// The mean over seeds of the finite first-layer values of `rows`, by depth (NaN where no
    /// seed has a finite value). A mean of log10 values: the geometric mean of the norms.
    fn first_by_depth(&self, rows: &[usize]) -> BTreeMap<usize, f64> {
        let mut acc: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
        for &i in rows {
            let r = &self.rows[i];
            let e = acc.entry(r.depth).or_insert((0.0, 0));
            if r.log10_grad_b_rms_first.is_finite() {
                e.0 += r.log10_grad_b_rms_first;
                e.1 += 1;
            }
        }
        acc.into_iter().map(|(d, (s, n))| (d, if n > 0 { s / n as f64 } else { f64::NAN })).collect()
    }
}

impl Group {
    fn title(&self, v: Varying) -> String {
        let mut t = format!("{}, {} init", self.activation, self.init);
        if v.cost {
            t += &format!(", {} cost", self.cost);
        }
        if v.width {
            t += &format!(", width {}", self.width);
        }
        if v.batch {
            t += &format!(", batch {}", self.batch);
        }
        t
    }

    fn stem(&self, v: Varying) -> String {
        let mut t = format!("{}_{}", self.activation, self.init);
        if v.cost {
            t += &format!("_{}", self.cost);
        }
        if v.width {
            t += &format!("_n{}", self.width);
        }
        if v.batch {
            t += &format!("_B{}", self.batch);
        }
        t
    }
}

/// A file-name-safe form of `s`: letters, digits, `.`, `-` and `_` kept, the rest `-`.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect()
}

/// Plots a sweep directory into `DIR/plots/` as SVG and PNG, at [`DEFAULT_SIZE`] per panel;
/// returns the files written. `critical(activation, sigma_b2)` gives the σ_w² at which
/// χ₁ = 1 (the order–chaos line), drawn on the heatmaps where known.
///
/// # Errors
/// [`Error::File`] for a folder without a readable `summary.csv` (or with no points yet), a
/// malformed row, an unreadable profile, or a plot that cannot be written; [`Error::Shape`]
/// for a profile array whose rows do not match `summary.csv`.
pub fn plot_sweep_dir(dir: &Path, critical: &dyn Fn(&str, f64) -> Option<f64>) -> Result<Vec<PathBuf>> {
    plot_sweep_dir_sized(dir, critical, DEFAULT_SIZE, &[Format::Svg, Format::Png])
}

/// [`plot_sweep_dir`] with a chosen panel size and formats.
///
/// # Errors
/// As [`plot_sweep_dir`]; [`Error::InvalidArgument`] for a size out of range.
pub fn plot_sweep_dir_sized(
    dir: &Path,
    critical: &dyn Fn(&str, f64) -> Option<f64>,
    size: (u32, u32),
    formats: &[Format],
) -> Result<Vec<PathBuf>> {
    check_size(size)?;
    if !dir.is_dir() {
        return Err(Error::file(dir, "no such folder"));
    }
    let summary_path = dir.join("summary.csv");
    if !summary_path.is_file() {
        return Err(Error::file(
            &summary_path,
            "not found: not a sweep directory (`gradscope sweep --out DIR` writes it)",
        ));
    }
    let summary = Summary::read(&summary_path)?;
    // Read (and so check) every input before the first file is written.
    let profiles = Profiles::read(dir, summary.rows.len())?;
    let out = dir.join("plots");
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, format!("cannot create: {e}")))?;

    let mut written = vec![];
    let mut emit = |stem: &str, size: (u32, u32), svg: DrawResult<String>| -> Result<()> {
        let stem = sanitize(stem);
        let svg = svg.map_err(|e| Error::file(out.join(format!("{stem}.svg")), format!("cannot draw the plot: {e}")))?;
        for &f in formats {
            let path = out.join(format!("{stem}.{}", f.extension()));
            write_figure(&svg, size, f, &path)?;
            written.push(path);
        }
        Ok(())
    };

    let (fig_size, svg) = draw_first_vs_depth(&summary, size);
    emit("grad_first_vs_depth", fig_size, svg)?;

    for (stem, svg) in draw_heatmaps(&summary, critical, size) {
        emit(&stem, size, svg)?;
    }

    if let Some(profiles) = profiles {
        for (config, rows) in summary.by_config() {
            // The deepest point, first seed in file order.
            let Some(&i) = rows.iter().max_by_key(|&&i| (summary.rows[i].depth, std::cmp::Reverse(i))) else {
                continue;
            };
            let r = &summary.rows[i];
            let predicted = profiles.predicted(i, r.depth);
            let profile = profiles.profile(i, r.depth, predicted.as_deref());
            let mut title = format!(
                "{}, σ_w² = {}, σ_b² = {}, depth {}",
                config.group.title(summary.varying),
                num(config.sigma_w2.0),
                num(config.sigma_b2.0),
                r.depth
            );
            if summary.varying.seeds > 1 {
                title += &format!(", seed {}", r.seed);
            }
            let stem = format!(
                "profile_{}_sw2-{}_sb2-{}",
                config.group.stem(summary.varying),
                num(config.sigma_w2.0),
                num(config.sigma_b2.0)
            );
            emit(&stem, size, profile.draw(&title, size))?;
        }
    }
    Ok(written)
}

/// The first-layer gradient against depth: one panel per group, one line per (σ_w², σ_b²).
fn draw_first_vs_depth(summary: &Summary, panel: (u32, u32)) -> ((u32, u32), DrawResult<String>) {
    let mut groups: BTreeMap<&Group, Vec<(&Config, Vec<usize>)>> = BTreeMap::new();
    for (c, rows) in summary.by_config() {
        groups.entry(&c.group).or_default().push((c, rows));
    }
    let n = groups.len();
    let cols = n.min(3);
    let rows = n.div_ceil(cols);
    // One group: the panel size; several: a grid of slightly smaller panels.
    let (pw, ph) = if n == 1 { panel } else { (panel.0 * 2 / 3, panel.1 * 5 / 6) };
    let size = ((pw * cols as u32).min(MAX_SIDE), (ph * rows as u32).min(MAX_SIDE));
    let fonts = Fonts::for_size((pw, ph));
    let v = summary.varying;
    let svg = draw_svg(size, |root| {
        let panels = root.split_evenly((rows, cols));
        for ((group, configs), area) in groups.iter().zip(panels.iter()) {
            let nb = {
                let mut b: Vec<Key> = configs.iter().map(|c| c.0.sigma_b2).collect();
                b.dedup();
                b.len()
            };
            let lines: Vec<Line> = configs
                .iter()
                .enumerate()
                .map(|(k, (c, rows))| {
                    let mut label = format!("σ_w² = {}", num(c.sigma_w2.0));
                    if nb > 1 {
                        label += &format!(", σ_b² = {}", num(c.sigma_b2.0));
                    }
                    Line {
                        label,
                        points: summary.first_by_depth(rows).into_iter().map(|(d, y)| (d as f64, y)).collect(),
                        color: series_color(k, configs.len()),
                        width: 2,
                        dash: Dash::Solid,
                    }
                })
                .collect();
            let mut title = group.title(v);
            if nb == 1 {
                title += &format!(", σ_b² = {}", num(configs[0].0.sigma_b2.0));
            }
            let note = (v.seeds > 1).then(|| format!("mean of log10 over {} seeds", v.seeds));
            let chart = LineChart {
                title: &title,
                x_desc: "depth L",
                y_desc: "log10 ‖δ^1‖ (grad_b_rms, layer 1)",
                lines: &lines,
            x_integer: true,
                note,
            };
            draw_lines(area, &chart, &fonts)?;
        }
        Ok(())
    });
    (size, svg)
}

/// One heatmap per group and σ_b²: the first-layer gradient over (σ_w², depth).
fn draw_heatmaps(
    summary: &Summary,
    critical: &dyn Fn(&str, f64) -> Option<f64>,
    size: (u32, u32),
) -> Vec<(String, DrawResult<String>)> {
    let mut maps: BTreeMap<(&Group, Key), Vec<usize>> = BTreeMap::new();
    for (i, r) in summary.rows.iter().enumerate() {
        if r.config.sigma_w2.0.is_finite() {
            maps.entry((&r.config.group, r.config.sigma_b2)).or_default().push(i);
        }
    }
    let nb_per_group = |g: &Group| maps.keys().filter(|(h, _)| *h == g).count();
    maps.iter()
        .map(|(&(group, sb2), rows)| {
            let mut stem = format!("heatmap_{}", group.stem(summary.varying));
            if nb_per_group(group) > 1 {
                stem += &format!("_sb2-{}", num(sb2.0));
            }
            let title = format!("{}, σ_b² = {}", group.title(summary.varying), num(sb2.0));
            let crit = critical(&group.activation, sb2.0).filter(|c| c.is_finite());
            let trainable = trainable_curve(summary, rows, &group.activation, sb2.0, crit);
            (stem, draw_heatmap(summary, rows, &title, crit, &trainable, size))
        })
        .collect()
}

/// (σ_w², 6ξ_c) at the heatmap's σ_w² columns, and (critical σ_w², ∞) where χ₁ = 1 falls
/// inside them: the trainable depth of Schoenholz et al. 2017. Only the columns, not a fine
/// grid: in the chaotic phase each ξ_c needs c*, a root of a two-dimensional quadrature.
fn trainable_curve(summary: &Summary, rows: &[usize], activation: &str, sigma_b2: f64, critical: Option<f64>) -> Vec<(f64, f64)> {
    let mut sw: Vec<f64> = rows.iter().map(|&i| summary.rows[i].config.sigma_w2.0).collect();
    sw.sort_by(f64::total_cmp);
    sw.dedup();
    let mut pts: Vec<(f64, f64)> = sw.iter().filter_map(|&w| super::mean_field_trainable_depth(activation, w, sigma_b2).map(|d| (w, d))).collect();
    if let Some(c) = critical.filter(|c| sw.first().is_some_and(|a| a < c) && sw.last().is_some_and(|b| c < b)) {
        pts.push((c, f64::INFINITY));
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// The edges of cells centred on sorted `centres`: midpoints, and half a step beyond the ends.
fn cell_edges(centres: &[f64]) -> Vec<f64> {
    match centres {
        [] => vec![],
        [c] => {
            let h = 0.05 * c.abs().max(1.0);
            vec![c - h, c + h]
        }
        _ => {
            let n = centres.len();
            let mut e = vec![centres[0] - (centres[1] - centres[0]) / 2.0];
            e.extend(centres.windows(2).map(|w| (w[0] + w[1]) / 2.0));
            e.push(centres[n - 1] + (centres[n - 1] - centres[n - 2]) / 2.0);
            e
        }
    }
}

/// Draws one heatmap: x = σ_w² (cells between midpoints), y = the depth grid, one row per
/// depth (a log grid of depths reads as a log axis), colour = mean log10 ‖δ¹‖ over seeds.
fn draw_heatmap(
    summary: &Summary,
    rows: &[usize],
    title: &str,
    critical: Option<f64>,
    trainable: &[(f64, f64)],
    size: (u32, u32),
) -> DrawResult<String> {
    let mut sw: Vec<f64> = rows.iter().map(|&i| summary.rows[i].config.sigma_w2.0).collect();
    sw.sort_by(f64::total_cmp);
    sw.dedup();
    let mut depths: Vec<usize> = rows.iter().map(|&i| summary.rows[i].depth).collect();
    depths.sort_unstable();
    depths.dedup();
    // cells[(x, y)] = (sum, count) of finite values.
    let mut cells = vec![(0.0f64, 0usize); sw.len() * depths.len()];
    for &i in rows {
        let r = &summary.rows[i];
        let x = sw.partition_point(|&s| s < r.config.sigma_w2.0);
        let y = depths.partition_point(|&d| d < r.depth);
        if r.log10_grad_b_rms_first.is_finite() {
            let c = &mut cells[x * depths.len() + y];
            c.0 += r.log10_grad_b_rms_first;
            c.1 += 1;
        }
    }
    let value = |x: usize, y: usize| {
        let (s, n) = cells[x * depths.len() + y];
        if n > 0 { s / n as f64 } else { f64::NAN }
    };
    let (vmin, vmax) = padded_range(cells.iter().filter(|c| c.1 > 0).map(|c| c.0 / c.1 as f64), 0.0);
    let missing = cells.iter().any(|c| c.1 == 0);
    let xe = cell_edges(&sw);
    let (x0, x1) = (xe[0], xe[xe.len() - 1]);
    let ny = depths.len();
    let fonts = Fonts::for_size(size);
    let colour = |v: f64| ViridisRGB::get_color_normalized(v, vmin, vmax);

    draw_svg(size, |root| {
        let top = (fonts.label * 0.5) as i32;
        let root = root.margin(top, 0, 0, 0).titled(title, (FONT, fonts.caption))?;
        let mut notes = vec![];
        if summary.varying.seeds > 1 {
            notes.push(format!("mean of log10 over {} seeds", summary.varying.seeds));
        }
        if missing {
            notes.push("gray: no finite value (zero or overflowed gradient, or not run)".into());
        }
        if let Some(c) = critical.filter(|c| !(x0..=x1).contains(c)) {
            notes.push(format!("χ₁ = 1 at σ_w² = {}, outside the grid", num(c)));
        }
        let root = if notes.is_empty() {
            root
        } else {
            let (top, rest) = root.split_vertically((fonts.label * 1.5) as u32);
            top.draw(&Text::new(
                notes.join("; "),
                ((top.dim_in_pixel().0 / 2) as i32, 0),
                (FONT, fonts.label * 0.9)
                    .into_font()
                    .color(&RGBColor(90, 90, 90))
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
            rest
        };
        let bar_w = (fonts.label * 8.0) as u32;
        let (main, bar) = root.split_horizontally(root.dim_in_pixel().0.saturating_sub(bar_w));
        let margin = (fonts.label * 0.9) as u32;
        let x_area = (fonts.label * 3.2) as u32;

        let depth_label = |v: &f64| {
            let k = v.round();
            if (v - k).abs() < 1e-6 && k >= 0.0 && (k as usize) < ny { depths[k as usize].to_string() } else { String::new() }
        };
        let mut cc = ChartBuilder::on(&main)
            .margin(margin)
            .margin_right(margin / 2)
            .x_label_area_size(x_area)
            .y_label_area_size((fonts.label * 4.5) as u32)
            .build_cartesian_2d(x0..x1, -0.5..(ny as f64 - 0.5))?;
        cc.configure_mesh()
            .disable_mesh()
            .x_desc("σ_w²")
            .y_desc("depth L")
            .label_style((FONT, fonts.label))
            .axis_desc_style((FONT, fonts.desc))
            .x_labels(sw.len().clamp(2, 10))
            .y_labels(ny.clamp(2, 12))
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&depth_label)
            .draw()?;
        cc.draw_series((0..sw.len()).flat_map(|x| {
            let (xa, xb) = (xe[x], xe[x + 1]);
            (0..ny).map(move |y| {
                let v = value(x, y);
                let fill = if v.is_finite() { colour(v) } else { RGBColor(215, 215, 215) };
                Rectangle::new([(xa, y as f64 - 0.5), (xb, y as f64 + 0.5)], fill.filled())
            })
        }))?;
        let mut labelled = false;
        if let Some(c) = critical.filter(|c| (x0..=x1).contains(c)) {
            let style = ShapeStyle::from(&RGBColor(214, 39, 40)).stroke_width(3);
            let (ya, yb) = (-0.5, ny as f64 - 0.5);
            cc.draw_series(std::iter::once(plotters::element::DashedPathElement::new(
                vec![(c, ya), (c, yb)],
                12,
                6,
                style,
            )))?
            .label(format!("χ₁ = 1: σ_w² = {}", num(c)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            labelled = true;
        }
        // Depth → row coordinate, log-interpolated between grid depths; beyond the deepest
        // row the curve sits on the top edge (and a stretch wholly beyond it is not drawn).
        let top = ny as f64 - 0.5;
        let depth_y = |d: f64| -> f64 {
            if d.is_nan() || d >= depths[ny - 1] as f64 {
                return top;
            }
            if d <= depths[0] as f64 {
                return -0.5;
            }
            let k = depths.partition_point(|&g| (g as f64) <= d) - 1;
            let (a, b) = ((depths[k] as f64).ln(), (depths[k + 1] as f64).ln());
            k as f64 + (d.ln() - a) / (b - a)
        };
        let pts: Vec<(f64, f64)> = trainable.iter().filter(|(w, _)| (x0..=x1).contains(w)).map(|&(w, d)| (w, depth_y(d))).collect();
        let segments: Vec<Vec<(f64, f64)>> = pts.windows(2).filter(|p| p[0].1 < top || p[1].1 < top).map(|p| p.to_vec()).collect();
        if !segments.is_empty() {
            // White with a black edge: visible on every viridis colour and, in the legend,
            // on its white background, so the legend shows the line as drawn.
            let (edge, line) = (ShapeStyle::from(&BLACK).stroke_width(5), ShapeStyle::from(&WHITE).stroke_width(3));
            cc.draw_series(segments.iter().map(move |seg| PathElement::new(seg.clone(), edge)))?;
            cc.draw_series(segments.into_iter().map(move |seg| PathElement::new(seg, line)))?
                .label("trainable depth ≈ 6ξ_c")
                .legend(move |(x, y)| EmptyElement::at((x, y)) + PathElement::new(vec![(0, 0), (24, 0)], edge) + PathElement::new(vec![(1, 0), (23, 0)], line));
            labelled = true;
        }
        if labelled {
            cc.configure_series_labels()
                .label_font((FONT, fonts.legend))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(160, 160, 160))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }

        draw_colour_bar(&bar, (vmin, vmax), &fonts, margin, x_area)
    })
}

/// The colour bar: viridis from `vmin` to `vmax`, labelled, aligned with the heatmap's
/// plotting area (same top margin and x label area).
fn draw_colour_bar(
    area: &DrawingArea<SVGBackend, Shift>,
    (vmin, vmax): (f64, f64),
    fonts: &Fonts,
    margin: u32,
    x_area: u32,
) -> DrawResult {
    let mut cb = ChartBuilder::on(area)
        .margin_top(margin)
        .margin_bottom(margin)
        .margin_right(margin / 2)
        .x_label_area_size(x_area)
        .right_y_label_area_size((fonts.label * 5.5) as u32)
        .build_cartesian_2d(0.0..1.0, vmin..vmax)?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc("log10 ‖δ^1‖ (grad_b_rms)")
        .label_style((FONT, fonts.label))
        .axis_desc_style((FONT, fonts.desc * 0.9))
        .y_label_formatter(&|v| tick(*v))
        .draw()?;
    const STEPS: usize = 128;
    let step = (vmax - vmin) / STEPS as f64;
    cb.draw_series((0..STEPS).map(|k| {
        let a = vmin + k as f64 * step;
        let c = ViridisRGB::get_color_normalized(a + step / 2.0, vmin, vmax);
        // Overlap by a hair so no white seams show between the bands.
        Rectangle::new([(0.0, a), (1.0, (a + step * 1.05).min(vmax))], c.filled())
    }))?;
    cb.draw_series(std::iter::once(Rectangle::new([(0.0, vmin), (1.0, vmax)], RGBColor(80, 80, 80).stroke_width(1))))?;
    Ok(())
}

/// The per-layer profile arrays of a sweep directory.
struct Profiles {
    grad_b_rms: Array2<f64>,
    grad_b_mean: Option<Array2<f64>>,
    bound: Option<Array2<f64>>,
    bound_tight: Option<Array2<f64>>,
    /// The mean-field prediction the sweep wrote beside its measurements, where it did.
    predicted: Option<Array2<f64>>,
}

impl Profiles {
    /// Reads `DIR/profiles/*.npy`; `None` when there is no `log10_grad_b_rms.npy`.
    fn read(dir: &Path, n_rows: usize) -> Result<Option<Profiles>> {
        let load = |name: &str| -> Result<Option<Array2<f64>>> {
            let path = dir.join("profiles").join(format!("{name}.npy"));
            if !path.is_file() {
                return Ok(None);
            }
            let a: Array2<f64> =
                ndarray_npy::read_npy(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
            if a.nrows() != n_rows {
                return Err(Error::Shape {
                    path,
                    array: name.into(),
                    expected: format!("({n_rows}, max_depth), one row per row of summary.csv"),
                    found: a.shape().to_vec(),
                });
            }
            Ok(Some(a))
        };
        let Some(grad_b_rms) = load("log10_grad_b_rms")? else {
            return Ok(None);
        };
        Ok(Some(Profiles {
            grad_b_rms,
            grad_b_mean: load("log10_grad_b_mean")?,
            bound: load("log10_bound")?,
            bound_tight: load("log10_bound_tight")?,
            predicted: load("log10_grad_b_rms_predicted")?,
        }))
    }

    /// Row `i`'s predicted profile, when the sweep wrote one with a finite value in it.
    fn predicted(&self, i: usize, depth: usize) -> Option<Vec<f64>> {
        let a = self.predicted.as_ref()?;
        let v: Vec<f64> = (0..depth).map(|l| a.get((i, l)).copied().unwrap_or(f64::NAN)).collect();
        v.iter().any(|x| x.is_finite()).then_some(v)
    }

    /// Row `i`'s profile over layers 1..=depth (NaN where an array is absent or too short).
    fn profile<'p>(&self, i: usize, depth: usize, predicted: Option<&'p [f64]>) -> Profile<'p> {
        let row = |a: Option<&Array2<f64>>| -> Vec<f64> {
            (0..depth).map(|l| a.and_then(|a| a.get((i, l)).copied()).unwrap_or(f64::NAN)).collect()
        };
        Profile {
            layers: (1..=depth).map(|l| l as f64).collect(),
            grad_b_rms: row(Some(&self.grad_b_rms)),
            grad_b_mean: row(self.grad_b_mean.as_ref()),
            bound: row(self.bound.as_ref()),
            bound_tight: row(self.bound_tight.as_ref()),
            predicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_edges_are_midpoints() {
        assert_eq!(cell_edges(&[1.0, 2.0, 4.0]), vec![0.5, 1.5, 3.0, 5.0]);
        assert_eq!(cell_edges(&[2.0]), vec![1.9, 2.1]);
        assert_eq!(sanitize("leaky-relu:0.1 x/y"), "leaky-relu-0.1-x-y");
    }
}
