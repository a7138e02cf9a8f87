//! The free-probability prediction beside the measured spectrum: the mean and variance of
//! the eigenvalues λ = s² of J Jᵀ (Pennington, Schoenholz & Ganguli 2017, eqs. 9–14;
//! Pennington, Schoenholz & Ganguli 2018, §3), in the wide limit at the fixed point q*.

use serde::Serialize;

use crate::model::{InitKind, Params, Problem};
use crate::stats::{LOG10_2, log2_sum_exp2};
use crate::theory::quadrature::GaussianQuadrature;
use crate::theory::{MeanField, q_sequence};

use super::{Chain, ExampleSpectrum};

/// What the theory predicts for a chain of `layers` factors Σ′W, and what it assumes.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumPrediction {
    /// Number of Σ′W factors in the chain (L, or L − l with `--from-layer l`).
    pub layers: usize,
    pub q_star: f64,
    pub chi1: f64,
    /// μ_k = E[σ′(√q* z)^{2k}] for k = 1, 2.
    pub mu1: f64,
    pub mu2: f64,
    /// s₁, the first coefficient of the S-transform of W Wᵀ: −1 for i.i.d. weights, 0 for
    /// orthogonal ones.
    pub s1: f64,
    /// log10 of the predicted mean of λ: L log10 χ₁.
    pub log10_mean_lambda: f64,
    /// The predicted var(λ)/mean(λ)² = L (μ₂/μ₁² − 1 − s₁) (docs/MATH.md).
    pub var_over_mean2: f64,
    /// The first layer where the length map iterated from the inputs' own q¹ is within 1%
    /// of q* (the prediction assumes q = q* on every layer); None if not within the chain.
    pub q_star_reached_at_layer: Option<usize>,
}

/// The prediction for this chain, or why there is none.
pub fn predict(p: &Problem, chain: Chain, depth: usize) -> std::result::Result<SpectrumPrediction, String> {
    let net = &p.net;
    let start = chain.start();
    let w = &net.widths[start..=depth];
    if w.iter().any(|&n| n != w[0]) || (chain == Chain::InputOutput && net.widths[0] != net.widths[1]) {
        return Err("the prediction is for equal widths (square layers)".into());
    }
    if net.linear_output && depth == net.depth() {
        return Err("the prediction has the same σ on every layer; this network's output layer is linear".into());
    }
    let Params::Generated { init, .. } = &net.params else {
        return Err("the prediction needs random weights, not --weights".into());
    };
    let s1 = if init.kind == InitKind::Orthogonal { 0.0 } else { -1.0 };
    let n = net.widths[1];
    let sigma_w2 = init.layer_sigma_w2(n, n);
    let act = net.activation;
    let mf = MeanField::new(act, sigma_w2, init.sigma_b2).map_err(|e| e.to_string())?;
    let q = mf.q_star();
    let quad = GaussianQuadrature::shared();
    let mu = |k: i32| if act.is_homogeneous() { mean_pow_homogeneous(act, k) } else { quad.expect_scaled(q, act.kinks(), |x| act.dsigma(x).powi(2 * k)) };
    let (mu1, mu2) = (mu(1), mu(2));
    let layers = depth - start;
    // q¹ of each example, as the probe's mean-field line takes it; the slowest one counts.
    // A homogeneous σ′ does not depend on q at all: nothing to reach.
    let reached = if act.is_homogeneous() { Some(1) } else { crate::theory::predict::input_norms2(&p.inputs)
        .iter()
        .map(|&x2| {
            let seq = q_sequence(act, sigma_w2, init.sigma_b2, x2, depth).ok()?;
            seq.iter().position(|&ql| (ql - q).abs() <= 0.01 * q.abs().max(f64::MIN_POSITIVE)).map(|i| i + 1)
        })
        .try_fold(0usize, |m, r| r.map(|r| m.max(r))) };
    Ok(SpectrumPrediction {
        layers,
        q_star: q,
        chi1: mf.chi1(),
        mu1,
        mu2,
        s1,
        log10_mean_lambda: layers as f64 * mf.chi1().log10(),
        var_over_mean2: layers as f64 * (mu2 / (mu1 * mu1) - 1.0 - s1),
        q_star_reached_at_layer: reached.filter(|&l| l <= depth),
    })
}

/// E[σ′(z)^{2k}] for relu, leaky-relu and linear, whose σ′ does not depend on the scale.
fn mean_pow_homogeneous(act: crate::model::Activation, k: i32) -> f64 {
    0.5 * (act.dsigma(1.0).powi(2 * k) + act.dsigma(-1.0).powi(2 * k))
}

/// The measured counterparts of one example: log10 mean(λ) and var(λ)/mean(λ)², λ = s²
/// over all min(n_L, n_start) singular values (exact zeros included).
pub fn lambda_moments(e: &ExampleSpectrum) -> (f64, f64) {
    let n = e.log10_singular_values.len() as f64;
    let l2: Vec<f64> = e.log10_singular_values.iter().map(|v| 2.0 * v / LOG10_2).collect();
    let m1 = log2_sum_exp2(l2.iter().copied()) - n.log2();
    let m2 = log2_sum_exp2(l2.iter().map(|v| 2.0 * v)) - n.log2();
    (m1 * LOG10_2, (m2 - 2.0 * m1).exp2() - 1.0)
}
