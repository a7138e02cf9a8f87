//! The GPU engine against the f64 CPU reference, on whatever adapter exists (Mesa's
//! lavapipe in CI). With GRADSCOPE_REQUIRE_GPU=1 a missing adapter fails the test;
//! otherwise each test says loudly that it was skipped.
#![cfg(feature = "gpu")]

mod common;

use std::time::Instant;

use gradscope::backend::gpu::{GpuBackend, GpuOptions, MatmulPath, list_adapters};
use gradscope::backend::CpuBackend;
use gradscope::check::{compare, Tolerance};
use gradscope::model::{Activation, Cost, Init, InitKind, Network, Problem, TargetSpec};
use gradscope::model::activation::all_activations;
use gradscope::rng::{philox4x32_10, Stream};
use gradscope::stats::LayerStatus;

use common::*;

/// Probes on both backends and asserts agreement, printing the first mismatches.
fn agree(g: &GpuBackend, p: &Problem, what: &str) -> (gradscope::check::Comparison, gradscope::stats::Report) {
    let t = Instant::now();
    let gr = g.probe(p).unwrap_or_else(|e| panic!("{what}: GPU probe failed: {e}"));
    let tg = t.elapsed();
    let cr = CpuBackend::default().probe(p).unwrap();
    let c = compare(&gr, &cr, &Tolerance::f32_vs_f64());
    eprintln!("{what}: gpu {:.2}s; {}", tg.as_secs_f64(), c.summary(8));
    assert!(c.passed(), "{what}: {}", c.summary(12));
    (c, gr)
}

#[test]
fn devices_are_listed() {
    let rows = list_adapters();
    for r in &rows {
        eprintln!("{} | {} | {} | {} | binding {} MiB", r.name, r.backend, r.device_type, r.driver, r.max_storage_buffer_binding_size >> 20);
    }
    if gpu("devices_are_listed").is_some() {
        assert!(!rows.is_empty());
    }
}

#[test]
fn philox_words_are_bit_identical_to_the_cpu() {
    let Some(g) = gpu("philox_words_are_bit_identical_to_the_cpu") else { return };
    let mut counters = vec![[0u32; 4], [u32::MAX; 4], [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344]];
    let s = Stream::new(0x9e37_79b9_7f4a_7c15);
    for k in 0..20_000u32 {
        // Structured counters (the layouts the engine uses) and pseudo-random ones.
        counters.push([k % 97, k / 97, k % 5, k % 4]);
        let w = s.block(gradscope::rng::Purpose::Weight, k, k ^ 0x5555, k.wrapping_mul(2_654_435_761));
        counters.push(w);
    }
    for seed in [0u64, u64::MAX, 0xa409_3822_299f_31d0, 42] {
        let got = g.philox_words(&counters, seed).unwrap();
        let key = [seed as u32, (seed >> 32) as u32];
        for (c, w) in counters.iter().zip(&got) {
            assert_eq!(*w, philox4x32_10(*c, key), "counter {c:08x?} seed {seed:#x}");
        }
    }
    eprintln!("{} counters x 4 seeds bit-identical", counters.len());
}

/// Small random configurations: every activation, both costs, every init, odd widths and
/// batches (not multiples of the 4 x 4 blocks or 64-wide workgroups).
#[test]
fn grad_norms_match_cpu_reference_over_random_configurations() {
    let Some(g) = gpu("grad_norms_match_cpu_reference_over_random_configurations") else { return };
    let inits = [
        Init::new(InitKind::Gaussian, Some(1.3), Some(0.05)).unwrap(),
        Init::new(InitKind::Lecun, None, None).unwrap(),
        Init::new(InitKind::He, None, Some(0.1)).unwrap(),
        Init::new(InitKind::XavierNormal, None, None).unwrap(),
        Init::new(InitKind::XavierUniform, None, Some(0.02)).unwrap(),
        Init::new(InitKind::Orthogonal, Some(1.0), Some(0.05)).unwrap(),
        Init::new(InitKind::Nielsen, None, None).unwrap(),
    ];
    let mut acts = all_activations();
    acts.push(Activation::LeakyRelu(0.2));
    let mut worst = 0.0_f64;
    let mut n = 0;
    for (k, act) in acts.iter().enumerate() {
        for rep in 0..2 {
            let seed = 1000 + 17 * k as u64 + rep;
            let r = Stream::new(seed);
            let pick = |c: u32, lo: usize, hi: usize| lo + (r.uniform(gradscope::rng::Purpose::Target, 9, c, 0) * (hi - lo + 1) as f64) as usize;
            let depth = pick(0, 2, 9);
            let widths: Vec<usize> = (0..=depth).map(|i| pick(1 + i as u32, 3, 70)).collect();
            let batch = pick(40, 1, 11);
            let init = inits[(k + 3 * rep as usize) % inits.len()];
            let p = problem(&widths, *act, Cost::Quadratic, init, batch, seed, TargetSpec::Gaussian);
            let (c, _) = agree(&g, &p, &format!("{act} {} widths {widths:?} batch {batch}", init.kind));
            worst = worst.max(c.max_abs);
            n += 1;
        }
    }
    // Cross-entropy needs a sigmoid output.
    for (i, init) in inits.iter().enumerate() {
        let widths = [13, 37, 21, 5 + i];
        let p = problem(&widths, Activation::Sigmoid, Cost::CrossEntropy, *init, 7, 77 + i as u64, TargetSpec::Uniform);
        let (c, _) = agree(&g, &p, &format!("sigmoid cross-entropy {} widths {widths:?}", init.kind));
        worst = worst.max(c.max_abs);
        n += 1;
    }
    eprintln!("{n} configurations, worst |Δlog10| = {worst:.3e} decades");
}

/// Stored parameters (the `--weights FILE.npz` path) and a linear output layer.
#[test]
fn stored_weights_match_cpu_reference() {
    let Some(g) = gpu("stored_weights_match_cpu_reference") else { return };
    let p = problem(&[9, 31, 17, 6], Activation::Tanh, Cost::Quadratic, gaussian(1.7, 0.1), 5, 3, TargetSpec::Gaussian);
    let (mut w, b) = stored(&p);
    w[1].mapv_inplace(|v| 1.5 * v);
    let q = with_params(&p, w, b);
    agree(&g, &q, "stored tanh");
    // A linear output layer on a gelu network.
    let p = problem(&[10, 23, 23, 3], Activation::Gelu, Cost::Quadratic, gaussian(1.5, 0.1), 6, 8, TargetSpec::Gaussian);
    let net = Network::new(p.net.widths.clone(), Activation::Gelu, true, Cost::Quadratic, p.net.params.clone()).unwrap();
    let q = Problem::new(net, p.inputs.clone(), p.targets.clone()).unwrap();
    agree(&g, &q, "gelu with linear output");
}

/// A 2,000-layer network stays finite on the GPU and follows the CPU's log-norm profile
/// (‖δ¹‖ ≈ 10^-120 here: far below f32's 10^-38, so only the renormalisation keeps it),
/// with √L checkpoints (K = 45) and segment recomputation forced by a zero keep budget.
#[test]
fn two_thousand_layers_stay_finite_and_match_cpu() {
    let Some(mut g) = gpu("two_thousand_layers_stay_finite_and_match_cpu") else { return };
    g.keep_budget = 0;
    let widths = vec![24; 2001];
    let p = problem(&widths, Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.05), 4, 11, TargetSpec::Gaussian);
    let (_, gr) = agree(&g, &p, "tanh 2000 x 24, checkpointed");
    let first = &gr.layers[0];
    assert!(first.log10_grad_b_rms.is_finite() && first.log10_grad_b_rms < -38.0, "‖δ¹‖ = 10^{}", first.log10_grad_b_rms);
    assert!(gr.layers.iter().all(|s| s.status == LayerStatus::Ok && s.log10_grad_w_mean.is_finite()));
    // Homogeneous σ: the forward activations are renormalised too.
    let p = problem(&widths, Activation::Relu, Cost::Quadratic, Init::new(InitKind::He, None, None).unwrap(), 3, 12, TargetSpec::Gaussian);
    agree(&g, &p, "relu He 2000 x 24, checkpointed");
}

/// Checkpointing with a depth that is not a multiple of K, and stored weights through the
/// weight ring, agree with keeping everything.
#[test]
fn checkpointed_and_kept_runs_agree() {
    let Some(mut g) = gpu("checkpointed_and_kept_runs_agree") else { return };
    let p = problem(&[7, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 5], Activation::Selu, Cost::Quadratic, gaussian(1.1, 0.1), 6, 21, TargetSpec::Gaussian);
    let (w, b) = stored(&p);
    let q = with_params(&p, w, b);
    let kept = g.probe(&q).unwrap();
    g.keep_budget = 0;
    let (_, ckpt) = agree(&g, &q, "selu stored, checkpointed (L = 11, K = 4)");
    let c = compare(&ckpt, &kept, &Tolerance { base: 0.0, per_layer: 0.0 });
    assert!(c.passed(), "recomputation is not bit-identical: {}", c.summary(5));
}

/// Bad input fails in the first second with a one-line reason: an adapter name that matches
/// nothing, and a job too big for the device (said before any work, with what would fit).
#[test]
fn bad_adapter_names_and_oversized_jobs_are_clear_errors() {
    let Some(g) = gpu("bad_adapter_names_and_oversized_jobs_are_clear_errors") else { return };
    let e = GpuBackend::new(&GpuOptions { adapter: Some("no-such-gpu-xyz".into()), allow_software: true }).err().expect("a name matching nothing must fail");
    let msg = e.to_string();
    assert!(msg.contains("no GPU adapter matches 'no-such-gpu-xyz'") && !msg.contains('\n'), "{msg}");
    // One weight matrix beyond the largest storage binding (128 MiB on lavapipe).
    let bind = g.context().limits.max_storage_buffer_binding_size.min(g.context().limits.max_buffer_size);
    let n = ((bind / 4) as f64).sqrt() as usize + 8;
    if n <= 20_000 {
        let p = problem(&[n, n], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.0), 1, 1, TargetSpec::Zeros);
        let t = Instant::now();
        let msg = g.probe(&p).err().expect("an oversized job must fail").to_string();
        assert!(msg.contains("does not fit") && msg.contains("fit") && !msg.contains('\n'), "{msg}");
        assert!(t.elapsed().as_secs_f64() < 5.0, "the size check must come before any work");
        eprintln!("{msg}");
    } else {
        eprintln!("bad_adapter_names_and_oversized_jobs_are_clear_errors: binding limit too large to exceed cheaply; size check not exercised");
    }
}

/// The workgroup-tiled products (forced; lavapipe defaults to the register-blocked ones) on
/// shapes that are not multiples of the tiles: odd widths below, at and across one 64-wide
/// tile, batches 1..37 (single rows and partial row tiles), non-square layers, stacked
/// depths (the backward product's rows are depths × B), homogeneous σ with bias (the
/// exponent epilogue) and a 300-layer relu network whose rows renormalise on every layer.
#[test]
fn tiled_matmul_matches_cpu_reference_on_odd_shapes() {
    let Some(mut g) = gpu("tiled_matmul_matches_cpu_reference_on_odd_shapes") else { return };
    g.set_matmul(MatmulPath::Tiled);
    eprintln!("tiling {:?}", g.context().tiling);
    let acts = [Activation::Tanh, Activation::Relu, Activation::Gelu, Activation::LeakyRelu(0.1), Activation::Sigmoid];
    for (k, act) in acts.iter().enumerate() {
        for rep in 0..2u64 {
            let seed = 5000 + 31 * k as u64 + rep;
            let r = Stream::new(seed);
            let pick = |c: u32, lo: usize, hi: usize| lo + (r.uniform(gradscope::rng::Purpose::Target, 9, c, 0) * (hi - lo + 1) as f64) as usize;
            let depth = pick(0, 2, 5);
            let widths: Vec<usize> = (0..=depth).map(|i| pick(1 + i as u32, 1, 75) * 2 + 1).collect();
            let batch = if rep == 0 { pick(40, 1, 37) } else { [1, 37][k % 2] };
            let p = problem(&widths, *act, Cost::Quadratic, gaussian(1.6, 0.1), batch, seed, TargetSpec::Gaussian);
            agree(&g, &p, &format!("tiled {act} widths {widths:?} batch {batch}"));
        }
    }
    // Stacked depths: 6 depths × B = 23 rows of δ in the backward product.
    let p = problem(&[17, 67, 67, 67, 67, 67, 67], Activation::Tanh, Cost::Quadratic, gaussian(1.3, 0.05), 23, 71, TargetSpec::Gaussian);
    let depths = [1, 2, 3, 4, 5, 6];
    let multi = g.probe_depths(&p, &depths).unwrap();
    let cpu = CpuBackend::default().probe_depths(&p, &depths).unwrap();
    for (d, (gr, cr)) in depths.iter().zip(multi.iter().zip(&cpu)) {
        let c = compare(gr, cr, &Tolerance::f32_vs_f64());
        assert!(c.passed(), "tiled stacked depth {d}: {}", c.summary(12));
    }
    let widths = vec![13; 301];
    let p = problem(&widths, Activation::Relu, Cost::Quadratic, Init::new(InitKind::He, None, Some(0.01)).unwrap(), 5, 13, TargetSpec::Gaussian);
    agree(&g, &p, "tiled relu He 300 x 13 with bias");
}

/// The two paths compute the same sums in different orders: their reports agree far inside
/// the f32-vs-f64 tolerance. 1e-5 decades is 2.3e-5 relative, about 400 f32 roundings.
#[test]
fn tiled_and_register_blocked_matmuls_agree() {
    let Some(mut g) = gpu("tiled_and_register_blocked_matmuls_agree") else { return };
    let tight = Tolerance { base: 1e-5, per_layer: 1e-6 };
    let mut worst = 0.0_f64;
    for (widths, act, batch, seed) in [
        (vec![5, 70, 33, 129, 7], Activation::Tanh, 37, 1u64),
        (vec![64, 64, 64, 64], Activation::Erf, 16, 2),
        (vec![3, 131, 1, 66, 2], Activation::Silu, 1, 3),
        (vec![21, 45, 45, 45, 45, 45, 4], Activation::Softplus, 9, 4),
    ] {
        let p = problem(&widths, act, Cost::Quadratic, gaussian(1.4, 0.1), batch, seed, TargetSpec::Gaussian);
        g.set_matmul(MatmulPath::Tiled);
        let tiled = g.probe(&p).unwrap();
        g.set_matmul(MatmulPath::RegisterBlocked);
        let blocked = g.probe(&p).unwrap();
        let c = compare(&tiled, &blocked, &tight);
        eprintln!("{act} {widths:?} batch {batch}: {}", c.summary(4));
        assert!(c.passed(), "{act} {widths:?} batch {batch}: tiled vs register-blocked: {}", c.summary(12));
        worst = worst.max(c.max_abs);
    }
    eprintln!("tiled vs register-blocked: worst |Δlog10| = {worst:.3e} decades");
}

/// An unbounded σ that is not renormalised (softplus) whose activations pass 1.8e19, so
/// ‖a‖² passes f32's range while z is still finite: the records carry ‖a‖ as mantissa and
/// exponent, the Gram sums work at that scale, and the weight-gradient norms (10^51 here)
/// match the CPU instead of coming out as +inf with status ok.
#[test]
fn unbounded_activations_past_f32_squares_stay_exact() {
    let Some(g) = gpu("unbounded_activations_past_f32_squares_stay_exact") else { return };
    let p = problem(&[8, 20, 20, 20, 20, 20, 20, 20], Activation::Softplus, Cost::Quadratic, gaussian(1e8, 0.0), 4, 6, TargetSpec::Zeros);
    let (c, gr) = agree(&g, &p, "softplus σ_w² = 1e8");
    assert!(gr.overflow_layer.is_none(), "z stays finite in f32 here");
    let top = gr.layers.iter().map(|l| l.log10_grad_w_rms).fold(f64::NEG_INFINITY, f64::max);
    assert!(top.is_finite() && top > 40.0, "the largest weight gradient is finite and past f32's range: 10^{top}");
    assert!(c.passed());
}

/// Vanishing activations of σ with σ(0) = 0 that are not homogeneous (tanh, erf, selu with
/// unequal slopes, silu) are carried in the log domain on the GPU too, as their tangent at 0
/// once a row is below 2^-60: the first-layer gradient, far below f32's 1e-45, matches the
/// CPU instead of underflowing to 0.
#[test]
fn vanishing_tanh_like_activations_stay_exact_in_f32() {
    let Some(g) = gpu("vanishing_tanh_like_activations_stay_exact_in_f32") else { return };
    for (act, sw2) in [(Activation::Tanh, 0.3), (Activation::Erf, 0.2), (Activation::Selu, 0.2), (Activation::Silu, 1.0)] {
        let p = problem(&[vec![20], vec![48; 300]].concat(), act, Cost::Quadratic, gaussian(sw2, 0.0), 3, 12, TargetSpec::Gaussian);
        let (_, gr) = agree(&g, &p, &format!("{act} σ_w² = {sw2}, 300 layers"));
        let first = gr.layers[0].log10_grad_b_rms;
        assert!(first < -50.0 && first.is_finite(), "{act}: the first layer's gradient 10^{first} must be far below f32's range and finite");
        assert!(gr.layers.iter().all(|l| l.status == LayerStatus::Ok), "{act}: every layer ok");
    }
}

/// `--check` exits 1 on a real disagreement: tanh deep in the chaotic phase (σ_w² = 4),
/// where nearby trajectories separate exponentially, so the GPU's f32 forward pass and the
/// CPU's f64 one end in different places within 100 layers and the gradient norms differ by
/// far more than the tolerance. The verdict is a one-line FAIL on stderr, and the table
/// beside it marks the mismatches.
#[test]
fn check_exits_1_when_f32_and_f64_trajectories_separate() {
    if gpu("check_exits_1_when_f32_and_f64_trajectories_separate").is_none() {
        return;
    }
    let run = |sw2: &str, depth: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .args(["probe", "--backend", "gpu", "--check", "--width", "16", "--depth", depth, "-a", "tanh", "--sigma-w2", sw2, "--sigma-b2", "0.05", "--batch", "4"])
            .env("XDG_RUNTIME_DIR", "/tmp")
            .output()
            .unwrap()
    };
    let o = run("4", "100");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "chaotic tanh: stdout {out}\nstderr {err}");
    assert!(format!("{out}{err}").contains("FAIL"), "the verdict says FAIL: {out}{err}");
    // The same command in the ordered phase passes: the exit code is the verdict.
    let o = run("1", "100");
    assert_eq!(o.status.code(), Some(0), "ordered tanh: {}", String::from_utf8_lossy(&o.stderr));
}

/// The submission model's structural counts, which carry over to any GPU (unlike timings on
/// lavapipe): every submission is waited on once and only once (the backward records ride
/// back in the submission that wrote them, the forward records and the outputs in the last
/// forward one), so a probe of L layers kept on the device takes ⌈L/64⌉ forward and ⌈L/64⌉
/// backward submissions (64 layers each at most) and nothing else; and the bytes read back
/// are per-example sums, never a B × N array per layer:
///
/// ```text
/// bytes ≤ 4·L·(6B + 2B + 64 + 256)     forward record, backward record (batch-mean and Gram partials)
///       + 4·B·(2·round4(n_L) + 1)      the output layer (a^L, its exponents, z^L for cross-entropy)
/// ```
/// whatever the width: the same depth at widths 16 and 128 reads back the same records.
#[test]
fn one_wait_per_submission_and_bytes_read_back_per_layer_are_bounded() {
    let Some(mut g) = gpu("one_wait_per_submission_and_bytes_read_back_per_layer_are_bounded") else { return };
    g.device_norms = false; // the spectral norms' submissions are not the probe's
    let (big_l, b) = (200usize, 8usize);
    let mut per_width = Vec::new();
    for n in [16usize, 128] {
        let p = problem(&vec![n; big_l + 1], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.05), b, 9, TargetSpec::Gaussian);
        let before = g.profile();
        g.probe(&p).unwrap();
        let d = g.profile().since(&before);
        eprintln!("{}", d.line(&format!("width {n}"), big_l));
        assert_eq!(d.waits, d.submissions, "width {n}: one blocking wait per submission");
        assert_eq!(d.submissions as usize, 2 * big_l.div_ceil(64), "width {n}: forward and backward submissions of 64 layers, nothing else");
        let bound = 4 * big_l * (8 * b + 64 + 256) + 4 * b * (2 * n.div_ceil(4) * 4 + 1);
        assert!(d.bytes_read as usize <= bound, "width {n}: {} bytes read back > {bound}", d.bytes_read);
        assert!(d.bind_groups < d.dispatches, "width {n}: bind groups are reused");
        per_width.push(d.bytes_read as f64 / big_l as f64);
    }
    let grows = per_width[1] - per_width[0];
    assert!(grows <= (4 * b * 2 * (128 - 16)) as f64 / big_l as f64 + 1.0, "bytes per layer grow with the width by {grows}");
}

/// `--profile` (as GRADSCOPE_PROFILE=1) on a probe and a sweep: one profile line per probe or
/// sweep batch with the structural counts of the submission model (one wait per submission,
/// 2·⌈L/64⌉ submissions with host norms, bytes read back within the bound above, timestamps
/// not counted among them), and — on an adapter with timestamp queries, as lavapipe has —
/// the device time of every kernel family, finite and ≥ 0, positive for the families that
/// ran (matmul, pointwise, reduce, weights; spectral only with device norms) and zero for one
/// that did not; on an adapter without them, the line says so. Timing the passes changes no
/// result: the JSON with and without `--profile` is the same.
#[test]
fn profile_flag_prints_counts_and_device_time_per_family() {
    let Some(g) = gpu("profile_flag_prints_counts_and_device_time_per_family") else { return };
    let row = list_adapters().into_iter().find(|r| g.device_name().starts_with(&r.name)).expect("the backend's adapter is listed");
    drop(g);
    let dir = tempfile::tempdir().unwrap();
    let (big_l, b, n) = (130usize, 4usize, 20usize);
    let run = |args: &[&str], norms: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .args(args)
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env("GRADSCOPE_GPU_NORMS", norms)
            .env_remove("GRADSCOPE_PROFILE")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).lines().filter(|l| l.contains("profile (")).map(str::to_string).collect::<Vec<_>>()
    };
    let (l_s, b_s, n_s) = (big_l.to_string(), b.to_string(), n.to_string());
    let json = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let probe = |extra: &[&str], out: &str, norms: &str| {
        let mut args = vec!["probe", "--backend", "gpu", "--width", &n_s, "--depth", &l_s, "--batch", &b_s, "-a", "tanh", "--sigma-b2", "0.05", "-o", out];
        args.extend_from_slice(extra);
        run(&args, norms)
    };
    let (plain, profiled) = (json("plain.json"), json("profiled.json"));
    assert!(probe(&[], &plain, "host").is_empty(), "no profile line without --profile");
    let lines = probe(&["--profile"], &profiled, "host");
    assert_eq!(lines.len(), 1, "one profile line per probe: {lines:?}");
    let line = &lines[0];
    eprintln!("{line}");
    let count = |what: &str| -> f64 {
        let at = line.find(what).unwrap_or_else(|| panic!("no '{what}' in {line}"));
        line[..at].split_whitespace().last().unwrap().trim_start_matches('(').parse().unwrap()
    };
    assert_eq!(count(" submissions"), count(" blocking waits"), "one wait per submission");
    assert_eq!(count(" submissions") as usize, 2 * big_l.div_ceil(64), "forward and backward submissions of 64 layers");
    let bound = 4 * big_l * (8 * b + 64 + 256) + 4 * b * (2 * n.div_ceil(4) * 4 + 1);
    assert!(count(" bytes read back") as usize <= bound, "{} bytes > {bound}: timestamps must not count as results", count(" bytes read back"));
    let strip = |p: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(strip(&plain), strip(&profiled), "timing the passes must not change a result");

    let family_ms = |line: &str| -> Vec<(String, f64)> {
        let at = line.find("device time per kernel family: ").unwrap_or_else(|| panic!("no device times in {line}")) + "device time per kernel family: ".len();
        line[at..].split(" (sum").next().unwrap().split(", ").map(|part| {
            let w: Vec<&str> = part.split_whitespace().collect();
            assert_eq!((w.len(), w[2]), (3, "ms"), "'{part}' in {line}");
            (w[0].to_string(), w[1].parse::<f64>().unwrap())
        }).collect()
    };
    if !row.timestamp_query {
        assert!(line.contains("device time: timestamp queries not supported by this adapter"), "{line}");
        eprintln!("profile_flag_prints_counts_and_device_time_per_family: '{}' has no timestamp queries: the 'not supported' line was checked instead", row.name);
        return;
    }
    let fams = family_ms(line);
    let names: Vec<&str> = fams.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["matmul", "pointwise", "reduce", "weights", "spectral"], "{line}");
    for (f, ms) in &fams {
        assert!(ms.is_finite() && *ms >= 0.0, "{f}: {ms} ms in {line}");
        assert_eq!(*ms > 0.0, f != "spectral", "{f}: {ms} ms (host norms: no spectral kernels ran) in {line}");
    }
    // With the norms on the device the Lanczos kernels run, and are timed, too.
    let lines = probe(&["--profile"], &json("device.json"), "device");
    let fams = family_ms(&lines[0]);
    assert!(fams.iter().all(|(_, ms)| *ms > 0.0 && ms.is_finite()), "every family ran: {}", lines[0]);
    // A sweep prints one line per batch of configurations, with the device times.
    let sweep_dir = json("sweep");
    let lines = run(&["sweep", "--backend", "gpu", "--widths", "12", "--depths", "3,7", "--activations", "tanh,relu", "--batch", "3", "-q", "--profile", "-o", &sweep_dir], "host");
    assert_eq!(lines.len(), 1, "two configurations of one width: one batch, one line: {lines:?}");
    assert!(family_ms(&lines[0]).iter().all(|(_, ms)| *ms >= 0.0), "{}", lines[0]);
}
