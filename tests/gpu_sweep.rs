//! Depth sweeps on the GPU: the stacked multi-depth probe against single-depth GPU probes
//! (the prefix property) and against the CPU's multi-depth probe, and `gradscope sweep
//! --backend gpu` against `--backend cpu`. On whatever adapter exists (Mesa's lavapipe in
//! CI): with GRADSCOPE_REQUIRE_GPU=1 a missing adapter fails, otherwise each test says
//! loudly that it was skipped.
#![cfg(feature = "gpu")]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use gradscope::backend::gpu::GpuBackend;
use gradscope::backend::CpuBackend;
use gradscope::check::{compare, Tolerance};
use gradscope::model::{Activation, Cost, Init, InitKind, Network, Problem, TargetSpec};
use gradscope::stats::LayerStatus;

use common::*;

/// The problem cut to its first `d` layers (the depth-d network of the same seed).
fn prefix(p: &Problem, d: usize) -> Problem {
    let mut q = p.clone();
    q.net.widths.truncate(d + 1);
    q
}

/// The prefix property on the GPU: the stacked probe's report of depth d equals a GPU probe
/// of the depth-d network. The kernels are the same and each stacked row is computed with
/// the same arithmetic in the same order as the single probe's, so the expected difference
/// is zero (asserted: |Δlog10| = 0, bit for bit). Then the stacked GPU probe against the
/// CPU's stacked probe within `Tolerance::f32_vs_f64()`. Returns the worst GPU–CPU
/// |Δlog10|.
fn sweep_agrees(g: &GpuBackend, p: &Problem, depths: &[usize], what: &str) -> f64 {
    let t = Instant::now();
    let multi = g.probe_depths(p, depths).unwrap_or_else(|e| panic!("{what}: GPU probe_depths failed: {e}"));
    let t_multi = t.elapsed().as_secs_f64();
    let mut ds = depths.to_vec();
    ds.sort_unstable();
    ds.dedup();
    assert_eq!(multi.len(), ds.len(), "{what}: one report per distinct depth");
    let t = Instant::now();
    for (r, &d) in multi.iter().zip(&ds) {
        assert_eq!(r.layers.len(), d, "{what}: report of depth {d}");
        let single = g.probe(&prefix(p, d)).unwrap();
        let c = compare(r, &single, &Tolerance { base: 0.0, per_layer: 0.0 });
        assert!(c.passed() && c.cost_abs == 0.0, "{what}: depth {d}: stacked differs from the single GPU probe: {}", c.summary(8));
    }
    let t_single = t.elapsed().as_secs_f64();
    let cpu = CpuBackend::default().probe_depths(p, depths).unwrap();
    let mut worst = 0.0_f64;
    for (gr, cr) in multi.iter().zip(&cpu) {
        let c = compare(gr, cr, &Tolerance::f32_vs_f64());
        assert!(c.passed(), "{what}: depth {}: GPU vs CPU: {}", cr.layers.len(), c.summary(8));
        worst = worst.max(c.max_abs);
    }
    eprintln!("{what}: {} depths, stacked {t_multi:.2}s vs {t_single:.2}s one by one; bit-identical to single probes; worst |Δlog10| vs CPU {worst:.2e}", ds.len());
    worst
}

#[test]
fn gpu_depth_sweep_equals_single_probes_and_the_cpu() {
    let Some(mut g) = gpu("gpu_depth_sweep_equals_single_probes_and_the_cpu") else { return };
    let mut worst = 0.0_f64;
    // Bounded σ with biases; checkpointed (K = 7 for 40 layers), depths inside and at the
    // ends of segments, unsorted with a duplicate.
    g.keep_budget = 0;
    let p = problem(&[vec![9], vec![24; 40]].concat(), Activation::Tanh, Cost::Quadratic, gaussian(1.5, 0.05), 5, 3, TargetSpec::Gaussian);
    worst = worst.max(sweep_agrees(&g, &p, &[40, 1, 2, 3, 7, 8, 13, 14, 21, 28, 35, 3], "tanh checkpointed"));
    g.keep_budget = 256 << 20;
    // A homogeneous σ (rescaled activations), widths that change below the smallest depth.
    let mut widths = vec![7, 30, 11];
    widths.extend([20; 25]);
    let p = problem(&widths, Activation::Relu, Cost::Quadratic, Init::new(InitKind::He, None, Some(0.01)).unwrap(), 6, 4, TargetSpec::Gaussian);
    worst = worst.max(sweep_agrees(&g, &p, &[3, 5, 9, 17, 27], "relu He"));
    // Cross-entropy (no σ′ at each depth's top layer; cost from z of that layer), odd sizes.
    let p = problem(&[vec![13], vec![17; 15]].concat(), Activation::Sigmoid, Cost::CrossEntropy, gaussian(2.0, 0.1), 3, 5, TargetSpec::Uniform);
    worst = worst.max(sweep_agrees(&g, &p, &(1..=15).collect::<Vec<_>>(), "sigmoid cross-entropy"));
    // Host-drawn weights through the upload ring (orthogonal).
    let p = problem(&[vec![12], vec![12; 20]].concat(), Activation::Selu, Cost::Quadratic, Init::new(InitKind::Orthogonal, Some(1.0), Some(0.05)).unwrap(), 4, 6, TargetSpec::Gaussian);
    worst = worst.max(sweep_agrees(&g, &p, &[1, 10, 19, 20], "selu orthogonal"));
    eprintln!("worst GPU-vs-CPU |Δlog10| over the sweeps: {worst:.2e} decades (tolerance {:?})", Tolerance::f32_vs_f64());
}

/// Forward overflow in f32: depths at or above the overflow layer are reported as overflowed,
/// depths below run on their own and equal single probes.
#[test]
fn gpu_depth_sweep_falls_back_below_a_forward_overflow() {
    let Some(g) = gpu("gpu_depth_sweep_falls_back_below_a_forward_overflow") else { return };
    // softplus is unbounded and not homogeneous: ‖a‖ grows ~10^1.5 a layer and passes f32's
    // 3.4e38 near layer 25 (f64 would last to ~200).
    let p = problem(&[vec![8], vec![8; 40]].concat(), Activation::Softplus, Cost::Quadratic, gaussian(1e3, 0.0), 3, 7, TargetSpec::Zeros);
    let depths = [3, 10, 20, 30, 40];
    let multi = g.probe_depths(&p, &depths).unwrap();
    let ol = multi.last().unwrap().overflow_layer.expect("the deepest network overflows in f32");
    eprintln!("overflow at layer {ol}");
    for (r, &d) in multi.iter().zip(&depths) {
        let single = g.probe(&prefix(&p, d)).unwrap();
        let c = compare(r, &single, &Tolerance { base: 0.0, per_layer: 0.0 });
        assert!(c.passed(), "depth {d}: {}", c.summary(8));
        if d >= ol {
            assert_eq!(r.overflow_layer, Some(ol));
            assert!(r.layers.iter().all(|s| s.status == LayerStatus::Overflow));
        } else {
            assert_eq!(r.overflow_layer, None);
            assert!(r.layers[0].log10_grad_b_rms.is_finite());
        }
    }
}

/// The same refusals as the CPU backend, with the same messages.
#[test]
fn gpu_depth_sweep_refuses_what_the_cpu_refuses() {
    let Some(g) = gpu("gpu_depth_sweep_refuses_what_the_cpu_refuses") else { return };
    let cpu = CpuBackend::default();
    let p = problem(&[6, 10, 10, 8, 10], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.0), 2, 1, TargetSpec::Zeros);
    let lin = {
        let net = Network::new(p.net.widths.clone(), Activation::Tanh, true, Cost::Quadratic, p.net.params.clone()).unwrap();
        Problem::new(net, p.inputs.clone(), p.targets.clone()).unwrap()
    };
    for (q, depths) in [(&p, vec![0, 2]), (&p, vec![5]), (&p, vec![]), (&p, vec![3, 4]), (&lin, vec![2, 4])] {
        let ge = g.probe_depths(q, &depths).err().unwrap_or_else(|| panic!("{depths:?} must fail on the GPU")).to_string();
        let ce = cpu.probe_depths(q, &depths).err().unwrap_or_else(|| panic!("{depths:?} must fail on the CPU")).to_string();
        assert_eq!(ge, ce, "{depths:?}");
    }
    // Depth 2 and 4 have the same output width (10): fine.
    assert_eq!(g.probe_depths(&p, &[2, 4]).unwrap().len(), 2);
}

fn read_summary(dir: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let mut lines = text.lines();
    let head: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines.map(|l| head.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

fn sweep(dir: &Path, backend: &str) -> f64 {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["sweep", "-o", dir.to_str().unwrap(), "--widths", "24", "--activations", "tanh,relu", "--sigma-w2", "1.5", "--sigma-b2", "0.02"])
        .args(["--depths", "1..40:3", "--batch", "4", "--seeds", "9", "--backend", backend, "-q"])
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
        .output()
        .unwrap();
    assert!(o.status.success(), "sweep --backend {backend}: {}", String::from_utf8_lossy(&o.stderr));
    t.elapsed().as_secs_f64()
}

/// `gradscope sweep --backend gpu` writes the summary a `--backend cpu` sweep writes, within
/// the f32-vs-f64 tolerance (|Δlog10| ≤ base + per_layer · depth for every log10 column; the
/// per-layer slopes within the same bound), and meta.json names the GPU.
#[test]
fn gpu_sweep_cli_agrees_with_the_cpu_sweep() {
    let Some(g) = gpu("gpu_sweep_cli_agrees_with_the_cpu_sweep") else { return };
    drop(g);
    let tmp = tempfile::tempdir().unwrap();
    let (dg, dc) = (tmp.path().join("gpu"), tmp.path().join("cpu"));
    let tg = sweep(&dg, "gpu");
    let tc = sweep(&dc, "cpu");
    let (rg, rc) = (read_summary(&dg), read_summary(&dc));
    assert_eq!(rg.len(), 2 * 14, "2 configurations × 14 depths");
    assert_eq!(rg.len(), rc.len());
    let tol = Tolerance::f32_vs_f64();
    let mut worst = 0.0_f64;
    for (a, b) in rg.iter().zip(&rc) {
        for key in ["activation", "init", "sigma_w2", "sigma_b2", "width", "batch", "seed", "depth", "status_first"] {
            assert_eq!(a[key], b[key], "{key}");
        }
        let depth: usize = a["depth"].parse().unwrap();
        for (k, va) in a.iter().filter(|(k, _)| k.starts_with("log10_") || k.starts_with("slope_")) {
            let (x, y): (f64, f64) = (va.parse().unwrap(), b[k].parse().unwrap());
            let d = if x == y || (x.is_nan() && y.is_nan()) { 0.0 } else { (x - y).abs() };
            let allowed = tol.base + tol.per_layer * depth as f64;
            assert!(d <= allowed, "{k} at depth {depth} ({} ): gpu {x} vs cpu {y}, |Δ| = {d:.3e} > {allowed:.3e}", a["activation"]);
            worst = worst.max(d);
        }
    }
    let meta = |d: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(d.join("meta.json")).unwrap()).unwrap() };
    let (mg, mc) = (meta(&dg), meta(&dc));
    assert!(mg["device"].as_str().unwrap().contains("f32"), "{}", mg["device"]);
    assert!(mc["device"].as_str().unwrap().contains("f64"), "{}", mc["device"]);
    eprintln!("sweep: gpu {tg:.1}s, cpu {tc:.1}s; worst |Δ| {worst:.2e} decades; gpu device {}", mg["device"]);
}

/// Several networks of one width in one dispatch (workgroup_id.z = network): activations,
/// inits, σ_w², σ_b², seeds, inputs and targets all differ; each network's reports equal its
/// own probe bit for bit, at every stacked depth; a network whose forward pass overflows
/// f32 among them is reported as on its own. Then cross-entropy networks with widths that
/// change between layers, biases in some only, checkpointed.
#[test]
fn networks_batched_in_one_dispatch_equal_their_own_probes() {
    let Some(g) = gpu("networks_batched_in_one_dispatch_equal_their_own_probes") else { return };
    let widths = [24, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40];
    let nets = [
        (Activation::Tanh, gaussian(1.5, 0.05), 1u64, TargetSpec::Zeros),
        (Activation::Relu, Init::new(InitKind::He, None, None).unwrap(), 2, TargetSpec::Gaussian),
        (Activation::Sigmoid, gaussian(4.0, 0.0), 3, TargetSpec::Uniform),
        (Activation::LeakyRelu(0.1), Init::new(InitKind::XavierUniform, None, Some(0.1)).unwrap(), 4, TargetSpec::Zeros),
        (Activation::Gelu, Init::new(InitKind::Lecun, None, None).unwrap(), 1, TargetSpec::Zeros),
        // Softplus is not homogeneous: at σ_w² = 1e8 its activations pass f32's 1e38 (overflow).
        (Activation::Softplus, gaussian(1e8, 0.0), 5, TargetSpec::Zeros),
        (Activation::Tanh, gaussian(0.5, 0.0), 1, TargetSpec::Zeros),
    ];
    let ps: Vec<Problem> = nets.iter().map(|(a, i, s, t)| problem(&widths, *a, Cost::Quadratic, *i, 7, *s, t.clone())).collect();
    let refs: Vec<&Problem> = ps.iter().collect();
    assert_eq!(gradscope::backend::gpu::batch_mismatch(&refs), None, "these networks must run in one dispatch");
    let depths = [3, 7, 11];
    let many = g.probe_depths_many(&refs, &depths).unwrap();
    assert_eq!(many.len(), ps.len());
    let mut overflowed = 0;
    for (k, (p, got)) in ps.iter().zip(&many).enumerate() {
        let alone = g.probe_depths(p, &depths).unwrap();
        assert_eq!(got.len(), alone.len(), "network {k}");
        for (a, b) in got.iter().zip(&alone) {
            overflowed += usize::from(a.overflow_layer.is_some());
            assert_eq!(a.overflow_layer, b.overflow_layer, "network {k}");
            assert_eq!(a.log10_cost.to_bits(), b.log10_cost.to_bits(), "network {k} depth {}: cost", a.layers.len());
            for (la, lb) in a.layers.iter().zip(&b.layers) {
                let fa = [la.log10_grad_b_rms, la.log10_grad_b_mean, la.log10_grad_w_rms, la.log10_grad_w_mean, la.log10_bound, la.log10_bound_tight, la.log10_max_dsigma, la.log10_weight_norm];
                let fb = [lb.log10_grad_b_rms, lb.log10_grad_b_mean, lb.log10_grad_w_rms, lb.log10_grad_w_mean, lb.log10_bound, lb.log10_bound_tight, lb.log10_max_dsigma, lb.log10_weight_norm];
                for (x, y) in fa.iter().zip(&fb) {
                    assert!(x.to_bits() == y.to_bits(), "network {k} depth {} layer {}: batched {x} vs alone {y}", a.layers.len(), la.layer);
                }
                assert_eq!(la.status, lb.status);
            }
        }
    }
    assert!(overflowed > 0, "the softplus network must overflow f32 (else the test lost its overflow case)");
    // And against the f64 reference, for the networks that do not overflow.
    for (k, (p, got)) in ps.iter().zip(&many).enumerate() {
        let top = got.last().unwrap();
        if top.overflow_layer.is_some() {
            continue;
        }
        let cpu = gradscope::backend::CpuBackend::default().probe(p).unwrap();
        let c = gradscope::check::compare(top, &cpu, &gradscope::check::Tolerance::f32_vs_f64());
        assert!(c.passed(), "network {k}: {}", c.summary(8));
    }
    // Cross-entropy (sigmoid outputs, z of each depth's top layer captured per network),
    // widths that change between layers, biases in some networks only, and checkpointing.
    let mut g2 = gpu("networks_batched_in_one_dispatch_equal_their_own_probes (cross-entropy)").unwrap();
    g2.keep_budget = 0;
    let widths = [13, 30, 17, 30, 30, 30, 30];
    let ce: Vec<Problem> = [(1.0, 0.0, 8u64), (3.0, 0.1, 9), (0.6, 0.0, 10)]
        .iter()
        .map(|&(sw2, sb2, seed)| problem(&widths, Activation::Sigmoid, Cost::CrossEntropy, gaussian(sw2, sb2), 5, seed, TargetSpec::Uniform))
        .collect();
    let refs: Vec<&Problem> = ce.iter().collect();
    assert_eq!(gradscope::backend::gpu::batch_mismatch(&refs), None);
    let many_ce = g2.probe_depths_many(&refs, &[3, 5, 6]).unwrap();
    for (k, (p, got)) in ce.iter().zip(&many_ce).enumerate() {
        let alone = g2.probe_depths(p, &[3, 5, 6]).unwrap();
        for (a, b) in got.iter().zip(&alone) {
            assert_eq!(a.log10_cost.to_bits(), b.log10_cost.to_bits(), "cross-entropy network {k}: cost");
            for (la, lb) in a.layers.iter().zip(&b.layers) {
                for (x, y) in [(la.log10_grad_b_rms, lb.log10_grad_b_rms), (la.log10_grad_w_mean, lb.log10_grad_w_mean), (la.log10_bound_tight, lb.log10_bound_tight)] {
                    assert!(x.to_bits() == y.to_bits(), "cross-entropy network {k} layer {}: batched {x} vs alone {y}", la.layer);
                }
            }
        }
        let cpu = gradscope::backend::CpuBackend::default().probe(p).unwrap();
        let c = gradscope::check::compare(got.last().unwrap(), &cpu, &gradscope::check::Tolerance::f32_vs_f64());
        assert!(c.passed(), "cross-entropy network {k}: {}", c.summary(8));
    }
}

/// `gradscope sweep --backend gpu` batches groups of one width into shared dispatches; the
/// batches of a 3-shard run differ from a single run's, yet the merged shards equal the
/// single run byte for byte (summary.csv, summary.npy, every profile), as does the sweep
/// run one configuration at a time (GRADSCOPE_NETS_PER_DISPATCH=1); one group run on its own
/// (a one-configuration sweep) equals its row of the batched sweep; a bad
/// GRADSCOPE_NETS_PER_DISPATCH is a one-line error, exit 2, before anything is written.
#[test]
fn gpu_sweep_batches_do_not_change_results() {
    if gpu("gpu_sweep_batches_do_not_change_results").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run_env = |dir: &Path, acts: &str, sw2: &str, extra: &[&str], per_dispatch: &str| {
        Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .args(["sweep", "-o", dir.to_str().unwrap(), "--widths", "20,12", "--activations", acts, "--sigma-w2", sw2, "--sigma-b2", "0,0.05"])
            .args(["--depths", "2..18:4", "--batch", "3", "--seeds", "1,2", "--backend", "gpu", "-q"])
            .args(extra)
            .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
            .env("GRADSCOPE_NETS_PER_DISPATCH", per_dispatch)
            .output()
            .unwrap()
    };
    let run = |dir: &Path, acts: &str, sw2: &str, extra: &[&str]| {
        let o = run_env(dir, acts, sw2, extra, "");
        assert!(o.status.success(), "sweep {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let whole = tmp.path().join("whole");
    run(&whole, "tanh,relu,sigmoid", "0.8,2", &[]);
    let mut args = vec!["merge".to_string(), "-o".into(), tmp.path().join("merged").to_str().unwrap().into()];
    for k in 1..=3 {
        let d = tmp.path().join(format!("shard{k}"));
        run(&d, "tanh,relu,sigmoid", "0.8,2", &["--shard", &format!("{k}/3")]);
        args.push(d.to_str().unwrap().into());
    }
    let o = Command::new(env!("CARGO_BIN_EXE_gradscope")).args(&args).output().unwrap();
    assert!(o.status.success(), "merge: {}", String::from_utf8_lossy(&o.stderr));
    let one_by_one = tmp.path().join("one-by-one");
    let o = run_env(&one_by_one, "tanh,relu,sigmoid", "0.8,2", &[], "1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let profiles: Vec<_> = std::fs::read_dir(whole.join("profiles")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!profiles.is_empty());
    for other in [tmp.path().join("merged"), one_by_one] {
        for f in ["summary.csv", "summary.npy"] {
            assert_eq!(std::fs::read(other.join(f)).unwrap(), std::fs::read(whole.join(f)).unwrap(), "{f} differs in {other:?}");
        }
        for f in &profiles {
            assert_eq!(std::fs::read(other.join("profiles").join(f)).unwrap(), std::fs::read(whole.join("profiles").join(f)).unwrap(), "{f:?} differs in {other:?}");
        }
    }
    let bad = tmp.path().join("bad");
    let o = run_env(&bad, "tanh", "1", &[], "0");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.trim().lines().count() == 1 && err.contains("GRADSCOPE_NETS_PER_DISPATCH"), "{err}");
    assert!(!bad.join("meta.json").exists(), "nothing written on bad input");
    // One configuration alone: relu, σ_w² = 2, σ_b² = 0.05 at width 20, seed 2.
    let alone = tmp.path().join("alone");
    let o = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["sweep", "-o", alone.to_str().unwrap(), "--widths", "20", "--activations", "relu", "--sigma-w2", "2", "--sigma-b2", "0.05"])
        .args(["--depths", "2..18:4", "--batch", "3", "--seeds", "2", "--backend", "gpu", "-q"])
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = |r: &HashMap<String, String>| (r["activation"].clone(), r["sigma_w2"].clone(), r["sigma_b2"].clone(), r["width"].clone(), r["seed"].clone(), r["depth"].clone());
    let batched: HashMap<_, _> = read_summary(&whole).into_iter().map(|r| (key(&r), r)).collect();
    let rows = read_summary(&alone);
    assert_eq!(rows.len(), 5);
    for r in rows {
        let b = &batched[&key(&r)];
        for col in ["log10_grad_b_rms_first", "log10_grad_w_rms_first", "log10_bound_first"] {
            assert_eq!(r[col], b[col], "{col} at {:?}: alone vs batched", key(&r));
        }
    }
}
