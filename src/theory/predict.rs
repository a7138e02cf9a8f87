//! The mean-field prediction of a probe's per-layer `log10_grad_b_rms`, and the fitted
//! per-layer slope of a measured profile.
//!
//! Finite-width formula (docs/THEORY.md, "The predicted profile"), per example x, with the
//! effective variances σ_w²⁽ˡ⁾ = n_{l−1}·Var W^l_ij and σ_b²⁽ˡ⁾ of each layer:
//!
//! ```text
//! q¹_x      = σ_w²⁽¹⁾ ‖x‖²/n₀ + σ_b²⁽¹⁾,   q^l_x = σ_w²⁽ˡ⁾ E[σ(√q^{l−1}_x z)²] + σ_b²⁽ˡ⁾
//! E‖δ^L_x‖² = Σ_i E_h[σ_L′(h)² (σ_L(h) − y_{x,i})²],  h ~ N(0, q^L_x)   (quadratic)
//!           = Σ_i E_h[(σ(h) − y_{x,i})²]                                (cross-entropy)
//! E‖δ^l_x‖² = E‖δ^{l+1}_x‖² · σ_w²⁽ˡ⁺¹⁾ E[σ′(√q^l_x z)²]
//! grad_b_rms^l predicted = sqrt((1/B) Σ_x E‖δ^l_x‖²)
//! ```
//!
//! The backward factor has no width ratio: with W^{l+1}_ji ~ N(0, σ_w²/n_l),
//! E‖(W^{l+1})ᵀδ‖² = n_l · (σ_w²/n_l) ‖δ‖² = σ_w² ‖δ‖², whatever n_{l+1} is.

use ndarray::Array2;

use crate::error::{Error, Result};
use crate::model::{Activation, Cost, InitKind, Network, Params, Problem};
use crate::stats::Report;

use super::meanfield::{chi, length_map};
use super::quadrature::GaussianQuadrature;

/// The effective (σ_w², σ_b²) of every layer l = 1..L, as mean-field theory sees them:
/// `n_{l−1} Var W^l_ij` and `Var b^l_i`.
///
/// Generated weights: from the init (xavier: 2n_{l−1}/(n_{l−1}+n_l); orthogonal σ_w·Q:
/// σ_w² min(1, n_{l−1}/n_l)). Stored weights: the empirical n_{l−1}·mean(W²) and mean(b²).
pub fn layer_variances(net: &Network) -> Vec<(f64, f64)> {
    (1..=net.depth())
        .map(|l| {
            let (n_in, n_out) = (net.widths[l - 1], net.widths[l]);
            match &net.params {
                Params::Generated { init, .. } => {
                    let w = if init.kind == InitKind::Orthogonal {
                        init.sigma_w2.unwrap_or(1.0) * (n_in as f64 / n_out as f64).min(1.0)
                    } else {
                        init.layer_sigma_w2(n_in, n_out)
                    };
                    (w, init.sigma_b2)
                }
                Params::Stored(p) => {
                    let w = &p.w[l - 1];
                    let b = &p.b[l - 1];
                    let mw = w.iter().map(|v| v * v).sum::<f64>() / w.len().max(1) as f64;
                    let mb = b.iter().map(|v| v * v).sum::<f64>() / b.len().max(1) as f64;
                    (n_in as f64 * mw, mb)
                }
            }
        })
        .collect()
}

/// The mean-field prediction for one problem.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Predicted `log10_grad_b_rms` for l = 1..L.
    pub log10_grad_b_rms: Vec<f64>,
    /// Batch mean of q^l_x for l = 1..L.
    pub q: Vec<f64>,
    /// log10 of the batch-mean predicted ratio E‖δ^l‖²/E‖δ^{l+1}‖² for l = 1..L−1.
    pub log10_chi: Vec<f64>,
}

/// `log10 sqrt(mean(10^(2 v)))` over values given as log10, safely.
fn log10_rms_of_logs(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    let s: f64 = v.iter().map(|x| 10f64.powf(2.0 * (x - m))).sum::<f64>() / v.len() as f64;
    m + 0.5 * s.log10()
}

/// The predicted per-layer profile for a problem (inputs and targets as given).
///
/// # Errors
/// [`Error::Numerical`] when q^l overflows f64 (an unbounded σ with σ_w² far past its
/// critical value) or the predicted top-layer gradient is not finite.
pub fn predict(p: &Problem) -> Result<Prediction> {
    let mut v = predict_depths(p, &[p.net.depth()])?;
    Ok(v.pop().expect("one depth"))
}

/// [`predict`] for the prefix networks of depths `depths` (each ≤ L; the sweep's depths),
/// from one pass: q^l and the per-layer factors χ_l do not depend on the depth, only the
/// top-layer term E‖δ^d‖² does.
///
/// # Errors
/// As [`predict`]; a depth outside 1..=L.
pub fn predict_depths(p: &Problem, depths: &[usize]) -> Result<Vec<Prediction>> {
    let net = &p.net;
    let big_l = depths.iter().copied().max().unwrap_or(0);
    if big_l == 0 || big_l > net.depth() {
        return Err(Error::Internal(format!("predict_depths: depths must lie in 1..={}", net.depth())));
    }
    let vars = layer_variances(net);
    let n0 = net.widths[0] as f64;
    let quad = GaussianQuadrature::shared();
    let bsz = p.batch();
    // Examples with the same ‖x‖² share their q sequence.
    let mut norms: Vec<(f64, usize)> = p.inputs.rows().into_iter().enumerate().map(|(x, r)| (r.dot(&r) / n0, x)).collect();
    norms.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Per depth: log10 E‖δ^l_x‖² for l = 1..d.
    let mut log_d2: Vec<Vec<Vec<f64>>> = depths.iter().map(|&d| vec![vec![0.0; bsz]; d + 1]).collect();
    let mut q_sum = vec![0.0; big_l + 1];
    let mut chi_sum = vec![0.0; big_l];
    let mut i = 0;
    while i < norms.len() {
        let mut j = i;
        while j < norms.len() && norms[j].0 == norms[i].0 {
            j += 1;
        }
        let (qs, lqs, log_chis) = q_and_chi(net, big_l, &vars, norms[i].0)?;
        for l in 1..=big_l {
            q_sum[l] += qs[l] * (j - i) as f64;
        }
        for l in 1..big_l {
            chi_sum[l] += 10f64.powf(log_chis[l]) * (j - i) as f64;
        }
        for (k, &d) in depths.iter().enumerate() {
            let out_act = net.activation_at(d);
            let q_top = qs[d];
            let nl = net.widths[d] as f64;
            // Far below 1 (only reachable with σ_b² = 0 and σ(0) = 0) the output layer is its
            // tangent too: E‖δ^L‖² = n (r⁴+l⁴)/2 · q + (r³−l³)√(2q/π)·(−Σy)… the q terms
            // vanish beside the target's (r²+l²)/2·‖y‖², or carry it alone when y = 0.
            let tangent_top = out_act.slopes_at_zero().filter(|_| lqs[d] < -200.0 && net.cost == Cost::Quadratic);
            if let Some((r, left)) = tangent_top {
                for &(_, x) in &norms[i..j] {
                    let y = p.targets.row(x);
                    let syy = y.dot(&y);
                    let mut acc = if syy > 0.0 {
                        (0.5 * (r * r + left * left) * syy).log10()
                    } else {
                        (nl * 0.5 * (r.powi(4) + left.powi(4))).log10() + lqs[d]
                    };
                    log_d2[k][d][x] = acc;
                    for l in (1..d).rev() {
                        acc += log_chis[l];
                        log_d2[k][l][x] = acc;
                    }
                }
                continue;
            }
            let kinks = out_act.kinks();
            let d2 = |h: f64| if net.cost == Cost::CrossEntropy { 1.0 } else { out_act.dsigma(h).powi(2) };
            let (e_d2s2, e_d2s, e_d2) = if out_act == Activation::Linear && net.cost == Cost::Quadratic {
                (q_top, 0.0, 1.0)
            } else {
                (
                    quad.expect_scaled(q_top, kinks, |h| d2(h) * out_act.sigma(h).powi(2)),
                    quad.expect_scaled(q_top, kinks, |h| d2(h) * out_act.sigma(h)),
                    quad.expect_scaled(q_top, kinks, d2),
                )
            };
            for &(_, x) in &norms[i..j] {
                let y = p.targets.row(x);
                let (sy, syy) = (y.sum(), y.dot(&y));
                let top = nl * e_d2s2 - 2.0 * e_d2s * sy + e_d2 * syy;
                if !(top.is_finite() && top >= 0.0) {
                    return Err(Error::Numerical(format!("the predicted E‖δ^L‖² is {top} for example {x}")));
                }
                let mut acc = top.max(0.0).log10();
                log_d2[k][d][x] = acc;
                for l in (1..d).rev() {
                    acc += log_chis[l];
                    log_d2[k][l][x] = acc;
                }
            }
        }
        i = j;
    }
    Ok(depths
        .iter()
        .zip(&log_d2)
        .map(|(&d, ld)| Prediction {
            log10_grad_b_rms: (1..=d).map(|l| log10_rms_of_logs(&ld[l].iter().map(|v| 0.5 * v).collect::<Vec<_>>())).collect(),
            q: (1..=d).map(|l| q_sum[l] / bsz as f64).collect(),
            log10_chi: (1..d).map(|l| (chi_sum[l] / bsz as f64).log10()).collect(),
        })
        .collect())
}

/// q^1..q^L (index 0 unused), log10 q^l, and log10 χ_l = log10 σ_w²⁽ˡ⁺¹⁾ E[σ′(√q^l z)²]
/// for l = 1..L−1, from ‖x‖²/n₀. Once q^l stops changing (to 1e-14) the remaining layers
/// reuse the last values where the variances repeat, so depth 10⁴ costs little. Below
/// q = 1e-200 a σ with σ(0) = 0 is its tangent (slopes r, l on each side), where the maps
/// are exactly linear: q ↦ σ_w² (r²+l²)/2 · q + σ_b² and χ = σ_w² (r²+l²)/2; with σ_b² = 0
/// q keeps shrinking geometrically past f64's range, so it is carried as log10 q.
#[allow(clippy::type_complexity)]
fn q_and_chi(net: &Network, big_l: usize, vars: &[(f64, f64)], norm2: f64) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let mut qs = vec![0.0; big_l + 1];
    let mut lqs = vec![0.0; big_l + 1];
    let mut log_chis = vec![0.0; big_l];
    qs[1] = vars[0].0 * norm2 + vars[0].1;
    lqs[1] = qs[1].log10();
    let mut settled = false;
    for l in 1..=big_l {
        let q = qs[l];
        if !q.is_finite() {
            return Err(Error::Numerical(format!(
                "q^{l} overflows f64: the mean-field prediction is unavailable for this network"
            )));
        }
        let act = net.activation_at(l);
        if l == big_l {
            break;
        }
        let tangent = act.slopes_at_zero().filter(|_| lqs[l] < -200.0 && vars[l].1 == 0.0);
        if let Some((r, left)) = tangent {
            let c = vars[l].0 * 0.5 * (r * r + left * left);
            log_chis[l] = c.log10();
            lqs[l + 1] = lqs[l] + c.log10();
            qs[l + 1] = 10f64.powf(lqs[l + 1]);
            continue;
        }
        let same_next = l >= 2 && vars[l] == vars[l - 1] && net.activation_at(l - 1) == act;
        log_chis[l] = if settled && same_next { log_chis[l - 1] } else { chi(act, vars[l].0, q).log10() };
        let next = if settled && same_next { q } else { length_map(act, vars[l].0, vars[l].1, q) };
        settled = next == q || (next - q).abs() <= 1e-14 * q;
        qs[l + 1] = next;
        lqs[l + 1] = next.log10();
    }
    Ok((qs, lqs, log_chis))
}

/// The predicted `log10_grad_b_rms` of every layer: the column `log10_grad_b_rms_predicted`.
///
/// # Errors
/// As [`predict`].
pub fn predicted_log10_grad_b_rms(p: &Problem) -> Result<Vec<f64>> {
    Ok(predict(p)?.log10_grad_b_rms)
}

/// The predicted profile anchored at a measured top layer: the prediction shifted so its
/// layer L equals `measured_top` (isolates the per-layer factors from the top-layer model).
pub fn anchored(pred: &[f64], measured_top: f64) -> Vec<f64> {
    let shift = measured_top - pred[pred.len() - 1];
    pred.iter().map(|v| v + shift).collect()
}

/// Least-squares line y = a + b x: `(slope b, intercept a)`; None with fewer than two
/// distinct finite points.
pub fn fit_line(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = x.iter().zip(y).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| (*a, *b)).collect();
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return None;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = sxy / sxx;
    Some((b, my - b * mx))
}

/// The fitted per-layer log10 ratio ‖δ^l‖/‖δ^{l+1}‖ over layers `from..=to` of a measured
/// profile: minus the least-squares slope of `log10_grad_b_rms` against l. Mean-field
/// theory puts it at log10 √χ₁ = ½ log10 χ₁ at equal widths.
pub fn fitted_log10_ratio(report: &Report, from: usize, to: usize) -> Option<f64> {
    let (x, y): (Vec<f64>, Vec<f64>) = report
        .layers
        .iter()
        .filter(|s| s.layer >= from && s.layer <= to)
        .map(|s| (s.layer as f64, s.log10_grad_b_rms))
        .unzip();
    fit_line(&x, &y).map(|(b, _)| -b)
}

/// The same fit for a predicted (or any) profile given as log10 values for l = 1..L.
pub fn fitted_log10_ratio_of(profile: &[f64], from: usize, to: usize) -> Option<f64> {
    let (x, y): (Vec<f64>, Vec<f64>) = (from..=to.min(profile.len())).map(|l| (l as f64, profile[l - 1])).unzip();
    fit_line(&x, &y).map(|(b, _)| -b)
}

/// Rows of an `Array2` as `‖x‖²/n₀` (the input norm mean-field theory starts from).
pub fn input_norms2(inputs: &Array2<f64>) -> Vec<f64> {
    let n0 = inputs.ncols().max(1) as f64;
    inputs.rows().into_iter().map(|r| r.dot(&r) / n0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_fit_recovers_a_line() {
        let x: Vec<f64> = (0..10).map(|v| v as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| 3.0 - 0.25 * v).collect();
        let (b, a) = fit_line(&x, &y).unwrap();
        assert!((b + 0.25).abs() < 1e-14 && (a - 3.0).abs() < 1e-13);
        assert!(fit_line(&[1.0], &[2.0]).is_none());
    }

    #[test]
    fn rms_of_logs_is_exact_and_safe() {
        let v = [-4000.0, -4000.0 + 0.5 * 3f64.log10()];
        // sqrt((1 + 3)/2) · 10^-4000
        assert!((log10_rms_of_logs(&v) - (-4000.0 + 0.5 * 2f64.log10())).abs() < 1e-12);
    }
}
