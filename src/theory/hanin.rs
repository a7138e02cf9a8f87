//! Finite-width fluctuations of ‖δ¹‖ over seeds for relu with He init (Hanin 2018; Hanin &
//! Nica 2019): the moment ratio `E‖δ¹‖⁴ / (E‖δ¹‖²)²` and the variance of `ln ‖δ¹‖`, with
//! the sample statistics and bootstrap errors `reproduce hanin` sets beside them.
//!
//! The model (relu, `W^l_ij ~ N(0, 2/n_{l−1})`, zero biases, δ^L = Σ′(z^L) y with y independent
//! of the weights): each step δ^{l+1} → δ^l = Σ′(z^l)(W^{l+1})ᵀδ^{l+1} multiplies ‖δ‖² by
//!
//! ```text
//! X_l = (2/n_l) Σ_{i ≤ n_l} ε_i g_i² = (2/n_l) χ²_{K_l},   ε_i ~ Bernoulli(½), g_i ~ N(0,1),
//!                                                           K_l ~ Binomial(n_l, ½)
//! E X_l = 1,   E X_l² = 1 + 5/n_l
//! E‖δ¹‖⁴ / (E‖δ¹‖²)² = Π_{l=1..L} (1 + 5/n_l)
//! Var ln ‖δ¹‖ = ¼ Σ_{l=1..L} Var ln X_l,  Var ln X_l = E[ψ′(K/2)] + Var[ψ(K/2)] | K ≥ 1
//!             ≈ (5/4) Σ_{l=1..L} 1/n_l        (Hanin & Nica 2019: Var ln ‖Ju‖² ≈ 5 Σ 1/n_j)
//! ```
//!
//! The product runs over every layer whose relu mask δ¹ passes through, l = 1..L: the hidden
//! layers (Hanin 2018, Theorem 1, j = 1..d−1 for a linear output) and here also the output
//! layer, whose mask acts on y (with an output of width n_L the top factor ‖Σ′(z^L) y‖² has
//! the same law as a hidden step when y is gaussian). The input width n₀ does not enter.
//! ψ, ψ′ are the digamma and trigamma functions (ln χ²_K = ln 2 + ln Γ-variate of shape K/2).

use crate::rng::{Purpose, Stream};

/// `Π_{l} (1 + 5/n_l)` over the given widths (n_1 … n_L).
pub fn relu_he_moment_ratio(widths: &[usize]) -> f64 {
    widths.iter().map(|&n| 1.0 + 5.0 / n as f64).product()
}

/// `(5/4) Σ_l 1/n_l`: Hanin & Nica's leading-order variance of ln ‖δ¹‖ (their β/4 with
/// β = 5 Σ 1/n_j the variance of ln ‖Ju‖²).
pub fn relu_he_var_ln_norm_asymptotic(widths: &[usize]) -> f64 {
    1.25 * widths.iter().map(|&n| 1.0 / n as f64).sum::<f64>()
}

/// `¼ Σ_l Var[ln X_l | K_l ≥ 1]`: the variance of ln ‖δ¹‖ over the seeds whose gradient is
/// not exactly 0 (a layer with every unit inactive, probability 2^−n_l, kills it), exact
/// for the product of independent layer factors.
pub fn relu_he_var_ln_norm(widths: &[usize]) -> f64 {
    0.25 * widths.iter().map(|&n| var_ln_layer(n)).sum::<f64>()
}

/// The probability that no layer is dead: `Π_l (1 − 2^−n_l)`.
pub fn relu_he_alive(widths: &[usize]) -> f64 {
    widths.iter().map(|&n| 1.0 - 0.5f64.powi(n.min(1100) as i32)).product()
}

/// `Var[ln χ²_K | K ≥ 1]`, K ~ Binomial(n, ½): E[ψ′(K/2)] + Var[ψ(K/2)] by summing over K.
fn var_ln_layer(n: usize) -> f64 {
    let nf = n as f64;
    // log2 of the binomial probabilities, built by the ratio C(n,k)/C(n,k−1) = (n−k+1)/k.
    let mut log2p = -nf;
    let (mut z, mut m1, mut m2, mut tri) = (0.0, 0.0, 0.0, 0.0);
    for k in 1..=n {
        log2p += ((nf - k as f64 + 1.0) / k as f64).log2();
        let p = log2p.exp2();
        let h = 0.5 * k as f64;
        let psi = digamma(h);
        z += p;
        m1 += p * psi;
        m2 += p * psi * psi;
        tri += p * trigamma(h);
    }
    let (m1, m2, tri) = (m1 / z, m2 / z, tri / z);
    tri + (m2 - m1 * m1)
}

/// ψ(x) for x > 0: recurrence to x ≥ 10, then the asymptotic series to x⁻¹⁰ (error ~2e-14).
pub fn digamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let x2 = 1.0 / (x * x);
    acc + x.ln() - 0.5 / x - x2 * (1.0 / 12.0 - x2 * (1.0 / 120.0 - x2 * (1.0 / 252.0 - x2 * (1.0 / 240.0 - x2 / 132.0))))
}

/// ψ′(x) for x > 0: recurrence to x ≥ 10, then the asymptotic series to x⁻¹¹ (error ~3e-14).
pub fn trigamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 10.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    let x2 = 1.0 / (x * x);
    acc + 1.0 / x + 0.5 * x2 + (x2 / x) * (1.0 / 6.0 - x2 * (1.0 / 30.0 - x2 * (1.0 / 42.0 - x2 * (1.0 / 30.0 - x2 * 5.0 / 66.0))))
}

/// A statistic of a sample with its sampling error.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    #[serde(serialize_with = "crate::stats::finite_or_null")]
    pub value: f64,
    /// The standard deviation of the statistic over bootstrap resamples.
    #[serde(serialize_with = "crate::stats::finite_or_null")]
    pub error: f64,
}

/// `E[x²] / E[x]²` of the sample (x = ‖δ¹‖², so E‖δ¹‖⁴/(E‖δ¹‖²)²).
pub fn moment_ratio(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let m1 = x.iter().sum::<f64>() / n;
    let m2 = x.iter().map(|v| v * v).sum::<f64>() / n;
    m2 / (m1 * m1)
}

/// The sample variance (n − 1 in the denominator).
pub fn sample_variance(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)
}

/// `stat` of `x` and its bootstrap standard error: `resamples` resamples of x with
/// replacement, drawn from a fixed Philox stream (so the error is reproducible).
pub fn bootstrap(x: &[f64], resamples: usize, stat: impl Fn(&[f64]) -> f64) -> Estimate {
    let value = stat(x);
    if x.len() < 2 || resamples < 2 {
        return Estimate { value, error: f64::NAN };
    }
    let s = Stream::new(0x68_616e_696e);
    let mut buf = vec![0.0; x.len()];
    let mut u = vec![0.0; x.len()];
    let mut vals = Vec::with_capacity(resamples);
    for r in 0..resamples {
        s.fill_uniform(Purpose::Input, 7, r as u32, &mut u);
        for (b, ui) in buf.iter_mut().zip(&u) {
            *b = x[((ui * x.len() as f64) as usize).min(x.len() - 1)];
        }
        vals.push(stat(&buf));
    }
    Estimate { value, error: sample_variance(&vals).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digamma_and_trigamma_match_known_values() {
        // ψ(1) = −γ, ψ(½) = −γ − 2 ln 2, ψ′(1) = π²/6, ψ′(½) = π²/2.
        let g = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + g).abs() < 1e-13);
        assert!((digamma(0.5) + g + 2.0 * 2f64.ln()).abs() < 1e-13);
        let pi2 = std::f64::consts::PI.powi(2);
        assert!((trigamma(1.0) - pi2 / 6.0).abs() < 1e-13);
        assert!((trigamma(0.5) - pi2 / 2.0).abs() < 1e-12);
    }

    #[test]
    fn layer_log_variance_approaches_five_over_n() {
        // Var ln X ≈ Var X = 5/n for wide layers (the delta method), above it for narrow ones.
        for n in [50usize, 200, 1000] {
            let v = var_ln_layer(n);
            assert!((v * n as f64 / 5.0 - 1.0).abs() < 12.0 / n as f64, "n = {n}: {v}");
        }
        assert!(var_ln_layer(10) > 0.5);
    }

    #[test]
    fn moment_ratio_of_simulated_layer_factors_is_one_plus_five_over_n() {
        // X = (2/n) Σ ε_i g_i², simulated from Philox draws: E X² / (E X)² → 1 + 5/n.
        let n = 8;
        let s = Stream::new(3);
        let trials = 200_000;
        let (mut g, mut e) = (vec![0.0; n], vec![0.0; n]);
        let xs: Vec<f64> = (0..trials)
            .map(|t| {
                s.fill_normal(Purpose::Weight, 0, t as u32, &mut g);
                s.fill_uniform(Purpose::Bias, 0, t as u32, &mut e);
                (2.0 / n as f64) * g.iter().zip(&e).filter(|(_, u)| **u < 0.5).map(|(g, _)| g * g).sum::<f64>()
            })
            .collect();
        let est = bootstrap(&xs, 50, moment_ratio);
        let want = relu_he_moment_ratio(&[n]);
        assert!((est.value - want).abs() < 4.0 * est.error, "{est:?} against {want}");
        let logs: Vec<f64> = xs.iter().filter(|x| **x > 0.0).map(|x| x.ln()).collect();
        let v = bootstrap(&logs, 50, sample_variance);
        assert!((v.value - var_ln_layer(n)).abs() < 4.0 * v.error, "{v:?} against {}", var_ln_layer(n));
    }
}
