//! GPU backend throughput (forward + backward + gradient norms, the same useful-flop count
//! as benches/probe.rs) beside the limit measured in the same run: our own matmul kernels
//! (`shaders/matmul.wgsl`, the layer products the engine runs) alone on the same shapes, on
//! both paths (register-blocked `forward`/`backward` and workgroup-tiled
//! `forward_tiled`/`backward_tiled`; the limit is the path the adapter's context chose), and
//! the chip's published fp32 FMA peak where known.
//!
//! `cargo bench --bench gpu`. Without an adapter it prints a loud SKIPPED line and exits 0.
//! On a software adapter (Mesa's lavapipe, ~1–3 GFLOP/s) or with `GRADSCOPE_BENCH_TINY=1`
//! it runs tiny shapes only; `GRADSCOPE_BENCH_WIDTHS=…` and `GRADSCOPE_BENCH_BATCHES=…` pick
//! widths and batches;
//! `GRADSCOPE_FP32_PEAK_TFLOPS=…` supplies a peak the built-in list lacks.
//!
//! Every timed routine ends by waiting for the device (`Context::wait` here; the probe waits
//! for its last submission's readback), so no clock is read with work in flight.
//! The GPU probe computes ‖W^l‖₂ by Lanczos on the host, in parallel with the device work;
//! its time is in `probe`, and `kernel limit` shows what the device part alone could reach.

#[path = "common/mod.rs"]
mod common;

use common::*;
use gradscope::backend::gpu::{Context, GpuBackend, GpuOptions, MatmulParams, MatmulPath};
use gradscope::model::Activation;

/// Published fp32 FMA (non-tensor) peaks in TFLOP/s, by a substring of the adapter name.
/// Sources: NVIDIA's Hopper whitepaper figures as tabulated at
/// glennklockwood.com/garden/processors/h100 (H100 SXM5: 66.9 FP32 VFMA; H200 is the same
/// GH100 compute with more memory; the H200 NVL/PCIe part runs lower clocks, override it);
/// NVIDIA A100 datasheet (19.5).
const PEAKS: &[(&str, f64)] = &[("H200", 66.9), ("H100 PCIe", 51.2), ("H100", 66.9), ("A100", 19.5)];

fn peak_tflops(name: &str) -> Option<f64> {
    if let Some(v) = std::env::var("GRADSCOPE_FP32_PEAK_TFLOPS").ok().and_then(|s| s.parse().ok()) {
        return Some(v);
    }
    PEAKS.iter().find(|(k, _)| name.contains(k)).map(|(_, v)| *v)
}

fn round4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Buffers for one shape's forward (B×n · (n×n)ᵀ) and backward (B×n · n×n) products.
struct MatmulBufs {
    lhs: wgpu::Buffer,
    w: wgpu::Buffer,
    bias: wgpu::Buffer,
    e: wgpu::Buffer,
    out: wgpu::Buffer,
}

fn matmul_bufs(ctx: &Context, n: usize, b: usize) -> MatmulBufs {
    let s = round4(n);
    let rows = round4(b);
    let fill = |len: usize, seed: usize| -> Vec<u8> {
        let v: Vec<f32> = (0..len).map(|i| (((i * 7 + seed) % 17) as f32 / 17.0 - 0.5) * 0.1).collect();
        bytemuck::cast_slice(&v).to_vec()
    };
    MatmulBufs {
        lhs: ctx.storage_init("bench lhs", &fill(rows * s, 1)),
        w: ctx.storage_init("bench w", &fill(s * s, 3)),
        bias: ctx.storage_init("bench bias", &fill(s, 5)),
        e: ctx.storage_init("bench e", bytemuck::cast_slice(&vec![0i32; rows])),
        out: ctx.storage_init("bench out", &vec![0u8; rows * s * 4]),
    }
}

/// The two matmul paths, with their benchmark ids.
const PATHS: [(MatmulPath, &str); 2] = [(MatmulPath::RegisterBlocked, "blocked"), (MatmulPath::Tiled, "tiled")];

/// `reps` forward + backward products of one shape on `path` in one compute pass, submitted
/// and waited for. Dispatched directly (one parameter slot, shared by every dispatch) so
/// only the kernels are timed.
fn matmul_pairs(ctx: &Context, path: MatmulPath, m: &MatmulBufs, n: usize, b: usize, reps: usize) {
    let s = round4(n) as u32;
    let pr = MatmulParams { batch: b as u32, n_in: n as u32, n_out: n as u32, s_in: s, s_out: s, ..Default::default() };
    ctx.queue.write_buffer(&ctx.params, 0, bytemuck::bytes_of(&pr));
    let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("bench matmul") });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench matmul"), timestamp_writes: None });
        let (kf, gf) = ctx.mm_forward_on(path, n, b);
        let (kb, gb) = ctx.mm_backward_on(path, n, b);
        let fwd = bind_group(ctx, &kf.layout, &kf.bindings, &[&m.lhs, &m.w, &m.bias, &m.e, &m.out]);
        let bwd = bind_group(ctx, &kb.layout, &kb.bindings, &[&m.lhs, &m.w, &m.out]);
        for _ in 0..reps {
            pass.set_pipeline(&kf.pipeline);
            pass.set_bind_group(0, &fwd, &[0]);
            pass.dispatch_workgroups(gf.0, gf.1, gf.2);
            pass.set_pipeline(&kb.pipeline);
            pass.set_bind_group(0, &bwd, &[0]);
            pass.dispatch_workgroups(gb.0, gb.1, gb.2);
        }
    }
    ctx.queue.submit([enc.finish()]);
    ctx.wait(&|| "the matmul benchmark".to_string()).expect("matmul kernels");
}

/// A bind group of a kernel (its layout and binding numbers): the parameter block at
/// binding 0, then `bufs` in binding order.
fn bind_group(ctx: &Context, layout: &wgpu::BindGroupLayout, bindings: &[u32], bufs: &[&wgpu::Buffer]) -> wgpu::BindGroup {
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &ctx.params, offset: 0, size: wgpu::BufferSize::new(gradscope::backend::gpu::PARAM_SLOT) }),
    }];
    for (&bnd, buf) in bindings.iter().zip(bufs) {
        entries.push(wgpu::BindGroupEntry { binding: bnd, resource: buf.as_entire_binding() });
    }
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some("bench matmul"), layout, entries: &entries })
}

fn main() {
    let gpu = match GpuBackend::new(&GpuOptions { adapter: None, allow_software: true }) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: GPU benchmarks: no usable GPU adapter ({e})");
            return;
        }
    };
    let name = gpu.device_name();
    let tiny = gpu.is_software() || std::env::var("GRADSCOPE_BENCH_TINY").is_ok_and(|v| v == "1");
    let widths: Vec<usize> = std::env::var("GRADSCOPE_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| if tiny { vec![64, 256] } else { vec![256, 1024, 4096] });
    let batches: Vec<usize> = std::env::var("GRADSCOPE_BENCH_BATCHES")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| if tiny { vec![1, 32] } else { vec![1, 32, 256] });
    let depth_for = |n: usize| if tiny { 2 } else if n <= 256 { 8 } else if n <= 1024 { 4 } else { 2 };
    println!("GPU benchmarks on {name}, matmul path {}{}", gpu.context().matmul_label(), if tiny { " (tiny shapes: software adapter or GRADSCOPE_BENCH_TINY=1)" } else { "" });

    let ctx = gpu.context();
    let mut c = criterion();
    let mut shapes = Vec::new();
    for &n in &widths {
        for &b in &batches {
            let depth = depth_for(n);
            shapes.push((n, b, depth));
            let gname = format!("gpu/w{n}_b{b}");
            let mut g = group(&mut c, &gname);
            let m = matmul_bufs(ctx, n, b);
            // Enough products per submission that launch overhead does not dominate.
            let per_pair = gemm_flops(n, b);
            let reps = ((if tiny { 2e7 } else { 2e10 }) / per_pair).clamp(1.0, 256.0) as usize;
            let reps_s = reps.to_string();
            for (path, id) in PATHS {
                bench(&mut g, &gname, &format!("matmul_{id}_x{reps_s}"), || matmul_pairs(ctx, path, &m, n, b, reps));
            }
            let p = problem(n, depth, b, Activation::Tanh, 0);
            bench(&mut g, &gname, "probe", || {
                std::hint::black_box(gpu.probe(&p).unwrap());
            });
            g.finish();
        }
    }
    c.final_summary();

    let peak = peak_tflops(&ctx.info.name);
    println!();
    println!("GPU backend on {name}, f32 — tanh, gaussian σ_w² = 1; load average at the end: {}", loadavg());
    println!(
        "fp32 FMA peak: {}",
        peak.map_or("unknown (set GRADSCOPE_FP32_PEAK_TFLOPS to add it)".into(), |p| format!("{p} TFLOP/s (published)"))
    );
    println!("useful flops as in benches/probe.rs; rates in GFLOP/s; kernel limit = our matmul.wgsl forward + backward on the same shapes, on the path the probe uses ({})", ctx.matmul_label());
    println!("{:>5} {:>4} {:>2} | {:>8} {:>8} | {:>12} {:>8} | {:>16} {:>8} | {:>10}", "width", "B", "L", "blocked", "tiled", "kernel lim", "% peak", "probe", "% peak", "ms/layer");
    for (n, b, depth) in shapes {
        let gname = format!("gpu/w{n}_b{b}");
        let per_pair = gemm_flops(n, b);
        let reps = ((if tiny { 2e7 } else { 2e10 }) / per_pair).clamp(1.0, 256.0) as usize;
        let rate_of = |id: &str| seconds(&gname, &format!("matmul_{id}_x{reps}")).map(|t| per_pair * reps as f64 / t * 1e-9);
        let (blocked, tiled) = (rate_of("blocked"), rate_of("tiled"));
        let lim = if ctx.matmul == MatmulPath::Tiled { tiled } else { blocked };
        let t = seconds(&gname, "probe");
        let rate = t.map(|t| useful_flops(&vec![n; depth + 1], b) / t * 1e-9);
        let pct = |r: Option<f64>| match (r, peak) {
            (Some(r), Some(p)) => format!("{:.2}%", 100.0 * r / (p * 1e3)),
            _ => "–".into(),
        };
        let of_lim = match (rate, lim) {
            (Some(r), Some(l)) => format!("{:8.2} ({:3.0}%)", r, 100.0 * r / l),
            _ => opt(rate, 2),
        };
        println!("{n:>5} {b:>4} {depth:>2} | {:>8} {:>8} | {:>12} {:>8} | {:>16} {:>8} | {:>10}", opt(blocked, 2), opt(tiled, 2), opt(lim, 2), pct(lim), of_lim, pct(rate), opt(t.map(|t| t * 1e3 / depth as f64), 2));
        if let ((4096, 256), Some(r), Some(p)) = ((n, b), lim, peak) {
            let f = r / (p * 1e3);
            println!(
                "TARGET (4096×256, layer kernels ≥ 40% of fp32 FMA peak): matmul kernels at {:.1}% — {}",
                100.0 * f,
                if f >= 0.4 { "met".to_string() } else { format!("missed by {:.1} points", 100.0 * (0.4 - f)) }
            );
        }
    }
}
