//! The predicted density of the Jacobian's singular values (free probability, the
//! S-transform equations solved numerically): it integrates to one, its moments are the
//! closed-form ones, and at width 512 it matches a measured spectrum.

use gradscope::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem};
use gradscope::spectrum::density::Solver;
use gradscope::spectrum::{Chain, measure, predict};
use ndarray::Array2;

/// A network of `depth` square layers whose inputs are scaled so that q¹ = q* (the
/// prediction's assumption holds from the first layer on).
fn problem(act: Activation, kind: InitKind, sw2: Option<f64>, sb2: f64, width: usize, depth: usize, seed: u64) -> Problem {
    let init = Init::new(kind, sw2, Some(sb2)).unwrap();
    let net = Network::new(vec![width; depth + 1], act, false, Cost::Quadratic, Params::Generated { init, seed }).unwrap();
    let x = InputSpec::Gaussian.materialise(seed, 1, width).unwrap();
    let p = Problem::new(net.clone(), x.clone(), Array2::zeros((1, width))).unwrap();
    let pred = predict::predict(&p, Chain::InputOutput, depth).unwrap();
    let sigma_w2 = pred.chi1 / pred.mu1;
    // q¹ = σ_w² ‖x‖²/n + σ_b² = q*.
    let want = ((pred.q_star - sb2) / sigma_w2).max(0.0);
    let have = x.iter().map(|v| v * v).sum::<f64>() / width as f64;
    let x = x * (want / have).sqrt();
    Problem::new(net, x, Array2::zeros((1, width))).unwrap()
}

/// Whether the moments of the density equal the closed forms: ∫ρ + zero mass = 1,
/// E[λ] = χ₁^L and var(λ)/mean(λ)² = L (μ₂/μ₁² − 1 − s₁).
#[test]
fn predicted_density_integrates_to_one_with_the_closed_form_moments() {
    let cases = [
        (Activation::Tanh, InitKind::Gaussian, Some(1.761), 0.05, 8),
        (Activation::Relu, InitKind::He, None, 0.0, 4),
        (Activation::HardTanh, InitKind::Orthogonal, Some(1.2), 0.05, 16),
        (Activation::Tanh, InitKind::Orthogonal, Some(1.761), 0.05, 8),
    ];
    for (act, kind, sw2, sb2, depth) in cases {
        let p = problem(act, kind, sw2, sb2, 16, depth, 0);
        let pred = predict::predict(&p, Chain::InputOutput, depth).unwrap();
        let s = Solver::new(act, &pred).unwrap();
        let c = s.mean_log10_s();
        // Down to 3(L+1) + 10 decades below: the i.i.d. tail, ρ ∝ λ^{1/(L+1)} near 0,
        // holds less than 1e-7 of the mass beyond.
        let support = s.support(c - 3.0 * (depth as f64 + 1.0) - 10.0, c + 10.0, 1500);
        assert!(!support.is_empty(), "{act} {kind}: no spectrum found");
        let (m0, log10_m1, var, lost) = s.moments(&support, 200);
        let what = format!("{act} {kind} L = {depth}");
        // A node whose root was lost is left out of the sums: the mass check below bounds
        // what they could hold. (They occur only in the far tail of the orthogonal case,
        // in slivers of ~1e-15 of the mass between the spread law's cells.)
        assert!(lost * 100 <= support.len() * 200, "{what}: {lost} nodes lost");
        assert!((m0 + s.zero_mass() - 1.0).abs() < 1e-6, "{what}: ∫ρ = {m0} with {} at 0", s.zero_mass());
        let m1_rel = (10f64.powf(log10_m1 - pred.log10_mean_lambda) - 1.0).abs();
        assert!(m1_rel < 1e-6, "{what}: E[λ] relative difference {m1_rel:e}");
        // Orthogonal weights with a smooth σ′: the law of σ′² is spread over cells of
        // half-width h_j (docs/THEORY.md), which adds L Σ p_j h_j²/3 / μ₁² to the variance
        // and nothing else.
        let law = s.law();
        let excess = depth as f64 * law.d.iter().zip(&law.h).zip(&law.p).map(|((_, h), p)| p * h * h / 3.0).sum::<f64>() / (pred.mu1 * pred.mu1);
        assert!(kind == InitKind::Orthogonal && act == Activation::Tanh || excess == 0.0, "{what}: spread law");
        let v_rel = ((var - excess) / pred.var_over_mean2 - 1.0).abs();
        assert!(v_rel < 1e-6, "{what}: var/mean² {var} − {excess} vs {} (relative {v_rel:e})", pred.var_over_mean2);
        // 6.3e-5 of it for tanh at σ_w² = 1.761, σ_b² = 0.05 (docs/THEORY.md §8).
        assert!(excess < 1e-4 * pred.var_over_mean2, "{what}: the spread moves var/mean² by {excess}");
    }
}

/// The Kolmogorov–Smirnov distance between one measured spectrum (all 512 log10 s of one
/// example) and the predicted law of log10 s.
fn ks(act: Activation, kind: InitKind, sw2: Option<f64>, sb2: f64, depth: usize) -> f64 {
    let p = problem(act, kind, sw2, sb2, 512, depth, 3);
    let m = measure(&p, 1, Chain::InputOutput, &[depth], false).unwrap();
    let pred = predict::predict(&p, Chain::InputOutput, depth).unwrap();
    assert_eq!(pred.q_star_reached_at_layer, Some(1), "the inputs are scaled to q¹ = q*");
    let s = Solver::new(act, &pred).unwrap();
    let mut v = m[0].examples[0].log10_singular_values.clone();
    assert!(v.iter().all(|x| x.is_finite()));
    v.sort_by(|a, b| a.total_cmp(b));
    let (lo, hi) = (v[0] - 1.0, v[v.len() - 1] + 1.0);
    let n = 3000;
    let h = (hi - lo) / n as f64;
    let grid: Vec<f64> = (0..=n).map(|i| lo + h * i as f64).collect();
    let d = s.density(&grid);
    let mut cdf = vec![0.0; grid.len()];
    for i in 1..grid.len() {
        cdf[i] = cdf[i - 1] + 0.5 * h * (d.density[i] + d.density[i - 1]);
    }
    // The prediction's mass below lo (the i.i.d. tail) counts as below every measured value.
    let below = 1.0 - cdf[n];
    let f = |x: f64| {
        let t = (x - lo) / h;
        let i = (t as usize).min(n - 1);
        below + cdf[i] + (t - i as f64) * (cdf[i + 1] - cdf[i])
    };
    let k = v.len() as f64;
    v.iter().enumerate().map(|(i, &x)| (f(x) - i as f64 / k).abs().max((f(x) - (i + 1) as f64 / k).abs())).fold(0.0, f64::max)
}

/// At width 512 and depth 16, tanh at its critical point (σ_b² = 0.05), inputs at q*: the
/// measured spectrum of one example follows the predicted law to a KS distance below 0.03
/// (measured 0.009 orthogonal, 0.013 gaussian; the eigenvalues of one matrix fluctuate
/// far less than n independent draws, whose KS distance would be ~1/√512 = 0.044).
#[test]
fn predicted_density_matches_a_measured_spectrum_at_width_512() {
    for kind in [InitKind::Orthogonal, InitKind::Gaussian] {
        let d = ks(Activation::Tanh, kind, Some(1.761), 0.05, 16);
        assert!(d < 0.03, "tanh {kind}: KS distance {d}");
    }
}
