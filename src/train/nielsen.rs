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

/// Nielsen's ‖∂C/∂b^l‖ for his three MNIST networks (hidden layers l = 1..L−1), copied with
/// the digits the files print from mnielsen/neural-networks-and-deep-learning at commit
/// 24c21e45ca3d9d9a8864809cc726bf00a2f09733: `fig/norms_during_training_2_layers.json`,
/// `fig/norms_during_training_3_layers.json` and `fig/norms_during_training_4_layers.json`.
/// Each file holds one entry per epoch j = 0..499, recorded before epoch j's step
/// (`fig/generate_gradient.py`, `for j in range(epochs)` with `epochs = 500`), so his entry j
/// is our row at epoch j and there is no entry after the 500th step: his last (499) stands
/// beside our epoch 500, as the table's notes say.
pub const NIELSEN_PUBLISHED: [NielsenRun; 3] = [
    NielsenRun {
        hidden: 2,
        entries: [
            (0, &[0.06574134326503182, 0.3092184942703712]),
            (10, &[0.008929980735740226, 0.04038231936325889]),
            (50, &[0.0010170380046287963, 0.0013421948454926998]),
            (100, &[0.0014879237554861209, 0.001857016210943517]),
            (499, &[0.003434568507576292, 0.009630366361002016]),
        ],
    },
    NielsenRun {
        hidden: 3,
        entries: [
            (0, &[0.011838212272121293, 0.05996519457449515, 0.28314239285488185]),
            (10, &[0.0020043442922741852, 0.010416537825683338, 0.05962372375486329]),
            (50, &[8.504082618210321e-05, 0.00032551264159901277, 0.0016005861484182206]),
            (100, &[8.052708343928774e-05, 0.00028091973329607303, 0.001384531844390529]),
            (499, &[8.5560837276469e-05, 0.0002181636837403912, 0.0012614452096274679]),
        ],
    },
    NielsenRun {
        hidden: 4,
        entries: [
            (0, &[0.0029752663545292526, 0.017076665445425132, 0.06953924167660484, 0.28513893545173896]),
            (10, &[0.0002659242891715965, 0.0014749654385404984, 0.008403609009339504, 0.0365663235008727]),
            (50, &[2.064675607318291e-05, 4.802973796555383e-05, 0.00024657980706626703, 0.0010448834307676185]),
            (100, &[1.8335386405193066e-05, 4.239918837879122e-05, 0.00022150132297543284, 0.0009599658308127964]),
            (499, &[8.21211652552637e-06, 2.614381736985433e-05, 0.00018252897168458156, 0.0009247251418948941]),
        ],
    },
];

/// One of Nielsen's networks: its hidden-layer count and (his entry index, values) pairs.
#[derive(Debug, Clone, Copy)]
pub struct NielsenRun {
    pub hidden: usize,
    pub entries: [(u64, &'static [f64]); 5],
}

/// Nielsen's values for `hidden` hidden layers beside our row at `epoch`: his entry of the
/// same index, and his last (499) beside our 500 (see [`NIELSEN_PUBLISHED`]).
pub fn nielsen_published(hidden: usize, epoch: u64) -> Option<&'static [f64]> {
    let entry = if epoch == 500 { 499 } else { epoch };
    let run = NIELSEN_PUBLISHED.iter().find(|r| r.hidden == hidden)?;
    run.entries.iter().find(|(e, _)| *e == entry).map(|(_, v)| *v)
}

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
        let published = |e: u64| nielsen_published(hidden, e).filter(|_| mnist).map(<[f64]>::to_vec);
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
        "Nielsen's published values (beside MNIST only): fig/norms_during_training_{2,3,4}_layers.json of mnielsen/neural-networks-and-deep-learning (commit 24c21e4), his entries 0, 10, 50, 100 beside our epochs 0, 10, 50, 100".into(),
        "his JSON records before each of epochs 0..499 and has no value after the 500th step: beside our epoch 500 stands his last entry, 499 (one step earlier)".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The epoch-0 values of the 3-hidden-layer network are the file's digits, and they round
    /// to the 0.011838 / 0.059965 / 0.283142 that `reproduce nielsen` and the docs cite.
    #[test]
    fn epoch0_three_layers_are_his_digits() {
        let v = nielsen_published(3, 0).unwrap();
        assert_eq!(v, [0.011838212272121293, 0.05996519457449515, 0.28314239285488185]);
        let rounded: Vec<f64> = v.iter().map(|x| (x * 1e6).round() / 1e6).collect();
        assert_eq!(rounded, crate::theory::reproduce::NIELSEN_PUBLISHED);
    }

    /// His data fall from epoch 0 to 10 to 50 in every layer of every network; from 50 to 100
    /// they keep falling for 3 and 4 hidden layers and rise again for 2 (his first layer's
    /// minimum is near entry 39). A value copied at the wrong entry or with a slipped digit
    /// breaks this order or the lengths.
    #[test]
    fn his_values_keep_his_order() {
        for run in NIELSEN_PUBLISHED {
            assert_eq!(run.entries.map(|(e, _)| e), [0, 10, 50, 100, 499]);
            for (_, v) in run.entries {
                assert_eq!(v.len(), run.hidden, "{} hidden layers", run.hidden);
                assert!(v.iter().all(|x| x.is_finite() && *x > 0.0));
                // The later layer learns faster at every recorded epoch.
                assert!(v.windows(2).all(|w| w[0] < w[1]), "{} hidden: {v:?}", run.hidden);
            }
            let at = |i: usize, l: usize| run.entries[i].1[l];
            for l in 0..run.hidden {
                assert!(at(0, l) > at(1, l) && at(1, l) > at(2, l), "{} hidden, layer {}", run.hidden, l + 1);
                let falls = at(2, l) > at(3, l);
                assert_eq!(falls, run.hidden != 2, "{} hidden, layer {}: 50 → 100", run.hidden, l + 1);
            }
        }
    }

    /// Our epoch 500 shows his last entry; epochs he does not have in the table show nothing.
    #[test]
    fn lookup_maps_500_to_his_last_entry() {
        assert_eq!(nielsen_published(4, 500), Some(NIELSEN_PUBLISHED[2].entries[4].1));
        assert_eq!(nielsen_published(2, 100).unwrap()[0], 0.0014879237554861209);
        assert_eq!(nielsen_published(3, 499), Some(NIELSEN_PUBLISHED[1].entries[4].1));
        assert!(nielsen_published(3, 20).is_none() && nielsen_published(5, 0).is_none());
    }
}
