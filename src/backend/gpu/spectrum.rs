//! The Jacobian's singular spectrum on the GPU: every layer product `Qᵀ W^lᵀ` of every
//! example's frame (k × n_{l-1} by n_{l-1} × n_l, the O(n²k) part of a layer) runs on the
//! device in f32 through the probe's forward matmul kernel. The forward pass, the QR after
//! each layer, the triangular factor T and the final SVD stay on the host in f64, in the
//! CPU engine's own code ([`crate::spectrum`]), so the two engines differ only by the
//! products' f32 rounding.
//!
//! Why the forward pass stays on the host: it is O(n²) per layer and example beside the
//! products' O(n²k), and in f32 it would change the Jacobian itself, not just round it: in
//! the chaotic phase (e.g. tanh at σ_w² = 4) an f32 trajectory leaves the f64 one by
//! ~10^-7·λ^l, and at depth 100 the spectra of the two trajectories differed by 0.6
//! decades (measured with the device's forward kernels, width 64). The weights are
//! uploaded from the host, which draws them in f64 for its forward pass anyway.
//!
//! One submission and one wait per layer (more when a layer's products exceed the work one
//! submission may hold): the layer's QR needs its products, and the next layer's products
//! need the QR.

use std::time::Instant;

use ndarray::{Array2, ArrayView2};

use super::buffers::{binding_limit, round4};
use super::context::Context;
use super::params::MatmulParams;
use super::recorder::{InFlight, Recorder};
use crate::error::{Error, Result};
use crate::model::Problem;
use crate::spectrum::{measure_with, validate, Chain, DepthSpectrum, SpectrumSplit};

/// Rows the frame buffers hold for `examples` frames of at most `k` rows: the
/// register-blocked kernel reads up to 3 rows past an example's last.
fn frame_rows(examples: usize, k: usize) -> usize {
    round4(examples * k) + 4
}

/// The device side: one layer's weights, the frames (Qᵀ in f32, stacked example after
/// example) and their products, sized for the widest layer.
struct Products<'a> {
    ctx: &'a Context,
    rec: Recorder<'a>,
    w: wgpu::Buffer,
    qa: wgpu::Buffer,
    y: wgpu::Buffer,
    /// Zero exponents and an unused bias (the forward kernel binds both; no FLAG_BIAS).
    ezero: wgpu::Buffer,
    bias: wgpu::Buffer,
    /// Frame rows the buffers hold.
    cap: usize,
    split: SpectrumSplit,
}

impl<'a> Products<'a> {
    /// Buffers for frames of at most `k` rows and layers at most `s` (a multiple of 4) wide:
    /// as many examples' frames at once as one binding holds, at most `examples`.
    fn new(ctx: &'a Context, examples: usize, k: usize, s: usize) -> Result<Products<'a>> {
        let limit = binding_limit(ctx);
        let row = (4 * s) as u64;
        if row * s as u64 > limit || row * frame_rows(1, k) as u64 > limit {
            return Err(Error::Device(format!(
                "the spectrum's {s}-wide layers need {} MiB in one buffer binding, more than the {} MiB '{}' allows; use --backend cpu",
                (row * s.max(frame_rows(1, k)) as u64) >> 20,
                limit >> 20,
                ctx.info.name
            )));
        }
        let group = (1..=examples).take_while(|&g| row * frame_rows(g, k) as u64 <= limit).last().unwrap_or(1);
        let cap = frame_rows(group, k);
        let f = |label: &str, floats: usize| ctx.storage(label, (floats * 4) as u64);
        Ok(Products {
            ctx,
            rec: Recorder::new(ctx),
            w: f("spectrum weights", s * s)?,
            qa: f("spectrum frames", cap * s)?,
            y: f("spectrum frame products", cap * s)?,
            ezero: f("spectrum zero exponents", cap)?,
            bias: f("spectrum bias (unused)", 4)?,
            cap,
            split: SpectrumSplit::default(),
        })
    }

    /// Every `qts[i] · wᵀ` on the device, as many frames per submission as the buffers hold.
    fn apply(&mut self, l: usize, w: &Array2<f64>, qts: &[ArrayView2<f64>]) -> Result<Vec<Array2<f64>>> {
        let t0 = Instant::now();
        let (n_out, n_in) = w.dim();
        let s_in = round4(n_in);
        let mut wv = vec![0f32; round4(n_out) * s_in];
        for ((i, j), &x) in w.indexed_iter() {
            wv[i * s_in + j] = x as f32;
        }
        self.ctx.queue.write_buffer(&self.w, 0, bytemuck::cast_slice(&wv));
        let mut out = Vec::with_capacity(qts.len());
        let mut first = 0;
        while first < qts.len() {
            // The frames that fit (at least one: the buffers hold the largest).
            let mut last = first;
            let mut rows = 0;
            while last < qts.len() && round4(rows + qts[last].nrows()) + 4 <= self.cap {
                rows += qts[last].nrows();
                last += 1;
            }
            out.extend(self.group(l, &qts[first..last], rows, n_in, n_out)?);
            first = last;
        }
        self.split.device_seconds += t0.elapsed().as_secs_f64();
        Ok(out)
    }

    /// The products of `qts` (together `rows` rows), stacked in one submission's buffers.
    fn group(&mut self, l: usize, qts: &[ArrayView2<f64>], rows: usize, n_in: usize, n_out: usize) -> Result<Vec<Array2<f64>>> {
        let (s_in, s_out) = (round4(n_in), round4(n_out));
        let ctx = self.ctx;
        let mut v = vec![0f32; rows * s_in];
        let mut r0 = 0;
        for q in qts {
            for ((i, j), &x) in q.indexed_iter() {
                v[(r0 + i) * s_in + j] = x as f32;
            }
            r0 += q.nrows();
        }
        ctx.queue.write_buffer(&self.qa, 0, bytemuck::cast_slice(&v));
        let what = move || format!("the spectrum's products at layer {l} ({rows} frame rows, {n_in} → {n_out})");
        let sizes = MatmulParams { n_in: n_in as u32, n_out: n_out as u32, s_in: s_in as u32, s_out: s_out as u32, ..Default::default() };
        let mut flights: Vec<InFlight> = Vec::new();
        let mut r0 = 0;
        for q in qts {
            let k = q.nrows();
            // z = a Wᵀ with a = this frame's rows (row0..), no bias and zero exponents.
            let (mm, groups) = ctx.mm_forward_on(ctx.matmul, n_out, k);
            self.rec.dispatch(mm, MatmulParams { batch: k as u32, row0: r0 as u32, ..sizes }, &[&self.qa, &self.w, &self.bias, &self.ezero, &self.y], groups);
            let madds = (k * n_in * n_out) as f64;
            self.rec.work += madds;
            self.split.product_madds += madds;
            r0 += k;
            if self.rec.work >= self.rec.work_budget() {
                // A bounded submission (no OS watchdog trips); its results stay on the device.
                flights.extend(self.rec.submit_read(&[], &what));
                self.split.submissions += 1;
            }
        }
        let last = self.rec.submit_read(&[(&self.y, 0, (rows * s_out * 4) as u64)], &what);
        self.split.submissions += usize::from(last.is_some());
        for f in flights {
            self.rec.finish(f)?;
        }
        let y: Vec<f32> = match last {
            Some(f) => bytemuck::pod_collect_to_vec(&self.rec.finish(f)?[0]),
            None => Vec::new(),
        };
        let mut r0 = 0;
        Ok(qts
            .iter()
            .map(|q| {
                let x = Array2::from_shape_fn((q.nrows(), n_out), |(i, j)| y[(r0 + i) * s_out + j] as f64);
                r0 += q.nrows();
                x
            })
            .collect())
    }
}

/// [`crate::spectrum::measure`] with the layer products on the device (see the module's
/// documentation): the same arguments, errors and outputs, and where the time went.
///
/// # Errors
/// As [`crate::spectrum::measure`]; [`Error::Device`] when a layer or one example's frame
/// exceeds what one buffer binding holds on this adapter, or the device fails.
pub fn spectrum(ctx: &Context, p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool) -> Result<(Vec<DepthSpectrum>, SpectrumSplit)> {
    let top = validate(p, examples, chain, depths, det_check)?;
    let w = &p.net.widths;
    let mut dev = Products::new(ctx, examples, w[chain.start()], round4(*w[..=top].iter().max().unwrap()))?;
    let t0 = Instant::now();
    let out = measure_with(p, examples, chain, depths, det_check, &mut |l, w, qts| dev.apply(l, w, qts))?;
    let mut split = dev.split;
    split.host_seconds = t0.elapsed().as_secs_f64() - split.device_seconds;
    Ok((out, split))
}
