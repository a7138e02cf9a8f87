//! Mean-field theory against closed forms, high-order references, hard cases and
//! measurements of wide random networks on the CPU backend.

use gradscope::backend::CpuBackend;
use gradscope::model::activation::all_activations;
use gradscope::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem, TargetSpec};
use gradscope::theory::meanfield::{length_map_slope, mean_sq_dsigma, mean_sq_sigma};
use gradscope::theory::quadrature::{GaussianQuadrature, Feature};
use gradscope::theory::{self, Critical, FixedPointKind, MeanField, critical_sigma_w2, fitted_log10_ratio};
use std::f64::consts::PI;

fn close(got: f64, want: f64, rtol: f64, what: &str) {
    assert!(
        (got - want).abs() <= rtol * want.abs().max(1e-300),
        "{what}: got {got:e}, want {want:e} (relative error {:.2e} > {rtol:e})",
        ((got - want) / want).abs()
    );
}

fn crit(act: Activation, sb2: f64) -> f64 {
    match critical_sigma_w2(act, sb2).unwrap() {
        Critical::At(w) => w,
        Critical::None(why) => panic!("no critical point for {act} at σ_b² = {sb2}: {why}"),
    }
}

// ---- closed forms -------------------------------------------------------------------

#[test]
fn chi1_closed_forms_linear_and_relu() {
    for w in [0.3, 1.0, 1.9] {
        assert_eq!(MeanField::new(Activation::Relu, w, 0.1).unwrap().chi1(), w / 2.0);
        assert_eq!(MeanField::new(Activation::Linear, w.min(0.9), 0.1).unwrap().chi1(), w.min(0.9));
        // The closed forms agree with the quadrature on the same integrands.
        let q = GaussianQuadrature::shared();
        close(w * q.expect_scaled(1.7, &[0.0], |x| Activation::Relu.dsigma(x).powi(2)), w / 2.0, 1e-14, "relu χ by quadrature");
        close(q.expect_scaled(1.7, &[0.0], |x| Activation::Relu.sigma(x).powi(2)), 1.7 / 2.0, 1e-13, "relu E[σ²] by quadrature");
    }
    // relu q* = σ_b²/(1 − σ_w²/2).
    close(MeanField::new(Activation::Relu, 1.0, 0.3).unwrap().q_star(), 0.6, 1e-15, "relu q*");
    assert_eq!(crit(Activation::Relu, 0.0), 2.0);
    assert_eq!(crit(Activation::Linear, 0.0), 1.0);
    close(crit(Activation::LeakyRelu(0.5), 0.0), 2.0 / 1.25, 1e-15, "leaky-relu critical σ_w²");
}

#[test]
fn erf_expectations_match_closed_forms_at_every_scale() {
    // E[erf(√q z)²] = (2/π) asin(2q/(1+2q)),  E[erf′(√q z)²] = (4/π)/√(1+4q).
    for q in [1e-8f64, 1e-3, 0.37, 1.0, 12.0, 1e3, 1e6, 1e10] {
        let want = 2.0 / PI * (2.0 * q / (1.0 + 2.0 * q)).asin();
        close(mean_sq_sigma(Activation::Erf, q), want, 1e-12, &format!("E[erf²] at q = {q:e}"));
        let want_d = 4.0 / PI / (1.0 + 4.0 * q).sqrt();
        close(mean_sq_dsigma(Activation::Erf, q), want_d, 1e-12, &format!("E[erf′²] at q = {q:e}"));
    }
}

#[test]
fn pair_expectations_match_closed_forms() {
    let quad = GaussianQuadrature::shared();
    for q in [0.05f64, 1.0, 40.0] {
        for c in [-0.999f64, -0.6, 0.0, 0.3, 0.9, 0.999_999] {
            // erf: E[erf(u₁)erf(u₂)] = (2/π) asin(2qc/(1+2q)).
            let got = quad.expect_pair(q, c, &[], |a, b| libm::erf(a) * libm::erf(b));
            let want = 2.0 / PI * (2.0 * q * c / (1.0 + 2.0 * q)).asin();
            assert!((got - want).abs() < 1e-12, "erf pair q={q} c={c}: {got} vs {want}");
            // relu (Cho & Saul 2009): q(√(1−c²) + (π − acos c)c)/2π and (π − acos c)/2π.
            let r = Activation::Relu;
            let got = quad.expect_pair(q, c, r.kinks(), |a, b| r.sigma(a) * r.sigma(b));
            let want = q * ((1.0 - c * c).sqrt() + (PI - c.acos()) * c) / (2.0 * PI);
            assert!((got - want).abs() < 1e-12 * q, "relu pair q={q} c={c}: {got} vs {want}");
            let got = quad.expect_pair(q, c, r.kinks(), |a, b| r.dsigma(a) * r.dsigma(b));
            let want = (PI - c.acos()) / (2.0 * PI);
            assert!((got - want).abs() < 1e-12, "relu′ pair q={q} c={c}: {got} vs {want}");
        }
    }
}

// ---- quadrature against a much higher order -------------------------------------------

#[test]
fn quadrature_agrees_with_a_much_higher_order_rule() {
    // 20 points per panel (the default) against 80 points per panel, every activation,
    // q from 1e-6 to 1e6: the expectations must agree to 1e-10 relative (smooth σ) — and
    // as well for kinked σ, since the panels split exactly at the kinks.
    let lo = GaussianQuadrature::new(20);
    let hi = GaussianQuadrature::new(80);
    for act in all_activations() {
        for q in [1e-6, 0.01, 0.3, 1.0, 3.7, 50.0, 1e4, 1e6] {
            for (name, f) in [("σ²", 0), ("σ′²", 1), ("σσ′x", 2)] {
                let g = |x: f64| match f {
                    0 => act.sigma(x).powi(2),
                    1 => act.dsigma(x).powi(2),
                    _ => act.sigma(x) * act.dsigma(x) * x,
                };
                let a = lo.expect_scaled(q, act.kinks(), g);
                let b = hi.expect_scaled(q, act.kinks(), g);
                assert!((a - b).abs() <= 1e-10 * b.abs().max(1e-300), "{act} E[{name}] at q = {q:e}: {a:e} (20) vs {b:e} (80)");
            }
        }
    }
}

#[test]
fn quadrature_agrees_with_200_point_gauss_hermite_for_smooth_activations() {
    // An independent reference: 200-point Gauss–Hermite (Golub–Welsch on the Hermite Jacobi
    // matrix, nalgebra's symmetric eigensolver) at q = 1, where every smooth σ is entire
    // or nearly so on the scale of the density.
    let n = 200;
    let mut j = nalgebra::DMatrix::<f64>::zeros(n, n);
    for k in 1..n {
        let b = (k as f64).sqrt(); // probabilists' Hermite: off-diagonal √k
        j[(k - 1, k)] = b;
        j[(k, k - 1)] = b;
    }
    let eig = j.symmetric_eigen();
    let nodes: Vec<f64> = eig.eigenvalues.iter().copied().collect();
    let weights: Vec<f64> = (0..n).map(|i| eig.eigenvectors[(0, i)].powi(2)).collect();
    let gh = |f: &dyn Fn(f64) -> f64| nodes.iter().zip(&weights).map(|(x, w)| w * f(*x)).sum::<f64>();
    close(gh(&|z| z.powi(4)), 3.0, 1e-12, "Gauss–Hermite E[z⁴]");
    for act in [Activation::Tanh, Activation::Sigmoid, Activation::Erf, Activation::Softplus, Activation::Silu, Activation::Gelu] {
        for q in [0.25, 1.0] {
            let s = f64::sqrt(q);
            let ref_s = gh(&|z| act.sigma(s * z).powi(2));
            let ref_d = gh(&|z| act.dsigma(s * z).powi(2));
            close(mean_sq_sigma(act, q), ref_s, 1e-10, &format!("{act} E[σ²] q={q}"));
            close(mean_sq_dsigma(act, q), ref_d, 1e-10, &format!("{act} E[σ′²] q={q}"));
        }
    }
}

#[test]
fn breakpoints_cover_the_line_and_include_kinks() {
    let b = GaussianQuadrature::breakpoints(&[Feature { centre: 0.3, scale: 1e-3 }], &[0.7, 99.0]);
    assert_eq!(b[0], -theory::quadrature::Z_MAX);
    assert_eq!(*b.last().unwrap(), theory::quadrature::Z_MAX);
    assert!(b.windows(2).all(|w| w[0] < w[1]));
    assert!(b.contains(&0.7) && b.contains(&0.3));
}

// ---- worked values and solvers on hard cases ------------------------------------------

#[test]
fn tanh_critical_point_at_sigma_b2_0_05() {
    let w = crit(Activation::Tanh, 0.05);
    assert!((w - 1.7610).abs() < 1e-3, "critical σ_w² = {w}");
    let mf = MeanField::new(Activation::Tanh, w, 0.05).unwrap();
    assert!((mf.q_star() - 0.570).abs() < 2e-3, "q* = {}", mf.q_star());
    assert!((mf.chi1() - 1.0).abs() < 1e-9, "χ₁ at the root = {}", mf.chi1());
    let mf = MeanField::new(Activation::Tanh, 1.0, 0.05).unwrap();
    assert!((mf.chi1() - 0.759).abs() < 1e-3, "χ₁ = {}", mf.chi1());
}

#[test]
fn fixed_point_is_a_fixed_point() {
    for act in all_activations() {
        for (w, b) in [(0.5, 0.3), (1.2, 0.05), (1.9, 1.0)] {
            if let Ok(mf) = MeanField::new(act, w, b) {
                let q = mf.q_star();
                let v = theory::length_map(act, w, b, q);
                assert!((v - q).abs() <= 1e-13 * q.max(1e-300), "{act} σ_w²={w} σ_b²={b}: V(q*) = {v} ≠ q* = {q}");
                assert!(mf.length_map_slope() < 1.0 + 1e-9, "{act}: q* must be stable, V′ = {}", mf.length_map_slope());
            }
        }
    }
}

#[test]
fn sigma_b2_zero_tanh_goes_to_q_zero_with_the_linear_limit() {
    let mf = MeanField::new(Activation::Tanh, 0.8, 0.0).unwrap();
    assert_eq!(mf.q_star(), 0.0);
    assert_eq!(mf.kind(), FixedPointKind::Zero);
    assert_eq!(mf.chi1(), 0.8); // σ_w² tanh′(0)²
    assert!(mf.c_star().is_err(), "c* is undefined when q* = 0 for a smooth σ");
    // Just above σ_w² = 1 a small positive q* appears, q* ≈ (σ_w² − 1)/2 to leading order.
    let mf = MeanField::new(Activation::Tanh, 1.01, 0.0).unwrap();
    assert_eq!(mf.kind(), FixedPointKind::Positive);
    assert!((mf.q_star() - 0.005).abs() < 1e-3, "q* = {}", mf.q_star());
    // σ_b² = 0 critical point is exactly σ_w² = 1/σ′(0)² (up to the flat χ₁ − 1 ~ (σ_w²−1)²).
    assert!((crit(Activation::Tanh, 0.0) - 1.0).abs() < 1e-6);
    assert!((crit(Activation::Erf, 0.0) - PI / 4.0).abs() < 1e-6);
}

#[test]
fn very_large_sigma_w2_stays_finite_and_right() {
    // tanh saturates: q* → σ_w² + σ_b² − O(√σ_w²), χ₁ grows like √σ_w².
    let mf = MeanField::new(Activation::Tanh, 1e6, 0.0).unwrap();
    assert!(mf.q_star() > 0.99e6 && mf.q_star() < 1e6, "q* = {}", mf.q_star());
    // E[tanh′(√q z)²] ≈ (∫ sech⁴)/√(2πq) = (4/3)/√(2πq) for large q.
    let want = 1e6 * (4.0 / 3.0) / (2.0 * PI * mf.q_star()).sqrt();
    close(mf.chi1(), want, 1e-5, "χ₁ at σ_w² = 1e6");
    let mf = MeanField::new(Activation::HardTanh, 1e8, 0.5).unwrap();
    // hard-tanh: E[1{|√q z| < 1}] = erf(1/√(2q)).
    close(mf.chi1(), 1e8 * libm::erf(1.0 / (2.0 * mf.q_star()).sqrt()), 1e-10, "hard-tanh χ₁ at σ_w² = 1e8");
}

#[test]
fn sigmoid_critical_sigma_w2_is_near_100() {
    let w = crit(Activation::Sigmoid, 0.0);
    assert!(w > 90.0 && w < 115.0, "sigmoid critical σ_w² = {w}");
    let mf = MeanField::new(Activation::Sigmoid, w, 0.0).unwrap();
    assert!((mf.chi1() - 1.0).abs() < 1e-9);
    // And χ₁ is well below 1 at the usual σ_w² = 1: sigmoid nets vanish.
    assert!(MeanField::new(Activation::Sigmoid, 1.0, 0.0).unwrap().chi1() < 0.1);
}

#[test]
fn chaotic_phase_has_c_star_below_one() {
    let mf = MeanField::new(Activation::Tanh, 2.5, 0.05).unwrap();
    assert!(mf.chi1() > 1.0);
    let c = mf.c_star().unwrap();
    assert!(c > 0.0 && c < 1.0, "c* = {c}");
    let cm = mf.correlation_map(c).unwrap();
    assert!((cm - c).abs() < 1e-10, "C(c*) = {cm} ≠ c* = {c}");
    assert!(mf.correlation_map_slope(c).unwrap() < 1.0, "c* must be stable");
    // Odd σ, σ_b² = 0: c* = 0 exactly.
    assert_eq!(MeanField::new(Activation::Erf, 1.5, 0.0).unwrap().c_star().unwrap(), 0.0);
    // Ordered phase: c* = 1 and ξ_c = ξ_∇.
    let mf = MeanField::new(Activation::Tanh, 1.0, 0.05).unwrap();
    assert_eq!(mf.c_star().unwrap(), 1.0);
    close(mf.xi_c().unwrap(), mf.xi_grad(), 1e-12, "ξ_c = ξ_∇ in the ordered phase");
}

#[test]
fn stein_slope_matches_a_finite_difference() {
    for act in all_activations() {
        let (w, q) = (1.3, 0.8);
        let h = 1e-5;
        let fd = (theory::length_map(act, w, 0.0, q + h) - theory::length_map(act, w, 0.0, q - h)) / (2.0 * h);
        let s = length_map_slope(act, w, q);
        assert!((s - fd).abs() < 1e-7 * fd.abs().max(1.0), "{act}: V′ {s} vs finite difference {fd}");
    }
}

// ---- bad input ------------------------------------------------------------------------

#[test]
fn bad_parameters_are_errors_not_numbers() {
    assert!(MeanField::new(Activation::Tanh, -1.0, 0.0).is_err());
    assert!(MeanField::new(Activation::Tanh, 0.0, 0.0).is_err());
    assert!(MeanField::new(Activation::Tanh, f64::NAN, 0.0).is_err());
    assert!(MeanField::new(Activation::Tanh, 1.0, -0.1).is_err());
    assert!(MeanField::new(Activation::Tanh, 1.0, f64::INFINITY).is_err());
    assert!(MeanField::from_q1(Activation::Tanh, 1.0, 0.0, -2.0).is_err());
    assert!(critical_sigma_w2(Activation::Tanh, -1.0).is_err());
    // Unbounded σ past its critical slope: no fixed point.
    for act in [Activation::Relu, Activation::Linear, Activation::Softplus, Activation::Gelu, Activation::Selu, Activation::Elu] {
        let e = MeanField::new(act, 5.0, 0.1).unwrap_err();
        assert!(matches!(e, gradscope::Error::Numerical(_)), "{act}: {e}");
        assert!(e.to_string().contains("no finite fixed point"), "{act}: {e}");
    }
    // relu at exactly σ_w² = 2 with a bias: q grows linearly, no fixed point.
    assert!(MeanField::new(Activation::Relu, 2.0, 0.1).is_err());
    // …but without bias every q is a fixed point (He init).
    let mf = MeanField::new(Activation::Relu, 2.0, 0.0).unwrap();
    assert_eq!((mf.kind(), mf.chi1()), (FixedPointKind::Neutral, 1.0));
    // softplus has no critical point with a finite q*: a statement, not a number.
    assert!(matches!(critical_sigma_w2(Activation::Softplus, 0.05).unwrap(), Critical::None(_)));
}

// ---- gelu and silu: critical points next to where q* stops existing -----------------

/// `E[g(√q z)]` by the trapezoid rule on a uniform grid, z ∈ [−14, 14], h = 1/64: a quadrature
/// sharing nothing with `theory::quadrature` (no panels, no Gauss nodes). For an integrand
/// analytic in the strip |Im z| < d the error is ~e^{−2πd/h}; silu's nearest poles sit at
/// √q z = ±iπ, so for q ≤ 500 (all this test reaches near the roots) d ≥ 0.14 and the error
/// is below 1e-24; gelu is entire.
fn trapezoid(q: f64, g: impl Fn(f64) -> f64) -> f64 {
    let (h, n) = (1.0 / 64.0, 14 * 64);
    let s = q.sqrt();
    let mut sum = 0.0;
    for i in -n..=n {
        let z = i as f64 * h;
        sum += g(s * z) * (-0.5 * z * z).exp();
    }
    sum * h / (2.0 * PI).sqrt()
}

/// χ₁ − 1 at the q* of V(q) = σ_w² E[σ²] + σ_b², q* by bisection on [0, 1e4] (V(q) > q below
/// it, since V(0) = σ_b² > 0): a fixed-point solver sharing nothing with the library's.
fn chi1_minus_1_trapezoid(act: Activation, w: f64, sb2: f64) -> (f64, f64) {
    let v = |q: f64| w * trapezoid(q, |x| act.sigma(x).powi(2)) + sb2;
    let (mut lo, mut hi) = (0.0, 1e4);
    assert!(v(hi) < hi, "{act} σ_w² = {w}: no fixed point below 1e4");
    for _ in 0..100 {
        let m = 0.5 * (lo + hi);
        if v(m) > m { lo = m } else { hi = m }
    }
    let q = 0.5 * (lo + hi);
    (w * trapezoid(q, |x| act.dsigma(x).powi(2)) - 1.0, q)
}

/// The critical σ_w² by bisection of χ₁ − 1 on [1.9, 1.99], with the trapezoid rule.
fn critical_trapezoid(act: Activation, sb2: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (1.9, 1.99);
    assert!(chi1_minus_1_trapezoid(act, lo, sb2).0 < 0.0 && chi1_minus_1_trapezoid(act, hi, sb2).0 > 0.0, "{act}: no bracket");
    for _ in 0..45 {
        let m = 0.5 * (lo + hi);
        if chi1_minus_1_trapezoid(act, m, sb2).0 < 0.0 { lo = m } else { hi = m }
    }
    let w = 0.5 * (lo + hi);
    (w, chi1_minus_1_trapezoid(act, w, sb2).1)
}

#[test]
fn gelu_and_silu_critical_points_just_below_the_divergence_agree_with_trapezoid_quadrature() {
    // The ×1.25 scan steps from 1.9722 straight to 2.4652, where q^l diverges; these roots lie
    // between 1.9722 and the boundary σ_w² = 2 (Hayou, Doucet & Rousseau 2019 find this edge
    // of chaos for Swish). Values as the review's independent quadrature gave them.
    for (act, sb2, want) in [
        (Activation::Gelu, 1.0, 1.97668),
        (Activation::Gelu, 0.25, 1.95963),
        (Activation::Silu, 1.0, 1.96704),
        (Activation::Silu, 2.0, 1.97507),
    ] {
        let got = crit(act, sb2);
        let (indep, q_indep) = critical_trapezoid(act, sb2);
        assert!((got - indep).abs() < 1e-6, "{act} σ_b² = {sb2}: {got} against trapezoid {indep}");
        assert!((got - want).abs() < 5e-6, "{act} σ_b² = {sb2}: {got} against the review's {want}");
        let mf = MeanField::new(act, got, sb2).unwrap();
        assert!((mf.chi1() - 1.0).abs() < 1e-9, "{act}: χ₁ = {} at the root", mf.chi1());
        close(mf.q_star(), q_indep, 1e-3, &format!("{act} σ_b² = {sb2}: q* at the critical point"));
        if act == Activation::Gelu && sb2 == 1.0 {
            assert!((mf.q_star() - 82.3).abs() < 0.1, "gelu q* = {}", mf.q_star());
        }
    }
    // softplus reaches σ_w² = 2 with χ₁ < 1 (σ′ = logistic, E[σ′²] < ½ at every q): still none.
    match critical_sigma_w2(Activation::Softplus, 1.0).unwrap() {
        Critical::None(why) => assert!(why.contains("< 2.000000"), "{why}"),
        Critical::At(w) => panic!("softplus: critical σ_w² {w}"),
    }
}

// ---- theory against measurement ------------------------------------------------------

fn probe(act: Activation, w: f64, b: f64, width: usize, depth: usize, batch: usize, seed: u64) -> (Problem, gradscope::stats::Report) {
    let init = Init::new(InitKind::Gaussian, Some(w), Some(b)).unwrap();
    let net = Network::new(vec![width; depth + 1], act, false, Cost::Quadratic, Params::Generated { init, seed }).unwrap();
    let x = InputSpec::Gaussian.materialise(seed, batch, width).unwrap();
    let y = TargetSpec::Gaussian.materialise(seed, batch, width).unwrap();
    let p = Problem::new(net, x, y).unwrap();
    let r = CpuBackend::default().probe(&p).unwrap();
    (p, r)
}

#[test]
fn measured_slopes_of_wide_networks_agree_with_chi1() {
    // Width 400, depth 24, batch 8, three seeds. The fitted per-layer log10 ratio of
    // grad_b_rms over layers 9..23 (q^l settled, output layer excluded) estimates ½ log10 χ₁.
    // Statistical tolerance: each step's log ratio fluctuates by about √(2/(N·B)) / ln 10
    // ≈ 0.012 in log10 ‖δ‖² per step (N = 400, B = 8); the slope of a 15-step random walk
    // averages that to ≈ 0.004, three seeds to ≈ 0.0025, and the finite-width bias is
    // O(1/N) ≈ 0.001. The test allows 0.012 in log10 χ (±2.8 % in χ), ~4σ.
    let cases = [(Activation::Tanh, 1.0, 0.05), (Activation::Tanh, 1.76, 0.05), (Activation::Tanh, 2.5, 0.05), (Activation::Relu, 1.0, 0.0), (Activation::Sigmoid, 4.0, 0.5)];
    for (act, w, b) in cases {
        let chi1 = MeanField::new(act, w, b).unwrap().chi1();
        let mut fits = Vec::new();
        for seed in 1..=3 {
            let (p, r) = probe(act, w, b, 400, 24, 8, seed);
            fits.push(2.0 * fitted_log10_ratio(&r, 9, 23).unwrap());
            if seed == 1 {
                // The predicted profile follows the same slope.
                let pr = theory::predict(&p).unwrap();
                let s = 2.0 * theory::predict::fitted_log10_ratio_of(&pr.log10_grad_b_rms, 9, 23).unwrap();
                assert!((s - chi1.log10()).abs() < 2e-3, "{act} σ_w²={w}: predicted slope {s} vs log10 χ₁ {}", chi1.log10());
            }
        }
        let m = fits.iter().sum::<f64>() / fits.len() as f64;
        assert!(
            (m - chi1.log10()).abs() < 0.012,
            "{act} σ_w²={w} σ_b²={b}: measured log10 χ = {m:.4} (seeds {fits:?}), theory log10 χ₁ = {:.4}",
            chi1.log10()
        );
    }
}

#[test]
fn predicted_profile_tracks_the_measured_one_layer_by_layer() {
    // tanh at σ_w² = 1.2, σ_b² = 0.1, width 400, depth 12: the whole predicted profile
    // (top layer from the targets, then the per-layer factors) within 0.05 decades.
    let (p, r) = probe(Activation::Tanh, 1.2, 0.1, 400, 12, 16, 7);
    let pred = theory::predicted_log10_grad_b_rms(&p).unwrap();
    for (s, want) in r.layers.iter().zip(&pred) {
        assert!((s.log10_grad_b_rms - want).abs() < 0.05, "layer {}: measured {} vs predicted {want}", s.layer, s.log10_grad_b_rms);
    }
}

#[test]
fn anatomy_of_a_sigmoid_network() {
    let (p, r) = probe(Activation::Sigmoid, 1.0, 0.0, 200, 10, 4, 3);
    let rows = theory::anatomy(&r, &p.net);
    assert_eq!(rows.len(), 10);
    for row in &rows {
        // The bound holds: the slack is never negative.
        assert!(row.log10_slack >= -1e-9 && row.log10_slack_tight >= -1e-9, "layer {}: slack {}", row.layer, row.log10_slack);
        // ‖W‖₂ ≈ σ_w (1 + √(n_out/n_in)) = 2 within a few percent at n = 200.
        assert!((row.log10_weight_norm - row.log10_weight_norm_rmt).abs() < 0.03, "layer {}: ‖W‖ {} vs rmt {}", row.layer, row.log10_weight_norm, row.log10_weight_norm_rmt);
        if row.layer < 10 {
            // γ‖W‖ ≈ 0.5 < 1 everywhere above: vanishing is guaranteed, and each measured
            // step is below the bound's factor.
            assert!(row.vanishing_guaranteed);
            assert!(row.log10_ratio.unwrap() < row.log10_factor.unwrap());
        } else {
            assert!(!row.vanishing_guaranteed && row.log10_factor.is_none());
        }
    }
    let table = theory::anatomy_table(&rows);
    assert!(table.contains("vanishes"));
}

#[test]
fn he_init_is_stable_and_xavier_collapses() {
    let r = theory::reproduce("he-vs-xavier", &theory::ReproduceOptions { depth: Some(12), width: Some(200), batch: Some(8), ..Default::default() }).unwrap();
    let rows = r.rows.as_array().unwrap();
    let chi_x = rows[0]["chi_measured"].as_f64().unwrap();
    let chi_h = rows[1]["chi_measured_decoupled"].as_f64().unwrap();
    // Width 200, depth 12, batch 8, one seed: per-step sd of log10 ‖δ‖² ≈ 0.03 for relu, an
    // 11-step slope ≈ 0.01, so ±0.05 in χ is ~4σ.
    assert!((chi_x - 0.5).abs() < 0.05, "xavier relu χ = {chi_x}");
    assert!((chi_h - 1.0).abs() < 0.05, "he relu χ (targets dominating a^L) = {chi_h}");
    // With y ~ N(0,1) the coherent a^L part makes the He profile grow (slowly).
    assert!(rows[1]["chi_measured"].as_f64().unwrap() > 1.0);
    assert!(r.to_string().contains("he-vs-xavier"));
}

/// Below criticality without biases q^l shrinks geometrically past f64's range (tanh,
/// σ_w² = 0.5: q^l ≈ 2^-l); the prediction carries log10 q there, so it stays finite, its
/// per-layer ratio is exactly √(σ_w² tanh′(0)²) = √0.5, and the top layer follows q^L
/// instead of freezing at the first underflow.
#[test]
fn prediction_follows_q_below_f64_range() {
    use gradscope::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem, TargetSpec};
    let init = Init::new(InitKind::Gaussian, Some(0.5), Some(0.0)).unwrap();
    let net = Network::new(vec![64; 3001], Activation::Tanh, false, Cost::Quadratic, Params::Generated { init, seed: 1 }).unwrap();
    let x = InputSpec::Gaussian.materialise(1, 4, 64).unwrap();
    let y = TargetSpec::Zeros.materialise(1, 4, 64).unwrap();
    let p = Problem::new(net, x, y).unwrap();
    let pred = gradscope::theory::predicted_log10_grad_b_rms(&p).unwrap();
    assert!(pred.iter().all(|v| v.is_finite()));
    let ratio = gradscope::theory::predict::fitted_log10_ratio_of(&pred, 1, 2999).unwrap();
    assert!((ratio - 0.5f64.sqrt().log10()).abs() < 1e-6, "ratio {ratio}");
    // ‖δ^L‖² ∝ q^L ≈ 0.5^3000 here: far below the 10^-100 a frozen q = 1e-200 would give.
    assert!(pred[2999] < -400.0, "top layer {}", pred[2999]);
}

// ---- reproduce: seeds and sources ---------------------------------------------------------

#[test]
fn decay_rate_reports_a_spread_over_several_seeds_by_default() {
    // One seed reuses one gaussian matrix at every σ_w², so its four values move together; the
    // default run must average over seeds and say how much they scatter.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["reproduce", "decay-rate", "--width", "40", "--depth", "14", "--batch", "4", "--format", "json"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        let sd = r["chi_measured_sd"].as_f64().unwrap_or_else(|| panic!("no sd over seeds in {r}"));
        assert!(sd > 0.0 && sd.is_finite(), "sd {sd}");
    }
    let notes = v["notes"].to_string();
    assert!(notes.contains(&format!("{} seed(s)", theory::reproduce::DECAY_RATE_SEEDS)), "{notes}");
    const { assert!(theory::reproduce::DECAY_RATE_SEEDS >= 4) };
}

#[test]
fn nielsen_published_values_are_his_repository_numbers_with_their_source() {
    assert_eq!(theory::reproduce::NIELSEN_PUBLISHED, [0.011838, 0.059965, 0.283142]);
    let opt = theory::ReproduceOptions { batch: Some(20), ..Default::default() };
    let r = theory::reproduce("nielsen", &opt).unwrap();
    let notes = r.notes.join("\n");
    assert!(notes.contains("fig/norms_during_training_3_layers.json, epoch 0"), "{notes}");
    assert!(notes.contains("generate_gradient.py") && notes.contains("0.012, 0.060, 0.283"), "{notes}");
    assert_eq!(r.rows[0]["published"].as_f64(), Some(0.011838));
}

#[test]
fn docs_cite_the_sources_the_review_checked() {
    let theory_md = include_str!("../docs/THEORY.md");
    let readme = include_str!("../README.md");
    // The largest singular value is Yin, Bai & Krishnaiah 1988; Bai & Yin 1993 is the smallest.
    assert!(theory_md.contains("Yin, Bai & Krishnaiah 1988") && !theory_md.contains("Bai & Yin 1993"));
    for doc in [theory_md, readme] {
        assert!(doc.contains("0.011838, 0.059965, 0.283142") && doc.contains("norms_during_training_3_layers.json"));
        assert!(!doc.contains("0.0118, 0.0600, 0.2831"));
    }
    // The anatomy paragraph names its examples and shows the case where the bound is silent.
    assert!(readme.contains("gradscope probe -a tanh --sigma-w2 1 --sigma-b2 0.05") && readme.contains("χ₁ = 0.759 predicts"));
    assert!(!theory_md.contains("silu and gelu have none"));
    assert!(!theory_md.contains("the finite-width correction)"));
}

#[test]
fn hanin_relu_he_fluctuations_match_the_product_of_layer_factors() {
    // 400 seeds of one input each at n = 40, L = 12: Π(1 + 5/40)^12 = 4.11, Var ln‖δ¹‖ = 0.41.
    let opt = theory::ReproduceOptions { seeds: 400, width: Some(40), depth: Some(12), ..Default::default() };
    let r = theory::reproduce("hanin", &opt).unwrap();
    let row = &r.rows[0];
    let get = |k: &str| row[k].as_f64().unwrap();
    close(get("moment_ratio_predicted"), 1.125f64.powi(12), 1e-12, "Π(1 + 5/n)");
    let (m, e) = (row["moment_ratio_measured"]["value"].as_f64().unwrap(), row["moment_ratio_measured"]["error"].as_f64().unwrap());
    assert!(e > 0.0 && (m - get("moment_ratio_predicted")).abs() < 4.0 * e, "moment ratio {m} ± {e} against {}", get("moment_ratio_predicted"));
    let (v, ve) = (row["var_ln_norm_measured"]["value"].as_f64().unwrap(), row["var_ln_norm_measured"]["error"].as_f64().unwrap());
    assert!(ve > 0.0 && (v - get("var_ln_norm_predicted")).abs() < 4.0 * ve, "Var ln‖δ¹‖ {v} ± {ve} against {}", get("var_ln_norm_predicted"));
    // The exact per-layer sum sits above the leading order 5/(4n) per layer, by O(1/n²).
    assert!(get("var_ln_norm_predicted") > get("var_ln_norm_asymptotic"));
    close(get("var_ln_norm_asymptotic"), 1.25 * 12.0 / 40.0, 1e-12, "(5/4) Σ 1/n");
    // One example per seed is the law being tested: a batch is refused, not averaged.
    let bad = theory::ReproduceOptions { batch: Some(4), ..opt };
    assert!(theory::reproduce("hanin", &bad).unwrap_err().to_string().contains("--batch"));
}

// ---- the forward signal: q^l and c^l against their predictions ---------------------------

fn tanh_problem(width: usize, depth: usize, batch: usize, seed: u64) -> Problem {
    let init = Init::new(InitKind::Gaussian, Some(1.0), Some(0.05)).unwrap();
    let net = Network::new(vec![width; depth + 1], Activation::Tanh, false, Cost::Quadratic, Params::Generated { init, seed }).unwrap();
    let x = InputSpec::Gaussian.materialise(seed, batch, width).unwrap();
    let y = TargetSpec::Zeros.materialise(seed, batch, width).unwrap();
    Problem::new(net, x, y).unwrap()
}

#[test]
fn predicted_q_reaches_q_star_and_measured_q_and_c_follow_their_predictions() {
    // The predicted length settles on q* = 0.19359 (tanh, σ_w² = 1, σ_b² = 0.05; ξ_q = 1.75).
    let q_star = MeanField::new(Activation::Tanh, 1.0, 0.05).unwrap().q_star();
    assert!((q_star - 0.19359).abs() < 5e-6, "q* = {q_star}");
    let lq = theory::log10_q_predicted(&tanh_problem(16, 80, 3, 1)).unwrap();
    assert!((10f64.powf(lq[79]) / q_star - 1.0).abs() < 1e-12, "q^80 = {}", 10f64.powf(lq[79]));
    // Width 1000, batch 4: measured from the pre-activations of a plain forward pass.
    let (width, depth, batch) = (1000, 20, 4);
    let p = tanh_problem(width, depth, batch, 7);
    let lq = theory::log10_q_predicted(&p).unwrap();
    let cp = theory::c_predicted(&p).unwrap();
    let f = gradscope::backend::cpu::forward_plain(&p);
    // Tolerances: one layer's q averages z² over n units whose examples become nearly
    // identical as c → 1, so its relative sampling sd is about √(2/n) = 0.045, and the
    // deviations persist over ~ξ_q layers; per layer 4√(2/n), over layers 11..20 2√(2/n).
    // One pair's correlation fluctuates by up to 1/√n; per layer 3/√n (`c_noise`).
    let tol_q = (2.0 / width as f64).sqrt();
    let mut cm = Vec::new();
    let mut late = Vec::new();
    for l in 1..=depth {
        let z = &f[l].0;
        let q = 10f64.powf(theory::log10_q_measured(z.view()));
        let c = theory::c_measured(z.dot(&z.t()).view());
        cm.push(c);
        let qp = 10f64.powf(lq[l - 1]);
        assert!((q / qp - 1.0).abs() < 4.0 * tol_q, "layer {l}: q = {q}, predicted {qp}");
        assert!((c - cp[l - 1]).abs() < theory::signal::c_noise(width), "layer {l}: c = {c}, predicted {}", cp[l - 1]);
        if l > 10 {
            late.push(q);
        }
    }
    let q_late = late.iter().sum::<f64>() / late.len() as f64;
    assert!((q_late / q_star - 1.0).abs() < 2.0 * tol_q, "mean q over layers 11..20 = {q_late} against q* = {q_star}");
    // c^l → c* = 1 (ordered phase) over ξ_c = 3.627 layers. Fitted from layer 1 on, the
    // early layers, where c is far from 1 and the map not yet linear, bias the fit up: the
    // noise-free predicted profile gives 3.76, the measured one (11 layers above 3/√n) 4.3.
    let xi = MeanField::new(Activation::Tanh, 1.0, 0.05).unwrap().xi_c().unwrap();
    let fit_p = theory::xi_c_measured(&cp, 1.0, 1e-6).unwrap();
    assert!((fit_p.xi_c_measured / xi - 1.0).abs() < 0.05, "{fit_p:?} against ξ_c = {xi}");
    let fit_m = theory::xi_c_measured(&cm, 1.0, theory::signal::c_noise(width)).unwrap();
    assert!((fit_m.xi_c_measured / xi - 1.0).abs() < 0.3, "{fit_m:?} against ξ_c = {xi}");
    assert!(fit_m.last_layer >= 5 && fit_m.last_layer < depth, "{fit_m:?}");
    // Pairs of a single example: no correlation to speak of.
    assert!(theory::c_predicted(&tanh_problem(8, 3, 1, 1)).unwrap().iter().all(|c| c.is_nan()));
}
