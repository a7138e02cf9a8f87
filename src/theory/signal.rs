//! The forward signal beside its theory (docs/MATH.md, "The forward signal, measured"): the
//! predicted length `log10_q_predicted` and correlation `c_predicted` per layer for a
//! problem's own inputs, the measured `log10_q` and `c` from a batch's pre-activations, and
//! the depth scale `xi_c_measured` fitted to a measured correlation profile.
//!
//! ```text
//! q¹_x   = σ_w²⁽¹⁾ ‖x‖²/n₀ + σ_b²⁽¹⁾,          q^l_x = σ_w²⁽ˡ⁾ E[σ(√q^{l−1}_x z)²] + σ_b²⁽ˡ⁾
//! q¹_xx' = σ_w²⁽¹⁾ x·x'/n₀ + σ_b²⁽¹⁾,           q^l_xx' = σ_w²⁽ˡ⁾ E[σ(u₁)σ(u₂)] + σ_b²⁽ˡ⁾
//!          (u₁, u₂) centred gaussian, Var u₁ = q^{l−1}_x, Var u₂ = q^{l−1}_x', Cov = q^{l−1}_xx'
//! c^l_xx' = q^l_xx' / √(q^l_x q^l_x')
//! log10_q_predicted(l) = log10 (1/B) Σ_x q^l_x
//! c_predicted(l)       = mean over pairs x < x' of c^l_xx'
//! ```
//!
//! Poole et al. 2016, eqs. 3 and 5 (the covariance map for two inputs of unequal length);
//! the fit of ξ_c is Schoenholz et al. 2017, eq. 9: |c^l − c*| ∝ exp(−l/ξ_c).
//!
//! The engines compute the measured quantities from sums they already form: Σ_x ‖z^l_x‖²
//! and the B × B Gram matrix of z^l (see [`log10_q_measured`] and [`c_measured`]).

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::model::{Activation, Problem};

use super::meanfield::{length_map, relu_pair};
use super::predict::layer_variances;
use super::quadrature::GaussianQuadrature;

/// `E[σ(u₁)σ(u₂)]` for centred gaussians with variances q1, q2 and correlation c: the
/// equal-variance pair rule at q = √(q1 q2), with u's rescaled by (q1/q2)^{±¼}, and the kinks
/// of both rescalings as breakpoints.
pub fn mean_sigma_pair(act: Activation, q1: f64, q2: f64, c: f64) -> f64 {
    mean_sigma_pair_with(GaussianQuadrature::shared(), act, q1, q2, c)
}

/// Points per panel of the rule `c_predicted` iterates with. The pair rule costs order²
/// per panel pair; 6 points on the shared rule's ~23 panels per axis (≈ 140 nodes) still
/// integrate a smooth σ to ~1e-12 (see the test against the default order), which is far
/// below the 1/√n sampling spread of any measured c, and cut the cost ~11 times.
pub const PAIR_ORDER: usize = 6;

/// At most this many pairs enter `c_predicted` (all of them up to B = 4): past that, an
/// evenly strided sample of the B(B−1)/2 pairs, because each pair costs one
/// two-dimensional quadrature per layer until it settles.
pub const PAIR_SAMPLE: usize = 6;

/// A pair whose c moves by at most this in a step that the next step repeats is carried from
/// then on. Where the map contracts at rate C′ < 1 the carried value is within
/// `SETTLE_C · C′/(1 − C′)` of its limit (3e-10 for tanh at σ_w² = 1, σ_b² = 0.05), far
/// below the 1/√n sampling spread of a measured c; this stops a pair after ~80 layers there
/// instead of ~120 at 1e-14.
pub const SETTLE_C: f64 = 1e-10;

fn pair_rule() -> &'static GaussianQuadrature {
    static RULE: std::sync::OnceLock<GaussianQuadrature> = std::sync::OnceLock::new();
    RULE.get_or_init(|| GaussianQuadrature::new(PAIR_ORDER))
}

fn mean_sigma_pair_with(rule: &GaussianQuadrature, act: Activation, q1: f64, q2: f64, c: f64) -> f64 {
    if q1 == 0.0 || q2 == 0.0 {
        return act.sigma(0.0) * if q1 == 0.0 && q2 == 0.0 { act.sigma(0.0) } else { mean_sigma(act, q1.max(q2)) };
    }
    let q = (q1 * q2).sqrt();
    if act == Activation::Relu {
        return relu_pair(q, c);
    }
    let (r1, r2) = ((q1 / q2).powf(0.25), (q2 / q1).powf(0.25));
    if act == Activation::Tanh
        && let Some(v) = super::fastquad::expect_tanh_pair(rule.legendre(), q, c, r1, r2)
    {
        return v;
    }
    let kinks: Vec<f64> = act.kinks().iter().flat_map(|k| [k / r1, k / r2]).collect();
    // The inner rule runs over u₂ at a fixed u₁: σ(u₁) is computed once per outer node.
    let mut last = (f64::NAN, 0.0);
    rule.expect_pair(q, c, &kinks, |a, b| {
        if a.to_bits() != last.0.to_bits() {
            last = (a, act.sigma(r1 * a));
        }
        last.1 * act.sigma(r2 * b)
    })
}

/// The pairs x < x' that `c_predicted` follows: all of them, or [`PAIR_SAMPLE`] evenly
/// strided through their list in row order.
pub fn predicted_pairs(bsz: usize) -> Vec<(usize, usize)> {
    let all: Vec<(usize, usize)> = (0..bsz).flat_map(|x| (x + 1..bsz).map(move |y| (x, y))).collect();
    if all.len() <= PAIR_SAMPLE {
        return all;
    }
    (0..PAIR_SAMPLE).map(|i| all[i * all.len() / PAIR_SAMPLE]).collect()
}

fn mean_sigma(act: Activation, q: f64) -> f64 {
    GaussianQuadrature::shared().expect_scaled(q, act.kinks(), |x| act.sigma(x))
}

/// Per-example input lengths ‖x‖²/n₀ and the pair products x·x'/n₀ of a problem.
fn input_gram(p: &Problem) -> Array2<f64> {
    let n0 = p.net.widths[0] as f64;
    p.inputs.dot(&p.inputs.t()) / n0
}

/// `log10_q_predicted` for l = 1..L: the length map iterated from each example's own q¹, the
/// batch mean taken in the linear domain (as the measured `log10_q` is), with each layer's
/// effective σ_w²⁽ˡ⁾, σ_b²⁽ˡ⁾ (see `theory::predict::layer_variances`).
///
/// # Errors
/// [`Error::Numerical`] where q^l leaves f64's range (an unbounded σ deep in chaos).
pub fn log10_q_predicted(p: &Problem) -> Result<Vec<f64>> {
    let qs = example_lengths(p, &layer_variances(&p.net), &input_gram(p))?;
    Ok(log10_mean_lengths(&qs))
}

fn log10_mean_lengths(qs: &[Vec<f64>]) -> Vec<f64> {
    qs.iter().map(|q| (q.iter().sum::<f64>() / q.len() as f64).log10()).collect()
}

/// `(log10_q_predicted, c_predicted)` of `p` from one iteration of the examples' lengths
/// (both need them): the same values as the two functions called apart.
///
/// # Errors
/// As [`log10_q_predicted`], for both.
pub fn signal_predicted(p: &Problem) -> Result<(Vec<f64>, Vec<f64>)> {
    let vars = layer_variances(&p.net);
    let g = input_gram(p);
    let qs = example_lengths(p, &vars, &g)?;
    let c = c_from_lengths(p, &vars, &g, &qs);
    Ok((log10_mean_lengths(&qs), c))
}

/// Each example's predicted q^l for l = 1..L (index l−1). An example whose q stopped
/// changing (to 1e-15 relative) under a step that the next step repeats (same σ, σ_w², σ_b²)
/// is at the map's fixed point to that accuracy and is carried, not recomputed: a deep
/// probe's cost then stops growing with depth.
fn example_lengths(p: &Problem, vars: &[(f64, f64)], g: &Array2<f64>) -> Result<Vec<Vec<f64>>> {
    let (w1, b1) = vars[0];
    let mut qs = vec![(0..p.batch()).map(|x| w1 * g[(x, x)] + b1).collect::<Vec<f64>>()];
    let map_at = |l: usize| (p.net.activation_at(l - 1), vars[l - 1]);
    for l in 2..=p.net.depth() {
        let (act, (w, b)) = map_at(l);
        let repeats = l >= 3 && map_at(l - 1) == map_at(l);
        let next: Vec<f64> = (0..p.batch())
            .map(|x| {
                let q = qs[l - 2][x];
                if repeats && (q - qs[l - 3][x]).abs() <= 1e-15 * q { q } else { length_map(act, w, b, q) }
            })
            .collect();
        if next.iter().any(|q| !q.is_finite()) {
            return Err(Error::Numerical(format!("the predicted q^l leaves f64's range at layer {l}")));
        }
        qs.push(next);
    }
    Ok(qs)
}

/// `c_predicted` for l = 1..L: the covariance map iterated per pair of examples from the
/// inputs' own lengths and correlation, c^l averaged over the pairs of [`predicted_pairs`]
/// (all B(B−1)/2 up to B = 4, a strided sample of [`PAIR_SAMPLE`] beyond); NaN for B = 1.
/// A pair stops being iterated once its (q_x, q_x') stop changing (to 1e-14) and its c to
/// [`SETTLE_C`]. Cost: one two-dimensional quadrature of order [`PAIR_ORDER`] per pair and layer
/// until then.
///
/// # Errors
/// [`Error::Numerical`] where q^l leaves f64's range.
pub fn c_predicted(p: &Problem) -> Result<Vec<f64>> {
    let depth = p.net.depth();
    let bsz = p.batch();
    if bsz < 2 {
        return Ok(vec![f64::NAN; depth]);
    }
    let vars = layer_variances(&p.net);
    let g = input_gram(p);
    // Per-example lengths for every layer (shared by the pairs).
    let qs = example_lengths(p, &vars, &g)?;
    Ok(c_from_lengths(p, &vars, &g, &qs))
}

/// [`c_predicted`] from the examples' lengths. The pairs are independent: they run on the
/// host's cores, and their profiles are summed in pair order afterwards, as one thread
/// would, so the bits do not depend on the number of threads.
fn c_from_lengths(p: &Problem, vars: &[(f64, f64)], g: &Array2<f64>, qs: &[Vec<f64>]) -> Vec<f64> {
    let depth = p.net.depth();
    let bsz = p.batch();
    if bsz < 2 {
        return vec![f64::NAN; depth];
    }
    let (w1, b1) = vars[0];
    // Steps l ≥ tail (layer l−1 → l) all apply the same map, so a pair that stops changing
    // there has settled for good.
    let map_at = |l: usize| (p.net.activation_at(l - 1), vars[l - 1]);
    let mut tail = depth.max(2);
    while tail > 2 && map_at(tail - 1) == map_at(depth) {
        tail -= 1;
    }
    let sample = predicted_pairs(bsz);
    let pairs = sample.len() as f64;
    let profile = |x: usize, y: usize| -> Vec<f64> {
        let mut out = Vec::with_capacity(depth);
        let mut c = (w1 * g[(x, y)] + b1) / (qs[0][x] * qs[0][y]).sqrt();
        out.push(c);
        let mut settled = false;
        for l in 2..=depth {
            let (qa, qb) = (qs[l - 2][x], qs[l - 2][y]);
            if !settled {
                let act = p.net.activation_at(l - 1);
                let (w, b) = vars[l - 1];
                let cov = w * mean_sigma_pair_with(pair_rule(), act, qa, qb, c) + b;
                let next = (cov / (qs[l - 1][x] * qs[l - 1][y]).sqrt()).clamp(-1.0, 1.0);
                let q_still = (qs[l - 1][x] - qa).abs() <= 1e-14 * qa && (qs[l - 1][y] - qb).abs() <= 1e-14 * qb;
                settled = l >= tail && q_still && (next - c).abs() <= SETTLE_C;
                c = next;
            }
            out.push(c);
        }
        out
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(sample.len()).max(1);
    let profiles: Vec<Vec<f64>> = if threads == 1 {
        sample.iter().map(|&(x, y)| profile(x, y)).collect()
    } else {
        let mut slots: Vec<Vec<f64>> = vec![Vec::new(); sample.len()];
        std::thread::scope(|sc| {
            let chunk = sample.len().div_ceil(threads);
            for (pairs, slots) in sample.chunks(chunk).zip(slots.chunks_mut(chunk)) {
                let profile = &profile;
                sc.spawn(move || {
                    for (&(x, y), slot) in pairs.iter().zip(slots) {
                        *slot = profile(x, y);
                    }
                });
            }
        });
        slots
    };
    let mut sum = vec![0.0; depth];
    for prof in &profiles {
        for (s, c) in sum.iter_mut().zip(prof) {
            *s += c;
        }
    }
    sum.into_iter().map(|s| s / pairs).collect()
}

/// The measured `log10_q` of one layer from the batch's pre-activations z (B × n_l):
/// `log10 (1/B) Σ_x ‖z_x‖² / n_l`. An engine passes the sum Σ_x ‖z_x‖² it already has as
/// `sum_sq` with a log2 scale, or calls this on z.
pub fn log10_q_measured(z: ArrayView2<f64>) -> f64 {
    let (b, n) = z.dim();
    (z.iter().map(|v| v * v).sum::<f64>() / (b * n) as f64).log10()
}

/// The measured `c` of one layer from its B × B Gram matrix `G = z zᵀ` of pre-activations:
/// the mean over pairs x < x' of `G_xx' / √(G_xx G_x'x')`; NaN for B = 1 or a zero row.
pub fn c_measured(gram: ArrayView2<f64>) -> f64 {
    let b = gram.nrows();
    if b < 2 {
        return f64::NAN;
    }
    let mut s = 0.0;
    for x in 0..b {
        for y in x + 1..b {
            // Two roots, not the root of a product: G_xx G_x'x' overflows past 1e154 each.
            s += gram[(x, y)] / (gram[(x, x)].sqrt() * gram[(y, y)].sqrt());
        }
    }
    s / (b * (b - 1) / 2) as f64
}

/// A fitted correlation depth scale.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct XiCFit {
    /// ξ_c from the least-squares slope of ln |c^l − c*| against l.
    pub xi_c_measured: f64,
    /// The layers fitted, first..=last (1-based).
    pub first_layer: usize,
    pub last_layer: usize,
    /// The threshold |c^l − c*| had to exceed.
    pub noise: f64,
}

/// The noise level below which a measured |c^l − c*| is not used: 3/√n, three times the
/// sampling spread of one pair's correlation over n units (for c near c* the spread is
/// (1 − c²)/√n at most; averaging over pairs that share the weights does not shrink it by
/// the number of pairs).
pub fn c_noise(width: usize) -> f64 {
    3.0 / (width as f64).sqrt()
}

/// `xi_c_measured`: fits |c^l − c*| ∝ exp(−l/ξ_c) by least squares of ln |c^l − c*| on l
/// over the layers from the first to the last before |c^l − c*| first falls to `noise` or
/// below (later layers are noise around c*). `c[l−1]` is c^l.
///
/// # Errors
/// [`Error::Numerical`] when fewer than three layers are above the noise, or the fitted
/// slope does not decay (no depth scale to report).
pub fn xi_c_measured(c: &[f64], c_star: f64, noise: f64) -> Result<XiCFit> {
    let above = c.iter().take_while(|v| v.is_finite() && (*v - c_star).abs() > noise).count();
    if above < 3 {
        return Err(Error::Numerical(format!(
            "only {above} layer(s) have |c^l − c*| above the noise {noise:.3}: too few to fit ξ_c"
        )));
    }
    let pts: Vec<(f64, f64)> = c[..above].iter().enumerate().map(|(i, v)| ((i + 1) as f64, (v - c_star).abs().ln())).collect();
    let n = pts.len() as f64;
    let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = sxy / sxx;
    if slope.is_nan() || slope >= 0.0 {
        return Err(Error::Numerical(format!("|c^l − c*| does not decay over layers 1..{above} (slope {slope:.3e})")));
    }
    Ok(XiCFit { xi_c_measured: -1.0 / slope, first_layer: 1, last_layer: above, noise })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_known_depth_scale_and_stops_at_the_noise() {
        let (xi, c_star) = (4.5, 0.3);
        let clean: Vec<f64> = (1..=40).map(|l| c_star + 0.6 * (-(l as f64) / xi).exp()).collect();
        let f = xi_c_measured(&clean, c_star, 1e-12).unwrap();
        assert!((f.xi_c_measured - xi).abs() < 1e-9 * xi, "{f:?}");
        // With a noise floor of 1e-3 the fit uses exactly the layers above it.
        let mut noisy = clean.clone();
        for (i, v) in noisy.iter_mut().enumerate() {
            *v += if i % 2 == 0 { 4e-4 } else { -4e-4 };
        }
        let f = xi_c_measured(&noisy, c_star, 1e-3).unwrap();
        let want_last = (1..=40).take_while(|&l| (noisy[l - 1] - c_star).abs() > 1e-3).count();
        assert_eq!(f.last_layer, want_last);
        assert!((f.xi_c_measured / xi - 1.0).abs() < 0.05, "{f:?}");
        assert!(xi_c_measured(&[c_star; 10], c_star, 1e-3).is_err());
    }

    #[test]
    fn measured_q_and_c_from_pre_activations() {
        let z = ndarray::array![[1.0, 2.0, 2.0], [2.0, -1.0, 2.0]];
        assert!((log10_q_measured(z.view()) - (18.0f64 / 6.0).log10()).abs() < 1e-15);
        let g = z.dot(&z.t());
        assert!((c_measured(g.view()) - 4.0 / 9.0).abs() < 1e-15);
    }

    #[test]
    fn the_low_order_pair_rule_agrees_with_the_default_one() {
        for act in [Activation::Tanh, Activation::Sigmoid, Activation::Gelu, Activation::HardTanh, Activation::Elu] {
            for (q1, q2, c) in [(0.19, 0.19, 0.3), (0.05, 2.0, 0.9), (4.0, 3.0, 0.999_999), (1.0, 1.0, -0.7)] {
                let want = mean_sigma_pair(act, q1, q2, c);
                let got = mean_sigma_pair_with(pair_rule(), act, q1, q2, c);
                assert!((got - want).abs() < 1e-10 * (1.0 + want.abs()), "{act:?} {q1} {q2} {c}: {got} against {want}");
            }
        }
    }

    #[test]
    fn the_pair_sample_is_every_pair_up_to_b_4_and_strided_beyond() {
        assert_eq!(predicted_pairs(4).len(), 6);
        let s = predicted_pairs(16);
        assert_eq!(s.len(), PAIR_SAMPLE);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s.iter().all(|&(x, y)| x < y && y < 16));
        assert_eq!(s[0], (0, 1));
    }

    #[test]
    fn unequal_pair_expectation_matches_the_equal_one_and_a_product_at_c_zero() {
        let q = 0.7;
        let e = mean_sigma_pair(Activation::Tanh, q, q, 0.4);
        let want = GaussianQuadrature::shared().expect_pair(q, 0.4, &[], |a, b| a.tanh() * b.tanh());
        assert!((e - want).abs() < 1e-14);
        // c = 0: independent, E[σ(u₁)]E[σ(u₂)].
        let (q1, q2) = (0.3, 2.5);
        let e = mean_sigma_pair(Activation::Sigmoid, q1, q2, 0.0);
        let want = mean_sigma(Activation::Sigmoid, q1) * mean_sigma(Activation::Sigmoid, q2);
        assert!((e - want).abs() < 1e-12, "{e} {want}");
    }
}
