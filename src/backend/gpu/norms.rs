//! Spectral norms ‖W^l‖₂ of generated weights on the GPU (shaders/spectral.wgsl): each layer's
//! matrix is drawn from the same Philox stream as the forward pass, a chunk of layers of one
//! shape at a time, and the Lanczos method (the CPU's method, [`crate::linalg::spectral_norm`],
//! from the same start vector, with full reorthogonalisation twice) runs on all of them at
//! once; the host reads the tridiagonal matrices back after every round of steps and decides
//! convergence in f64 with the CPU's stopping rule ([`crate::linalg::ritz_test`]).
//!
//! Precision: the products and reorthogonalisation are f32, so the operator the Lanczos
//! method sees is WᵀW up to a relative perturbation of order 1e-7, and θ = λ_max is asked for
//! to [`GPU_SPECTRAL_NORM_RTOL`]; log10 ‖W‖₂ then differs from the f64 value by about 1e-7
//! decades (the tests hold it to 1e-5 relative), four orders below the `--check` tolerance.
//! A layer that has not converged after [`KMAX`] steps (never seen for Gaussian matrices:
//! width 2048 needs about 52) is normed on the host instead, so every value meets its bound.
//!
//! Gaussian-family weights are W = std·G: the GPU norms the unit matrix G and the value goes
//! into the backend's cache under (seed, layer, shape), as the CPU's does, so a sweep over σ_w²
//! and activations norms each G once. Orthogonal and stored weights are normed on the host.

use crate::backend::norms::NormCache;
use crate::error::Result;
use crate::model::{InitKind, Params as NetParams, Problem};

use super::context::{Context, MAX_WORKGROUPS_PER_DIM};
use super::params::{SpectralParams, WeightsParams};
use super::recorder::{grid, Recorder};

/// Relative accuracy asked of θ = ‖W‖₂² (so ‖W‖₂ to half of it) by the GPU's Lanczos.
pub const GPU_SPECTRAL_NORM_RTOL: f64 = 1e-6;
/// The most Lanczos steps on the device before a layer is handed to the host.
pub const KMAX: usize = 128;
/// Device bytes for one chunk (weights, Lanczos basis, vectors).
const CHUNK_BUDGET: u64 = 128 << 20;
/// Layers per chunk at most.
const MAX_CHUNK: usize = 64;
/// Multiply-adds per submission (as the probe's WORK_PER_SUBMIT: far under any watchdog).
const WORK_PER_SUBMIT: f64 = 5e8;
/// Steps per submission at most (the host checks convergence between submissions).
const STEPS_PER_ROUND: usize = 16;

/// One layer to norm on the device: its index, whether it is the unit matrix G of a
/// gaussian-family init (cached) and log2 of the factor its norm is multiplied by.
#[derive(Clone, Copy)]
struct Job {
    l: usize,
    unit: bool,
    log2_factor: f64,
}

/// log2 ‖W^l‖₂ for l = 1..=L (index 0 unused) where the GPU (or the cache) provides it;
/// `None` for the layers the host must norm (orthogonal or stored weights, shapes the device
/// cannot hold, or a layer that did not converge in [`KMAX`] steps).
///
/// # Errors
/// [`crate::Error::Device`] when the device fails (with the layers and shapes).
pub(super) fn device_norms(ctx: &Context, p: &Problem, cache: &NormCache) -> Result<Vec<Option<f64>>> {
    let net = &p.net;
    let big_l = net.depth();
    let mut out = vec![None; big_l + 1];
    let (init, seed) = match &net.params {
        NetParams::Generated { init, seed } if net.weights_are_streamable() => (init, *seed),
        _ => return Ok(out),
    };
    let mut jobs: Vec<Job> = Vec::new();
    for (l, slot) in out.iter_mut().enumerate().skip(1) {
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        match init.normal_std(n_in, n_out) {
            Some(std) if std > 0.0 => match cache.cached_unit_norm(seed, l, n_out, n_in) {
                Some(g) => *slot = Some(g + std.log2()),
                None => jobs.push(Job { l, unit: true, log2_factor: std.log2() }),
            },
            // σ_w = 0: W = 0, as the CPU's Lanczos finds it.
            Some(_) => *slot = Some(f64::NEG_INFINITY),
            None => jobs.push(Job { l, unit: false, log2_factor: 0.0 }),
        }
    }
    // Chunks of consecutive jobs of one shape.
    let mut i = 0;
    while i < jobs.len() {
        let shape = |j: &Job| (net.widths[j.l], net.widths[j.l - 1]);
        let (n_out, n_in) = shape(&jobs[i]);
        let sizes = Sizes::new(n_out, n_in);
        let fits = sizes.fits(ctx);
        let cap = if fits { sizes.chunk_cap(ctx) } else { 1 };
        let mut e = i + 1;
        while e < jobs.len() && e - i < cap && shape(&jobs[e]) == (n_out, n_in) {
            e += 1;
        }
        if fits {
            let uniform_scale = match init.kind {
                InitKind::XavierUniform => (6.0 / (n_in + n_out) as f64).sqrt(),
                _ => 1.0,
            };
            let thetas = lanczos_chunk(ctx, seed, &jobs[i..e], &sizes, uniform_scale)?;
            for (job, th) in jobs[i..e].iter().zip(thetas) {
                let Some(th) = th else { continue };
                let log2_unit = if th > 0.0 { 0.5 * th.log2() } else { f64::NEG_INFINITY };
                if job.unit {
                    cache.cache_unit_norm(seed, job.l, n_out, n_in, log2_unit);
                }
                out[job.l] = Some(log2_unit + job.log2_factor);
            }
        }
        i = e;
    }
    Ok(out)
}

/// Sizes of one chunk's buffers, per layer, in floats.
struct Sizes {
    n_out: usize,
    n_in: usize,
    /// Padded rows and row stride of W, floats of one matrix.
    rows: usize,
    s_in: usize,
    mat: usize,
    /// Operator dimension m = min(n_in, n_out), steps at most, floats per vector.
    m: usize,
    steps: usize,
    vec: usize,
}

impl Sizes {
    fn new(n_out: usize, n_in: usize) -> Sizes {
        let (rows, s_in) = (n_out.div_ceil(4) * 4, n_in.div_ceil(4) * 4);
        let m = n_in.min(n_out);
        Sizes { n_out, n_in, rows, s_in, mat: rows * s_in, m, steps: KMAX.min(m), vec: rows.max(s_in) }
    }

    fn layer_floats(&self) -> usize {
        self.mat + (self.steps + 3) * self.vec + 2 * self.steps
    }

    /// One layer fits the device's bindings and the kernels' grids.
    fn fits(&self, ctx: &Context) -> bool {
        let bind = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
        self.m > 0
            && (self.mat as u64) * 4 <= bind
            && ((self.steps + 1) * self.vec) as u64 * 4 <= bind
            && self.n_out.div_ceil(64) <= MAX_WORKGROUPS_PER_DIM as usize
            && self.mat < u32::MAX as usize / 2
    }

    /// Layers per chunk: within [`CHUNK_BUDGET`] and one binding, at most [`MAX_CHUNK`].
    fn chunk_cap(&self, ctx: &Context) -> usize {
        let bind = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
        let by_budget = CHUNK_BUDGET / (self.layer_floats() as u64 * 4);
        let by_w = bind / (self.mat as u64 * 4);
        let by_basis = bind / (((self.steps + 1) * self.vec) as u64 * 4);
        let by_index = (u32::MAX as u64 / 2) / self.mat as u64;
        by_budget.min(by_w).min(by_basis).min(by_index).clamp(1, MAX_CHUNK as u64) as usize
    }
}

/// θ = λ_max(WᵀW) of each job's matrix (one shape), or `None` where the device's Lanczos did
/// not converge within [`KMAX`] steps.
fn lanczos_chunk(ctx: &Context, seed: u64, jobs: &[Job], z: &Sizes, uniform_scale: f64) -> Result<Vec<Option<f64>>> {
    let c = jobs.len();
    let bstride = (z.steps + 1) * z.vec;
    let wc = ctx.storage("lanczos weights", (c * z.mat * 4) as u64)?;
    let basis = ctx.storage("lanczos basis", (c * bstride * 4) as u64)?;
    let u = ctx.storage("lanczos u", (c * z.vec * 4) as u64)?;
    let v = ctx.storage("lanczos v", (c * z.vec * 4) as u64)?;
    let tri = ctx.storage("lanczos tridiagonal", (c * z.steps * 2 * 4) as u64)?;
    let dots = ctx.storage("lanczos dots", (c * (z.steps + 1) * 4) as u64)?;
    let (first, last) = (jobs[0].l, jobs[c - 1].l);
    let what = || format!("the spectral norms (Lanczos) of layers {first}..={last} ({} x {}, {c} at once)", z.n_out, z.n_in);

    let mut rec = Recorder::new(ctx);
    let uniform = !jobs[0].unit;
    for (j, job) in jobs.iter().enumerate() {
        let pr = WeightsParams {
            n_in: z.n_in as u32,
            n_out: z.n_out as u32,
            s_in: z.s_in as u32,
            rows: z.rows as u32,
            layer: job.l as u32,
            dist: u32::from(uniform),
            scale: if uniform { uniform_scale as f32 } else { 1.0 },
            key_lo: seed as u32,
            key_hi: (seed >> 32) as u32,
            w0: (j * z.mat / 4) as u32,
            ..Default::default()
        };
        rec.dispatch(&ctx.draw_weights, pr, &[&wc], grid((z.mat / 4) as u64, 64));
    }
    let start: Vec<f32> = crate::linalg::lanczos_start(z.m).iter().map(|&x| x as f32).collect();
    for j in 0..c {
        ctx.queue.write_buffer(&basis, (j * bstride * 4) as u64, bytemuck::cast_slice(&start));
    }

    // A = WᵀW (vectors of n_in) when n_in ≤ n_out, else WWᵀ.
    let wtw = z.n_in <= z.n_out;
    let base = SpectralParams {
        layers: c as u32,
        n_in: z.n_in as u32,
        n_out: z.n_out as u32,
        s_in: z.s_in as u32,
        mat_floats: z.mat as u32,
        vec_floats: z.vec as u32,
        basis_floats: bstride as u32,
        kmax: z.steps as u32,
        op: u32::from(!wtw),
        ..Default::default()
    };
    let bufs = [&wc, &basis, &u, &v, &tri, &dots];
    let cu = c as u32;
    let rows_groups = (z.n_out.div_ceil(64) as u32, cu, 1);
    let cols_groups = (z.n_in.div_ceil(4 * 64) as u32, cu, 1);
    let m_groups = (z.m.div_ceil(64) as u32, cu, 1);
    let per_round = ((WORK_PER_SUBMIT / (2.0 * c as f64 * z.mat as f64)) as usize).clamp(1, STEPS_PER_ROUND);
    let mut theta: Vec<Option<f64>> = vec![None; c];
    let mut k = 0;
    while k < z.steps && theta.iter().any(Option::is_none) {
        let k1 = (k + per_round).min(z.steps);
        for step in k..k1 {
            let first = SpectralParams { step: step as u32, phase: 0, ..base };
            let second = SpectralParams { phase: 1, ..first };
            let (ka, kb) = if wtw { (&ctx.lz_rows, &ctx.lz_cols) } else { (&ctx.lz_cols, &ctx.lz_rows) };
            rec.dispatch(ka, first, &bufs, if wtw { rows_groups } else { cols_groups });
            rec.dispatch(kb, second, &bufs, if wtw { cols_groups } else { rows_groups });
            let dots_groups = ((step + 1).div_ceil(64) as u32, cu, 1);
            for pass in [first, second] {
                rec.dispatch(&ctx.lz_dots, pass, &bufs, dots_groups);
                rec.dispatch(&ctx.lz_axpy, pass, &bufs, m_groups);
            }
            rec.dispatch(&ctx.lz_norm, first, &bufs, (cu.div_ceil(64), 1, 1));
            rec.dispatch(&ctx.lz_next, first, &bufs, m_groups);
        }
        // The tridiagonal matrices come back in the submission that wrote them: one wait.
        let back = rec.flush_read(&[(&tri, 0, (c * z.steps * 2 * 4) as u64)], &what)?;
        k = k1;
        let t: Vec<f32> = bytemuck::pod_collect_to_vec(&back[0]);
        for (j, th) in theta.iter_mut().enumerate() {
            if th.is_some() {
                continue;
            }
            let tj = &t[j * z.steps * 2..];
            let alpha: Vec<f64> = (0..k).map(|i| tj[2 * i] as f64).collect();
            let beta: Vec<f64> = (0..k - 1).map(|i| tj[2 * i + 1] as f64).collect();
            let bk = tj[2 * (k - 1) + 1] as f64;
            if !alpha.iter().chain(&beta).all(|x| x.is_finite()) || !bk.is_finite() {
                continue; // never converges: the host norms it
            }
            let (t_top, done) = crate::linalg::ritz_test(&alpha, &beta, bk, GPU_SPECTRAL_NORM_RTOL);
            // k = m: the Krylov space is the whole space, T's top eigenvalue is λ_max.
            if done || k == z.m {
                *th = Some(t_top.max(0.0));
            }
        }
    }
    Ok(theta)
}
