//! `gradscope sweep`: a grid of configurations × depths, run with the prefix-shared engine,
//! written as it finishes, resumable, shardable.
//!
//! The unit of work is a *group*: one configuration (activation, init, σ_w², σ_b², width,
//! seed) with every requested depth. A group runs as one forward pass to the deepest depth
//! and one stacked backward pass for all depths ([`Engine::probe_depths`], on the CPU or the
//! GPU as `--backend` says), so a sweep of 200 depths costs about as much as two or three
//! probes of the deepest one, not 200.

pub mod grid;
pub mod spectrum;
pub mod store;

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendChoice, Engine};
use crate::error::{Error, Result};
use crate::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem, TargetSpec};
use crate::stats::{LayerStatus, Report};

/// A sweep as written in `--config sweep.toml`: the keys are the flags' names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SweepFile {
    pub activations: Option<Vec<String>>,
    pub inits: Option<Vec<String>>,
    pub sigma_w: Option<Vec<f64>>,
    pub sigma_w2: Option<Vec<f64>>,
    pub sigma_b: Option<Vec<f64>>,
    pub sigma_b2: Option<Vec<f64>>,
    pub widths: Option<Vec<usize>>,
    pub batch: Option<usize>,
    pub seeds: Option<Vec<u64>>,
    pub cost: Option<String>,
    pub backend: Option<String>,
    pub out: Option<PathBuf>,
    pub depths: Option<String>,
    pub inputs: Option<String>,
    pub targets: Option<String>,
    /// `--spectrum [K]`: the spectrum of J_x at every depth, over the first K examples.
    pub spectrum: Option<usize>,
}

impl SweepFile {
    /// Reads a TOML file; unknown keys are refused.
    pub fn read(path: &std::path::Path) -> Result<SweepFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        toml::from_str(&text).map_err(|e| Error::file(path, e.message().replace('\n', " ")))
    }

    /// Fills every key the flags did not set from `other` (the flags win).
    pub fn or(self, other: SweepFile) -> SweepFile {
        SweepFile {
            activations: self.activations.or(other.activations),
            inits: self.inits.or(other.inits),
            sigma_w: self.sigma_w.or(other.sigma_w),
            sigma_w2: self.sigma_w2.or(other.sigma_w2),
            sigma_b: self.sigma_b.or(other.sigma_b),
            sigma_b2: self.sigma_b2.or(other.sigma_b2),
            widths: self.widths.or(other.widths),
            batch: self.batch.or(other.batch),
            seeds: self.seeds.or(other.seeds),
            cost: self.cost.or(other.cost),
            backend: self.backend.or(other.backend),
            out: self.out.or(other.out),
            depths: self.depths.or(other.depths),
            inputs: self.inputs.or(other.inputs),
            targets: self.targets.or(other.targets),
            spectrum: self.spectrum.or(other.spectrum),
        }
    }
}

/// The validated sweep: written to `meta.json` and compared on resume and merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPlan {
    pub activations: Vec<String>,
    pub inits: Vec<String>,
    /// "sigma_w" or "sigma_w2": which the user gave (both are recorded per point).
    pub sigma_w_given_as: String,
    pub sigma_w2: Vec<f64>,
    pub sigma_b_given_as: String,
    pub sigma_b2: Vec<f64>,
    pub widths: Vec<usize>,
    pub batch: usize,
    pub seeds: Vec<u64>,
    pub cost: Cost,
    pub backend: String,
    pub depths_spec: String,
    pub depths: Vec<usize>,
    pub inputs: String,
    pub targets: String,
    /// With `--spectrum K`: the summary of J_x's singular values at every depth, averaged
    /// over the first K examples of the batch. Absent from a sweep without it, so its
    /// `meta.json` reads as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectrum: Option<usize>,
}

/// One configuration with all its depths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub index: usize,
    pub activation: String,
    pub init: String,
    pub sigma_w: f64,
    pub sigma_w2: f64,
    pub sigma_b: f64,
    pub sigma_b2: f64,
    pub width: usize,
    pub seed: u64,
}

fn list_or<T: Clone>(v: &Option<Vec<T>>, default: Vec<T>) -> Vec<T> {
    v.clone().unwrap_or(default)
}

fn variances(flag_sd: &str, sd: &Option<Vec<f64>>, flag_var: &str, var: &Option<Vec<f64>>, default: f64) -> Result<(String, Vec<f64>)> {
    let (given, v) = match (sd, var) {
        (Some(_), Some(_)) => return Err(Error::arg(flag_var, format!("give {flag_sd} or {flag_var}, not both"))),
        (Some(s), None) => (flag_sd.trim_start_matches("--").replace('-', "_"), s.iter().map(|x| x * x).collect::<Vec<_>>()),
        (None, Some(v)) => (flag_var.trim_start_matches("--").replace('-', "_"), v.clone()),
        (None, None) => (flag_var.trim_start_matches("--").replace('-', "_"), vec![default]),
    };
    if v.is_empty() {
        return Err(Error::arg(flag_var, "the list is empty"));
    }
    if let Some(x) = v.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
        return Err(Error::arg(flag_var, format!("values must be finite and ≥ 0, got {x}")));
    }
    Ok((given, v))
}

impl SweepFile {
    /// Validates everything up front, so a bad value fails before any work or any file.
    pub fn plan(&self) -> Result<SweepPlan> {
        let activations = list_or(&self.activations, vec!["tanh".into()]);
        for a in &activations {
            a.parse::<Activation>()?;
        }
        let inits = list_or(&self.inits, vec!["gaussian".into()]);
        for i in &inits {
            i.parse::<InitKind>().map_err(|_| Error::arg("--inits", format!("unknown init '{i}'")))?;
        }
        let (sigma_w_given_as, sigma_w2) = variances("--sigma-w", &self.sigma_w, "--sigma-w2", &self.sigma_w2, 1.0)?;
        let (sigma_b_given_as, sigma_b2) = variances("--sigma-b", &self.sigma_b, "--sigma-b2", &self.sigma_b2, 0.0)?;
        let widths = self.widths.clone().ok_or_else(|| Error::arg("--widths", "missing: give the width(s) to sweep, e.g. --widths 256"))?;
        if widths.is_empty() || widths.contains(&0) {
            return Err(Error::arg("--widths", "widths must be a non-empty list of numbers ≥ 1"));
        }
        let batch = self.batch.unwrap_or(16);
        if batch == 0 {
            return Err(Error::arg("--batch", "must be ≥ 1"));
        }
        let seeds = list_or(&self.seeds, vec![0]);
        if seeds.is_empty() {
            return Err(Error::arg("--seeds", "the list is empty"));
        }
        let cost: Cost = self.cost.clone().unwrap_or_else(|| "quadratic".into()).parse()?;
        if cost == Cost::CrossEntropy && activations.iter().any(|a| a != "sigmoid") {
            return Err(Error::arg("--cost", "cross-entropy needs a sigmoid output; sweep only sigmoid with it"));
        }
        let backend = self.backend.clone().unwrap_or_else(|| "cpu".into());
        if !["cpu", "gpu", "auto"].contains(&backend.as_str()) {
            return Err(Error::arg("--backend", format!("'{backend}' is not auto, cpu or gpu")));
        }
        let depths_spec = self.depths.clone().ok_or_else(|| Error::arg("--depths", "missing: e.g. --depths log:1..5000:200"))?;
        let depths = grid::parse_depths(&depths_spec)?;
        let inputs = self.inputs.clone().unwrap_or_else(|| "gaussian".into());
        if let InputSpec::File(_) = inputs.parse::<InputSpec>()? {
            return Err(Error::arg("--inputs", "a sweep draws its inputs (gaussian or sign); probe a file's data with `probe`"));
        }
        let targets = self.targets.clone().unwrap_or_else(|| "zeros".into());
        if let TargetSpec::File(_) = targets.parse::<TargetSpec>()? {
            return Err(Error::arg("--targets", "a sweep draws its targets (zeros, gaussian or uniform)"));
        }
        let spectrum = self.spectrum;
        if let Some(k) = spectrum {
            if k == 0 || k > batch {
                return Err(Error::arg("--spectrum", format!("takes the number of examples K, in 1..={batch} (the batch), got {k}")));
            }
            if backend == "gpu" {
                // `spectrum --backend gpu` moves only the layer products, which gains little
                // (BENCHMARKS.md, "Spectrum on the GPU"); a sweep keeps it on the CPU.
                return Err(Error::arg("--spectrum", "a sweep computes the spectrum on the CPU backend (in f64); use --backend cpu or auto"));
            }
        }
        let plan = SweepPlan { activations, inits, sigma_w_given_as, sigma_w2, sigma_b_given_as, sigma_b2, widths, batch, seeds, cost, backend, depths_spec, depths, inputs, targets, spectrum };
        // Build every group once now: an invalid combination fails here, not mid-sweep.
        for g in plan.groups() {
            plan.init_of(&g)?;
        }
        Ok(plan)
    }
}

impl SweepPlan {
    /// Every group, in a fixed order (the index is the group's name on disk and its shard).
    /// Inits that fix σ_w² (lecun, he, xavier, nielsen) take no σ_w² grid; nielsen fixes σ_b².
    pub fn groups(&self) -> Vec<Group> {
        let mut out = Vec::new();
        for act in &self.activations {
            for init in &self.inits {
                let kind: InitKind = init.parse().expect("validated");
                let sw2s: Vec<f64> = match kind {
                    InitKind::Gaussian | InitKind::Orthogonal => self.sigma_w2.clone(),
                    InitKind::Lecun | InitKind::Nielsen => vec![1.0],
                    InitKind::He => vec![2.0],
                    // Equal widths: 2·n/(n + n) = 1.
                    InitKind::XavierNormal | InitKind::XavierUniform => vec![1.0],
                };
                let sb2s: Vec<f64> = if kind == InitKind::Nielsen { vec![1.0] } else { self.sigma_b2.clone() };
                for &sw2 in &sw2s {
                    for &sb2 in &sb2s {
                        for &width in &self.widths {
                            for &seed in &self.seeds {
                                out.push(Group {
                                    index: out.len(),
                                    activation: act.parse::<Activation>().expect("validated").to_string(),
                                    init: kind.to_string(),
                                    sigma_w: sw2.sqrt(),
                                    sigma_w2: sw2,
                                    sigma_b: sb2.sqrt(),
                                    sigma_b2: sb2,
                                    width,
                                    seed,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn init_of(&self, g: &Group) -> Result<Init> {
        let kind: InitKind = g.init.parse()?;
        let sw2 = matches!(kind, InitKind::Gaussian | InitKind::Orthogonal).then_some(g.sigma_w2);
        let sb2 = (kind != InitKind::Nielsen).then_some(g.sigma_b2);
        Init::new(kind, sw2, sb2)
    }

    /// The problem of a group at its deepest depth.
    pub fn problem(&self, g: &Group) -> Result<Problem> {
        let act: Activation = g.activation.parse()?;
        let depth = *self.depths.last().unwrap();
        let params = Params::Generated { init: self.init_of(g)?, seed: g.seed };
        let net = Network::new(vec![g.width; depth + 1], act, false, self.cost, params)?;
        let x = self.inputs.parse::<InputSpec>()?.materialise(g.seed, self.batch, g.width)?;
        let y = self.targets.parse::<TargetSpec>()?.materialise(g.seed, self.batch, g.width)?;
        Problem::new(net, x, y)
    }

    /// Runs one group on `engine` (CPU or GPU, each with one forward pass and one stacked
    /// backward pass for all depths): one report per depth. Reusing one engine across
    /// groups shares its cache of spectral norms.
    // Without the `gpu` feature the CPU is the only engine.
    #[allow(irrefutable_let_patterns)]
    pub fn run_group(&self, engine: &Engine, g: &Group) -> Result<Vec<Report>> {
        let p = self.problem(g)?;
        if let Engine::Cpu(cpu) = engine {
            crate::backend::cpu::check_memory(
                cpu.memory_needed(&p.net.widths, p.batch(), true),
                "one sweep configuration",
                "lower the deepest depth, --widths or --batch",
            )?;
        }
        engine.probe_depths(&p, &self.depths)
    }

    /// Runs a batch of groups (see [`SweepPlan::batches`]): one list of reports per group.
    pub fn run_groups(&self, engine: &Engine, batch: &[&Group]) -> Result<Vec<Vec<Report>>> {
        if let [g] = batch {
            return Ok(vec![self.run_group(engine, g)?]);
        }
        let ps = batch.iter().map(|g| self.problem(g)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Problem> = ps.iter().collect();
        engine.probe_depths_many(&refs, &self.depths)
    }
}

/// The groups of `todo` in the batches [`SweepPlan::run_groups`] runs: groups of equal width
/// `per_dispatch` at a time, in order of completion (the GPU engine runs those it can
/// together, one dispatch per kernel and layer for them all: every init but orthogonal).
pub fn batches<'g>(todo: &[&'g Group], per_dispatch: usize) -> Vec<Vec<&'g Group>> {
    let mut out: Vec<Vec<&Group>> = Vec::new();
    let mut open: Vec<Vec<&Group>> = Vec::new();
    for &g in todo {
        let i = match open.iter().position(|b| b[0].width == g.width) {
            Some(i) => i,
            None => {
                open.push(Vec::new());
                open.len() - 1
            }
        };
        open[i].push(g);
        if open[i].len() >= per_dispatch {
            out.push(open.remove(i));
        }
    }
    out.extend(open);
    out
}

/// Sweep configurations of one width that one GPU dispatch covers by default.
pub const NETS_PER_DISPATCH: usize = 16;

/// Configurations per GPU dispatch: `GRADSCOPE_NETS_PER_DISPATCH` (1 to 64; 1 runs one
/// configuration at a time), else [`NETS_PER_DISPATCH`].
///
/// # Errors
/// [`Error::InvalidArgument`] for a value that is not an integer in 1..=64.
pub fn nets_per_dispatch() -> Result<usize> {
    match std::env::var("GRADSCOPE_NETS_PER_DISPATCH") {
        Err(_) => Ok(NETS_PER_DISPATCH),
        Ok(v) if v.trim().is_empty() => Ok(NETS_PER_DISPATCH),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| Error::arg("GRADSCOPE_NETS_PER_DISPATCH", format!("'{v}' is not an integer from 1 to 64"))),
    }
}

impl SweepPlan {
    /// The mean-field predicted log10 grad_b_rms profile of each depth of a group (None
    /// where the theory does not cover it).
    pub fn predictions(&self, g: &Group) -> Vec<Option<Vec<f64>>> {
        let n = self.depths.len();
        let Ok(p) = self.problem(g) else { return vec![None; n] };
        let run = |k: usize| crate::theory::predict::predict_depths(&p, &self.depths[..k]);
        // The theory fails past some depth when q^l overflows (an unbounded σ far into the
        // chaotic phase): keep the longest prefix of depths it covers.
        let mut got = run(n);
        if got.is_err() {
            let (mut ok, mut bad) = (0, n);
            while bad - ok > 1 {
                let mid = (ok + bad) / 2;
                if run(mid).is_ok() { ok = mid } else { bad = mid }
            }
            got = if ok == 0 { Ok(Vec::new()) } else { run(ok) };
        }
        let mut out: Vec<Option<Vec<f64>>> = got.map(|v| v.into_iter().map(|p| Some(p.log10_grad_b_rms)).collect()).unwrap_or_default();
        out.resize(n, None);
        out
    }

    /// The forward signal's mean-field profiles of one configuration to the deepest depth,
    /// keyed by field (`log10_q_predicted`, `c_predicted`): layer l's value depends only on
    /// the layers below it, so every depth reads its prefix. A map that leaves f64's range
    /// (an unbounded σ deep in chaos) is left out and its profile stays NaN.
    pub fn signal_predictions(&self, g: &Group) -> std::collections::HashMap<&'static str, Vec<f64>> {
        let mut out = std::collections::HashMap::new();
        let Ok(p) = self.problem(g) else { return out };
        if let Ok((q, c)) = crate::theory::signal::signal_predicted(&p) {
            out.insert("log10_q_predicted", q);
            out.insert("c_predicted", c);
        }
        out
    }

    /// Both kinds of prediction of a group ([`SweepPlan::predictions`] and
    /// [`SweepPlan::signal_predictions`]), which need nothing the engine measures: the sweep
    /// computes them beside the engine's run of the group.
    pub fn all_predictions(&self, g: &Group) -> store::Predicted {
        let (gradient, signal) = std::thread::scope(|sc| {
            let gradient = sc.spawn(|| self.predictions(g));
            let signal = self.signal_predictions(g);
            (gradient.join().unwrap_or_else(|_| vec![None; self.depths.len()]), signal)
        });
        store::Predicted { gradient, signal }
    }
}

/// One row of `summary.csv`: a (configuration, depth, seed) point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub activation: String,
    pub init: String,
    pub cost: String,
    pub sigma_w: f64,
    pub sigma_w2: f64,
    pub sigma_b: f64,
    pub sigma_b2: f64,
    pub width: usize,
    pub batch: usize,
    pub seed: u64,
    pub depth: usize,
    #[serde(with = "store::nonfinite")]
    pub log10_grad_b_rms_first: f64,
    #[serde(with = "store::nonfinite")]
    pub log10_grad_b_rms_last: f64,
    #[serde(with = "store::nonfinite")]
    pub log10_grad_w_rms_first: f64,
    #[serde(with = "store::nonfinite")]
    pub log10_grad_w_rms_last: f64,
    #[serde(with = "store::nonfinite")]
    pub log10_grad_b_mean_first: f64,
    /// Least-squares slope of log10 grad_b_rms against l over layers 1..depth, in decades
    /// per layer: positive when the gradient shrinks towards the input. Mean-field theory
    /// predicts −log10 √χ₁.
    #[serde(with = "store::nonfinite")]
    pub slope_log10_grad_b_rms: f64,
    #[serde(with = "store::nonfinite")]
    pub log10_bound_first: f64,
    #[serde(with = "store::nonfinite")]
    pub log10_bound_tight_first: f64,
    /// The status of layer 1 (ok, zero-gradient, underflow, overflow).
    pub status_first: LayerStatus,
    /// The mean-field prediction (docs/THEORY.md) of log10_grad_b_rms at layer 1, and the
    /// slope of the predicted profile fitted like `slope_log10_grad_b_rms` (NaN where the
    /// theory does not cover the configuration).
    #[serde(with = "store::nonfinite")]
    pub log10_grad_b_rms_first_predicted: f64,
    #[serde(with = "store::nonfinite")]
    pub slope_log10_grad_b_rms_predicted: f64,
    /// With `--spectrum K` (docs/MATH.md, "The input–output Jacobian"): log10 s_1, the
    /// median and the smallest nonzero log10 s of J_x at this depth, and var(λ)/mean(λ)²
    /// of λ = s², each the mean over the K examples; and the free-probability
    /// var(λ)/mean(λ)². Absent (not even a column) in a sweep without it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "spectrum::nonfinite_opt")]
    pub spectrum_log10_top: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "spectrum::nonfinite_opt")]
    pub spectrum_log10_median: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "spectrum::nonfinite_opt")]
    pub spectrum_log10_bottom_nonzero: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "spectrum::nonfinite_opt")]
    pub spectrum_var_over_mean2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "spectrum::nonfinite_opt")]
    pub spectrum_var_over_mean2_predicted: Option<f64>,
}

/// Least-squares slope of a log10 profile (l = 1..L) against l over layers 1..L−1 (the top
/// layer is set by the output error, not by the per-layer factor); NaN where undefined.
pub fn profile_slope(profile: &[f64]) -> f64 {
    let to = if profile.len() >= 3 { profile.len() - 1 } else { profile.len() };
    crate::theory::predict::fitted_log10_ratio_of(profile, 1, to).map_or(f64::NAN, |r| -r)
}

impl SummaryRow {
    pub fn new(plan: &SweepPlan, g: &Group, r: &Report, predicted: Option<&[f64]>) -> SummaryRow {
        let first = &r.layers[0];
        let last = r.layers.last().unwrap();
        SummaryRow {
            activation: g.activation.clone(),
            init: g.init.clone(),
            cost: plan.cost.to_string(),
            sigma_w: g.sigma_w,
            sigma_w2: g.sigma_w2,
            sigma_b: g.sigma_b,
            sigma_b2: g.sigma_b2,
            width: g.width,
            batch: plan.batch,
            seed: g.seed,
            depth: r.layers.len(),
            log10_grad_b_rms_first: first.log10_grad_b_rms,
            log10_grad_b_rms_last: last.log10_grad_b_rms,
            log10_grad_w_rms_first: first.log10_grad_w_rms,
            log10_grad_w_rms_last: last.log10_grad_w_rms,
            log10_grad_b_mean_first: first.log10_grad_b_mean,
            slope_log10_grad_b_rms: profile_slope(&r.layers.iter().map(|s| s.log10_grad_b_rms).collect::<Vec<_>>()),
            log10_bound_first: first.log10_bound,
            log10_bound_tight_first: first.log10_bound_tight,
            status_first: first.status,
            log10_grad_b_rms_first_predicted: predicted.map_or(f64::NAN, |p| p[0]),
            slope_log10_grad_b_rms_predicted: predicted.map_or(f64::NAN, profile_slope),
            spectrum_log10_top: None,
            spectrum_log10_median: None,
            spectrum_log10_bottom_nonzero: None,
            spectrum_var_over_mean2: None,
            spectrum_var_over_mean2_predicted: None,
        }
    }
}

/// Options of a run beyond the plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    /// (K, N): run the groups whose index ≡ K−1 (mod N).
    pub shard: Option<(usize, usize)>,
    /// Print progress (a bar on a terminal, plain lines otherwise).
    pub progress: bool,
    /// GPU adapter by a substring of its name (one sweep shard per GPU); None: wgpu's
    /// choice or WGPU_ADAPTER_NAME.
    pub adapter: Option<String>,
}

/// Parses `K/N` with 1 ≤ K ≤ N.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::arg("--shard", format!("'{s}' is not K/N with 1 ≤ K ≤ N"));
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub groups_run: usize,
    pub groups_skipped: usize,
    pub points: usize,
    pub seconds: f64,
}

/// Runs (or resumes) a sweep into `opts.out`.
///
/// # Errors
/// A directory holding another sweep, unwritable output, or a failing group (whose
/// finished predecessors stay on disk).
pub fn run(plan: &SweepPlan, opts: &RunOptions) -> Result<RunSummary> {
    let choice = match plan.backend.as_str() {
        "cpu" => BackendChoice::Cpu,
        "gpu" => BackendChoice::Gpu,
        "auto" => BackendChoice::Auto,
        other => return Err(Error::arg("--backend", format!("'{other}' is not auto, cpu or gpu"))),
    };
    let per_dispatch = nets_per_dispatch()?;
    // Chosen once, before any file is touched; the device goes into meta.json.
    let (engine, why) = Engine::select(choice, opts.adapter.clone())?;
    if opts.progress {
        eprintln!("engine: {} on {} ({why})", engine.name(), engine.device_name());
    }
    let dir = store::SweepDir::open(&opts.out, plan, opts.shard, &engine.device_name())?;
    let mine: Vec<Group> = plan.groups().into_iter().filter(|g| opts.shard.is_none_or(|(k, n)| g.index % n == k - 1)).collect();
    let todo: Vec<&Group> = mine.iter().filter(|g| !dir.is_done(g)).collect();
    let skipped = mine.len() - todo.len();
    let t0 = Instant::now();
    let mut bar = store::Progress::new(opts.progress, todo.len(), skipped);
    // The CPU runs one configuration at a time; the GPU several per dispatch.
    let per_batch = if engine.batches_networks() { per_dispatch } else { 1 };
    for batch in batches(&todo, per_batch) {
        let tg = Instant::now();
        // The predictions need nothing the engine measures: they run on their own threads
        // while the engine runs the batch (the prediction of a deep tanh group costs about
        // as much CPU as its probe).
        let (reports, predicted) = std::thread::scope(|sc| {
            let predicted = sc.spawn(|| batch.iter().map(|g| plan.all_predictions(g)).collect::<Vec<_>>());
            let reports = plan.run_groups(&engine, &batch);
            (reports, predicted.join())
        });
        let reports = reports?;
        let predicted = predicted.map_err(|_| Error::Internal("the prediction thread panicked".into()))?;
        // Each group of a batch is written (and counts as finished) when the batch is done.
        let secs = tg.elapsed().as_secs_f64() / batch.len() as f64;
        for ((g, r), pr) in batch.iter().zip(&reports).zip(&predicted) {
            dir.write_group(plan, g, r, secs, pr)?;
            bar.tick(g, plan.depths.len());
        }
    }
    bar.finish();
    let points = dir.assemble(plan)?;
    Ok(RunSummary { groups_run: todo.len(), groups_skipped: skipped, points, seconds: t0.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(index: usize, width: usize) -> Group {
        Group { index, activation: "tanh".into(), init: "gaussian".into(), sigma_w: 1.0, sigma_w2: 1.0, sigma_b: 0.0, sigma_b2: 0.0, width, seed: 0 }
    }

    #[test]
    fn batches_hold_one_width_up_to_the_limit_and_every_group_once() {
        let gs: Vec<Group> = [8, 12, 8, 8, 12, 8, 20].iter().enumerate().map(|(i, &w)| group(i, w)).collect();
        let todo: Vec<&Group> = gs.iter().collect();
        let idx = |bs: Vec<Vec<&Group>>| -> Vec<Vec<usize>> { bs.iter().map(|b| b.iter().map(|g| g.index).collect()).collect() };
        assert_eq!(idx(batches(&todo, 2)), vec![vec![0, 2], vec![1, 4], vec![3, 5], vec![6]]);
        assert_eq!(idx(batches(&todo, 16)), vec![vec![0, 2, 3, 5], vec![1, 4], vec![6]]);
        assert_eq!(idx(batches(&todo, 1)), (0..7).map(|i| vec![i]).collect::<Vec<_>>());
    }
}
