//! The Jacobian's singular spectrum (`gradscope spectrum`): against the SVD of the explicitly
//! formed Jacobian, the determinant identity at depth 5,000, the product bound at every
//! depth, and the command's outputs and one-line errors. The GPU engine (f32 layer products,
//! Mesa's lavapipe in CI) against the CPU's within `--check`'s tolerance, and the identity
//! and the bound on both engines by `test_device!`.

use std::process::Command;

use gradscope::backend::cpu::forward_plain;
use gradscope::linalg::spectral_norm;
use gradscope::model::{Activation, Cost, Init, InitKind, InputSpec, Network, Params, Problem};
use gradscope::spectrum::device::{compare, SpectrumTolerance, GPU_DET_RTOL};
use gradscope::spectrum::{Chain, DepthSpectrum, measure};
use ndarray::Array2;

fn problem(act: Activation, kind: InitKind, sw2: Option<f64>, sb2: f64, widths: Vec<usize>, batch: usize, seed: u64) -> Problem {
    let init = Init::new(kind, sw2, Some(sb2)).unwrap();
    let (n0, nl) = (widths[0], *widths.last().unwrap());
    let net = Network::new(widths, act, false, Cost::Quadratic, Params::Generated { init, seed }).unwrap();
    let x = InputSpec::Gaussian.materialise(seed, batch, n0).unwrap();
    Problem::new(net, x, Array2::zeros((batch, nl))).unwrap()
}

/// The chain formed explicitly, by the plain (unscaled) forward pass: from layer `start`
/// (0: J_x = Σ′(z^L) W^L ⋯ Σ′(z^1) W^1; l ≥ 1: ∂z^L/∂z^l = W^L Σ′(z^{L-1}) ⋯ W^{l+1} Σ′(z^l)).
fn explicit_chain(p: &Problem, x: usize, start: usize) -> Array2<f64> {
    let f = forward_plain(p);
    let big_l = p.net.depth();
    let act = p.net.activation;
    let dsig = |l: usize| Array2::from_diag(&f[l].0.row(x).mapv(|z| act.dsigma(z)));
    let mut j = if start == 0 { Array2::eye(p.net.widths[0]) } else { dsig(start) };
    for l in start + 1..=big_l {
        j = p.net.layer(l).0.dot(&j);
        if start == 0 || l < big_l {
            j = dsig(l).dot(&j);
        }
    }
    j
}

fn svd_log10(j: &Array2<f64>) -> Vec<f64> {
    let m = nalgebra::DMatrix::from_fn(j.nrows(), j.ncols(), |a, b| j[[a, b]]);
    let mut s: Vec<f64> = m.singular_values().iter().map(|v| v.log10()).collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

#[test]
fn singular_values_match_the_svd_of_the_explicit_jacobian() {
    let cases: Vec<(Problem, usize)> = vec![
        (problem(Activation::Tanh, InitKind::Gaussian, Some(1.7610), 0.05, vec![6; 5], 3, 1), 0),
        (problem(Activation::Tanh, InitKind::Orthogonal, Some(1.7610), 0.05, vec![7; 9], 2, 2), 0),
        (problem(Activation::Erf, InitKind::Gaussian, Some(1.2), 0.1, vec![5, 7, 4, 6], 2, 3), 0),
        (problem(Activation::Sigmoid, InitKind::Gaussian, Some(4.0), 0.0, vec![6, 9, 8], 2, 4), 0),
        (problem(Activation::Tanh, InitKind::Gaussian, Some(1.5), 0.0, vec![6; 8], 2, 5), 3),
    ];
    let (mut compared, mut total) = (0, 0);
    for (k, (p, start)) in cases.iter().enumerate() {
        let chain = if *start == 0 { Chain::InputOutput } else { Chain::FromLayer(*start) };
        let got = measure(p, p.batch(), chain, &[p.net.depth()], false).unwrap();
        for e in &got[0].examples {
            let want = svd_log10(&explicit_chain(p, e.example, *start));
            assert_eq!(e.log10_singular_values.len(), want.len(), "case {k}");
            // The explicit SVD is accurate to about ε·s_1 absolutely, so a value s_i is
            // known to 1e-11 relative where s_1/s_i < 1e4: those are compared (the smaller
            // ones are held by the determinant identity instead).
            total += want.len();
            for (i, (g, w)) in e.log10_singular_values.iter().zip(&want).enumerate().filter(|(_, (_, w))| **w > want[0] - 4.0) {
                compared += 1;
                let rel = (10f64.powf(g - w) - 1.0).abs();
                assert!(rel < 1e-10, "case {k}, example {}, s_{}: {g} vs {w} (relative {rel:e})", e.example, i + 1);
            }
        }
    }
    assert!(compared * 4 >= total * 3, "only {compared} of {total} values were within the reference's accuracy");
}

#[test]
fn relu_dead_units_give_exact_zero_singular_values() {
    let p = problem(Activation::Relu, InitKind::He, None, 0.0, vec![8; 4], 2, 7);
    let got = measure(&p, 2, Chain::InputOutput, &[3], false).unwrap();
    for e in &got[0].examples {
        let want = svd_log10(&explicit_chain(&p, e.example, 0));
        let zeros = e.log10_singular_values.iter().filter(|v| **v == f64::NEG_INFINITY).count();
        // The explicit SVD shows the same rank: its extra values sit at rounding level.
        let tiny = want.iter().filter(|w| **w < want[0] - 12.0).count();
        assert!(zeros > 0 && zeros == tiny, "zeros {zeros}, rounding-level values {tiny}");
        for (g, w) in e.log10_singular_values.iter().zip(&want).filter(|(g, _)| g.is_finite()) {
            assert!((10f64.powf(g - w) - 1.0).abs() < 1e-10, "{g} vs {w}");
        }
    }
}

#[test]
fn relu_from_layer_chain_keeps_exact_zeros_through_the_reflectors() {
    // ∂z^L/∂z^1 with dead units on every layer: each Σ′ with zeros is factored on its own,
    // and the next W is applied through the reflectors of the live units only.
    let p = problem(Activation::Relu, InitKind::He, None, 0.0, vec![10; 6], 2, 19);
    let got = measure(&p, 2, Chain::FromLayer(1), &[5], false).unwrap();
    for e in &got[0].examples {
        let want = svd_log10(&explicit_chain(&p, e.example, 1));
        let zeros = e.log10_singular_values.iter().filter(|v| **v == f64::NEG_INFINITY).count();
        let tiny = want.iter().filter(|w| **w < want[0] - 12.0).count();
        assert!(zeros > 0 && zeros == tiny, "zeros {zeros}, rounding-level values {tiny}");
        for (g, w) in e.log10_singular_values.iter().zip(&want).filter(|(g, w)| g.is_finite() && **w > want[0] - 4.0) {
            assert!((10f64.powf(g - w) - 1.0).abs() < 1e-10, "{g} vs {w}");
        }
    }
}

#[test]
fn determinant_identity_holds_at_depth_5000() {
    // Gaussian weights at width 8: the Lyapunov exponents are far apart, so after 5,000
    // layers the singular values span thousands of decades (no f64 product survives).
    let p = problem(Activation::Tanh, InitKind::Gaussian, Some(1.5), 0.05, vec![8; 5001], 2, 11);
    let got = measure(&p, 2, Chain::InputOutput, &[5000], false).unwrap();
    // The right-hand side, independently: the plain forward pass (tanh at this σ_w² does
    // not underflow) and nalgebra's determinant of each 8 × 8 W^l.
    let f = forward_plain(&p);
    let mut rhs = [0.0f64; 2];
    for l in 1..=5000 {
        let w = p.net.layer(l).0;
        let det = nalgebra::DMatrix::from_fn(8, 8, |i, j| w[[i, j]]).determinant().abs().log10();
        for (x, r) in rhs.iter_mut().enumerate() {
            *r += det + f[l].0.row(x).iter().map(|&z| Activation::Tanh.dsigma(z).abs().log10()).sum::<f64>();
        }
    }
    for (e, r) in got[0].examples.iter().zip(rhs) {
        let v = &e.log10_singular_values;
        assert!(v[0] - v[7] > 3000.0, "the spectrum spans only {} decades", v[0] - v[7]);
        let lhs: f64 = v.iter().sum();
        assert!(((lhs - r) / r).abs() < 1e-9, "Σ log10 s = {lhs}, identity {r}");
    }
    // The library's own check (LU pivots) agrees with nalgebra's determinant.
    let with = measure(&p, 2, Chain::InputOutput, &[5000], true).unwrap();
    for (d, r) in with[0].log10_abs_det.as_ref().unwrap().iter().zip(rhs) {
        assert!(((d - r) / r).abs() < 1e-9);
    }
}

#[test]
fn top_singular_value_is_below_the_product_bound_at_every_depth() {
    for (act, kind, sw2, sb2) in [(Activation::Tanh, InitKind::Gaussian, Some(2.5), 0.1), (Activation::Relu, InitKind::He, None, 0.0), (Activation::Sigmoid, InitKind::Orthogonal, Some(16.0), 0.0)] {
        let depth = 150;
        let p = problem(act, kind, sw2, sb2, vec![12; depth + 1], 2, 13);
        let depths: Vec<usize> = (1..=depth).collect();
        let got = measure(&p, 2, Chain::InputOutput, &depths, false).unwrap();
        let mut bound = 0.0; // log10 Π_{r ≤ d} γ ‖W^r‖₂
        for d in &got {
            bound += (act.gamma() * spectral_norm(p.net.layer(d.depth).0.view())).log10();
            for e in &d.examples {
                let top = e.log10_singular_values[0];
                assert!(top <= bound + 1e-12, "{act}: depth {}, s_1 = 10^{top} > bound 10^{bound}", d.depth);
            }
        }
    }
}

#[test]
fn prefix_depths_equal_separate_runs() {
    let p = problem(Activation::Tanh, InitKind::Gaussian, Some(1.7610), 0.05, vec![10; 41], 2, 17);
    let all = measure(&p, 2, Chain::InputOutput, &[5, 20, 40], false).unwrap();
    for d in &all {
        let mut q = p.clone();
        q.net.widths.truncate(d.depth + 1);
        let alone = measure(&q, 2, Chain::InputOutput, &[d.depth], false).unwrap();
        assert_eq!(alone[0].examples[1].log10_singular_values, d.examples[1].log10_singular_values);
    }
}

fn gradscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope")).args(args).output().unwrap()
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let net = ["spectrum", "-a", "tanh", "--width", "8", "--depth", "5"];
    let cases: &[(&[&str], &str)] = &[
        (&["--top", "9"], "--top"),
        (&["--top", "0"], "--top"),
        // The valid range is written inclusively: 5 = L must not look as if it were in it.
        (&["--from-layer", "5"], "must be in 1..=4"),
        (&["--from-layer", "0"], "must be in 1..=4"),
        (&["--check"], "--backend gpu"),
        (&["--check", "--backend", "cpu"], "--backend gpu"),
        (&["--backend", "cpu", "--adapter", "llvmpipe"], "--adapter"),
        (&["--examples", "0"], "--examples"),
        (&["--out", "x.txt"], "--out"),
        (&["--plot", "x.pdf"], "--plot"),
    ];
    for (extra, needle) in cases {
        let mut a = net.to_vec();
        a.extend_from_slice(extra);
        let o = gradscope(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let o = gradscope(&["spectrum", "-a", "tanh", "--widths", "8,6,8", "--det-check"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("square"), "{err}");
}

#[test]
fn outputs_carry_log10_singular_values_per_example() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    let npy = dir.path().join("s.npy");
    let svg = dir.path().join("s.svg");
    let base = ["spectrum", "-a", "relu", "--init", "he", "--width", "10", "--depth", "6", "--examples", "2", "--det-check"];
    let mut a = base.to_vec();
    a.extend(["--out", json.to_str().unwrap(), "--plot", svg.to_str().unwrap()]);
    let o = gradscope(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ex = v["examples"].as_array().unwrap();
    assert_eq!(ex.len(), 2);
    let s = ex[0]["log10_singular_values"].as_array().unwrap();
    assert_eq!(s.len(), 10);
    // Dead relu units: exact zeros, written as null, counted in the summary.
    let nulls = s.iter().filter(|x| x.is_null()).count();
    assert!(nulls > 0);
    assert_eq!(ex[0]["summary"]["zero_count"].as_u64().unwrap() as usize, nulls);
    assert_eq!(v["prediction"]["var_over_mean2"].as_f64().unwrap(), 6.0 * 2.0); // L(2 − 1 + 1)
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    let mut a = base.to_vec();
    a.extend(["--top", "2", "--out", npy.to_str().unwrap()]);
    let o = gradscope(&a);
    assert!(o.status.success());
    let arr: ndarray::Array2<f64> = ndarray_npy::read_npy(&npy).unwrap();
    assert_eq!(arr.dim(), (2, 4)); // top 2 and bottom 2 per example
    assert!(arr[[0, 0]] >= arr[[0, 1]] && arr[[0, 3]] == f64::NEG_INFINITY);
}

#[test]
fn eigenvalue_moments_follow_free_probability_in_the_wide_regime() {
    // tanh at its critical point, inputs scaled so that q¹ = q* (the prediction's assumption
    // from the first layer on), L = 24 ≪ n = 256: var(λ)/mean(λ)² = L(μ₂/μ₁² − 1 − s₁),
    // s₁ = −1 for gaussian and 0 for orthogonal weights (docs/MATH.md).
    use gradscope::spectrum::{output::ExampleSummary, predict};
    let (sw2, sb2) = (1.7610, 0.05);
    let q_star = gradscope::theory::MeanField::new(Activation::Tanh, sw2, sb2).unwrap().q_star();
    for kind in [InitKind::Gaussian, InitKind::Orthogonal] {
        let mut p = problem(Activation::Tanh, kind, Some(sw2), sb2, vec![256; 25], 4, 21);
        for mut row in p.inputs.rows_mut() {
            let r2 = row.dot(&row) / 256.0;
            row *= ((q_star - sb2) / sw2 / r2).sqrt();
        }
        let pred = predict::predict(&p, Chain::InputOutput, 24).unwrap();
        assert_eq!(pred.q_star_reached_at_layer, Some(1));
        let got = measure(&p, 4, Chain::InputOutput, &[24], false).unwrap();
        let s: Vec<ExampleSummary> = got[0].examples.iter().map(ExampleSummary::new).collect();
        let vm = s.iter().map(|e| e.var_over_mean2).sum::<f64>() / s.len() as f64;
        let m1 = s.iter().map(|e| e.log10_mean_lambda).sum::<f64>() / s.len() as f64;
        // Finite width and four examples: 25% on the ratio, 0.3 decades on the mean.
        assert!((vm / pred.var_over_mean2 - 1.0).abs() < 0.25, "{kind}: var/mean² {vm} vs {}", pred.var_over_mean2);
        assert!((m1 - pred.log10_mean_lambda).abs() < 0.3, "{kind}: log10 mean λ {m1} vs {}", pred.log10_mean_lambda);
    }
}

#[test]
fn reproduce_isometry_orthogonal_spreads_less_than_gaussian() {
    let opt = gradscope::theory::ReproduceOptions { depth: Some(48), width: Some(48), ..Default::default() };
    let r = gradscope::theory::reproduce("isometry", &opt).unwrap();
    let rows = r.rows.as_array().unwrap();
    let sd = |act: &str, init: &str| -> Vec<f64> { rows.iter().filter(|x| x["activation"] == act && x["init"] == init).map(|x| x["sd_log10"].as_f64().unwrap()).collect() };
    let (g, o) = (sd("tanh", "gaussian"), sd("tanh", "orthogonal"));
    assert_eq!(g.len(), 4); // depths 8, 16, 32, 48
    for (a, b) in g.iter().zip(&o) {
        assert!(b < a, "orthogonal sd {b} ≥ gaussian sd {a}");
    }
    // relu has exact zeros (dead units) under both inits.
    assert!(rows.iter().filter(|x| x["activation"] == "relu").all(|x| x["zero_fraction"].as_f64().unwrap() > 0.3));
    // Depths 8 and 16 fit the wide regime (L ≤ n/2); only 48 is at L ≥ n, too few for a slope,
    // so each configuration's note names the one fitted regime and nothing reads "n/a".
    let slopes: Vec<&String> = r.notes.iter().filter(|n| n.contains("grows like")).collect();
    assert_eq!(slopes.len(), 4, "{:?}", r.notes);
    assert!(slopes.iter().all(|n| n.contains("for L ≤ n/2") && !n.contains("L ≥ n")), "{slopes:?}");
    assert!(r.notes.iter().all(|n| !n.contains("n/a")), "{:?}", r.notes);
}

/// var(λ)/mean(λ)² of m values never exceeds m − 1: past that the terminal table says the
/// wide-limit prediction cannot be met, and only then.
#[test]
fn prediction_beyond_m_minus_1_is_flagged() {
    let note = "can never exceed m − 1";
    let run = |w: &str, d: &str| {
        let o = gradscope(&["spectrum", "-a", "tanh", "--sigma-w2", "1.7610", "--sigma-b2", "0.05", "--width", w, "--depth", d, "--examples", "1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    // Width 4, depth 6: predicted 6 × 1.34 ≈ 8 > 3.
    let past = run("4", "6");
    assert!(past.contains(&format!("{note} = 3")), "{past}");
    // Width 32, depth 2: predicted ≈ 2.7 < 31.
    assert!(!run("32", "2").contains(note));
}

// ---- Both engines ----

/// One engine's spectrum and the slack its arithmetic earns against exact identities.
enum Engine {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(gradscope::backend::gpu::GpuBackend),
}

impl Engine {
    fn measure(&self, p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool) -> Vec<DepthSpectrum> {
        match self {
            Engine::Cpu => measure(p, examples, chain, depths, det_check).unwrap(),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.spectrum(p, examples, chain, depths, det_check).unwrap().0,
        }
    }

    /// Relative slack of the determinant identity: f64 rounding, or the f32 products'.
    fn det_rtol(&self) -> f64 {
        match self {
            Engine::Cpu => 1e-9,
            #[cfg(feature = "gpu")]
            Engine::Gpu(_) => GPU_DET_RTOL,
        }
    }

    /// Decades a log10 s_i may exceed an exact bound by, for a chain of `layers` layers.
    fn slack(&self, layers: usize) -> f64 {
        match self {
            Engine::Cpu => 1e-12,
            #[cfg(feature = "gpu")]
            Engine::Gpu(_) => SpectrumTolerance::f32_vs_f64().allowed(layers),
        }
    }
}

/// `test_device!(check, check_cpu, check_gpu)`: `fn check(&Engine)` on each engine; the GPU
/// one skips loudly without an adapter, or fails under GRADSCOPE_REQUIRE_GPU=1.
macro_rules! test_device {
    ($check:ident, $cpu:ident, $gpu:ident) => {
        #[test]
        fn $cpu() {
            $check(&Engine::Cpu);
        }

        #[cfg(feature = "gpu")]
        #[test]
        fn $gpu() {
            if let Some(g) = gpu(stringify!($gpu)) {
                $check(&Engine::Gpu(g));
            }
        }
    };
}

#[cfg(feature = "gpu")]
fn gpu(test: &str) -> Option<gradscope::backend::gpu::GpuBackend> {
    use gradscope::backend::gpu::{GpuBackend, GpuOptions};
    match GpuBackend::new(&GpuOptions { adapter: None, allow_software: true }) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("GRADSCOPE_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: GRADSCOPE_REQUIRE_GPU=1 but no GPU adapter: {e}");
            }
            eprintln!("\n*** {test}: SKIPPED: no GPU adapter ({e}) ***\n");
            None
        }
    }
}

/// Σ_i log10 s_i = Σ_l (log10 |det W^l| + Σ_i log10 |σ′(z^l_i)|) for square layers, for J_x
/// and for ∂z^L/∂z^l, in the ordered and the chaotic phase (depth 60: the values span
/// hundreds of decades).
fn determinant_identity_holds(dev: &Engine) {
    for (sw2, chain) in [(1.7610, Chain::InputOutput), (4.0, Chain::InputOutput), (4.0, Chain::FromLayer(7))] {
        let p = problem(Activation::Tanh, InitKind::Gaussian, Some(sw2), 0.05, vec![16; 61], 2, 31);
        let got = dev.measure(&p, 2, chain, &[60], true);
        let d = &got[0];
        for (e, want) in d.examples.iter().zip(d.log10_abs_det.as_ref().unwrap()) {
            let v = &e.log10_singular_values;
            assert!(v[0] - v[15] > 20.0, "the spectrum spans only {} decades", v[0] - v[15]);
            let sum: f64 = v.iter().sum();
            let rel = ((sum - want) / want).abs();
            assert!(rel < dev.det_rtol(), "σ_w² {sw2}, {chain:?}, example {}: Σ log10 s = {sum}, identity {want} (relative {rel:e})", e.example);
        }
    }
}

test_device!(determinant_identity_holds, determinant_identity_holds_cpu, determinant_identity_holds_gpu);

/// s_1 ≤ Π_{r ≤ d} γ‖W^r‖₂ at every depth d, bounded and homogeneous σ.
fn top_below_the_bound_on_every_engine(dev: &Engine) {
    for (act, kind, sw2, sb2) in [(Activation::Tanh, InitKind::Gaussian, Some(2.5), 0.1), (Activation::Relu, InitKind::He, None, 0.0)] {
        let depth = 40;
        let p = problem(act, kind, sw2, sb2, vec![12; depth + 1], 2, 13);
        let depths: Vec<usize> = (1..=depth).collect();
        let mut bound = 0.0;
        for d in &dev.measure(&p, 2, Chain::InputOutput, &depths, false) {
            bound += (act.gamma() * spectral_norm(p.net.layer(d.depth).0.view())).log10();
            for e in &d.examples {
                let top = e.log10_singular_values[0];
                assert!(top <= bound + dev.slack(d.depth), "{act}: depth {}, s_1 = 10^{top} > bound 10^{bound}", d.depth);
            }
        }
    }
}

test_device!(top_below_the_bound_on_every_engine, top_below_the_bound_cpu, top_below_the_bound_gpu);

/// The GPU's spectrum against the CPU's, value by value within `--check`'s tolerance: the
/// ordered, critical and chaotic phases, orthogonal weights, relu's exact zeros (the same
/// count on both), ∂z^L/∂z^l, several depths at once and widths that change.
#[cfg(feature = "gpu")]
#[test]
fn gpu_spectrum_matches_cpu_within_the_tolerance() {
    let Some(g) = gpu("gpu_spectrum_matches_cpu_within_the_tolerance") else { return };
    let tol = SpectrumTolerance::f32_vs_f64();
    let cases: Vec<(Problem, Chain, Vec<usize>)> = vec![
        (problem(Activation::Tanh, InitKind::Gaussian, Some(1.7610), 0.05, vec![32; 51], 3, 1), Chain::InputOutput, vec![10, 50]),
        (problem(Activation::Tanh, InitKind::Orthogonal, Some(1.7610), 0.05, vec![24; 41], 2, 2), Chain::InputOutput, vec![40]),
        (problem(Activation::Tanh, InitKind::Gaussian, Some(4.0), 0.05, vec![16; 51], 2, 3), Chain::InputOutput, vec![50]),
        (problem(Activation::Tanh, InitKind::Gaussian, Some(4.0), 0.05, vec![16; 51], 2, 4), Chain::FromLayer(3), vec![20, 50]),
        (problem(Activation::Relu, InitKind::He, None, 0.0, vec![20; 31], 2, 5), Chain::InputOutput, vec![30]),
        (problem(Activation::Sigmoid, InitKind::Gaussian, Some(4.0), 0.0, vec![20, 32, 12, 28, 16, 24], 2, 6), Chain::InputOutput, vec![3, 5]),
    ];
    let mut largest: f64 = 0.0;
    for (k, (p, chain, depths)) in cases.iter().enumerate() {
        let (got, split) = g.spectrum(p, p.batch(), *chain, depths, false).unwrap();
        let want = measure(p, p.batch(), *chain, depths, false).unwrap();
        assert!(split.product_madds > 0.0 && split.submissions >= depths.last().unwrap() - chain.start(), "case {k}: {split:?}");
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.depth, b.depth);
            let c = compare(a, b, a.depth - chain.start(), &tol);
            assert!(c.passed(), "case {k}, depth {}: {}", a.depth, c.summary(5));
            largest = largest.max(c.max_abs);
        }
        if p.net.activation == Activation::Relu {
            let zeros = |d: &DepthSpectrum| d.examples.iter().flat_map(|e| &e.log10_singular_values).filter(|v| **v == f64::NEG_INFINITY).count();
            assert!(zeros(&got[0]) > 0 && zeros(&got[0]) == zeros(&want[0]));
        }
    }
    // The products really were f32: the engines differ.
    assert!(largest > 1e-9, "largest |Δlog10 s| {largest:e}");
}

/// `spectrum --backend gpu --check` runs both engines, prints the verdict and exits 0.
#[cfg(feature = "gpu")]
#[test]
fn gpu_check_passes_from_the_command_line() {
    if gpu("gpu_check_passes_from_the_command_line").is_none() {
        return;
    }
    let o = gradscope(&["spectrum", "-a", "tanh", "--width", "16", "--depth", "20", "--examples", "2", "--backend", "gpu", "--check", "--det-check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("backend gpu") && out.contains("device") && out.contains("host"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("PASS: 32 singular values compared")), "{out}");
    assert_eq!(out.matches("det check, example").count(), 2, "{out}");
}

/// `--check`'s comparison fails what it should: a value beyond the tolerance, and an exact
/// zero on one side only (a unit on the other side of relu's kink); both −∞ agree.
#[test]
fn check_comparison_flags_what_differs() {
    use gradscope::spectrum::ExampleSpectrum;
    let ds = |v: Vec<f64>| DepthSpectrum { depth: 10, examples: vec![ExampleSpectrum { example: 0, log10_singular_values: v }], log10_abs_det: None };
    let tol = SpectrumTolerance::f32_vs_f64();
    let allowed = tol.allowed(10);
    let cpu = ds(vec![1.0, -3.0, f64::NEG_INFINITY]);
    let close = compare(&ds(vec![1.0 + 0.5 * allowed, -3.0, f64::NEG_INFINITY]), &cpu, 10, &tol);
    assert!(close.passed() && close.compared == 3 && close.worst == Some((0, 1)), "{}", close.summary(3));
    let far = compare(&ds(vec![1.0, -3.0 - 2.0 * allowed, f64::NEG_INFINITY]), &cpu, 10, &tol);
    assert!(!far.passed() && far.mismatches.len() == 1 && far.mismatches[0].index == 2, "{}", far.summary(3));
    let kink = compare(&ds(vec![1.0, -3.0, -40.0]), &cpu, 10, &tol);
    assert!(!kink.passed() && kink.mismatches[0].abs == f64::INFINITY, "{}", kink.summary(3));
}
