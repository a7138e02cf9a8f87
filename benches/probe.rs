//! CPU backend throughput per layer (forward + backward + gradient norms) in GFLOP/s of
//! useful work, beside the limit measured in the same run: the f64 gemm of ndarray +
//! matrixmultiply (the crate the engine multiplies with) on the same shapes.
//!
//! `cargo bench --bench probe` (all shapes, a few minutes on 2 cores);
//! `GRADSCOPE_BENCH_WIDTHS=256,1024 cargo bench --bench probe` for a subset.
//!
//! Per shape it times (criterion, 10 samples each, median reported):
//! - `gemm_fwd` / `gemm_bwd`: `a.dot(&w.t())` (B×n · n×n) and `d.dot(&w)`: the limit;
//! - `probe_cold`: `CpuBackend::probe` with an empty spectral-norm cache: end to end (with
//!   at least two layers per core, a norm thread draws each unit matrix G and norms it by
//!   one Lanczos while the calling thread draws W and multiplies; else each W is drawn once
//!   as G, normed on all cores, and scaled into W);
//! - `probe_warm`: the same probe again on the same backend: norms come from the cache, each
//!   W is drawn once;
//! - per width: `draw` (`Init::weights` of one n×n layer) and `lanczos`
//!   (`linalg::spectral_norm` of it);
//! - at 1024×64 also `probe_stored` (`Params::Stored`: nothing drawn, one Lanczos per layer)
//!   and `probe_cold_inline` (the norms before each layer's product, `norm_workers:
//!   Some(0)`, against `probe_cold`'s norms beside the products).
//!
//! "core" = probe_warm − L·draw: forward, backward and the gradient statistics alone.

#[path = "common/mod.rs"]
mod common;

use common::*;
use gradscope::backend::CpuBackend;
use gradscope::linalg::spectral_norm;
use gradscope::model::{Activation, Init, InitKind};
use gradscope::rng::Stream;
use ndarray::Array2;

/// Depth per width: enough layers to average over, few enough at 4096 to keep the run short.
fn depth_for(n: usize) -> usize {
    if n <= 256 {
        8
    } else if n <= 1024 {
        4
    } else {
        2
    }
}

fn shapes() -> Vec<(usize, usize)> {
    let widths: Vec<usize> = std::env::var("GRADSCOPE_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 1024, 4096]);
    let mut v = Vec::new();
    for &n in &widths {
        for b in [1, 32, 256] {
            v.push((n, b));
        }
        if n == 1024 {
            v.push((1024, 64)); // the target's shape
        }
    }
    v
}

fn main() {
    let mut c = criterion();
    let act = Activation::Tanh;
    let seed = 0;
    let shapes = shapes();
    let mut widths: Vec<usize> = shapes.iter().map(|s| s.0).collect();
    widths.dedup();

    for &n in &widths {
        let gname = format!("cpu/w{n}");
        let mut g = group(&mut c, &gname);
        let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
        let stream = Stream::new(seed);
        bench(&mut g, &gname, "draw", || {
            std::hint::black_box(init.weights(&stream, 1, n, n));
        });
        let w = init.weights(&stream, 1, n, n);
        bench(&mut g, &gname, "lanczos", || {
            std::hint::black_box(spectral_norm(w.view()));
        });
        g.finish();
    }

    for &(n, b) in &shapes {
        let depth = depth_for(n);
        let gname = format!("cpu/w{n}_b{b}");
        let mut g = group(&mut c, &gname);
        let p = problem(n, depth, b, act, seed);
        let (w, _) = p.net.layer(1);
        let w = w.into_owned();
        let a = Array2::<f64>::from_shape_fn((b, n), |(i, j)| ((i * 7 + j * 13) % 17) as f64 / 17.0 - 0.5);
        bench(&mut g, &gname, "gemm_fwd", || {
            std::hint::black_box(a.dot(&w.t()));
        });
        bench(&mut g, &gname, "gemm_bwd", || {
            std::hint::black_box(a.dot(&w));
        });
        bench(&mut g, &gname, "probe_cold", || {
            std::hint::black_box(CpuBackend::default().probe(&p).unwrap());
        });
        let warm = CpuBackend::default();
        warm.probe(&p).unwrap();
        bench(&mut g, &gname, "probe_warm", || {
            std::hint::black_box(warm.probe(&p).unwrap());
        });
        if (n, b) == (1024, 64) {
            // The norms inline, before each layer's product (all cores per norm), against
            // probe_cold's norms beside the products: the overlap's gain, in the same run.
            bench(&mut g, &gname, "probe_cold_inline", || {
                std::hint::black_box(CpuBackend { norm_workers: Some(0), ..Default::default() }.probe(&p).unwrap());
            });
            let q = stored(&p);
            bench(&mut g, &gname, "probe_stored", || {
                std::hint::black_box(CpuBackend::default().probe(&q).unwrap());
            });
        }
        g.finish();
    }
    c.final_summary();
    table(&shapes);
}

fn table(shapes: &[(usize, usize)]) {
    println!();
    println!("CPU backend, {} — tanh, gaussian σ_w² = 1, f64; load average at the end: {}", cpu_name(), loadavg());
    println!("useful flops/probe = Σ_l 2·B·n² (fwd) + 2·B·n² (bwd, l ≥ 2) + 2·B²·2n (Grams); rates in GFLOP/s, (% of the gemm limit)");
    println!(
        "{:>5} {:>4} {:>2} | {:>9} | {:>14} | {:>14} | {:>14} | {:>8} {:>8} {:>8} {:>8}",
        "width", "B", "L", "gemm lim", "end-to-end", "norms cached", "core", "ms draw", "ms lanc", "ms core", "ms stor"
    );
    let mut target = None;
    let mut overlap = None;
    for &(n, b) in shapes {
        let depth = depth_for(n);
        let gname = format!("cpu/w{n}_b{b}");
        let wname = format!("cpu/w{n}");
        let flops = useful_flops(&vec![n; depth + 1], b);
        let gf = gemm_flops(n, b);
        let lim = match (seconds(&gname, "gemm_fwd"), seconds(&gname, "gemm_bwd")) {
            (Some(f), Some(k)) => Some(gf / (f + k) * 1e-9),
            _ => None,
        };
        let draw = seconds(&wname, "draw");
        let lanczos = seconds(&wname, "lanczos");
        let cold = seconds(&gname, "probe_cold");
        let warm = seconds(&gname, "probe_warm");
        let core = match (warm, draw) {
            (Some(w), Some(d)) => Some((w - depth as f64 * d).max(1e-9)),
            _ => None,
        };
        let rate = |t: Option<f64>| t.map(|t| flops / t * 1e-9);
        let cell = |t: Option<f64>| match (rate(t), lim) {
            (Some(r), Some(l)) => format!("{r:7.2} ({:3.0}%)", 100.0 * r / l),
            (Some(r), None) => format!("{r:7.2}"),
            _ => "–".into(),
        };
        let ms = |t: Option<f64>| opt(t.map(|t| t * 1e3), 2);
        let stor = seconds(&gname, "probe_stored").map(|t| t / depth as f64);
        if let (Some(inline), Some(c)) = (seconds(&gname, "probe_cold_inline"), cold) {
            overlap = Some((n, b, inline, c));
        }
        println!(
            "{n:>5} {b:>4} {depth:>2} | {:>9} | {:>14} | {:>14} | {:>14} | {:>8} {:>8} {:>8} {:>8}",
            opt(lim, 2),
            cell(cold),
            cell(warm),
            cell(core),
            ms(draw),
            ms(lanczos),
            ms(core.map(|c| c / depth as f64)),
            ms(stor)
        );
        if (n, b) == (1024, 64) {
            target = Some((rate(cold), rate(warm), rate(core), lim, draw, lanczos, core.map(|c| c / depth as f64)));
        }
    }
    println!("(ms columns are per layer: draw = one n×n layer of weights, lanc = its Lanczos ‖W‖₂, core = (norms cached − L·draw)/L, stor = Params::Stored probe / L)");
    if let Some((n, b, inline, beside)) = overlap {
        println!("norms beside the products (probe_cold) against inline (probe_cold_inline), {n}×{b}: {:.1} ms against {:.1} ms, {:.2}×", beside * 1e3, inline * 1e3, inline / beside);
    }
    if let Some((Some(cold), Some(warm), Some(core), Some(lim), Some(d), Some(lz), Some(cl))) = target {
        let verdict = |r: f64| {
            let f = r / lim;
            if f >= 0.6 { format!("{:.0}% — met", 100.0 * f) } else { format!("{:.0}% — missed by {:.0} points ({:.1}× too slow)", 100.0 * f, 100.0 * (0.6 - f), 0.6 / f) }
        };
        println!("TARGET (width 1024, batch 64, ≥ 60% of the f64 gemm rate):");
        println!("  forward + backward + gradient norms (core):      {}", verdict(core));
        println!("  probe with cached spectral norms (+ one draw):   {}", verdict(warm));
        println!("  end-to-end probe (+ 2 draws + Lanczos per layer): {}", verdict(cold));
        println!("  per layer: core {:.2} ms, weight draw {:.2} ms, Lanczos {:.2} ms", cl * 1e3, d * 1e3, lz * 1e3);
    }
}
