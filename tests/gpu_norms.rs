//! Spectral norms on the GPU (shaders/spectral.wgsl, Lanczos in f32) against the f64 CPU
//! Lanczos, and probes that use them against the CPU reference. With
//! GRADSCOPE_REQUIRE_GPU=1 a missing adapter fails each test; otherwise it is skipped loudly.
#![cfg(feature = "gpu")]

mod common;

use gradscope::backend::gpu::GPU_SPECTRAL_NORM_RTOL;
use gradscope::backend::CpuBackend;
use gradscope::check::{compare, Tolerance};
use gradscope::linalg::spectral_norm;
use gradscope::model::{Activation, Cost, Init, InitKind, TargetSpec};

use common::*;

/// The norms the host path gives (f64 Lanczos, a fresh cache): what the device must differ
/// from, bit-wise, to show that it ran.
fn host_norms(p: &gradscope::model::Problem) -> Vec<f64> {
    let mut h = gpu("host_norms").unwrap();
    h.device_norms = false;
    h.log2_weight_norms(p).unwrap()
}

/// log2 ‖W‖₂ on the device within 1e-5 relative of the f64 value (the device asks θ = ‖W‖²
/// for 1e-6; f32 products perturb the operator by ~1e-7 relative), for square, tall and wide
/// layers (both operators WᵀW and WWᵀ), widths that are not multiples of 4 or of the 256-wide
/// workgroups, every generated init, σ_w = 0, and orthogonal weights (normed on the host).
#[test]
fn device_spectral_norms_match_f64_lanczos() {
    let Some(mut g) = gpu("device_spectral_norms_match_f64_lanczos") else { return };
    g.device_norms = true;
    let widths = [37, 64, 64, 300, 129, 5, 1, 3];
    let inits = [
        gaussian(1.7, 0.0),
        Init::new(InitKind::He, None, None).unwrap(),
        Init::new(InitKind::Lecun, None, Some(0.1)).unwrap(),
        Init::new(InitKind::XavierNormal, None, None).unwrap(),
        Init::new(InitKind::XavierUniform, None, None).unwrap(),
        Init::new(InitKind::Nielsen, None, None).unwrap(),
        Init::new(InitKind::Orthogonal, Some(2.0), None).unwrap(),
        gaussian(0.0, 0.1),
    ];
    let mut worst = 0.0_f64;
    let mut differ = 0;
    for (k, init) in inits.into_iter().enumerate() {
        let p = problem(&widths, Activation::Tanh, Cost::Quadratic, init, 3, 11 + k as u64, TargetSpec::Zeros);
        let got = g.log2_weight_norms(&p).unwrap();
        differ += got.iter().zip(host_norms(&p)).filter(|(d, h)| d.to_bits() != h.to_bits()).count();
        for l in 1..=p.net.depth() {
            let (w, _) = p.net.layer(l);
            let want = spectral_norm(w.view()).log2();
            if want == f64::NEG_INFINITY {
                assert_eq!(got[l], f64::NEG_INFINITY, "{init:?} layer {l}: W = 0 must give -inf");
                continue;
            }
            let rel = ((got[l] - want) * std::f64::consts::LN_2).abs();
            worst = worst.max(rel);
            assert!(rel <= 1e-5, "{init:?} layer {l} ({:?}): log2 ‖W‖ {} vs f64 {} (relative {rel:e})", w.dim(), got[l], want);
        }
    }
    eprintln!("worst relative difference of ‖W‖₂, device f32 Lanczos vs f64: {worst:.2e} (asked {GPU_SPECTRAL_NORM_RTOL:e} of ‖W‖²)");
    // The values came from the device: an f32 Lanczos does not reproduce the host's f64 bits.
    assert!(differ > 0, "every norm equals the host path's bit for bit: the device Lanczos did not run");
    // Realistic widths: the top singular values of a 512 × 512 Gaussian matrix crowd
    // together (relative gap ~ 1e-2), which is what makes power iteration useless.
    let p = problem(&[512, 512, 512], Activation::Relu, Cost::Quadratic, gaussian(2.0, 0.0), 2, 5, TargetSpec::Zeros);
    let got = g.log2_weight_norms(&p).unwrap();
    for l in 1..=2 {
        let want = spectral_norm(p.net.layer(l).0.view()).log2();
        let rel = ((got[l] - want) * std::f64::consts::LN_2).abs();
        eprintln!("512 x 512 layer {l}: relative {rel:.2e}");
        assert!(rel <= 1e-5, "512 x 512 layer {l}: {} vs {want} (relative {rel:e})", got[l]);
    }
}

/// The cache: a second network of the same seed and shapes but another σ_w² and activation
/// reuses the unit norms (log2 ‖σG‖ = log2 σ + log2 ‖G‖), so the values differ by log2 of
/// the σ ratio, to rounding (an independent f32 Lanczos would differ by ~1e-7).
#[test]
fn device_norms_are_cached_per_seed_and_shape() {
    let Some(mut g) = gpu("device_norms_are_cached_per_seed_and_shape") else { return };
    g.device_norms = true;
    let a = problem(&[40, 48, 48, 48], Activation::Tanh, Cost::Quadratic, gaussian(1.0, 0.0), 2, 3, TargetSpec::Zeros);
    let b = problem(&[40, 48, 48, 48], Activation::Relu, Cost::Quadratic, gaussian(4.0, 0.0), 2, 3, TargetSpec::Zeros);
    let na = g.log2_weight_norms(&a).unwrap();
    let nb = g.log2_weight_norms(&b).unwrap();
    for l in 1..=3 {
        // Exact up to the rounding of log2 std (one ulp each).
        assert!((nb[l] - na[l] - 1.0).abs() < 1e-12, "layer {l}: σ_w² 4 vs 1 must differ by one octave: {} vs {}", nb[l], na[l]);
    }
    // The cache is the backend's, shared with the host path: with device norms off, the same
    // seed and shapes give the device's values back, not the host's own f64 Lanczos.
    g.device_norms = false;
    assert_eq!(g.log2_weight_norms(&a).unwrap(), na, "the host path must read the device's cached norms");
    assert_ne!(host_norms(&a), na, "device values equal the host's f64 ones: the cache check proves nothing");
}

/// Whole probes with device norms agree with the CPU reference within the `--check`
/// tolerance, the bound columns included.
#[test]
fn probes_with_device_norms_match_cpu_reference() {
    let Some(mut g) = gpu("probes_with_device_norms_match_cpu_reference") else { return };
    g.device_norms = true;
    let cases = [
        (vec![30, 64, 64, 64, 64, 10], Activation::Sigmoid, Cost::Quadratic, gaussian(1.0, 0.05)),
        (vec![17, 96, 50, 96, 3], Activation::Sigmoid, Cost::CrossEntropy, Init::new(InitKind::XavierUniform, None, None).unwrap()),
        (vec![64; 41], Activation::Relu, Cost::Quadratic, Init::new(InitKind::He, None, None).unwrap()),
    ];
    for (k, (widths, act, cost, init)) in cases.into_iter().enumerate() {
        let targets = if cost == Cost::CrossEntropy { TargetSpec::Uniform } else { TargetSpec::Zeros };
        let p = problem(&widths, act, cost, init, 5, 100 + k as u64, targets);
        let gr = g.probe(&p).unwrap();
        let cr = CpuBackend::default().probe(&p).unwrap();
        let c = compare(&gr, &cr, &Tolerance::f32_vs_f64());
        eprintln!("case {k}: {}", c.summary(6));
        assert!(c.passed(), "case {k}: {}", c.summary(12));
        for (lg, lc) in gr.layers.iter().zip(&cr.layers) {
            assert_log_close(lg.log10_weight_norm, lc.log10_weight_norm, 1e-5, &format!("case {k} layer {} log10_weight_norm", lg.layer));
            assert_log_close(lg.log10_bound, lc.log10_bound, 1e-4, &format!("case {k} layer {} log10_bound", lg.layer));
        }
    }
}

/// A bad `GRADSCOPE_GPU_NORMS` is one line naming the variable, exit code 2, nothing written.
#[test]
fn bad_gpu_norms_setting_is_a_one_line_error() {
    if gpu("bad_gpu_norms_setting_is_a_one_line_error").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("p.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["probe", "--backend", "gpu", "--width", "8", "--depth", "3", "--out", out_file.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("GRADSCOPE_GPU_NORMS", "gpu")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("GRADSCOPE_GPU_NORMS") && err.contains("'gpu'"), "{err}");
    assert!(!out_file.exists(), "no output file on bad input");
}
