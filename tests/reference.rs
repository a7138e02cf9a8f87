//! The f64 CPU reference against finite differences, exact identities, the bound and its
//! own plain (unrescaled) path.

mod common;

use common::*;
use gradscope::backend::cpu::{CpuBackend, backprop_plain, cost_plain, norm2};
use gradscope::backend::plan::CpuPlan;
use gradscope::model::activation::all_activations;
use gradscope::model::{Activation, Cost, Init, InitKind, TargetSpec};

fn configs() -> Vec<(Activation, Cost)> {
    let mut v: Vec<(Activation, Cost)> = all_activations().into_iter().map(|a| (a, Cost::Quadratic)).collect();
    v.push((Activation::Sigmoid, Cost::CrossEntropy));
    v.push((Activation::LeakyRelu(-0.3), Cost::Quadratic));
    v
}

/// Central differences of C against backprop's ∂C/∂b^l and ∂C/∂W^l, layer by layer:
/// ‖fd − bp‖ ≤ 1e-6 ‖bp‖. With h = 1e-5 the truncation error is O(h²) ≈ 1e-10 and the
/// rounding error O(ε/h) ≈ 1e-11, both far inside the tolerance; a sign or index error in
/// backprop is off by O(1).
#[test]
fn backprop_matches_finite_differences_for_every_activation_and_cost() {
    let widths = [5, 7, 4, 6];
    for (i, (act, cost)) in configs().into_iter().enumerate() {
        let targets = if cost == Cost::CrossEntropy { TargetSpec::Uniform } else { TargetSpec::Gaussian };
        let p = problem(&widths, act, cost, gaussian(1.7, 0.3), 3, 100 + i as u64, targets);
        let grads = backprop_plain(&p);
        let (w0, b0) = stored(&p);
        let h = 1e-5;
        for l in 0..w0.len() {
            // Every pre-activation must be away from a kink, or the difference quotient is
            // not a derivative there.
            let f = gradscope::backend::cpu::forward_plain(&p);
            let near_kink = f[l + 1].0.iter().any(|&z| act.kinks().iter().any(|k| (z - k).abs() < 1e-3));
            assert!(!near_kink, "{act}: seed puts a pre-activation on a kink; pick another");
            let mut fd_w = w0[l].clone();
            for idx in ndarray::indices(w0[l].dim()) {
                let mut wp = w0.clone();
                wp[l][idx] += h;
                let cp = cost_plain(&with_params(&p, wp.clone(), b0.clone()));
                wp[l][idx] -= 2.0 * h;
                let cm = cost_plain(&with_params(&p, wp, b0.clone()));
                fd_w[idx] = (cp - cm) / (2.0 * h);
            }
            let mut fd_b = b0[l].clone();
            for j in 0..b0[l].len() {
                let mut bp = b0.clone();
                bp[l][j] += h;
                let cp = cost_plain(&with_params(&p, w0.clone(), bp.clone()));
                bp[l][j] -= 2.0 * h;
                let cm = cost_plain(&with_params(&p, w0.clone(), bp));
                fd_b[j] = (cp - cm) / (2.0 * h);
            }
            let g = &grads[l];
            let ew = (&fd_w - &g.grad_w).mapv(|v| v * v).sum().sqrt();
            let nw = g.grad_w.mapv(|v| v * v).sum().sqrt();
            let eb = norm2((&fd_b - &g.grad_b).view());
            let nb = norm2(g.grad_b.view());
            assert!(ew <= 1e-6 * nw, "{act}/{cost} layer {}: ∂C/∂W off by {ew:e} (norm {nw:e})", l + 1);
            assert!(eb <= 1e-6 * nb, "{act}/{cost} layer {}: ∂C/∂b off by {eb:e} (norm {nb:e})", l + 1);
        }
    }
}

/// The log-domain statistics equal the plain path's norms where nothing underflows.
#[test]
fn log_domain_statistics_equal_the_plain_path() {
    for (i, (act, cost)) in configs().into_iter().enumerate() {
        let targets = if cost == Cost::CrossEntropy { TargetSpec::Uniform } else { TargetSpec::Gaussian };
        let p = problem(&[9, 12, 8, 8, 11, 5], act, cost, gaussian(1.5, 0.1), 6, 7 + i as u64, targets);
        let plain = backprop_plain(&p);
        let r = CpuBackend::default().probe(&p).unwrap();
        let bsz = p.batch() as f64;
        for (l, (g, st)) in plain.iter().zip(&r.layers).enumerate() {
            let what = |f: &str| format!("{act}/{cost} layer {} {f}", l + 1);
            let rms_b = (g.delta.rows().into_iter().map(|d| d.dot(&d)).sum::<f64>() / bsz).sqrt();
            let rms_w = (g.delta.rows().into_iter().zip(g.a_prev.rows()).map(|(d, a)| d.dot(&d) * a.dot(&a)).sum::<f64>() / bsz).sqrt();
            let fro = g.grad_w.mapv(|v| v * v).sum().sqrt();
            let maxd = g.dsig.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            assert_log_close(st.log10_grad_b_mean, norm2(g.grad_b.view()).log10(), 1e-11, &what("grad_b_mean"));
            assert_log_close(st.log10_grad_b_rms, rms_b.log10(), 1e-11, &what("grad_b_rms"));
            assert_log_close(st.log10_grad_w_mean, fro.log10(), 1e-9, &what("grad_w_mean"));
            assert_log_close(st.log10_grad_w_rms, rms_w.log10(), 1e-11, &what("grad_w_rms"));
            assert_log_close(st.log10_max_dsigma, maxd.log10(), 1e-12, &what("max_dsigma"));
        }
        let c = cost_plain(&p);
        assert_log_close(r.log10_cost, c.log10(), 1e-12, &format!("{act}/{cost} cost"));
    }
}

/// Linear activation, square orthogonal weights, no bias: ‖δ^l_x‖ = ‖a^L_x − y_x‖ at every
/// layer, so grad_b_rms is the same number at every depth, and with B = 1 the bound (**) and
/// its tight form are equalities.
#[test]
fn linear_orthogonal_network_preserves_delta_norm_exactly() {
    let init = Init::new(InitKind::Orthogonal, Some(1.0), None).unwrap();
    for batch in [1, 5] {
        let p = problem(&[24; 41], Activation::Linear, Cost::Quadratic, init, batch, 3, TargetSpec::Gaussian);
        let r = CpuBackend::default().probe(&p).unwrap();
        let top = r.layers.last().unwrap().clone();
        for st in &r.layers {
            assert_log_close(st.log10_grad_b_rms, top.log10_grad_b_rms, 1e-13, &format!("layer {} grad_b_rms", st.layer));
            assert_log_close(st.log10_grad_b_mean, top.log10_grad_b_mean, 1e-13, &format!("layer {} grad_b_mean", st.layer));
            assert_log_close(st.log10_weight_norm, 0.0, 1e-13, "‖Q‖₂");
            if batch == 1 {
                assert_log_close(st.log10_bound, st.log10_grad_b_rms, 1e-13, "bound is tight");
                assert_log_close(st.log10_bound_tight, st.log10_grad_b_rms, 1e-13, "tight bound is tight");
            }
        }
    }
}

/// For every example and layer ‖δ^l_x‖ ≤ 10^bound_tight ≤ 10^bound, over all activations,
/// inits and both costs; and ‖δ_x a_xᵀ‖_F = ‖δ_x‖‖a_x‖ exactly (the reference's (*)).
#[test]
fn bound_and_tight_bound_hold_on_many_random_networks() {
    let inits = [
        Init::new(InitKind::Gaussian, Some(2.5), Some(0.2)).unwrap(),
        Init::new(InitKind::Lecun, None, None).unwrap(),
        Init::new(InitKind::He, None, Some(0.05)).unwrap(),
        Init::new(InitKind::XavierNormal, None, None).unwrap(),
        Init::new(InitKind::XavierUniform, None, None).unwrap(),
        Init::new(InitKind::Orthogonal, Some(1.3), Some(0.1)).unwrap(),
        Init::new(InitKind::Nielsen, None, None).unwrap(),
    ];
    let mut checked = 0;
    for (i, (act, cost)) in configs().into_iter().enumerate() {
        for (j, init) in inits.iter().enumerate() {
            let targets = if cost == Cost::CrossEntropy { TargetSpec::Uniform } else { TargetSpec::Gaussian };
            let p = problem(&[10, 16, 9, 14, 12, 7, 6], act, cost, *init, 4, (i * 31 + j) as u64, targets);
            let plain = backprop_plain(&p);
            let r = CpuBackend::default().probe(&p).unwrap();
            for (g, st) in plain.iter().zip(&r.layers) {
                assert!(st.log10_bound_tight <= st.log10_bound + 1e-12, "{act}/{init:?} layer {}: tight > bound", st.layer);
                for (d, a) in g.delta.rows().into_iter().zip(g.a_prev.rows()) {
                    let nd = norm2(d);
                    assert!(nd.log10() <= st.log10_bound_tight + 1e-12, "{act}/{cost}/{:?} layer {}: ‖δ‖ = {nd:e} above tight bound {}", init.kind, st.layer, st.log10_bound_tight);
                    let outer = d.insert_axis(ndarray::Axis(1)).dot(&a.insert_axis(ndarray::Axis(0)));
                    let fro = outer.mapv(|v| v * v).sum().sqrt();
                    let prod = nd * norm2(a);
                    assert!((fro - prod).abs() <= 1e-13 * prod.max(1e-300), "(*) fails: {fro} vs {prod}");
                    checked += 1;
                }
                assert!(st.log10_grad_b_mean <= st.log10_grad_b_rms + 1e-12);
            }
        }
    }
    assert!(checked > 1500, "only {checked} examples checked");
}

/// Depth 10,000: finite everywhere, equal to the plain path where that one is still
/// representable, and the same whether or not the backend checkpoints.
#[test]
fn log_domain_stays_finite_and_consistent_to_depth_10000() {
    let he = Init::new(InitKind::He, None, None).unwrap();
    let cases = [
        (Activation::Sigmoid, gaussian(1.0, 0.0)),
        (Activation::Tanh, gaussian(0.25, 0.0)),
        (Activation::Relu, he),
        (Activation::Relu, gaussian(4.0, 0.0)),
    ];
    for (act, init) in cases {
        let p = problem(&[16; 10_001], act, Cost::Quadratic, init, 2, 11, TargetSpec::Gaussian);
        let full = CpuBackend { cache_budget: u64::MAX, ..Default::default() }.probe(&p).unwrap();
        let ckpt = CpuBackend { cache_budget: 0, ..Default::default() }.probe(&p).unwrap();
        assert_eq!(full.layers, ckpt.layers, "{act}: checkpointed run differs from stored run");
        let plain = backprop_plain(&p);
        let mut compared = 0;
        for (g, st) in plain.iter().zip(&full.layers) {
            assert!(st.log10_grad_b_rms.is_finite() && st.log10_bound.is_finite(), "{act} layer {}: not finite", st.layer);
            assert_eq!(st.status, gradscope::stats::LayerStatus::Ok);
            let rms = (g.delta.rows().into_iter().map(|d| d.dot(&d)).sum::<f64>() / 2.0).sqrt();
            // The plain path squares δ, so it is only exact while ‖δ‖² stays a normal f64.
            if rms > 1e-140 && rms < 1e140 {
                assert_log_close(st.log10_grad_b_rms, rms.log10(), 1e-9, &format!("{act} layer {}", st.layer));
                compared += 1;
            }
        }
        let first = full.layers[0].log10_grad_b_rms;
        match act {
            // γ = 1/4 and ‖W‖ ≈ 2: thousands of decades down, as the bound says.
            Activation::Sigmoid => assert!(first < -1000.0, "sigmoid: log10 ‖δ¹‖ = {first}"),
            Activation::Tanh => assert!(first < -1000.0, "tanh σ_w = 0.5: log10 ‖δ¹‖ = {first}"),
            // He init is critical for relu in the wide limit; at width 16 only the
            // finite-width drift of E log‖δ‖ (Hanin 2018) remains, far below 0.1 decade/layer.
            _ if init.kind == InitKind::He => assert!(first > -0.1 * 10_000.0 && first < 300.0, "relu/He: log10 ‖δ¹‖ = {first}"),
            // σ_w² = 4: χ₁ = 2, so ‖δ¹‖ ≈ 2^{L/2} = 10^1505 less the finite-width drift; the
            // forward activations grow alike and are carried in the log domain too.
            _ => assert!(first > 1000.0, "relu σ_w² = 4: log10 ‖δ¹‖ = {first}"),
        }
        // relu's plain forward pass underflows to 0 on the way (the activations drift down
        // with the gradients), so only the checkpoint equality above applies to it.
        if act != Activation::Relu {
            assert!(compared >= 100, "{act}: only {compared} layers comparable with the plain path");
        }
    }
}

/// The prefix-shared multi-depth engine gives, for every depth, what a probe of that depth
/// alone gives (the depth-L network is the prefix of the deeper one with the same seed),
/// with and without checkpointing.
#[test]
fn depth_sweep_equals_independent_probes() {
    let cases = [
        (Activation::Tanh, Cost::Quadratic, gaussian(1.8, 0.05)),
        (Activation::Relu, Cost::Quadratic, gaussian(2.0, 0.0)),
        (Activation::Sigmoid, Cost::CrossEntropy, gaussian(4.0, 0.5)),
        (Activation::Gelu, Cost::Quadratic, Init::new(InitKind::Orthogonal, Some(1.5), Some(0.1)).unwrap()),
    ];
    let depths = [1, 2, 3, 7, 20, 33, 64];
    for (act, cost, init) in cases {
        let targets = if cost == Cost::CrossEntropy { TargetSpec::Uniform } else { TargetSpec::Gaussian };
        let deep = problem(&[12; 65], act, cost, init, 3, 21, targets.clone());
        for budget in [u64::MAX, 0] {
            let all = CpuBackend { cache_budget: budget, ..Default::default() }.probe_depths(&deep, &depths).unwrap();
            for (d, r) in depths.iter().zip(&all) {
                let alone = CpuBackend::default().probe(&problem(&vec![12; d + 1], act, cost, init, 3, 21, targets.clone())).unwrap();
                assert_eq!(r.layers.len(), *d);
                assert_log_close(r.log10_cost, alone.log10_cost, 1e-12, &format!("{act} depth {d} cost"));
                for (x, y) in r.layers.iter().zip(&alone.layers) {
                    assert_eq!(x.status, y.status);
                    for ((name, a), (_, b)) in x.log_fields().iter().zip(y.log_fields()) {
                        assert_log_close(*a, b, 1e-12, &format!("{act} depth {d} layer {} {name} (budget {budget})", x.layer));
                    }
                }
            }
        }
    }
}

/// relu without biases is positively homogeneous: inputs scaled by 2^-1000 (with zero
/// targets) scale every a^l and δ^l by 2^-1000, so every gradient field moves by exactly
/// −1000·log10 2 (and the w-gradients, which carry a^{l-1} too, by twice that), even
/// where the activations themselves shrink past f64's range (σ_w² = 1.5 loses 10^-0.06
/// per layer: depth 6,000 ends near 10^-375 before the rescaling). Width 32 keeps the
/// chance that every unit of an example dies at some layer (2^-32 per layer; at width 16
/// it happens within 6,000 layers for ~8% of seeds, a true zero) out of the test.
#[test]
fn homogeneous_activations_scale_exactly_in_the_log_domain() {
    for depth in [40, 6000] {
        let p = problem(&vec![32; depth + 1], Activation::Relu, Cost::Quadratic, gaussian(1.5, 0.0), 3, 4, TargetSpec::Zeros);
        let mut q = p.clone();
        q.inputs.mapv_inplace(|v| v * 2f64.powi(-1000));
        let (r, s) = (CpuBackend::default().probe(&p).unwrap(), CpuBackend::default().probe(&q).unwrap());
        let shift = -1000.0 * std::f64::consts::LOG10_2;
        for (a, b) in r.layers.iter().zip(&s.layers) {
            assert_eq!(a.status, gradscope::stats::LayerStatus::Ok, "depth {depth} layer {}", a.layer);
            assert_eq!(b.status, gradscope::stats::LayerStatus::Ok);
            let what = |f: &str| format!("depth {depth} layer {} {f}", a.layer);
            assert_log_close(b.log10_grad_b_rms, a.log10_grad_b_rms + shift, 1e-9, &what("grad_b_rms"));
            assert_log_close(b.log10_grad_b_mean, a.log10_grad_b_mean + shift, 1e-9, &what("grad_b_mean"));
            assert_log_close(b.log10_grad_w_rms, a.log10_grad_w_rms + 2.0 * shift, 1e-9, &what("grad_w_rms"));
            assert_log_close(b.log10_bound, a.log10_bound + shift, 1e-9, &what("bound"));
        }
    }
}

/// tanh below criticality without biases: the activations themselves vanish like
/// (σ_w²)^{l/2} and leave f64's range near layer 2,000 (σ_w² = 0.5). Far below 1 tanh is
/// its tangent, so the backend keeps carrying them in the log domain: every layer stays
/// finite, and the per-layer ratio ‖δ^l‖/‖δ^{l+1}‖ settles at √(σ_w²) = √χ₁ (0.02 decades
/// covers the finite-width drift of E log‖Wᵀδ‖, ≈ −0.43/(2n) ≈ −0.007 decades at n = 32).
#[test]
fn vanishing_tanh_activations_are_carried_past_f64_range() {
    let p = problem(&vec![32; 5001], Activation::Tanh, Cost::Quadratic, gaussian(0.5, 0.0), 2, 8, TargetSpec::Gaussian);
    let r = CpuBackend::default().probe(&p).unwrap();
    for st in &r.layers {
        assert_eq!(st.status, gradscope::stats::LayerStatus::Ok, "layer {}", st.layer);
        assert!(st.log10_grad_b_rms.is_finite() && st.log10_grad_w_rms.is_finite());
    }
    let ratio = gradscope::theory::fitted_log10_ratio(&r, 1, 4999).unwrap();
    assert!((ratio - 0.5f64.sqrt().log10()).abs() < 0.02, "fitted log10 ratio {ratio}");
    assert!(r.layers[0].log10_grad_b_rms < -700.0);
}

/// The norms found beside the products (any number of norm threads) or inline before each
/// layer's product give the same reports bit for bit: generated and stored weights, with and
/// without checkpointing, several depths at once, and a run that overflows.
#[test]
fn norm_threads_change_no_bit() {
    let tanh = problem(&[24; 19], Activation::Tanh, Cost::Quadratic, gaussian(1.7, 0.1), 4, 31, TargetSpec::Gaussian);
    let (w, b) = stored(&tanh);
    let stored_relu = with_params(&problem(&[24; 19], Activation::Relu, Cost::Quadratic, gaussian(2.0, 0.0), 4, 32, TargetSpec::Gaussian), w, b);
    // selu at σ_w² = 1000 grows ~20× a layer and passes 1.8e308 within a few hundred (tests/cli.rs).
    let selu = problem(&[16; 401], Activation::Selu, Cost::Quadratic, gaussian(1000.0, 0.0), 3, 33, TargetSpec::Gaussian);
    let overflows = CpuBackend::default().probe(&selu).unwrap().overflow_layer;
    assert!(overflows.is_some_and(|l| l > 5), "selu must overflow above layer 5 for this case to test that path: {overflows:?}");
    for (what, p, depths) in [("tanh", &tanh, vec![3, 11, 18]), ("stored relu", &stored_relu, vec![18]), ("selu", &selu, vec![5, 400])] {
        let run = |workers: Option<usize>, budget: u64| {
            // A fresh backend each time, so no run reads norms another one cached.
            let r = CpuBackend { cache_budget: budget, norm_workers: workers, ..Default::default() }.probe_depths(p, &depths).unwrap();
            format!("{:?}", r.iter().map(|r| (&r.layers, r.overflow_layer, r.log10_cost.to_bits())).collect::<Vec<_>>())
        };
        let inline = run(Some(0), u64::MAX);
        for (workers, budget) in [(Some(1), u64::MAX), (Some(3), 0), (None, 0), (Some(0), 0)] {
            assert_eq!(run(workers, budget), inline, "{what}: {workers:?} norm threads, budget {budget}");
        }
    }
}

/// Every memory plan gives the same bits (recomputing a layer repeats its arithmetic): no
/// budget (⌈√L⌉ checkpoints), every budget at which the CPU plan changes (each top segment,
/// interval and choice of kept weights at the first byte it fits), all activations kept with
/// and without their weights, and no limit; several depths at once, cross-entropy (which
/// keeps z at each output), stored weights, and a run that overflows.
#[test]
fn memory_plans_change_no_bit() {
    let tanh = problem(&[12; 65], Activation::Tanh, Cost::Quadratic, gaussian(1.8, 0.05), 3, 21, TargetSpec::Gaussian);
    let ce = problem(&[12; 41], Activation::Sigmoid, Cost::CrossEntropy, gaussian(4.0, 0.5), 3, 22, TargetSpec::Uniform);
    let (w, b) = stored(&tanh);
    let stored_tanh = with_params(&tanh, w, b);
    let selu = problem(&[16; 401], Activation::Selu, Cost::Quadratic, gaussian(1000.0, 0.0), 3, 33, TargetSpec::Gaussian);
    for (what, p, depths) in [("tanh", &tanh, vec![3, 20, 33, 64]), ("cross-entropy", &ce, vec![7, 40]), ("stored tanh", &stored_tanh, vec![64]), ("selu", &selu, vec![5, 400])] {
        let (l, n, bsz) = (p.net.depth() as u64, p.net.widths[1] as u64, p.batch() as u64);
        let generated = matches!(p.net.params, gradscope::model::Params::Generated { .. });
        // Every size the plan weighs (a checkpoint B·n·8, a layer's activations twice that, a
        // weight matrix n²·8) is a multiple of this step, so stepping by it meets every change.
        let step = gcd(bsz * n * 8, n * n * 8);
        let all = l * (2 * bsz * n * 8 + n * n * 8);
        let mut budgets = vec![0, u64::MAX];
        let mut last = CpuPlan::new(&p.net.widths, p.batch(), generated, 0);
        for budget in (step..=all).step_by(step as usize) {
            let pl = CpuPlan::new(&p.net.widths, p.batch(), generated, budget);
            if pl != last {
                budgets.push(budget);
                last = pl;
            }
        }
        assert!(budgets.len() > 8, "{what}: only {} plans", budgets.len());
        // The overflowing run changes plan at about every layer; a sample of 20 keeps it quick.
        let every = if what == "selu" { budgets.len() / 20 } else { 1 };
        let run = |budget: u64| {
            let r = CpuBackend { cache_budget: budget, ..Default::default() }.probe_depths(p, &depths).unwrap();
            format!("{:?}", r.iter().map(|r| (&r.layers, r.overflow_layer, r.log10_cost.to_bits())).collect::<Vec<_>>())
        };
        let unlimited = run(u64::MAX);
        for &budget in budgets[2..].iter().step_by(every) {
            let pl = CpuPlan::new(&p.net.widths, p.batch(), generated, budget);
            assert_eq!(run(budget), unlimited, "{what}: budget {budget}, {pl:?}");
        }
        assert_eq!(run(0), unlimited, "{what}: no budget");
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A budget larger than the memory available is cut to fit it: keeping every weight matrix
/// of 2,000 layers of 4096 × 4096 would take 256 GB, but the plan the backend runs (and
/// checks before it runs) holds no more than the OS reports available.
#[test]
fn memory_plan_fits_the_memory_available() {
    let Some(avail) = gradscope::backend::cpu::available_memory() else { return };
    let widths = vec![4096; 2001];
    let unlimited = CpuBackend { cache_budget: u64::MAX, ..Default::default() };
    assert!(CpuPlan::new(&widths, 1, true, u64::MAX).bytes(&widths, 1, true) > avail, "the test needs more than {avail} bytes");
    let needed = unlimited.memory_needed(&widths, 1, true);
    assert!(needed <= avail, "{needed} bytes planned, {avail} available");
}
