//! The `gradscope theory` and `gradscope reproduce` subcommands: flags and what they run.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Activation;
use crate::stats::finite_or_null;

use super::meanfield::{Critical, FixedPointKind, MeanField, critical_sigma_w2, q_sequence};
use super::reproduce::{NielsenData, REPRODUCTIONS, ReproduceOptions, default_seeds, reproduce};

/// Text for people, JSON for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

/// `gradscope theory`: mean-field quantities for one activation and (σ_w², σ_b²).
#[derive(Debug, Clone, Args)]
pub struct TheoryArgs {
    /// Activation: sigmoid, tanh, relu, leaky-relu[:α], linear, erf, hard-tanh, softplus,
    /// silu, gelu, elu, selu.
    #[arg(long, short = 'a', default_value = "tanh")]
    pub activation: String,
    /// Weight variance σ_w² (W_ij ~ N(0, σ_w²/n_in)); default 1, or the critical value with
    /// --critical.
    #[arg(long = "sigma-w2", conflicts_with = "sigma_w")]
    pub sigma_w2: Option<f64>,
    /// Weight scale σ_w (instead of --sigma-w2).
    #[arg(long = "sigma-w")]
    pub sigma_w: Option<f64>,
    /// Bias variance σ_b² (default 0).
    #[arg(long = "sigma-b2", conflicts_with = "sigma_b")]
    pub sigma_b2: Option<f64>,
    /// Bias scale σ_b (instead of --sigma-b2).
    #[arg(long = "sigma-b")]
    pub sigma_b: Option<f64>,
    /// Also find the critical σ_w² (χ₁ = 1) for this σ_b².
    #[arg(long)]
    pub critical: bool,
    /// ‖x‖²/n₀ of the inputs, which sets q¹ = σ_w² ‖x‖²/n₀ + σ_b² (1 for N(0,1) or ±1 inputs).
    #[arg(long = "input-norm2", default_value_t = 1.0)]
    pub input_norm2: f64,
    /// Number of layers of the q^l sequence to print.
    #[arg(long, default_value_t = 10)]
    pub depth: usize,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
}

/// `gradscope reproduce NAME`: a published result beside theory and measurement.
#[derive(Debug, Clone, Args)]
pub struct ReproduceArgs {
    /// critical-line, decay-rate, nielsen, he-vs-xavier, hanin, nielsen-training or isometry.
    pub name: String,
    /// Number of seeds to measure (1..=N) and average [default: decay-rate 6, hanin 300, the others 1].
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Override the reproduction's depth (L); not nielsen (nielsen-training: the deep case).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Override the reproduction's width; not nielsen or nielsen-training (width 30).
    #[arg(long)]
    pub width: Option<usize>,
    /// Override the reproduction's batch size (nielsen: number of examples used).
    #[arg(long)]
    pub batch: Option<usize>,
    /// nielsen: inputs as a B × 784 .npy file (with --targets).
    #[arg(long, requires = "targets", conflicts_with_all = ["images", "labels"])]
    pub inputs: Option<PathBuf>,
    /// nielsen: targets as a B × 10 .npy file (with --inputs).
    #[arg(long, requires = "inputs")]
    pub targets: Option<PathBuf>,
    /// nielsen: an uncompressed MNIST IDX image file (with --labels).
    #[arg(long, requires = "labels")]
    pub images: Option<PathBuf>,
    /// nielsen: an uncompressed MNIST IDX label file (with --images).
    #[arg(long, requires = "images")]
    pub labels: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    pub format: TextOrJson,
    /// isometry: also draw the figure (spread of log10 s against depth) to FILE.svg/.png.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// What `gradscope theory --format json` prints: exactly these keys (null where a quantity
/// is undefined or infinite; the reason goes to stderr).
#[derive(Debug, Clone, Serialize)]
pub struct TheoryOutput {
    #[serde(serialize_with = "finite_or_null")]
    pub q_star: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub chi1: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub c_star: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub xi_q: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub xi_c: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub xi_grad: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub critical_sigma_w2: f64,
    #[serde(serialize_with = "seq_or_null")]
    pub q_sequence: Vec<f64>,
}

fn seq_or_null<S: serde::Serializer>(v: &[f64], s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&x.is_finite().then_some(*x))?;
    }
    seq.end()
}

fn variance(v2: Option<f64>, v: Option<f64>, flag: &str) -> Result<Option<f64>> {
    match (v2, v) {
        (Some(x), _) => Ok(Some(x)),
        (None, Some(s)) => {
            if !s.is_finite() {
                return Err(Error::arg(flag, format!("must be finite, got {s}")));
            }
            Ok(Some(s * s))
        }
        (None, None) => Ok(None),
    }
}

/// Computes everything `gradscope theory` prints; `notes` explain nulls and special cases.
///
/// # Errors
/// Bad parameters, an activation name that does not parse, a length map without a finite
/// fixed point, or `--critical` without σ_w² when there is no critical point.
pub fn theory(a: &TheoryArgs) -> Result<(TheoryOutput, Vec<String>, MeanField)> {
    let act: Activation = a.activation.parse()?;
    let sb2 = variance(a.sigma_b2, a.sigma_b, "--sigma-b")?.unwrap_or(0.0);
    let mut notes = Vec::new();
    if !(sb2.is_finite() && sb2 >= 0.0) {
        return Err(Error::arg("--sigma-b2", format!("σ_b² must be finite and ≥ 0, got {sb2}")));
    }
    let crit = if a.critical { Some(critical_sigma_w2(act, sb2)?) } else { None };
    let sw2 = match (variance(a.sigma_w2, a.sigma_w, "--sigma-w")?, &crit) {
        (Some(w), _) => w,
        (None, Some(Critical::At(w))) => {
            notes.push(format!("evaluated at the critical σ_w² = {w}"));
            *w
        }
        (None, Some(Critical::None(why))) => {
            return Err(Error::Numerical(format!("no critical σ_w² to evaluate at: {why}")));
        }
        (None, None) => 1.0,
    };
    if !(sw2.is_finite() && sw2 > 0.0) {
        return Err(Error::arg("--sigma-w2", format!("σ_w² must be finite and > 0, got {sw2}")));
    }
    if !(a.input_norm2.is_finite() && a.input_norm2 >= 0.0) {
        return Err(Error::arg("--input-norm2", format!("must be finite and ≥ 0, got {}", a.input_norm2)));
    }
    let q1 = sw2 * a.input_norm2 + sb2;
    let mf = MeanField::from_q1(act, sw2, sb2, q1)?;
    match mf.kind() {
        FixedPointKind::Zero => notes.push("q* = 0: the forward signal dies out (σ_b² = 0, σ(0) = 0); χ₁ is the q → 0 limit".into()),
        FixedPointKind::Neutral => notes.push("every q is a fixed point (homogeneous σ, σ_b² = 0, σ_w² E[σ(z)²] = 1): q* is q¹".into()),
        FixedPointKind::Positive => {}
    }
    let (c_star, xi_c) = match (mf.c_star(), mf.xi_c()) {
        (Ok(c), Ok(x)) => (c, x),
        (Err(e), _) | (_, Err(e)) => {
            notes.push(format!("c_star, xi_c: {e}"));
            (f64::NAN, f64::NAN)
        }
    };
    let critical_sigma_w2 = match &crit {
        Some(Critical::At(w)) => *w,
        Some(Critical::None(why)) => {
            notes.push(format!("critical_sigma_w2: none — {why}"));
            f64::NAN
        }
        None => f64::NAN,
    };
    if a.critical && act.is_homogeneous() && sb2 > 0.0 {
        notes.push(format!(
            "for {act} χ₁ = σ_w² E[σ′(z)²] does not depend on q; with σ_b² > 0 the critical σ_w² is also where q^l starts to diverge"
        ));
    }
    for (name, v) in [("xi_q", mf.xi_q()), ("xi_grad", mf.xi_grad()), ("xi_c", xi_c)] {
        if v.is_infinite() {
            notes.push(format!("{name} = ∞ (the map is marginal: exactly at criticality)"));
        }
    }
    let q_sequence = q_sequence(act, sw2, sb2, a.input_norm2, a.depth)?;
    let out = TheoryOutput { q_star: mf.q_star(), chi1: mf.chi1(), c_star, xi_q: mf.xi_q(), xi_c, xi_grad: mf.xi_grad(), critical_sigma_w2, q_sequence };
    Ok((out, notes, mf))
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "undefined".into()
    } else if v.is_infinite() {
        if v > 0.0 { "∞".into() } else { "-∞".into() }
    } else {
        format!("{v:.10}")
    }
}

/// Runs `gradscope theory`.
///
/// # Errors
/// As [`theory`].
pub fn run_theory(a: &TheoryArgs) -> Result<()> {
    let (out, notes, mf) = theory(a)?;
    match a.format {
        TextOrJson::Json => {
            println!("{}", serde_json::to_string_pretty(&out).map_err(|e| Error::Internal(e.to_string()))?);
            for n in &notes {
                eprintln!("note: {n}");
            }
        }
        TextOrJson::Text => {
            println!("{} with σ_w² = {}, σ_b² = {} (mean field, wide limit)", mf.activation, mf.sigma_w2, mf.sigma_b2);
            println!("  q_star             {}   fixed point of q ↦ σ_w² E[σ(√q z)²] + σ_b²", num(out.q_star));
            println!("  chi1               {}   σ_w² E[σ′(√q* z)²]: per-layer factor of E‖δ‖²", num(out.chi1));
            println!("  c_star             {}   stable fixed point of the correlation map", num(out.c_star));
            println!("  xi_q               {}   −1/ln V′(q*)", num(out.xi_q));
            println!("  xi_c               {}   −1/ln C′(c*)", num(out.xi_c));
            println!("  xi_grad            {}   −1/ln χ₁ (negative: gradients grow towards the input)", num(out.xi_grad));
            if a.critical {
                println!("  critical_sigma_w2  {}   χ₁ = 1 at σ_b² = {}", num(out.critical_sigma_w2), mf.sigma_b2);
            }
            let m = super::meanfield::MARGINAL;
            let phase = if out.chi1 < 1.0 - m { "ordered (vanishing)" } else if out.chi1 > 1.0 + m { "chaotic (exploding)" } else { "critical" };
            println!("  phase              {phase}");
            let seq: Vec<String> = out.q_sequence.iter().map(|q| format!("{q:.6}")).collect();
            println!("  q_sequence         {} (q¹ from ‖x‖²/n₀ = {})", seq.join(" "), a.input_norm2);
            for n in &notes {
                println!("note: {n}");
            }
        }
    }
    Ok(())
}

/// Turns the flags into [`ReproduceOptions`].
///
/// # Errors
/// Zero seeds, depth < 3, width or batch 0, or an unknown name.
pub fn reproduce_options(a: &ReproduceArgs) -> Result<ReproduceOptions> {
    if !REPRODUCTIONS.contains(&a.name.as_str()) {
        return Err(Error::arg("NAME", format!("unknown reproduction '{}' (expected one of: {})", a.name, REPRODUCTIONS.join(", "))));
    }
    let seeds = a.seeds.unwrap_or_else(|| default_seeds(&a.name));
    if seeds == 0 {
        return Err(Error::arg("--seeds", "must be ≥ 1"));
    }
    if a.depth.is_some_and(|d| d < 3) {
        return Err(Error::arg("--depth", "must be ≥ 3 (a slope needs two steps below the output layer)"));
    }
    if a.width == Some(0) {
        return Err(Error::arg("--width", "must be ≥ 1"));
    }
    // Nielsen's networks are fixed by his protocol (hidden width 30, and for nielsen 784,30,30,30,10;
    // nielsen-training runs seed 1 only): refuse what they would silently ignore.
    let nielsen = a.name == "nielsen" || a.name == "nielsen-training";
    if nielsen && a.width.is_some() {
        return Err(Error::arg("--width", format!("{} uses Nielsen's hidden width 30 (his protocol); leave --width out", a.name)));
    }
    if a.name == "nielsen" && a.depth.is_some() {
        return Err(Error::arg("--depth", "nielsen uses Nielsen's network 784,30,30,30,10; leave --depth out (nielsen-training takes --depth for its deep case)"));
    }
    if a.name == "nielsen-training" && a.seeds.is_some_and(|s| s != 1) {
        return Err(Error::arg("--seeds", "nielsen-training runs one initialisation (seed 1)"));
    }
    if a.batch == Some(0) {
        return Err(Error::arg("--batch", "must be ≥ 1"));
    }
    let data = match (&a.inputs, &a.targets, &a.images, &a.labels) {
        (Some(i), Some(t), _, _) => NielsenData::Npy { inputs: i.clone(), targets: t.clone() },
        (_, _, Some(i), Some(l)) => NielsenData::Idx { images: i.clone(), labels: l.clone() },
        _ => NielsenData::Synthetic,
    };
    if data != NielsenData::Synthetic && a.name != "nielsen" && a.name != "nielsen-training" {
        return Err(Error::arg("--inputs/--images", "only the nielsen reproduction takes data"));
    }
    if let Some(p) = &a.plot {
        if a.name != "isometry" {
            return Err(Error::arg("--plot", "only the isometry reproduction draws a figure"));
        }
        crate::plot::Format::from_path(p)?;
        crate::export::check_writable(p, "--plot")?;
    }
    Ok(ReproduceOptions { seeds, depth: a.depth, width: a.width, batch: a.batch, data, plot: a.plot.clone() })
}

/// Runs `gradscope reproduce NAME`.
///
/// # Errors
/// As [`reproduce_options`] and [`reproduce`].
pub fn run_reproduce(a: &ReproduceArgs) -> Result<()> {
    let opt = reproduce_options(a)?;
    let r = reproduce(&a.name, &opt)?;
    match a.format {
        TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&r).map_err(|e| Error::Internal(e.to_string()))?),
        TextOrJson::Text => print!("{r}"),
    }
    Ok(())
}
