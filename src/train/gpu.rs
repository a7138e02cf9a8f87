//! `train --backend gpu`: the loop of [`super::train`] with the SGD steps on the device
//! ([`crate::backend::gpu::train::Trainer`], f32) and the records on the host.
//!
//! The device starts from the host's draw of the weights rounded to f32 (the CPU's own init,
//! orthogonal and `--weights` included, not a second draw on the device whose Box–Muller
//! agrees with the host's only to a few ulp), so `--check` compares two trajectories from one
//! starting point. A record reads the weights back and hands them to the same f64 engine as
//! the CPU run ([`super::record`]): every recorded statistic has one definition on both
//! backends, and only `log10_update_w` comes from the device (its update kernel's sums).

use ndarray::ArrayView2;

use super::sgd::{self, Weights};
use super::{batch_rows, data, record, record_start, TrainPlan, TrainState};
use crate::backend::gpu::train::{OutOfRange, Trainer};
use crate::backend::gpu::GpuBackend;
use crate::error::{Error, Result};

/// Where the f32 and f64 trajectories stand after one checked step.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// The step taken (1-based).
    pub step: u64,
    /// The batch cost before the step, at the device's weights and at the CPU's (both in f64).
    pub cost_f32: f64,
    pub cost_f64: f64,
    /// Per layer: ‖W_f32 − W_f64‖_F / ‖W_f64‖_F and the same for b, after the step.
    pub rel_w: Vec<f64>,
    pub rel_b: Vec<f64>,
}

impl CheckRow {
    /// The largest relative difference and where: (value, layer (0: the cost), "W"|"b"|"cost").
    pub fn worst(&self) -> (f64, usize, &'static str) {
        let mut worst = (rel(self.cost_f32, self.cost_f64), 0, "cost");
        for (l, (&w, &b)) in self.rel_w.iter().zip(&self.rel_b).enumerate() {
            for (v, what) in [(w, "W"), (b, "b")] {
                if !(v <= worst.0) {
                    worst = (v, l + 1, what);
                }
            }
        }
        worst
    }

    /// One line: the step, the costs and each layer's relative differences.
    pub fn line(&self) -> String {
        let layers: Vec<String> = self.rel_w.iter().zip(&self.rel_b).enumerate().map(|(l, (w, b))| format!("{}: W {w:.1e} b {b:.1e}", l + 1)).collect();
        let (v, l, what) = self.worst();
        let at = if what == "cost" { "the cost".to_string() } else { format!("{what}^{l}") };
        format!(
            "check step {:>4}: cost {:.9} (f32 weights) vs {:.9} (f64), rel {:.1e}; rel ‖Δ‖/‖·‖ per layer {}; largest {v:.1e} at {at}",
            self.step,
            self.cost_f32,
            self.cost_f64,
            rel(self.cost_f32, self.cost_f64),
            layers.join(", ")
        )
    }
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b { 0.0 } else { (a - b).abs() / b.abs() }
}

fn rel_frobenius<'a>(a: impl IntoIterator<Item = &'a f64>, b: impl IntoIterator<Item = &'a f64>) -> f64 {
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (x, y) in a.into_iter().zip(b) {
        d += (x - y) * (x - y);
        n += y * y;
    }
    if d == 0.0 { 0.0 } else { (d / n).sqrt() }
}

/// The weights rounded to f32, as the device holds them.
pub fn rounded(w: &Weights) -> Weights {
    Weights { w: w.w.iter().map(|m| m.mapv(|v| v as f32 as f64)).collect(), b: w.b.iter().map(|v| v.mapv(|v| v as f32 as f64)).collect() }
}

/// The batch cost C = (1/B) Σ_x C_x at `p`, in f64 (NaN when the forward pass overflows).
fn batch_cost(plan: &TrainPlan, p: &Weights, x: ArrayView2<f64>, y: ArrayView2<f64>) -> f64 {
    let Ok(f) = sgd::forward(&plan.net, p, x) else { return f64::NAN };
    let (z, a) = f.last().unwrap();
    (0..x.nrows()).map(|i| plan.net.cost.example_cost(z.row(i), a.row(i), y.row(i))).sum::<f64>() / x.nrows() as f64
}

/// Opens the device's copy of the run: the weights of `state` and the training set uploaded.
///
/// # Errors
/// As [`Trainer::new`].
pub fn trainer<'c>(gpu: &'c GpuBackend, plan: &TrainPlan, state: &TrainState) -> Result<Trainer<'c>> {
    let decay = plan.lr * plan.l2 / plan.data.len() as f64;
    Trainer::new(gpu, &plan.net, &state.weights.w, &state.weights.b, &plan.data.x, &plan.data.y, plan.batch, plan.lr, decay)
}

fn diverged(plan: &TrainPlan, o: OutOfRange) -> Error {
    let epoch = (o.step - 1) / plan.steps_per_epoch();
    Error::Numerical(format!(
        "training diverged at step {} (epoch {epoch}): the {} pass left the range of f32 (±3.4e38, or NaN) at layer {} on the GPU; lower --lr, or train in f64 with --backend cpu",
        o.step, o.pass, o.layer
    ))
}

/// [`super::train`] on the device: from `state` to `plan.total_steps`, recording at step 0
/// (when nothing is recorded yet), every `plan.every` steps and after the last. With
/// `check` > 0 the CPU takes the first `check` steps beside the device from the f64 draw
/// (or the checkpoint) and `on_check` sees each [`CheckRow`].
///
/// # Errors
/// [`Error::Numerical`] when a step leaves f32's range (the step and layer named; the
/// records before it are in `state`), [`Error::CheckFailed`] when a checked step parts
/// beyond `check_rtol`, a device failure, or an error of a callback.
pub fn train_gpu(
    plan: &TrainPlan,
    state: &mut TrainState,
    dev: &mut Trainer<'_>,
    check: u64,
    check_rtol: f64,
    on_check: &mut dyn FnMut(&CheckRow),
    on_record: &mut dyn FnMut(&TrainState) -> Result<()>,
) -> Result<()> {
    let mut cpu = (check > 0).then(|| state.weights.clone());
    state.weights = rounded(&state.weights);
    record_start(plan, state, on_record)?;
    let spe = plan.steps_per_epoch();
    let n = plan.data.len();
    let first = state.step;
    let mut order: Option<(u64, Vec<usize>)> = None;
    let mut t0 = std::time::Instant::now();
    while state.step < plan.total_steps {
        let t = state.step;
        let epoch = t / spe;
        if order.as_ref().is_none_or(|o| o.0 != epoch) {
            let o = data::order(n, epoch, plan.shuffle);
            dev.set_order(&o)?;
            order = Some((epoch, o));
        }
        let range = plan.batch_range(t);
        dev.step(t + 1, range.start, range.len())?;
        if let Some(o) = dev.out_of_range() {
            return Err(diverged(plan, o));
        }
        state.step += 1;
        let checking = cpu.is_some() && t < first + check;
        let recording = state.step.is_multiple_of(plan.every) || state.step == plan.total_steps;
        if !(checking || recording) {
            continue;
        }
        let oor = dev.sync()?;
        state.step_seconds += t0.elapsed().as_secs_f64();
        if let Some(o) = oor {
            return Err(diverged(plan, o));
        }
        let (w, b) = dev.weights()?;
        let before = std::mem::replace(&mut state.weights, Weights { w, b });
        if checking {
            let c = cpu.as_mut().unwrap();
            let (xb, yb) = batch_rows(&plan.data, &order.as_ref().unwrap().1[range]);
            let g = sgd::gradients(&plan.net, c, xb.view(), yb.view())
                .map_err(|d| Error::Numerical(format!("--check: the f64 step {} left the range of f64 at layer {} ({} pass)", t + 1, d.layer, d.pass)))?;
            sgd::apply(c, &g, plan.lr, plan.l2, n);
            let row = CheckRow {
                step: t + 1,
                cost_f32: batch_cost(plan, &before, xb.view(), yb.view()),
                cost_f64: g.cost,
                rel_w: state.weights.w.iter().zip(&c.w).map(|(a, b)| rel_frobenius(a, b)).collect(),
                rel_b: state.weights.b.iter().zip(&c.b).map(|(a, b)| rel_frobenius(a, b)).collect(),
            };
            on_check(&row);
            let (v, l, what) = row.worst();
            if !(v <= check_rtol) {
                let at = if what == "cost" { "the batch cost".to_string() } else { format!("{what}^{l}") };
                return Err(Error::CheckFailed(format!(
                    "--check: at step {} the f32 (GPU) and f64 (CPU) trajectories part by {v:.2e} (relative) at {at}, beyond the tolerance {check_rtol:.0e}",
                    t + 1
                )));
            }
            if t + 1 == first + check {
                cpu = None;
            }
        }
        if recording {
            let update = dev.log10_update_w()?;
            let r = record(plan, state, &update)?;
            state.history.push(r);
            on_record(state)?;
        }
        t0 = std::time::Instant::now();
    }
    Ok(())
}

