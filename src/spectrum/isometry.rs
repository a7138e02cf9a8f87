//! `gradscope reproduce isometry`: dynamical isometry measured (Pennington, Schoenholz &
//! Ganguli 2017, Figs. 1–2): tanh at its critical point with orthogonal against Gaussian
//! weights, and relu with He's σ_w² = 2 under both, the spectrum of J_x at depths 8 … 1,000.

use std::path::Path;

use serde::Serialize;

use super::output::ExampleSummary;
use super::{Chain, measure, predict};
use crate::error::{Error, Result};
use crate::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem};
use crate::stats::sci;
use crate::theory::{Critical, ReproduceOptions, Reproduction, critical_sigma_w2, fit_line};

/// One (configuration, depth) of the reproduction; measured values are means over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct IsometryRow {
    pub activation: String,
    pub init: String,
    pub sigma_w2: f64,
    pub sigma_b2: f64,
    pub depth: usize,
    /// The standard deviation of log10 s over the nonzero singular values.
    pub sd_log10: f64,
    /// log10 s_1 − log10 (smallest nonzero s), decades.
    pub spread_decades: f64,
    pub log10_top: f64,
    /// log10 (s_1 / √mean(λ)): the top singular value against the rms one, which the
    /// papers' s_max tracks (∝ √L for gaussian weights, O(1) for orthogonal ones when L ≪ n).
    pub log10_top_over_rms: f64,
    pub log10_median: f64,
    /// Share of the singular values that are exactly 0.
    pub zero_fraction: f64,
    /// var(λ)/mean(λ)², λ = s², measured and predicted: L (μ₂/μ₁² − 1 − s₁).
    pub var_over_mean2: f64,
    pub var_over_mean2_predicted: f64,
}

/// The depths of the default run (1,000 is the deepest).
const DEPTHS: [usize; 8] = [8, 16, 32, 64, 128, 256, 512, 1000];

/// Runs the reproduction: width `opt.width` (default 256), depths up to `opt.depth`
/// (default 1,000), seeds 1..=`opt.seeds`, one example each (gaussian inputs).
///
/// # Errors
/// A width below 2 or a failure of the measurement; an unwritable `--plot`.
pub fn isometry_table(opt: &ReproduceOptions, plot: Option<&Path>) -> Result<Reproduction> {
    let width = opt.width.unwrap_or(256);
    if width < 2 {
        return Err(Error::arg("--width", "must be ≥ 2 for a spectrum"));
    }
    let max_depth = opt.depth.unwrap_or(1000);
    let mut depths: Vec<usize> = DEPTHS.iter().copied().filter(|&d| d < max_depth).collect();
    depths.push(max_depth);
    let sb2_tanh = 0.05;
    let Critical::At(sw2_tanh) = critical_sigma_w2(Activation::Tanh, sb2_tanh)? else {
        return Err(Error::Internal("tanh has a critical point at σ_b² = 0.05".into()));
    };
    let configs = [
        (Activation::Tanh, InitKind::Gaussian, Some(sw2_tanh), sb2_tanh),
        (Activation::Tanh, InitKind::Orthogonal, Some(sw2_tanh), sb2_tanh),
        (Activation::Relu, InitKind::Gaussian, Some(2.0), 0.0),
        (Activation::Relu, InitKind::Orthogonal, Some(2.0), 0.0),
    ];
    let mut rows = Vec::new();
    for (act, kind, sw2, sb2) in configs {
        let mut per_seed: Vec<Vec<ExampleSummary>> = vec![Vec::new(); depths.len()];
        let mut predicted = vec![f64::NAN; depths.len()];
        for seed in 1..=opt.seeds {
            let init = Init::new(kind, sw2, Some(sb2))?;
            let net = Network::new(vec![width; max_depth + 1], act, false, Cost::Quadratic, Params::Generated { init, seed })?;
            let x = InputSpec::Gaussian.materialise(seed, 1, width)?;
            let p = Problem::new(net, x, ndarray::Array2::zeros((1, width)))?;
            for (i, d) in measure(&p, 1, Chain::InputOutput, &depths, false)?.iter().enumerate() {
                per_seed[i].push(ExampleSummary::new(&d.examples[0]));
                predicted[i] = predict::predict(&p, Chain::InputOutput, d.depth).map(|v| v.var_over_mean2).unwrap_or(f64::NAN);
            }
        }
        for ((&depth, s), pred) in depths.iter().zip(&per_seed).zip(&predicted) {
            let mean = |f: &dyn Fn(&ExampleSummary) -> f64| s.iter().map(f).sum::<f64>() / s.len() as f64;
            rows.push(IsometryRow {
                activation: act.to_string(),
                init: if act == Activation::Relu && kind == InitKind::Gaussian { "he".into() } else { kind.to_string() },
                sigma_w2: sw2.unwrap_or(f64::NAN),
                sigma_b2: sb2,
                depth,
                sd_log10: mean(&|e| e.sd_log10),
                spread_decades: mean(&|e| e.spread_decades),
                log10_top: mean(&|e| e.log10_top),
                log10_top_over_rms: mean(&|e| e.log10_top - 0.5 * e.log10_mean_lambda),
                log10_median: mean(&|e| e.log10_median),
                zero_fraction: mean(&|e| e.zero_count as f64 / width as f64),
                var_over_mean2: mean(&|e| e.var_over_mean2),
                var_over_mean2_predicted: *pred,
            });
        }
    }
    let mut notes = vec![
        format!(
            "measured: CPU spectrum (f64, QR-accumulated), widths all {width}, 1 gaussian input per seed, {} seed(s); \
             tanh at its critical point σ_w² = {sw2_tanh:.4}, σ_b² = {sb2_tanh} (χ₁ = 1); relu at σ_w² = 2, σ_b² = 0 (He; χ₁ = 1)",
            opt.seeds
        ),
        "sd: the standard deviation of log10 s over the nonzero singular values of J_x; spread: log10 s_1 − log10 s_min≠0, decades; \
         var/mean²: of λ = s², predicted L(μ₂/μ₁² − 1 − s₁) with s₁ = −1 (gaussian) or 0 (orthogonal), at q = q* (docs/MATH.md)"
            .into(),
    ];
    // Two regimes: while L ≪ n the free-probability (wide-limit) picture holds; once L ≳ n
    // the finite-width spectrum separates into Lyapunov exponents and log10 s spreads ∝ L.
    for chunk in rows.chunks(depths.len()) {
        let fit = |keep: &dyn Fn(usize) -> bool| {
            let (x, y): (Vec<f64>, Vec<f64>) = chunk.iter().filter(|r| keep(r.depth) && r.sd_log10 > 0.0).map(|r| ((r.depth as f64).log10(), r.sd_log10.log10())).unzip();
            if x.len() >= 2 { fit_line(&x, &y).map(|(slope, _)| format!("L^{slope:.2}")) } else { None }
        };
        // A regime with fewer than two depths has no slope; say only what was fitted, so a
        // short run (--depth below the default) prints no "grows like n/a" lines.
        let regimes: Vec<String> = [(fit(&|d| d <= width / 2), "L ≤ n/2"), (fit(&|d| d >= width), "L ≥ n")]
            .into_iter()
            .filter_map(|(slope, range)| slope.map(|s| format!("{s} for {range}")))
            .collect();
        if !regimes.is_empty() {
            notes.push(format!("{} {}: sd of log10 s grows like {}", chunk[0].activation, chunk[0].init, regimes.join(" and ")));
        }
    }
    notes.push(format!(
        "var(λ)/mean(λ)² can never exceed n − 1 = {}: the prediction is the wide limit (L ≪ n); the measurement follows it there and \
         saturates once L ≳ n, where the finite-width spectrum separates into Lyapunov exponents (Benettin et al. 1980) and log10 s \
         spreads in proportion to L",
        width - 1
    ));
    notes.push(
        "relu is never isometric: half the units are dead in every layer, so J_x has exact zero singular values (zero share) and \
         the nonzero ones spread under both inits"
            .into(),
    );
    if let Some(path) = plot {
        figure(&rows, depths.len(), width, path)?;
        notes.push(format!("figure: {}", path.display()));
    }
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                r.activation.clone(),
                r.init.clone(),
                r.depth.to_string(),
                format!("{:.3}", r.sd_log10),
                format!("{:.2}", r.spread_decades),
                sci(r.log10_top),
                format!("{:.3}", 10f64.powf(r.log10_top_over_rms)),
                sci(r.log10_median),
                format!("{:.2}", r.zero_fraction),
                format!("{:.3}", r.var_over_mean2),
                format!("{:.3}", r.var_over_mean2_predicted),
            ]
        })
        .collect();
    Ok(Reproduction {
        name: "isometry".into(),
        title: format!("isometry: the singular values of J_x at the critical point, orthogonal against gaussian weights (width {width})"),
        rows: serde_json::to_value(&rows).map_err(|e| Error::Internal(e.to_string()))?,
        notes,
        columns: ["σ", "init", "depth", "sd log10 s", "spread", "top s_1", "s_1/rms", "median s", "zero share", "var/mean²", "predicted"].iter().map(|c| c.to_string()).collect(),
        cells,
    })
}

/// The figure, two panels against log10 depth: the sd of log10 s (one line per
/// configuration, with √L for reference), and var(λ)/mean(λ)² measured (solid) against the
/// free-probability prediction (dashed).
fn figure(rows: &[IsometryRow], per: usize, width: usize, path: &Path) -> Result<()> {
    use crate::plot::{Dash, Line, LineChart, draw_lines};
    use plotters::style::RGBColor;
    let colors = [RGBColor(200, 40, 40), RGBColor(40, 90, 200), RGBColor(230, 140, 20), RGBColor(40, 150, 70)];
    let x = |r: &IsometryRow| (r.depth as f64).log10();
    let series = |f: &dyn Fn(&IsometryRow) -> f64, dash: Dash, suffix: &str| -> Vec<Line> {
        rows.chunks(per)
            .zip(colors)
            .map(|(c, color)| Line { label: format!("{}, {}{suffix}", c[0].activation, c[0].init), points: c.iter().map(|r| (x(r), f(r).log10())).collect(), color, width: 3, dash })
            .collect()
    };
    let mut sd = series(&|r| r.sd_log10, Dash::Solid, "");
    if let Some(last) = rows.get(per.wrapping_sub(1)) {
        // √L through the Gaussian tanh curve's deepest point.
        let a = last.sd_log10.log10() - 0.5 * x(last);
        sd.push(Line { label: "∝ √L".into(), points: rows[..per].iter().map(|r| (x(r), a + 0.5 * x(r))).collect(), color: RGBColor(120, 120, 120), width: 2, dash: Dash::Dotted });
    }
    let mut moments = series(&|r| r.var_over_mean2, Dash::Solid, "");
    moments.extend(series(&|r| r.var_over_mean2_predicted, Dash::Dashed, ", predicted"));
    let t1 = format!("sd of log10 s, width {width}");
    let t2 = format!("var(λ)/mean(λ)², λ = s² (at most n − 1 = {})", width - 1);
    let left = LineChart { title: &t1, x_desc: "log10 depth L", y_desc: "log10 sd(log10 s)", lines: &sd, x_integer: false, note: None };
    let right = LineChart { title: &t2, x_desc: "log10 depth L", y_desc: "log10 var/mean²", lines: &moments, x_integer: false, note: None };
    let size = (1800, 700);
    let fonts = crate::plot::Fonts::for_size((900, 700));
    crate::plot::draw_to_path(path, size, |root| {
        let (a, b) = root.split_horizontally(900);
        draw_lines(&a, &left, &fonts)?;
        draw_lines(&b, &right, &fonts)
    })
}
