//! `gradscope reproduce NAME`: published value, theory and measurement side by side for a
//! few results of the literature. Each reproduction returns serialisable rows and a
//! printable table; the numbers are explained in docs/THEORY.md.

use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::Serialize;

use crate::backend::CpuBackend;
use crate::error::{Error, Result};
use crate::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem, TargetSpec};
use crate::rng::{Purpose, Stream};
use crate::stats::{Report, sci};

use super::meanfield::{Critical, MeanField, critical_sigma_w2};
use super::hanin::{Estimate, bootstrap, moment_ratio, relu_he_alive, relu_he_moment_ratio, relu_he_var_ln_norm, relu_he_var_ln_norm_asymptotic, sample_variance};
use super::predict::{fitted_log10_ratio, fitted_log10_ratio_of, predict};

/// The reproductions `gradscope reproduce` knows.
pub const REPRODUCTIONS: &[&str] = &["critical-line", "decay-rate", "nielsen", "he-vs-xavier", "hanin", "nielsen-training", "isometry"];

/// Nielsen's per-hidden-layer ‖∂C/∂b^l‖ for [784, 30, 30, 30, 10] on the first 1000 MNIST
/// training images, before training: epoch 0 of `fig/norms_during_training_3_layers.json`
/// in his book's repository (mnielsen/neural-networks-and-deep-learning), written by
/// `fig/generate_gradient.py`. The book (Neural Networks and Deep Learning, ch. 5) prints
/// them rounded: 0.012, 0.060, 0.283.
pub const NIELSEN_PUBLISHED: [f64; 3] = [0.011838, 0.059965, 0.283142];

/// Where [`NIELSEN_PUBLISHED`] comes from, as the table's note says it.
pub const NIELSEN_SOURCE: &str = "Nielsen's repository mnielsen/neural-networks-and-deep-learning, \
     fig/norms_during_training_3_layers.json, epoch 0 (written by fig/generate_gradient.py; the book, ch. 5, prints \
     0.012, 0.060, 0.283)";

/// The seeds a reproduction measures when `--seeds` is not given: several where the
/// spread between seeds is the point or would otherwise be mistaken for a bias.
pub fn default_seeds(name: &str) -> u64 {
    match name {
        "decay-rate" => DECAY_RATE_SEEDS,
        "hanin" => HANIN_SEEDS,
        _ => 1,
    }
}

/// `decay-rate`'s default seeds: one seed's four values share one gaussian matrix (scaled
/// by σ_w) and so sit low or high together.
pub const DECAY_RATE_SEEDS: u64 = 6;

/// Where `nielsen` takes its data from.
#[derive(Debug, Clone, PartialEq)]
pub enum NielsenData {
    /// MNIST-like synthetic inputs (see [`synthetic_mnist`]).
    Synthetic,
    /// B × 784 inputs and B × 10 targets in `.npy` files, used as given.
    Npy { inputs: PathBuf, targets: PathBuf },
    /// Uncompressed MNIST IDX files: pixels / 255, labels one-hot.
    Idx { images: PathBuf, labels: PathBuf },
}

/// Sizes and seeds of the measured columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ReproduceOptions {
    /// Seeds 1..=seeds are measured and averaged.
    pub seeds: u64,
    /// Overrides the reproduction's default depth, width or batch.
    pub depth: Option<usize>,
    pub width: Option<usize>,
    pub batch: Option<usize>,
    pub data: NielsenData,
    /// isometry: also draw its figure to this .svg/.png.
    pub plot: Option<PathBuf>,
}

impl Default for ReproduceOptions {
    fn default() -> Self {
        ReproduceOptions { seeds: 1, depth: None, width: None, batch: None, data: NielsenData::Synthetic, plot: None }
    }
}

/// A reproduction's result: its rows (JSON) and the same as an aligned table.
#[derive(Debug, Clone, Serialize)]
pub struct Reproduction {
    pub name: String,
    pub title: String,
    pub rows: serde_json::Value,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub columns: Vec<String>,
    #[serde(skip)]
    pub cells: Vec<Vec<String>>,
}

impl fmt::Display for Reproduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        let mut w: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.cells {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| cells.iter().enumerate().map(|(i, c)| format!("{}{c}", " ".repeat(w[i] - c.chars().count()))).collect::<Vec<_>>().join("  ");
        writeln!(f, "{}", line(&self.columns))?;
        for row in &self.cells {
            writeln!(f, "{}", line(row))?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

fn reproduction<R: Serialize>(name: &str, title: String, columns: &[&str], rows: &[R], cells: Vec<Vec<String>>, notes: Vec<String>) -> Result<Reproduction> {
    Ok(Reproduction {
        name: name.into(),
        title,
        rows: serde_json::to_value(rows).map_err(|e| Error::Internal(e.to_string()))?,
        notes,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        cells,
    })
}

/// Runs one reproduction by name.
///
/// # Errors
/// An unknown name, unreadable data, or a failure of the probe or a solver.
pub fn reproduce(name: &str, opt: &ReproduceOptions) -> Result<Reproduction> {
    match name {
        "critical-line" => critical_line_table(opt),
        "decay-rate" => decay_rate_table(opt),
        "nielsen" => nielsen_table(opt),
        "he-vs-xavier" => he_vs_xavier_table(opt),
        "hanin" => hanin_table(opt),
        "nielsen-training" => crate::train::nielsen::nielsen_training(opt),
        "isometry" => crate::spectrum::isometry::isometry_table(opt, opt.plot.as_deref()),
        _ => Err(Error::arg("NAME", format!("unknown reproduction '{name}' (expected one of: {})", REPRODUCTIONS.join(", ")))),
    }
}

/// A gaussian-init network with gaussian inputs and targets, probed on the CPU.
fn probe_gaussian(act: Activation, kind: InitKind, sigma_w2: Option<f64>, sigma_b2: f64, widths: Vec<usize>, batch: usize, seed: u64) -> Result<(Problem, Report)> {
    probe_scaled_targets(act, kind, sigma_w2, sigma_b2, widths, batch, seed, 1.0)
}

/// As [`probe_gaussian`] with targets `y ~ N(0, target_scale²)`.
#[allow(clippy::too_many_arguments)]
fn probe_scaled_targets(act: Activation, kind: InitKind, sigma_w2: Option<f64>, sigma_b2: f64, widths: Vec<usize>, batch: usize, seed: u64, target_scale: f64) -> Result<(Problem, Report)> {
    let init = Init::new(kind, sigma_w2, Some(sigma_b2))?;
    let (n0, nl) = (widths[0], *widths.last().unwrap());
    let net = Network::new(widths, act, false, Cost::Quadratic, Params::Generated { init, seed })?;
    let x = InputSpec::Gaussian.materialise(seed, batch, n0)?;
    let y = TargetSpec::Gaussian.materialise(seed, batch, nl)?.mapv(|v| v * target_scale);
    let p = Problem::new(net, x, y)?;
    let r = CpuBackend::default().probe(&p)?;
    Ok((p, r))
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { f64::NAN };
    (m, sd)
}

fn pm(m: f64, sd: f64, digits: usize) -> String {
    if sd.is_finite() { format!("{m:.digits$} ± {sd:.digits$}") } else { format!("{m:.digits$}") }
}

/// `critical-line`: the tanh critical σ_w² for a grid of σ_b².
#[derive(Debug, Clone, Serialize)]
pub struct CriticalLineRow {
    pub sigma_b2: f64,
    /// A published value where one exists (as text, with its source), else null.
    pub published: Option<String>,
    pub critical_sigma_w2: f64,
    pub q_star: f64,
    /// 10^(2 × fitted per-layer log10 ratio) of grad_b_rms, measured at the theory's
    /// critical σ_w² (1 at criticality).
    pub chi1_measured: f64,
}

/// The σ_b² grid of `critical-line`.
pub const CRITICAL_LINE_GRID: [f64; 9] = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

fn critical_line_table(opt: &ReproduceOptions) -> Result<Reproduction> {
    let (width, depth, batch) = (opt.width.unwrap_or(500), opt.depth.unwrap_or(30), opt.batch.unwrap_or(8));
    let from = 11.min(depth.saturating_sub(2)).max(1);
    let mut rows = Vec::new();
    for &sb2 in &CRITICAL_LINE_GRID {
        let w = match critical_sigma_w2(Activation::Tanh, sb2)? {
            Critical::At(w) => w,
            Critical::None(why) => return Err(Error::Numerical(why)),
        };
        let q = MeanField::new(Activation::Tanh, w, sb2)?.q_star();
        let mut fits = Vec::new();
        for seed in 1..=opt.seeds {
            let (_, r) = probe_gaussian(Activation::Tanh, InitKind::Gaussian, Some(w), sb2, vec![width; depth + 1], batch, seed)?;
            fits.push(fitted_log10_ratio(&r, from, depth - 1).map(|v| 10f64.powf(2.0 * v)).unwrap_or(f64::NAN));
        }
        let published = if sb2 == 0.0 { Some("1 (exact: χ₁ = σ_w² tanh′(0)² at q* = 0)".to_string()) } else { None };
        rows.push(CriticalLineRow { sigma_b2: sb2, published, critical_sigma_w2: w, q_star: q, chi1_measured: mean_sd(&fits).0 });
    }
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                format!("{}", r.sigma_b2),
                r.published.clone().unwrap_or_else(|| "n/a".into()),
                format!("{:.4}", r.critical_sigma_w2),
                format!("{:.4}", r.q_star),
                format!("{:.3}", r.chi1_measured),
            ]
        })
        .collect();
    let notes = vec![
        "theory: root of χ₁(σ_w²) = 1 with χ₁ = σ_w² E[tanh′(√q* z)²] (Schoenholz et al. 2017, Fig. 1); Schoenholz et al. \
         draw the line but print no numbers, so no published value is given beyond the exact σ_b² = 0 point"
            .into(),
        "docs/MATH.md's worked value for σ_b² = 0.05 is 1.7610 (q* ≈ 0.570)".into(),
        format!(
            "measured: CPU probe at the theory's critical σ_w², width {width}, depth {depth}, batch {batch}, gaussian inputs \
             and targets, {} seed(s); 10^(2·fitted log10 ratio) of grad_b_rms over layers {from}..{}",
            opt.seeds,
            depth - 1
        ),
    ];
    reproduction(
        "critical-line",
        "critical-line: tanh, the order–chaos transition χ₁ = 1".into(),
        &["σ_b²", "published σ_w²", "theory σ_w²", "q*", "measured χ₁ there"],
        &rows,
        cells,
        notes,
    )
}

/// `decay-rate`: per-layer ratio of E‖δ^l‖² against χ₁.
#[derive(Debug, Clone, Serialize)]
pub struct DecayRateRow {
    pub sigma_w2: f64,
    pub published: Option<String>,
    pub chi1: f64,
    /// The mean-field prediction for this network (q^l from the actual inputs), fitted over
    /// the same layers as the measurement.
    pub chi_predicted_fit: f64,
    /// 10^(2 × fitted per-layer log10 ratio) of the measured grad_b_rms (mean over seeds).
    pub chi_measured: f64,
    pub chi_measured_sd: Option<f64>,
    pub xi_grad: f64,
}

fn decay_rate_table(opt: &ReproduceOptions) -> Result<Reproduction> {
    let (width, depth, batch) = (opt.width.unwrap_or(1000), opt.depth.unwrap_or(50), opt.batch.unwrap_or(16));
    let sb2 = 0.05;
    let from = 11.min(depth.saturating_sub(2)).max(1);
    let to = depth - 1;
    let mut rows = Vec::new();
    for w in [1.0, 1.5, 1.76, 2.5] {
        let mf = MeanField::new(Activation::Tanh, w, sb2)?;
        let mut fits = Vec::new();
        let mut pred_fit = f64::NAN;
        for seed in 1..=opt.seeds {
            let (p, r) = probe_gaussian(Activation::Tanh, InitKind::Gaussian, Some(w), sb2, vec![width; depth + 1], batch, seed)?;
            fits.push(fitted_log10_ratio(&r, from, to).map(|v| 10f64.powf(2.0 * v)).unwrap_or(f64::NAN));
            if seed == 1 {
                let pr = predict(&p)?;
                pred_fit = fitted_log10_ratio_of(&pr.log10_grad_b_rms, from, to).map(|v| 10f64.powf(2.0 * v)).unwrap_or(f64::NAN);
            }
        }
        let (m, sd) = mean_sd(&fits);
        rows.push(DecayRateRow {
            sigma_w2: w,
            published: None,
            chi1: mf.chi1(),
            chi_predicted_fit: pred_fit,
            chi_measured: m,
            chi_measured_sd: sd.is_finite().then_some(sd),
            xi_grad: mf.xi_grad(),
        });
    }
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                format!("{}", r.sigma_w2),
                "n/a".into(),
                format!("{:.4}", r.chi1),
                format!("{:.4}", r.chi_predicted_fit),
                pm(r.chi_measured, r.chi_measured_sd.unwrap_or(f64::NAN), 4),
                format!("{:.1}", r.xi_grad),
            ]
        })
        .collect();
    let notes = vec![
        format!(
            "measured: CPU probe, tanh, σ_b² = {sb2}, width {width}, depth {depth}, batch {batch}, gaussian inputs and targets, \
             {} seed(s); the per-layer ratio of E‖δ^l‖² is 10^(2·s), s = −slope of log10 grad_b_rms over layers {from}..{to} \
             (the first layers, where q^l is still settling, and the output layer are left out)",
            opt.seeds
        ),
        "χ₁ < 1: E‖δ‖² shrinks towards the input (ordered); χ₁ > 1: it grows (chaotic); ξ_∇ = −1/ln χ₁ (negative: growth)".into(),
        "no published numbers: Schoenholz et al. 2017 show the decay in figures only".into(),
        "every σ_w² uses the same seeds, so one seed's matrices are the same gaussian ones scaled by σ_w: a row's \
         spread is over seeds, and rows move together from seed to seed"
            .into(),
    ];
    reproduction(
        "decay-rate",
        format!("decay-rate: tanh, σ_b² = {sb2}, width {width}: per-layer factor of E‖δ^l‖² against χ₁"),
        &["σ_w²", "published", "χ₁ theory", "mean-field fit", "measured fit", "ξ_∇"],
        &rows,
        cells,
        notes,
    )
}

/// `nielsen`: per-hidden-layer ‖∂C/∂b^l‖ of [784, 30, 30, 30, 10].
#[derive(Debug, Clone, Serialize)]
pub struct NielsenRow {
    pub layer: usize,
    pub published: f64,
    /// ‖∂C/∂b^l‖ = 10^log10_grad_b_mean, mean (and sd) over seeds.
    pub grad_b_mean: f64,
    pub grad_b_mean_sd: Option<f64>,
    /// 10^log10_grad_b_rms, mean over seeds.
    pub grad_b_rms: f64,
    /// The mean-field prediction of grad_b_rms (seed 1's data).
    pub grad_b_rms_predicted: f64,
}

/// MNIST-like synthetic inputs: each pixel is 0 with probability 0.74 and U[0, 1)
/// otherwise (mean 0.13 and mean square 0.087, near MNIST's 0.13 and 0.11), labels uniform
/// on 0..9, one-hot targets. Drawn from the Philox stream of `seed`.
pub fn synthetic_mnist(seed: u64, batch: usize) -> (Array2<f64>, Array2<f64>) {
    let s = Stream::new(seed ^ 0x006d_6e69_7374);
    let mut x = Array2::<f64>::zeros((batch, 784));
    let mut y = Array2::<f64>::zeros((batch, 10));
    let mut on = vec![0.0; 784];
    let mut val = vec![0.0; 784];
    for b in 0..batch {
        s.fill_uniform(Purpose::Input, 0, b as u32, &mut on);
        s.fill_uniform(Purpose::Input, 1, b as u32, &mut val);
        for j in 0..784 {
            x[(b, j)] = if on[j] < 0.26 { val[j] } else { 0.0 };
        }
        let label = ((s.uniform(Purpose::Target, 0, b as u32, 0) * 10.0) as usize).min(9);
        y[(b, label)] = 1.0;
    }
    (x, y)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the first `count` examples of MNIST IDX files (uncompressed): pixels / 255 as
/// B × (rows·cols) inputs, labels as B × 10 one-hot targets.
///
/// # Errors
/// An unreadable file, a wrong magic number, a truncated file, mismatched counts or a
/// label outside 0..9.
pub fn read_mnist_idx(images: &Path, labels: &Path, count: usize) -> Result<(Array2<f64>, Array2<f64>)> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::file(p, format!("cannot read: {e}")));
    let (im, lb) = (read(images)?, read(labels)?);
    if im.len() >= 2 && im[0] == 0x1f && im[1] == 0x8b {
        return Err(Error::file(images, "is gzip-compressed; gunzip it first"));
    }
    if lb.len() >= 2 && lb[0] == 0x1f && lb[1] == 0x8b {
        return Err(Error::file(labels, "is gzip-compressed; gunzip it first"));
    }
    if im.len() < 16 || be_u32(&im, 0) != 0x0803 {
        return Err(Error::file(images, "not an IDX image file (magic 0x00000803 expected)"));
    }
    if lb.len() < 8 || be_u32(&lb, 0) != 0x0801 {
        return Err(Error::file(labels, "not an IDX label file (magic 0x00000801 expected)"));
    }
    let (n, rows, cols) = (be_u32(&im, 4) as usize, be_u32(&im, 8) as usize, be_u32(&im, 12) as usize);
    let nl = be_u32(&lb, 4) as usize;
    if n != nl {
        return Err(Error::file(labels, format!("{nl} labels for {n} images")));
    }
    let px = rows * cols;
    if im.len() < 16 + n * px {
        return Err(Error::file(images, format!("truncated: {} bytes for {n} images of {rows}×{cols}", im.len())));
    }
    if lb.len() < 8 + n {
        return Err(Error::file(labels, format!("truncated: {} bytes for {n} labels", lb.len())));
    }
    let b = count.min(n);
    if b == 0 {
        return Err(Error::file(images, "holds no images"));
    }
    let x = Array2::from_shape_fn((b, px), |(i, j)| im[16 + i * px + j] as f64 / 255.0);
    let mut y = Array2::<f64>::zeros((b, 10));
    for i in 0..b {
        let l = lb[8 + i] as usize;
        if l > 9 {
            return Err(Error::file(labels, format!("label {l} of example {i} is outside 0..9")));
        }
        y[(i, l)] = 1.0;
    }
    Ok((x, y))
}

fn nielsen_table(opt: &ReproduceOptions) -> Result<Reproduction> {
    let batch = opt.batch.unwrap_or(1000);
    let widths = vec![784, 30, 30, 30, 10];
    let (x, y, source) = match &opt.data {
        NielsenData::Synthetic => {
            let (x, y) = synthetic_mnist(0, batch);
            (x, y, format!("SYNTHETIC MNIST-like inputs (no data given): {batch} examples, pixels 0 w.p. 0.74 else U[0,1), random one-hot labels"))
        }
        NielsenData::Npy { inputs, targets } => {
            let x = crate::model::files::read_matrix(inputs, "inputs")?;
            let y = crate::model::files::read_matrix(targets, "targets")?;
            let b = batch.min(x.nrows());
            (x.slice(ndarray::s![..b, ..]).to_owned(), y.slice(ndarray::s![..b.min(y.nrows()), ..]).to_owned(), format!("{} and {} (first {b} rows)", inputs.display(), targets.display()))
        }
        NielsenData::Idx { images, labels } => {
            let (x, y) = read_mnist_idx(images, labels, batch)?;
            let b = x.nrows();
            (x, y, format!("{} with {} (first {b} examples, pixels/255, one-hot labels)", images.display(), labels.display()))
        }
    };
    let init = Init::new(InitKind::Nielsen, None, None)?;
    let mut means = vec![Vec::new(); 3];
    let mut rmss = vec![Vec::new(); 3];
    let mut predicted = [f64::NAN; 3];
    for seed in 1..=opt.seeds {
        let net = Network::new(widths.clone(), Activation::Sigmoid, false, Cost::CrossEntropy, Params::Generated { init, seed })?;
        let p = Problem::new(net, x.clone(), y.clone())?;
        let r = CpuBackend::default().probe(&p)?;
        for l in 1..=3 {
            means[l - 1].push(10f64.powf(r.layers[l - 1].log10_grad_b_mean));
            rmss[l - 1].push(10f64.powf(r.layers[l - 1].log10_grad_b_rms));
        }
        if seed == 1 {
            let pr = predict(&p)?;
            for l in 1..=3 {
                predicted[l - 1] = 10f64.powf(pr.log10_grad_b_rms[l - 1]);
            }
        }
    }
    let rows: Vec<NielsenRow> = (1..=3)
        .map(|l| {
            let (m, sd) = mean_sd(&means[l - 1]);
            NielsenRow {
                layer: l,
                published: NIELSEN_PUBLISHED[l - 1],
                grad_b_mean: m,
                grad_b_mean_sd: sd.is_finite().then_some(sd),
                grad_b_rms: mean_sd(&rmss[l - 1]).0,
                grad_b_rms_predicted: predicted[l - 1],
            }
        })
        .collect();
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                r.layer.to_string(),
                format!("{:.6}", r.published),
                pm(r.grad_b_mean, r.grad_b_mean_sd.unwrap_or(f64::NAN), 4),
                format!("{:.4}", r.grad_b_rms),
                format!("{:.4}", r.grad_b_rms_predicted),
            ]
        })
        .collect();
    let mf = MeanField::new(Activation::Sigmoid, 1.0, 1.0)?;
    let notes = vec![
        format!("data: {source}"),
        format!(
            "network: widths 784,30,30,30,10, sigmoid, nielsen init (W ~ N(0, 1/n_in), b ~ N(0, 1)), cross-entropy; {} seed(s)",
            opt.seeds
        ),
        format!(
            "published: {NIELSEN_SOURCE}: one random initialisation on the first 1000 MNIST training images; a different \
             seed moves each value by tens of percent"
        ),
        format!(
            "mean field (σ_w² = 1, σ_b² = 1, wide limit): χ₁ = {:.4}, so each layer down multiplies ‖δ‖ by about √χ₁ = {:.3}",
            mf.chi1(),
            mf.chi1().sqrt()
        ),
        "‖∂C/∂b‖ is the norm of the batch-mean gradient (what SGD sees); grad_b_rms is the rms over examples, which \
         mean-field theory predicts"
            .into(),
    ];
    reproduction(
        "nielsen",
        "nielsen: ‖∂C/∂b^l‖ per hidden layer of [784, 30, 30, 30, 10] (Nielsen, ch. 5)".into(),
        &["layer", "published", "measured ‖∂C/∂b‖", "measured rms", "mean-field rms"],
        &rows,
        cells,
        notes,
    )
}

/// `he-vs-xavier`: relu at σ_w² = 1 and 2.
#[derive(Debug, Clone, Serialize)]
pub struct HeVsXavierRow {
    pub init: String,
    pub sigma_w2: f64,
    pub published: String,
    pub chi1: f64,
    /// Fitted per-layer factor of E‖δ‖² with targets y ~ N(0, 1).
    pub chi_measured: f64,
    /// The same with y ~ N(0, 30²), so that δ^L ≈ −Σ′(z^L) y hardly depends on the weights
    /// (the mean-field independence assumption then holds).
    pub chi_measured_decoupled: f64,
    /// log10 (grad_b_rms¹ / grad_b_rms^L), theory (χ₁^{(L−1)/2}) and measured.
    pub log10_first_over_last_theory: f64,
    pub log10_first_over_last_measured: f64,
    /// log10 q^L/q¹ in theory: (σ_w²/2)^{L−1}.
    pub log10_q_last_over_first: f64,
}

fn he_vs_xavier_table(opt: &ReproduceOptions) -> Result<Reproduction> {
    let (width, depth, batch) = (opt.width.unwrap_or(500), opt.depth.unwrap_or(30), opt.batch.unwrap_or(16));
    let mut rows = Vec::new();
    for (kind, w, published) in [
        (InitKind::XavierNormal, 1.0, "Var = 2/(n_in+n_out), σ_w² = 1 at equal widths (Glorot & Bengio 2010)"),
        (InitKind::He, 2.0, "½ n_in Var W = 1, σ_w² = 2 (He et al. 2015, eq. 10)"),
    ] {
        let chi1 = MeanField::new(Activation::Relu, w, 0.0)?.chi1();
        let (mut fits, mut spans, mut fits_d) = (Vec::new(), Vec::new(), Vec::new());
        for seed in 1..=opt.seeds {
            let (_, r) = probe_gaussian(Activation::Relu, kind, None, 0.0, vec![width; depth + 1], batch, seed)?;
            fits.push(fitted_log10_ratio(&r, 1, depth - 1).map(|v| 10f64.powf(2.0 * v)).unwrap_or(f64::NAN));
            spans.push(r.layers[0].log10_grad_b_rms - r.layers[depth - 1].log10_grad_b_rms);
            let (_, r) = probe_scaled_targets(Activation::Relu, kind, None, 0.0, vec![width; depth + 1], batch, seed, 30.0)?;
            fits_d.push(fitted_log10_ratio(&r, 1, depth - 1).map(|v| 10f64.powf(2.0 * v)).unwrap_or(f64::NAN));
        }
        rows.push(HeVsXavierRow {
            init: kind.to_string(),
            sigma_w2: w,
            published: published.into(),
            chi1,
            chi_measured: mean_sd(&fits).0,
            chi_measured_decoupled: mean_sd(&fits_d).0,
            log10_first_over_last_theory: 0.5 * (depth - 1) as f64 * chi1.log10(),
            log10_first_over_last_measured: mean_sd(&spans).0,
            log10_q_last_over_first: (depth - 1) as f64 * (w / 2.0f64).log10(),
        });
    }
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                r.init.clone(),
                format!("{}", r.sigma_w2),
                format!("{:.4}", r.chi1),
                format!("{:.4}", r.chi_measured),
                format!("{:.4}", r.chi_measured_decoupled),
                sci(r.log10_first_over_last_theory),
                sci(r.log10_first_over_last_measured),
                sci(r.log10_q_last_over_first),
            ]
        })
        .collect();
    let notes = vec![
        format!("published rules: {}; {}", rows[0].published, rows[1].published),
        format!(
            "measured: CPU probe, relu (output too), σ_b² = 0, widths all {width}, depth {depth}, batch {batch}, gaussian inputs \
             and targets, {} seed(s); fit over layers 1..{}",
            opt.seeds,
            depth - 1
        ),
        format!(
            "relu halves E‖δ‖² per layer at σ_w² = 1 (χ₁ = σ_w²/2): over {} steps ‖δ¹‖/‖δ^L‖ ≈ 2^-{:.1} and q^L/q¹ = 2^-{}; \
             at σ_w² = 2 both stay O(1)",
            depth - 1,
            0.5 * (depth - 1) as f64,
            depth - 1
        ),
        "at σ_w² = 2 the measured ‖δ¹‖/‖δᴸ‖ still grows like √(L − l + 1), not exponentially: δ^L = Σ′(a^L − y) contains a^L, \
         which depends on the same weights the backward pass uses, so each layer adds a coherent part that the mean-field \
         independence assumption drops; with targets that dominate a^L (y ~ N(0, 30²)) the fitted factor returns to χ₁ \
         (docs/THEORY.md, 'Where measurement departs')"
            .into(),
    ];
    reproduction(
        "he-vs-xavier",
        format!("he-vs-xavier: relu, depth {depth}: the 2^-L collapse at σ_w² = 1 against stability at σ_w² = 2"),
        &["init", "σ_w²", "χ₁ theory", "χ₁ measured", "y ~ N(0,30²)", "‖δ¹‖/‖δᴸ‖ theory", "measured", "qᴸ/q¹ theory"],
        &rows,
        cells,
        notes,
    )
}

/// `hanin`'s default seeds, widths and depths (every depth of a width comes from one
/// network per seed: the prefixes of the deepest).
pub const HANIN_SEEDS: u64 = 300;
pub const HANIN_WIDTHS: [usize; 4] = [10, 30, 100, 200];
pub const HANIN_DEPTHS: [usize; 4] = [10, 30, 100, 200];
/// y ~ N(0, s²) with s = 10³: δ^L = Σ′(z^L)(a^L − y) ≈ −Σ′(z^L) y, independent of the weights
/// but for the mask, as the model needs (a^L is O(1) at He init).
pub const HANIN_TARGET_SCALE: f64 = 1e3;
/// Bootstrap resamples for the sampling errors.
pub const HANIN_RESAMPLES: usize = 200;

/// `hanin`: the spread of ‖δ¹‖ over seeds for relu with He init, one example per seed.
#[derive(Debug, Clone, Serialize)]
pub struct HaninRow {
    pub width: usize,
    pub depth: usize,
    pub seeds: usize,
    /// Seeds whose ‖δ¹‖ is exactly 0 (a layer with no active unit).
    pub seeds_zero: usize,
    /// Π_{l=1..L} (1 + 5/n_l).
    pub moment_ratio_predicted: f64,
    /// E‖δ¹‖⁴/(E‖δ¹‖²)² over the seeds, with its bootstrap error.
    pub moment_ratio_measured: Estimate,
    /// False where the prediction exceeds seeds/10: a sample ratio can never exceed the
    /// number of seeds, and near it the fourth moment is carried by a few seeds.
    pub moment_ratio_testable: bool,
    /// ¼ Σ_l Var[ln X_l | K_l ≥ 1], exact for independent layer factors.
    pub var_ln_norm_predicted: f64,
    /// (5/4) Σ_l 1/n_l, Hanin & Nica's leading order.
    pub var_ln_norm_asymptotic: f64,
    /// Sample variance of ln ‖δ¹‖ over the seeds with ‖δ¹‖ > 0, with its bootstrap error.
    pub var_ln_norm_measured: Estimate,
    /// The fraction of seeds the model expects alive: Π_l (1 − 2^−n_l).
    pub alive_predicted: f64,
}

fn hanin_table(opt: &ReproduceOptions) -> Result<Reproduction> {
    let widths: Vec<usize> = opt.width.map_or(HANIN_WIDTHS.to_vec(), |w| vec![w]);
    let depths: Vec<usize> = opt.depth.map_or(HANIN_DEPTHS.to_vec(), |d| vec![d]);
    if opt.batch.is_some_and(|b| b != 1) {
        return Err(Error::arg("--batch", "hanin measures one example per seed (the per-input law); leave --batch out"));
    }
    let dmax = *depths.iter().max().unwrap();
    let cpu = CpuBackend::default();
    let init = Init::new(InitKind::He, None, Some(0.0))?;
    let mut rows = Vec::new();
    for &n in &widths {
        // log10 ‖δ¹‖ per seed, per depth; seeds are independent, so they are shared out
        // over the cores and put back in seed order.
        let one = |seed: u64| -> Result<Vec<f64>> {
            let net = Network::new(vec![n; dmax + 1], Activation::Relu, false, Cost::Quadratic, Params::Generated { init, seed })?;
            let x = InputSpec::Gaussian.materialise(seed, 1, n)?;
            let y = TargetSpec::Gaussian.materialise(seed, 1, n)?.mapv(|v| v * HANIN_TARGET_SCALE);
            let p = Problem::new(net, x, y)?;
            Ok(cpu.probe_depths(&p, &depths)?.iter().map(|r| r.layers[0].log10_grad_b_rms).collect())
        };
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(opt.seeds as usize).max(1) as u64;
        let per_seed: Vec<Vec<f64>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let one = &one;
                    sc.spawn(move || (1..=opt.seeds).filter(|s| s % threads == t).map(|s| one(s).map(|v| (s, v))).collect::<Result<Vec<_>>>())
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.join().map_err(|_| Error::Internal("a hanin worker thread panicked".into()))??);
            }
            all.sort_by_key(|(s, _)| *s);
            Ok::<_, Error>(all.into_iter().map(|(_, v)| v).collect())
        })?;
        let g: Vec<Vec<f64>> = (0..depths.len()).map(|k| per_seed.iter().map(|v| v[k]).collect()).collect();
        for (k, &d) in depths.iter().enumerate() {
            let w = vec![n; d];
            let alive: Vec<f64> = g[k].iter().copied().filter(|v| v.is_finite()).collect();
            let top = alive.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // ‖δ¹‖² relative to the largest, so that no seed overflows; zeros stay zeros.
            let sq: Vec<f64> = g[k].iter().map(|v| if v.is_finite() { 10f64.powf(2.0 * (v - top)) } else { 0.0 }).collect();
            let ln: Vec<f64> = alive.iter().map(|v| v * std::f64::consts::LN_10).collect();
            let predicted = relu_he_moment_ratio(&w);
            rows.push(HaninRow {
                width: n,
                depth: d,
                seeds: g[k].len(),
                seeds_zero: g[k].len() - alive.len(),
                moment_ratio_predicted: predicted,
                moment_ratio_measured: bootstrap(&sq, HANIN_RESAMPLES, moment_ratio),
                moment_ratio_testable: predicted <= opt.seeds as f64 / 10.0,
                var_ln_norm_predicted: relu_he_var_ln_norm(&w),
                var_ln_norm_asymptotic: relu_he_var_ln_norm_asymptotic(&w),
                var_ln_norm_measured: bootstrap(&ln, HANIN_RESAMPLES, sample_variance),
                alive_predicted: relu_he_alive(&w),
            });
        }
    }
    let est = |e: &Estimate, digits: usize| pm(e.value, e.error, digits);
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                r.width.to_string(),
                r.depth.to_string(),
                format!("{}/{}", r.seeds - r.seeds_zero, r.seeds),
                if r.moment_ratio_predicted < 1e4 { format!("{:.3}", r.moment_ratio_predicted) } else { format!("{:.2e}", r.moment_ratio_predicted) },
                if r.moment_ratio_testable { est(&r.moment_ratio_measured, 3) } else { format!("({:.3}: untestable)", r.moment_ratio_measured.value) },
                format!("{:.4}", r.var_ln_norm_predicted),
                format!("{:.4}", r.var_ln_norm_asymptotic),
                est(&r.var_ln_norm_measured, 4),
            ]
        })
        .collect();
    let notes = vec![
        format!(
            "measured: CPU probe, relu (output too), He init (σ_w² = 2, σ_b² = 0), widths all n, batch 1 (one gaussian input \
             per seed), targets y ~ N(0, {HANIN_TARGET_SCALE:e}²) so that δ^L ≈ −Σ′(z^L) y; seeds 1..{}; every depth of a \
             width is a prefix of one network per seed; errors: sd over {HANIN_RESAMPLES} bootstrap resamples of the seeds",
            opt.seeds
        ),
        "moment ratio: E‖δ¹‖⁴/(E‖δ¹‖²)² = Π_{l=1..L}(1 + 5/n_l) over every relu mask δ¹ passes through, hidden layers and \
         output (Hanin 2018, Theorem 1, has j = 1..d−1 for a linear output layer; here the output mask acts on y); n₀ does \
         not enter"
            .into(),
        "Var ln ‖δ¹‖: ¼ Σ_l Var ln((2/n_l) χ²_K), K ~ Binomial(n_l, ½), K ≥ 1 (ψ′ and ψ summed over K), and Hanin & Nica \
         2019's leading order (5/4) Σ_l 1/n_l (their Var ln ‖Ju‖² ≈ 5 Σ 1/n_j); over the seeds with ‖δ¹‖ > 0"
            .into(),
        format!(
            "a sample's moment ratio never exceeds its number of seeds ({}), and near it the fourth moment rests on a few \
             seeds: rows with a prediction above seeds/10 are shown in parentheses, not tested; more seeds: --seeds",
            opt.seeds
        ),
        "the model treats the layer factors as independent (exact for the forward Jacobian applied to a fixed vector, \
         by the sign symmetry of relu with symmetric weights); δ¹ is the transposed product applied to y, where that holds \
         to leading order in 1/n"
            .into(),
    ];
    reproduction(
        "hanin",
        "hanin: relu, He init: fluctuations of ‖δ¹‖ over seeds at finite width (Hanin 2018; Hanin & Nica 2019)".into(),
        &["n", "L", "seeds ‖δ¹‖>0", "Π(1+5/n) theory", "E‖δ¹‖⁴/(E‖δ¹‖²)² measured", "Var ln‖δ¹‖ theory", "(5/4)Σ1/n", "measured"],
        &rows,
        cells,
        notes,
    )
}
