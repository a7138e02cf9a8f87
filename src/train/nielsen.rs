//! `gradscope reproduce nielsen-training`: Nielsen's `fig/generate_gradient.py` run, the
//! per-hidden-layer ‖∂C/∂b^l‖ during 500 epochs of full-batch training, and a deeper network
//! beside the same network at tanh's critical point.

use serde::Serialize;

use super::data::{self, Dataset};
use super::history::field;
use super::{TrainPlan, TrainState, train};
use crate::error::{Error, Result};
use crate::model::{Activation, Cost, Init, InitKind, Network, Params};
use crate::stats::sci;
use crate::theory::reproduce::{NielsenData, ReproduceOptions, Reproduction};

/// Nielsen's epoch-0 ‖∂C/∂b^l‖ for [784, 30, 30, 30, 10] (layers 1, 2, 3), from
/// `fig/norms_during_training_3_layers.json` of mnielsen/neural-networks-and-deep-learning,
/// as quoted in gradscope's issues 12 and 13. His values at later epochs are not included:
/// they could not be copied from the file here.
pub const NIELSEN_EPOCH0_3_LAYERS: [f64; 3] = [0.011838, 0.059965, 0.283142];

/// The epochs shown.
pub const EPOCHS: [u64; 5] = [0, 10, 50, 100, 500];

/// One row: a network at an epoch.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingRow {
    pub network: String,
    pub epoch: u64,
    /// ‖∂C/∂b^l‖ = 10^log10_grad_b_mean for the hidden layers l = 1..L−1.
    pub grad_b_mean: Vec<f64>,
    /// ‖∂C/∂b^1‖ / ‖∂C/∂b^{L−1}‖.
    pub ratio_first_last: f64,
    pub cost: f64,
    pub accuracy: f64,
    /// Nielsen's value for the same layers, where one is cited.
    pub published: Option<Vec<f64>>,
}

/// Trains `net` on `data` full-batch (η, λ as given) for `epochs`, recording every `every`
/// epochs, and returns the rows at `at`.
#[allow(clippy::too_many_arguments)]
fn run(label: &str, net: Network, data: &Dataset, lr: f64, l2: f64, epochs: u64, at: &[u64], published: &dyn Fn(u64) -> Option<Vec<f64>>) -> Result<Vec<TrainingRow>> {
    let every = at.iter().copied().filter(|&e| e > 0).fold(0, gcd).max(1);
    let plan = TrainPlan { net, data: data.clone(), eval: data.clone(), lr, l2, batch: data.len(), total_steps: epochs, every, shuffle: None };
    let mut state = TrainState::start(&plan);
    train(&plan, &mut state, &mut |_| Ok(()))?;
    let g = field("log10_grad_b_mean");
    let mut rows = Vec::new();
    for rec in &state.history {
        let epoch = rec[(0, field("step"))] as u64;
        if !at.contains(&epoch) {
            continue;
        }
        let hidden = rec.nrows() - 1;
        let grads: Vec<f64> = (0..hidden).map(|l| 10f64.powf(rec[(l, g)])).collect();
        rows.push(TrainingRow {
            network: label.into(),
            epoch,
            ratio_first_last: 10f64.powf(rec[(0, g)] - rec[(hidden - 1, g)]),
            grad_b_mean: grads,
            cost: 10f64.powf(rec[(0, field("log10_cost"))]),
            accuracy: rec[(0, field("accuracy"))],
            published: published(epoch),
        });
    }
    Ok(rows)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>().join(" / ")
}

/// Runs the reproduction: `opt.batch` examples (default 1000), `opt.depth` the deep case's
/// number of weight layers (default 30), seed 1.
///
/// # Errors
/// Unreadable data, data without 10 classes, or a diverged run.
pub fn nielsen_training(opt: &ReproduceOptions) -> Result<Reproduction> {
    let count = opt.batch.unwrap_or(1000);
    let (data, mnist, source) = match &opt.data {
        NielsenData::Idx { images, labels } => {
            let d = data::idx(images, labels, count)?;
            let s = d.source.clone();
            (d, true, s)
        }
        NielsenData::Npy { inputs, targets } => {
            let d = data::npy(inputs, targets)?.first(count);
            let s = d.source.clone();
            (d, false, s)
        }
        NielsenData::Synthetic => {
            let d = data::digits()?.first(count);
            (d, false, format!("NOT MNIST: the built-in 8×8 DIGITS data set (64 inputs), first {count} of 1797 (no --images/--labels given)"))
        }
    };
    if data.y.ncols() != 10 {
        return Err(Error::arg("--targets", format!("nielsen-training needs 10 classes, the targets have {} columns", data.y.ncols())));
    }
    let n0 = data.x.ncols();
    let nielsen = Init::new(InitKind::Nielsen, None, None)?;
    let seed = 1;
    let mut rows = Vec::new();
    for hidden in [2usize, 3, 4] {
        let mut widths = vec![n0];
        widths.extend(std::iter::repeat_n(30, hidden));
        widths.push(10);
        let label = format!("{widths:?}");
        let net = Network::new(widths, Activation::Sigmoid, false, Cost::CrossEntropy, Params::Generated { init: nielsen, seed })?;
        let published = |e: u64| (mnist && hidden == 3 && e == 0).then(|| NIELSEN_EPOCH0_3_LAYERS.to_vec());
        rows.extend(run(&label, net, &data, 0.1, 5.0, 500, &EPOCHS, &published)?);
    }
    let depth = opt.depth.unwrap_or(30);
    let mut widths = vec![n0];
    widths.extend(std::iter::repeat_n(30, depth - 1));
    widths.push(10);
    let deep_at = [0, 10, 50, 100];
    let sig = Network::new(widths.clone(), Activation::Sigmoid, false, Cost::CrossEntropy, Params::Generated { init: nielsen, seed })?;
    rows.extend(run(&format!("depth {depth} sigmoid, nielsen init, cross-entropy"), sig, &data, 0.1, 5.0, 100, &deep_at, &|_| None)?);
    let critical = Init::new(InitKind::Gaussian, Some(1.0), Some(0.0))?;
    let tanh = Network::new(widths, Activation::Tanh, false, Cost::Quadratic, Params::Generated { init: critical, seed })?;
    rows.extend(run(&format!("depth {depth} tanh at its critical point (σ_w² = 1, σ_b² = 0), quadratic"), tanh, &data, 0.1, 5.0, 100, &deep_at, &|_| None)?);

    let columns = ["network", "epoch", "‖∂C/∂b^l‖, hidden l = 1..L−1", "first/last", "cost", "accuracy", "Nielsen (his JSON)"];
    let cells = rows
        .iter()
        .map(|r| {
            let grads = if r.grad_b_mean.len() > 4 { format!("{} … {}", sci(r.grad_b_mean[0].log10()), sci(r.grad_b_mean.last().unwrap().log10())) } else { list(&r.grad_b_mean) };
            vec![
                r.network.clone(),
                r.epoch.to_string(),
                grads,
                sci(r.ratio_first_last.log10()),
                format!("{:.4}", r.cost),
                format!("{:.3}", r.accuracy),
                r.published.as_deref().map(list).unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    let notes = vec![
        format!("data: {source}"),
        "protocol (Nielsen's fig/generate_gradient.py): sigmoid, network2.py init N(0, 1/n_in) weights and N(0, 1) biases, cross-entropy, full-batch gradient descent (batch = all examples), η = 0.1, L2 λ = 5.0, 500 epochs; ‖∂C/∂b^l‖ is the batch mean over the examples, before the epoch's step; seed 1".into(),
        "Nielsen's published values: only epoch 0 of fig/norms_during_training_3_layers.json (0.011838 / 0.059965 / 0.283142, as quoted in issues 12 and 13) is included, and only beside MNIST; his values at other epochs and for 2 and 4 hidden layers are not included (not copied here)".into(),
        "his JSON records before each of epochs 0..499; epoch 500 here is after the last step".into(),
        format!("deep case: {depth} weight layers of width 30, 100 epochs, same η and λ; the tanh network has a tanh output layer and the quadratic cost (cross-entropy needs a sigmoid output)"),
    ];
    Ok(Reproduction {
        name: "nielsen-training".into(),
        title: "Nielsen's speed of learning during training: ‖∂C/∂b^l‖ per hidden layer (docs/MATH.md, \"Training\")".into(),
        rows: serde_json::to_value(&rows).map_err(|e| Error::Internal(e.to_string()))?,
        notes,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        cells,
    })
}
