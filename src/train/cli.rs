//! The `train` subcommand: its flags, their validation into a [`TrainPlan`], and the output
//! folder (meta.json, history.csv, history.npy, checkpoint.npz, plots/), resumable.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use super::data::{self, Dataset};
use super::history::{self, HISTORY_FIELDS, field};
use super::{TrainPlan, TrainState, train};
use crate::backend::BackendChoice;
use crate::cli::NetworkArgs;
use crate::error::{Error, Result};
use crate::export::write_atomic;
use crate::model::{InputSpec, Network, Params, TargetSpec};

/// `--check`'s tolerance on ‖W_f32 − W_f64‖_F / ‖W_f64‖_F (and the same for b and for the
/// batch cost) over the first checked steps.
///
/// Why 1e-4: the trajectories start 2^-24 ≈ 6e-8 apart (the f32 rounding of the draw), and
/// each f32 step adds the update's own rounding (ε₃₂ ≈ 6e-8 of W) and η‖∂C/∂W‖ times the
/// gradient's relative error (f32 sums over n_{l-1} and B products, σ and σ′ to a few ulp:
/// ~1e-6 at these widths). Over ten steps that stays near 1e-7 – 1e-6 unless the dynamics
/// amplify it (measured: README.md, "Training on the GPU"); 1e-4 leaves two decades for wider
/// and deeper networks, while a wrong index, sign or factor in any kernel is off by O(1).
pub const CHECK_RTOL: f64 = 1e-4;

/// `gradscope train`: the network flags of `probe`, the data, the optimiser, the records.
#[derive(Debug, Args)]
#[command(mut_arg("batch", |a| a.help("Examples per SGD step (mini-batch size B; the last batch of an epoch may be smaller)")))]
#[command(mut_arg("inputs", |a| a.help("Training inputs: an n × n_0 .npy file (with --targets FILE), or gaussian/sign for --data teacher:D")))]
#[command(mut_arg("targets", |a| a.help("Training targets: an n × n_L .npy file (with --inputs FILE)")))]
#[command(mut_arg("seed", |a| a.help("Seed of the initial weights (and of the shuffle and a teacher's data)")))]
pub struct TrainArgs {
    #[command(flatten)]
    pub net: NetworkArgs,
    /// Built-in data: `digits` (1,797 8×8 handwritten digits, 64 inputs, 10 classes) or
    /// `teacher:D` (targets from a random network of depth D; --examples inputs drawn as --inputs says).
    #[arg(long, value_name = "digits|teacher:D", help_heading = "Data")]
    pub data: Option<String>,
    /// MNIST-format IDX image file, uncompressed (with --labels).
    #[arg(long, value_name = "FILE", requires = "labels", help_heading = "Data")]
    pub images: Option<PathBuf>,
    /// MNIST-format IDX label file, uncompressed (with --images).
    #[arg(long, value_name = "FILE", requires = "images", help_heading = "Data")]
    pub labels: Option<PathBuf>,
    /// Use the first N examples of the data (teacher: draw N; default 1000 there, all otherwise).
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub examples: Option<usize>,
    /// Learning rate η.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true, help_heading = "Training")]
    pub lr: f64,
    /// L2 weight decay λ: W ← (1 − ηλ/n) W − η ∂C/∂W, n the training set's size (network2.py).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, help_heading = "Training")]
    pub l2: f64,
    /// Epochs (passes over the data; default 10 when --steps is not given).
    #[arg(long, conflicts_with = "steps", help_heading = "Training")]
    pub epochs: Option<u64>,
    /// SGD steps (mini-batches), instead of --epochs.
    #[arg(long, help_heading = "Training")]
    pub steps: Option<u64>,
    /// Order of examples: `seed` (reshuffled each epoch from --seed), an integer seed, or
    /// `none` (the data's order every epoch).
    #[arg(long, default_value = "seed", help_heading = "Training")]
    pub shuffle: String,
    /// Record every N steps (default: once per epoch), and after the last step.
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub every: Option<u64>,
    /// Evaluate on the first N training examples (default: all of them, as Nielsen does).
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub eval_examples: Option<usize>,
    /// Engine: cpu (SGD in f64) or gpu (weights and SGD steps in f32 on the device, records
    /// in f64 on the host from the weights read back; auto means cpu here).
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu, help_heading = "Output")]
    pub backend: BackendChoice,
    /// With --backend gpu: the CPU takes the first STEPS steps (default 10) beside the device
    /// and each step's relative difference of the weights and the batch cost is printed;
    /// exit 1 beyond --check-rtol.
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "10", help_heading = "Output")]
    pub check: Option<u64>,
    /// --check's tolerance on the relative difference of weights, biases and batch cost
    /// (why 1e-4: README.md, "Training on the GPU").
    #[arg(long, value_name = "R", default_value_t = CHECK_RTOL, requires = "check", help_heading = "Output")]
    pub check_rtol: f64,
    /// Folder for meta.json, history.csv, history.npy and checkpoint.npz (created; an
    /// existing one holding the same run resumes from its checkpoint).
    #[arg(long, short = 'o', value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Also draw DIR/plots/: ‖∂C/∂b^l‖ per layer against epoch, first/last hidden layer ratio,
    /// cost and accuracy (SVG and PNG).
    #[arg(long, requires = "out", help_heading = "Output")]
    pub plot: bool,
    /// Write the checkpoint and the history at most every S seconds (and at the end; 0: at
    /// every record). Each write holds the whole history, so frequent writes of a long run
    /// cost time; a killed run loses at most S seconds.
    #[arg(long, value_name = "S", default_value_t = 30.0, allow_negative_numbers = true, help_heading = "Output")]
    pub checkpoint_seconds: f64,
    /// Print only the final record.
    #[arg(long, short = 'q', help_heading = "Output")]
    pub quiet: bool,
}

/// The run's definition, written to meta.json and compared when a folder is resumed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrainConfig {
    /// cpu (f64) or gpu (f32): a folder resumes only on the engine it was started on.
    pub backend: String,
    pub widths: Vec<usize>,
    pub activation: String,
    pub linear_output: bool,
    pub cost: String,
    pub init: String,
    pub sigma_w2: Option<f64>,
    pub sigma_b2: Option<f64>,
    pub weights: Option<PathBuf>,
    pub seed: u64,
    pub data: String,
    pub examples: usize,
    pub eval_examples: usize,
    pub lr: f64,
    pub l2: f64,
    pub batch: usize,
    pub steps: u64,
    pub steps_per_epoch: u64,
    pub every: u64,
    pub shuffle: Option<u64>,
}

fn positive<T: PartialOrd + Default + Copy + std::fmt::Display>(v: Option<T>, flag: &str) -> Result<Option<T>> {
    match v {
        Some(x) if x <= T::default() => Err(Error::arg(flag, format!("must be ≥ 1, got {x}"))),
        v => Ok(v),
    }
}

/// Validates every flag and loads the data; nothing is written.
///
/// # Errors
/// A bad value named by its flag, unreadable or mismatched data.
pub fn plan(a: &TrainArgs) -> Result<(TrainPlan, TrainConfig)> {
    let gpu = a.backend == BackendChoice::Gpu;
    if cfg!(not(feature = "gpu")) && gpu {
        return Err(Error::Device("--backend gpu: this gradscope was built without GPU support (cargo feature \"gpu\")".into()));
    }
    match a.check {
        Some(_) if !gpu => return Err(Error::arg("--check", "compares the GPU's training with the CPU's; it needs --backend gpu")),
        Some(0) => return Err(Error::arg("--check", "must be ≥ 1 step")),
        _ => {}
    }
    if !(a.check_rtol.is_finite() && a.check_rtol > 0.0) {
        return Err(Error::arg("--check-rtol", format!("must be finite and > 0, got {}", a.check_rtol)));
    }
    if !(a.lr.is_finite() && a.lr >= 0.0) {
        return Err(Error::arg("--lr", format!("must be finite and ≥ 0, got {}", a.lr)));
    }
    if !(a.checkpoint_seconds.is_finite() && a.checkpoint_seconds >= 0.0) {
        return Err(Error::arg("--checkpoint-seconds", format!("must be finite and ≥ 0, got {}", a.checkpoint_seconds)));
    }
    if !(a.l2.is_finite() && a.l2 >= 0.0) {
        return Err(Error::arg("--l2", format!("must be finite and ≥ 0, got {}", a.l2)));
    }
    positive(a.epochs, "--epochs")?;
    positive(a.steps, "--steps")?;
    positive(a.every, "--every")?;
    positive(a.examples, "--examples")?;
    positive(a.eval_examples, "--eval-examples")?;
    let shuffle = match a.shuffle.trim() {
        "none" => None,
        "seed" => Some(a.net.seed),
        s => Some(s.parse::<u64>().map_err(|_| Error::arg("--shuffle", format!("'{s}' is neither seed, none nor an integer")))?),
    };
    let (cfg, stored) = a.net.request().validate()?;
    let params = match (stored, cfg.init_spec) {
        (Some(p), _) => Params::Stored(p),
        (None, Some(init)) => Params::Generated { init, seed: cfg.seed },
        (None, None) => return Err(Error::Internal("no parameter source".into())),
    };
    let net = Network::new(cfg.widths.clone(), cfg.act, cfg.linear_output, cfg.cost, params)?;
    let weight_bytes: u64 = (1..net.widths.len()).map(|l| ((net.widths[l] * (net.widths[l - 1] + 1)) * 8) as u64).sum();
    crate::backend::cpu::check_memory(4 * weight_bytes, "the weights, their gradients and a checkpoint", "lower the widths or the depth")?;
    let data = load_data(a, &cfg.input_spec, &cfg.target_spec, &net)?;
    let (n0, nl) = (net.widths[0], *net.widths.last().unwrap());
    let flag = if a.net.widths.is_some() { "--widths" } else { "--input-width" };
    if data.x.ncols() != n0 {
        return Err(Error::arg(flag, format!("the data have {} features per example, the network's n_0 is {n0}", data.x.ncols())));
    }
    if data.y.ncols() != nl {
        return Err(Error::arg(flag, format!("the targets have {} columns, the network's n_L is {nl}", data.y.ncols())));
    }
    let n = data.len();
    let batch = a.net.batch;
    if batch == 0 {
        return Err(Error::arg("--batch", "must be ≥ 1"));
    }
    if batch > n {
        return Err(Error::arg("--batch", format!("{batch} is larger than the training set ({n} examples)")));
    }
    let per_step = (batch * net.widths.iter().sum::<usize>() * 8 * 4) as u64;
    crate::backend::cpu::check_memory(per_step + 4 * weight_bytes, "one training step", "lower --batch")?;
    let spe = n.div_ceil(batch) as u64;
    let total_steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, e) => e.unwrap_or(10).checked_mul(spe).ok_or_else(|| Error::arg("--epochs", "too many steps"))?,
    };
    let eval_n = a.eval_examples.unwrap_or(n).min(n);
    let eval = data.clone().first(eval_n);
    let config = TrainConfig {
        backend: if gpu { "gpu".into() } else { "cpu".into() },
        widths: net.widths.clone(),
        activation: cfg.activation.clone(),
        linear_output: cfg.linear_output,
        cost: cfg.cost.to_string(),
        init: cfg.init.clone(),
        sigma_w2: cfg.sigma_w2,
        sigma_b2: cfg.sigma_b2,
        weights: cfg.weights.clone(),
        seed: cfg.seed,
        data: data.source.clone(),
        examples: n,
        eval_examples: eval_n,
        lr: a.lr,
        l2: a.l2,
        batch,
        steps: total_steps,
        steps_per_epoch: spe,
        every: a.every.unwrap_or(spe),
        shuffle,
    };
    let plan = TrainPlan { net, data, eval, lr: a.lr, l2: a.l2, batch, total_steps, every: config.every, shuffle };
    Ok((plan, config))
}

fn load_data(a: &TrainArgs, inputs: &InputSpec, targets: &TargetSpec, net: &Network) -> Result<Dataset> {
    let files = matches!(inputs, InputSpec::File(_)) || matches!(targets, TargetSpec::File(_));
    let sources = [a.data.is_some(), a.images.is_some(), files].iter().filter(|&&b| b).count();
    if sources > 1 && !(a.data.as_deref().is_some_and(|d| d.starts_with("teacher")) && !files && a.images.is_none()) {
        return Err(Error::arg("--data", "give one source of data: --data, --images/--labels or --inputs/--targets files"));
    }
    // Drawn inputs feed only the teacher, and drawn targets nothing: refuse what would be ignored.
    let teacher = a.data.as_deref().is_some_and(|d| d.starts_with("teacher"));
    if matches!(inputs, InputSpec::Sign) && !teacher {
        return Err(Error::arg("--inputs", "sign draws the inputs of --data teacher:D only; the other data bring their own"));
    }
    if matches!(targets, TargetSpec::Gaussian | TargetSpec::Uniform) {
        return Err(Error::arg("--targets", "training targets come from the data (or a .npy file with --inputs FILE), not drawn"));
    }
    let d = match (&a.data, &a.images, &a.labels, inputs, targets) {
        (_, Some(i), Some(l), _, _) => data::idx(i, l, a.examples.unwrap_or(usize::MAX))?,
        (_, _, _, InputSpec::File(x), TargetSpec::File(y)) => data::npy(x, y)?,
        (_, _, _, InputSpec::File(_), _) => return Err(Error::arg("--targets", "missing: --inputs FILE needs --targets FILE")),
        (_, _, _, _, TargetSpec::File(_)) => return Err(Error::arg("--inputs", "missing: --targets FILE needs --inputs FILE")),
        (Some(d), _, _, _, _) if d == "digits" => data::digits()?,
        (Some(d), _, _, _, _) if d.starts_with("teacher:") => {
            let depth: usize = d["teacher:".len()..].parse().map_err(|_| Error::arg("--data", format!("'{d}': expected teacher:DEPTH, e.g. teacher:3")))?;
            let init = match &net.params {
                Params::Generated { init, .. } => *init,
                Params::Stored(_) => crate::model::Init::new(crate::model::InitKind::Lecun, None, None)?,
            };
            let count = a.examples.unwrap_or(1000);
            return data::teacher(net, depth, init, inputs, count, a.net.seed);
        }
        (Some(d), _, _, _, _) => return Err(Error::arg("--data", format!("unknown data '{d}' (expected digits or teacher:DEPTH)"))),
        _ => return Err(Error::arg("--data", "missing: give --data digits, --data teacher:DEPTH, --images/--labels (IDX) or --inputs X.npy --targets Y.npy")),
    };
    match a.examples {
        // Asking for more examples than the data hold would train on fewer than asked, silently.
        Some(k) if k > d.len() => Err(Error::arg("--examples", format!("{k} is more than the data hold ({}: {} examples)", d.source, d.len()))),
        Some(k) => Ok(d.first(k)),
        None => Ok(d),
    }
}

/// What meta.json holds.
#[derive(Debug, Serialize)]
struct Meta<'a> {
    gradscope: &'static str,
    command: &'static str,
    config: &'a TrainConfig,
    /// The fields of history.npy's last axis (the status as its index in `status_codes`).
    npy_fields: Vec<&'static str>,
    status_codes: Vec<String>,
    device: String,
    /// running, finished, or why the run stopped.
    state: String,
    steps_done: u64,
}

fn meta_bytes(config: &TrainConfig, device: &str, state: &str, steps_done: u64) -> Result<Vec<u8>> {
    let m = Meta {
        gradscope: env!("CARGO_PKG_VERSION"),
        command: "train",
        config,
        npy_fields: HISTORY_FIELDS.clone(),
        status_codes: history::STATUS_CODES.iter().map(|s| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()).collect(),
        device: device.to_string(),
        state: state.into(),
        steps_done,
    };
    let mut v = serde_json::to_vec_pretty(&m).map_err(|e| Error::Internal(e.to_string()))?;
    v.push(b'\n');
    Ok(v)
}

/// The config an existing folder holds, if it is a training folder.
fn existing_config(dir: &Path) -> Result<Option<serde_json::Value>> {
    let p = dir.join("meta.json");
    if !p.exists() {
        if dir.is_dir() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(Error::arg("--out", format!("'{}' exists and is not a gradscope train folder", dir.display())));
        }
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, format!("cannot read: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(&p, format!("not JSON: {e}")))?;
    if v.get("command").and_then(|c| c.as_str()) != Some("train") {
        return Err(Error::arg("--out", format!("'{}' holds something other than a gradscope train run", dir.display())));
    }
    Ok(v.get("config").cloned())
}

fn write_outputs(dir: &Path, config: &TrainConfig, device: &str, state: &TrainState, status: &str) -> Result<()> {
    write_atomic(&dir.join("checkpoint.npz"), &history::checkpoint_npz(&state.weights, state.step, &state.history)?)?;
    write_history(dir, config, device, state, status)
}

/// history.csv, history.npy and meta.json, without the checkpoint (after a divergence the
/// weights are not finite; the last good checkpoint stays).
fn write_history(dir: &Path, config: &TrainConfig, device: &str, state: &TrainState, status: &str) -> Result<()> {
    write_atomic(&dir.join("history.csv"), &history::csv(&state.history)?)?;
    write_atomic(&dir.join("history.npy"), &history::npy(&state.history)?)?;
    write_atomic(&dir.join("meta.json"), &meta_bytes(config, device, status, state.step)?)
}

/// One line of progress: step, epoch, cost, accuracy, ‖∂C/∂b^l‖ of the first and last
/// hidden layers (of layer 1 and L when there is none) and their ratio.
fn progress_line(rec: &ndarray::Array2<f64>) -> String {
    let big_l = rec.nrows();
    let (first, last) = if big_l >= 3 { (0, big_l - 2) } else { (0, big_l - 1) };
    let g = field("log10_grad_b_mean");
    let r0 = rec.row(0);
    let acc = r0[field("accuracy")];
    format!(
        "step {:>7}  epoch {:>8.2}  cost {:>10}  accuracy {:>6}  ‖∂C/∂b^{}‖ {:>10}  ‖∂C/∂b^{}‖ {:>10}  ratio {}",
        r0[field("step")] as u64,
        r0[field("epoch")],
        crate::stats::sci(r0[field("log10_cost")]),
        if acc.is_nan() { "n/a".into() } else { format!("{:.3}", acc) },
        first + 1,
        crate::stats::sci(rec[(first, g)]),
        last + 1,
        crate::stats::sci(rec[(last, g)]),
        crate::stats::sci(rec[(first, g)] - rec[(last, g)]),
    )
}

/// Runs `gradscope train`.
///
/// # Errors
/// Bad input (nothing written), a diverged run (the history so far kept), a write failure.
pub fn run_train(a: &TrainArgs) -> Result<()> {
    let (plan, config) = plan(a)?;
    // The device is opened, and the run held against its limits, before the weights are
    // drawn or anything is written.
    #[cfg(feature = "gpu")]
    let gpu = if a.backend == BackendChoice::Gpu {
        let g = crate::backend::gpu::GpuBackend::new(&crate::backend::gpu::GpuOptions { adapter: None, allow_software: true })?;
        crate::backend::gpu::train::fits(&g, &plan.net.widths, plan.batch, plan.data.len())?;
        Some(g)
    } else {
        None
    };
    let mut state = TrainState::start(&plan);
    let mut create = false;
    if let Some(dir) = &a.out {
        if let Some(old) = existing_config(dir)? {
            let mine = serde_json::to_value(&config).map_err(|e| Error::Internal(e.to_string()))?;
            if old != mine {
                return Err(Error::arg("--out", format!("'{}' holds a different training run; give the same flags to resume it, or another folder", dir.display())));
            }
            let ck = dir.join("checkpoint.npz");
            if ck.exists() {
                let (w, step, h) = history::read_checkpoint(&ck)?;
                state = TrainState { step, weights: w, history: h, step_seconds: 0.0 };
                println!("resuming {} from its checkpoint at step {step} of {}", dir.display(), plan.total_steps);
            }
        } else {
            create = true;
        }
    }
    // Filled before anything is written: an allocation that fails leaves nothing on disk.
    #[cfg(feature = "gpu")]
    let mut dev = gpu.as_ref().map(|g| super::gpu::trainer(g, &plan, &state)).transpose()?;
    #[cfg(feature = "gpu")]
    let (device, engine) = match &dev {
        Some(d) => {
            let m = d.memory;
            let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
            (
                d.device(),
                format!(
                    "backend gpu ({}; on the device: weights {} (Σ_l n_l·n_(l-1) ≈ L·N² f32), batch rows {}, training set {}; records in f64 on the host)",
                    d.device(),
                    mib(m.weights),
                    mib(m.activations),
                    mib(m.data)
                ),
            )
        }
        None => (crate::backend::CpuBackend::device_name(), "backend cpu (f64)".to_string()),
    };
    #[cfg(not(feature = "gpu"))]
    let (device, engine) = (crate::backend::CpuBackend::device_name(), "backend cpu (f64)".to_string());
    if let Some(dir) = &a.out {
        if create {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        }
        write_atomic(&dir.join("meta.json"), &meta_bytes(&config, &device, "running", state.step)?)?;
    }
    println!(
        "gradscope train: {} widths {:?}, init {}, cost {}; {}; η = {}, λ = {}, batch {}, {} steps ({} per epoch), shuffle {}, recorded every {} steps on {} examples; {engine}",
        config.activation,
        config.widths,
        config.init,
        config.cost,
        config.data,
        config.lr,
        config.l2,
        config.batch,
        config.steps,
        config.steps_per_epoch,
        config.shuffle.map(|s| format!("seed {s}")).unwrap_or_else(|| "none".into()),
        config.every,
        config.eval_examples
    );
    let t0 = Instant::now();
    let quiet = a.quiet;
    let out = a.out.clone();
    let mut last_write: Option<Instant> = None;
    let total = plan.total_steps;
    let mut on_record = |s: &TrainState| {
        if !quiet {
            println!("{}", progress_line(s.history.last().unwrap()));
        }
        if let Some(dir) = &out {
            if s.step == total || last_write.is_none_or(|t| t.elapsed().as_secs_f64() >= a.checkpoint_seconds) {
                write_outputs(dir, &config, &device, s, "running")?;
                last_write = Some(Instant::now());
            }
        }
        Ok(())
    };
    #[cfg(feature = "gpu")]
    let res = match dev.as_mut() {
        Some(d) => {
            let check = a.check.unwrap_or(0);
            super::gpu::train_gpu(&plan, &mut state, d, check, a.check_rtol, &mut |r| println!("{}", r.line()), &mut on_record)
        }
        None => train(&plan, &mut state, &mut on_record),
    };
    #[cfg(not(feature = "gpu"))]
    let res = train(&plan, &mut state, &mut on_record);
    let secs = t0.elapsed().as_secs_f64();
    match (res, &a.out) {
        (Err(Error::Numerical(m)), Some(dir)) => {
            write_history(dir, &config, &device, &state, &m)?;
            Err(Error::Numerical(format!("{m}; the history up to step {} is in {}", state.history.last().map(|r| r[(0, 0)] as u64).unwrap_or(0), dir.display())))
        }
        (Err(Error::CheckFailed(m)), Some(dir)) => {
            write_history(dir, &config, &device, &state, &m)?;
            Err(Error::CheckFailed(m))
        }
        (Err(e), _) => Err(e),
        (Ok(()), dir) => {
            if quiet {
                println!("{}", progress_line(state.history.last().unwrap()));
            }
            println!(
                "{} steps in {secs:.2} s: SGD steps {:.3} s, records and writes the rest (values 10^log10, docs/MATH.md names; ratio = the first ‖∂C/∂b‖ shown over the second)",
                plan.total_steps, state.step_seconds
            );
            if let Some(dir) = dir {
                write_atomic(&dir.join("meta.json"), &meta_bytes(&config, &device, "finished", state.step)?)?;
                if a.plot {
                    let title = format!("{} {:?}, {}, η = {}, λ = {}", config.activation, config.widths, config.cost, config.lr, config.l2);
                    let written = crate::plot::plot_training(&history::stack(&state.history)?, &title, &dir.join("plots"))?;
                    println!("wrote {} plot(s) into {}", written.len(), dir.join("plots").display());
                }
                println!("wrote {}", dir.display());
            }
            Ok(())
        }
    }
}
