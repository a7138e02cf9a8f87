//! `gradscope train`: SGD in f64 with every per-layer statistic of docs/MATH.md recorded
//! along the way by the same log-domain engine as `probe`, plus `log10_update_w`, the cost
//! and the accuracy (docs/MATH.md, "Training").
//!
//! The step ([`sgd`]) is a batched f64 forward/backward pass, or with `--backend gpu` an f32
//! one on the device ([`gpu`]); a record hands the current weights to the CPU engine as
//! stored parameters (as `probe --weights` does), so `--lr 0` reproduces `probe` on the same
//! weights exactly, on either backend.

pub mod cli;
pub mod data;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod history;
pub mod nielsen;
pub mod sgd;

use std::sync::Arc;

use ndarray::{Array2, Axis, CowArray, s};

use crate::backend::CpuBackend;
use crate::error::{Error, Result};
use crate::model::{Network, Params, Problem, StoredParams};
use data::Dataset;
use sgd::Weights;

/// What one training run does, validated.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// The network (its shapes, σ, cost); its parameters are the starting point.
    pub net: Network,
    pub data: Dataset,
    /// The fixed evaluation set the records are taken on.
    pub eval: Dataset,
    pub lr: f64,
    pub l2: f64,
    pub batch: usize,
    pub total_steps: u64,
    /// Record every this many steps (and after the last step).
    pub every: u64,
    /// The seed of the example order, or None for 0..n in every epoch.
    pub shuffle: Option<u64>,
}

impl TrainPlan {
    /// ⌈n / B⌉: Nielsen's `network2.py` keeps the last, smaller batch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.data.len().div_ceil(self.batch) as u64
    }

    /// The positions in its epoch's order of the examples of step `t` (0-based).
    pub fn batch_range(&self, t: u64) -> std::ops::Range<usize> {
        let k = (t % self.steps_per_epoch()) as usize;
        k * self.batch..((k + 1) * self.batch).min(self.data.len())
    }
}

/// The rows `idx` of the data: in order (no shuffle) a batch is a run of rows, so a view,
/// not a copy.
pub fn batch_rows<'a>(data: &'a Dataset, idx: &[usize]) -> (CowArray<'a, f64, ndarray::Ix2>, CowArray<'a, f64, ndarray::Ix2>) {
    let contiguous = idx.windows(2).all(|w| w[1] == w[0] + 1);
    if contiguous {
        let r = idx[0]..idx[0] + idx.len();
        (CowArray::from(data.x.slice(s![r.clone(), ..])), CowArray::from(data.y.slice(s![r, ..])))
    } else {
        (CowArray::from(data.x.select(Axis(0), idx)), CowArray::from(data.y.select(Axis(0), idx)))
    }
}

/// Where a run stands: the updates taken, the weights, the records so far (each L ×
/// [`history::HISTORY_FIELDS`]).
#[derive(Debug, Clone)]
pub struct TrainState {
    pub step: u64,
    pub weights: Weights,
    pub history: Vec<Array2<f64>>,
    /// Wall seconds spent in SGD steps in this process (records and writes excluded).
    pub step_seconds: f64,
}

impl TrainState {
    /// The start of a run: step 0, the network's own parameters, no records.
    pub fn start(plan: &TrainPlan) -> TrainState {
        TrainState { step: 0, weights: Weights::of(&plan.net), history: Vec::new(), step_seconds: 0.0 }
    }
}

/// The fraction of examples whose largest output is the target's largest entry, when the
/// targets are one-hot (classification); NaN otherwise.
pub fn accuracy(out: &Array2<f64>, y: &Array2<f64>) -> f64 {
    let one_hot = y.ncols() >= 2 && y.rows().into_iter().all(|r| r.iter().all(|&v| v == 0.0 || v == 1.0) && r.sum() == 1.0);
    if !one_hot {
        return f64::NAN;
    }
    let argmax = |r: ndarray::ArrayView1<f64>| r.iter().enumerate().fold((0, f64::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0;
    let hits = out.rows().into_iter().zip(y.rows()).filter(|(a, t)| argmax(a.view()) == argmax(t.view())).count();
    hits as f64 / y.nrows() as f64
}

/// The record of the current weights: the CPU engine's report on the evaluation set, the
/// accuracy there, and `update` (log10_update_w of the step just taken, NaN at step 0).
///
/// # Errors
/// As [`CpuBackend::probe`].
pub fn record(plan: &TrainPlan, state: &TrainState, update: &[f64]) -> Result<Array2<f64>> {
    let n = &plan.net;
    let stored = StoredParams { w: state.weights.w.clone(), b: state.weights.b.clone(), source: format!("training step {}", state.step) };
    let net = Network::new(n.widths.clone(), n.activation, n.linear_output, n.cost, Params::Stored(Arc::new(stored)))?;
    let p = Problem::new(net, plan.eval.x.clone(), plan.eval.y.clone())?;
    let report = CpuBackend::default().probe(&p)?;
    let acc = match sgd::forward(&p.net, &state.weights, plan.eval.x.view()) {
        Ok(f) => accuracy(&f.last().unwrap().1, &plan.eval.y),
        Err(_) => f64::NAN,
    };
    let epoch = state.step as f64 / plan.steps_per_epoch() as f64;
    Ok(history::record_rows(state.step, epoch, &report, update, acc))
}

/// The record of step 0 (`log10_update_w` NaN: no step taken), unless the history has one.
///
/// # Errors
/// As [`record`], or an error of `on_record`.
pub fn record_start(plan: &TrainPlan, state: &mut TrainState, on_record: &mut dyn FnMut(&TrainState) -> Result<()>) -> Result<()> {
    if state.history.is_empty() {
        let r = record(plan, state, &vec![f64::NAN; plan.net.depth()])?;
        state.history.push(r);
        on_record(state)?;
    }
    Ok(())
}

/// Trains from `state` to `plan.total_steps`, recording at step 0 (when nothing is recorded
/// yet), every `plan.every` steps and after the last; `on_record` sees the state after each
/// record (to write checkpoints and print progress).
///
/// # Errors
/// [`Error::Numerical`] when a step leaves the range of f64 (naming the step and the layer;
/// the records before it are in `state`), or an error of `on_record`.
pub fn train(plan: &TrainPlan, state: &mut TrainState, on_record: &mut dyn FnMut(&TrainState) -> Result<()>) -> Result<()> {
    record_start(plan, state, on_record)?;
    let spe = plan.steps_per_epoch();
    let n = plan.data.len();
    let mut order: Option<(u64, Vec<usize>)> = None;
    // The data set's nonzeros, once (a batch then takes its rows of them).
    let sparse = sgd::SparseRows::of(plan.data.x.view());
    while state.step < plan.total_steps {
        let t = state.step;
        let t0 = std::time::Instant::now();
        let epoch = t / spe;
        if order.as_ref().is_none_or(|o| o.0 != epoch) {
            order = Some((epoch, data::order(n, epoch, plan.shuffle)));
        }
        let idx = &order.as_ref().unwrap().1[plan.batch_range(t)];
        let (xb, yb) = batch_rows(&plan.data, idx);
        let g = sgd::gradients_by(&plan.net, &state.weights, xb.view(), yb.view(), sparse.as_ref().map(|sp| (sp, idx))).map_err(|d| {
            Error::Numerical(format!(
                "training diverged at step {} (epoch {epoch}): the {} pass left the range of f64 at layer {} (the cost is NaN or infinite); lower --lr",
                t + 1,
                d.pass,
                d.layer
            ))
        })?;
        let update = sgd::apply(&mut state.weights, &g, plan.lr, plan.l2, n);
        state.step += 1;
        state.step_seconds += t0.elapsed().as_secs_f64();
        if let Some(l) = state.weights.w.iter().zip(&state.weights.b).position(|(w, b)| !w.iter().chain(b.iter()).all(|v| v.is_finite())) {
            return Err(Error::Numerical(format!("training diverged at step {} (epoch {epoch}): layer {}'s weights left the range of f64; lower --lr", t + 1, l + 1)));
        }
        if state.step.is_multiple_of(plan.every) || state.step == plan.total_steps {
            let r = record(plan, state, &update)?;
            state.history.push(r);
            on_record(state)?;
        }
    }
    Ok(())
}
