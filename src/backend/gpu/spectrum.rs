//! The Jacobian's singular spectrum on the GPU: the forward pass (z^l, σ′(z^l)) and every
//! layer product `A Wᵀ` of an example's frame (A = Qᵀ, k × n_{l-1}) run on the device in f32
//! through the probe's kernels, weights drawn there by the Philox stream (or uploaded); the
//! QR after each layer, the triangular factor T and the final SVD stay on the host in f64,
//! in the CPU engine's own code ([`crate::spectrum`]'s frame), so the two engines differ
//! only by the f32 products and σ′.
//!
//! One submission and one wait per layer: the layer's QR needs its product, and the next
//! layer's product needs the QR. Everything the layer needs goes into that one submission
//! (weight draw, forward product and epilogue, one product per example) with σ′, the
//! finiteness flags and the products read back at its end.

use std::borrow::Cow;
use std::time::Instant;

use ndarray::{Array1, Array2, s};

use super::buffers::{binding_limit, round4};
use super::context::{Context, Params, FLAG_BIAS, FLAG_SCALED, FLAG_TANGENT};
use super::probe::activation_id;
use super::recorder::{grid, InFlight, Recorder};
use crate::backend::assemble::renormalise_rows;
use crate::backend::cpu::check_memory;
use crate::error::{Error, Result};
use crate::model::{InitKind, Params as NetParams, Problem};
use crate::rng::Stream;
use crate::spectrum::{SpectrumSplit, frame_bytes, log10_abs_det, validate, Chain, DepthSpectrum, ExampleSpectrum, Frame};

/// The device buffers of one group of examples: the forward pass's rows (ping-pong), the
/// frames A and their products Y, one layer's weights and bias.
struct Bufs {
    a: [wgpu::Buffer; 2],
    e: [wgpu::Buffer; 2],
    z: wgpu::Buffer,
    dsig: wgpu::Buffer,
    rec: wgpu::Buffer,
    bias: wgpu::Buffer,
    w: wgpu::Buffer,
    qa: wgpu::Buffer,
    y: wgpu::Buffer,
    /// Zero exponents for the frame products (the forward kernel reads one per row).
    ezero: wgpu::Buffer,
}

impl Bufs {
    fn new(ctx: &Context, examples: usize, frame_rows: usize, s: usize) -> Result<Bufs> {
        let ep = round4(examples);
        let f = |label: &str, floats: usize| ctx.storage(label, (floats * 4) as u64);
        Ok(Bufs {
            a: [f("spectrum a (even layers)", ep * s)?, f("spectrum a (odd layers)", ep * s)?],
            e: [f("spectrum e (even layers)", ep)?, f("spectrum e (odd layers)", ep)?],
            z: f("spectrum z", ep * s)?,
            dsig: f("spectrum σ′", ep * s)?,
            rec: f("spectrum records", 6 * examples)?,
            bias: f("spectrum bias", s)?,
            w: f("spectrum weights", s * s)?,
            qa: f("spectrum frames", frame_rows * s)?,
            y: f("spectrum frame products", frame_rows * s)?,
            ezero: f("spectrum zero exponents", frame_rows)?,
        })
    }
}

/// Rows the frame buffers need for `examples` frames of at most `k` rows each: the
/// register-blocked kernel reads up to 3 rows past an example's last.
fn frame_rows(examples: usize, k: usize) -> usize {
    round4(examples * k) + 4
}

/// [`crate::spectrum::measure`] on the GPU: the same arguments, errors and outputs, with
/// the forward pass and the layer products in f32 on the device (see the module's
/// documentation), and where the time went.
///
/// # Errors
/// As [`crate::spectrum::measure`]; [`Error::Device`] when a layer or a single example's
/// frame exceeds what one buffer binding holds on this adapter, or the device fails;
/// [`Error::Numerical`] when the forward pass leaves f32's range (unbounded σ that are not
/// homogeneous; the CPU engine's f64 goes much further).
pub fn spectrum(ctx: &Context, p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool) -> Result<(Vec<DepthSpectrum>, SpectrumSplit)> {
    let top = validate(p, examples, chain, depths, det_check)?;
    let net = &p.net;
    let start = chain.start();
    check_memory(examples as u64 * frame_bytes(&net.widths[..=top], start), "the spectrum", "lower --examples or the width")?;
    let s = round4(*net.widths[..=top].iter().max().unwrap());
    let k = net.widths[start];
    let limit = binding_limit(ctx);
    let row_bytes = (s * 4) as u64;
    if row_bytes * s as u64 > limit || row_bytes * frame_rows(1, k) as u64 > limit {
        return Err(Error::Device(format!(
            "a {s}-wide layer needs {} MiB in one buffer binding, more than the {} MiB '{}' allows; use --backend cpu",
            (row_bytes * s as u64) >> 20,
            limit >> 20,
            ctx.info.name
        )));
    }
    // As many examples at once as one binding holds.
    let group = (1..=examples).take_while(|&g| row_bytes * frame_rows(g, k) as u64 <= limit).last().unwrap_or(1);
    let mut out: Vec<DepthSpectrum> = Vec::new();
    let mut split = SpectrumSplit::default();
    for first in (0..examples).step_by(group) {
        let xs = first..(first + group).min(examples);
        let (part, sp) = Group::run(ctx, p, xs, chain, depths, top, det_check)?;
        split.add(&sp);
        if out.is_empty() {
            out = part;
            continue;
        }
        for (o, d) in out.iter_mut().zip(part) {
            o.examples.extend(d.examples);
            if let (Some(a), Some(b)) = (&mut o.log10_abs_det, d.log10_abs_det) {
                a.extend(b);
            }
        }
    }
    Ok((out, split))
}

/// One group of examples on the device, all layers.
struct Group<'a> {
    ctx: &'a Context,
    p: &'a Problem,
    bufs: Bufs,
    rec: Recorder<'a>,
    /// Examples in the group.
    e: usize,
    /// Rows carry a power-of-two exponent (as the probe: homogeneous σ, or σ(0) = 0).
    scaled: bool,
    split: SpectrumSplit,
}

impl<'a> Group<'a> {
    fn run(ctx: &'a Context, p: &'a Problem, xs: std::ops::Range<usize>, chain: Chain, depths: &[usize], top: usize, det_check: bool) -> Result<(Vec<DepthSpectrum>, SpectrumSplit)> {
        let net = &p.net;
        let start = chain.start();
        let e = xs.len();
        let s = round4(*net.widths[..=top].iter().max().unwrap());
        let bufs = Bufs::new(ctx, e, frame_rows(e, net.widths[start]), s)?;
        let act = net.activation;
        let mut g = Group { ctx, p, bufs, rec: Recorder::new(ctx), e, scaled: act.is_homogeneous() || act.slopes_at_zero().is_some(), split: SpectrumSplit::default() };
        g.upload_inputs(xs.clone());
        let sum_log10 = |d: ndarray::ArrayView1<f64>| d.iter().map(|v| v.abs().log10()).sum::<f64>();
        let mut log10_det = vec![0.0; e];
        let mut frames: Vec<Frame> = if start == 0 { (0..e).map(|_| Frame::identity(net.widths[0])).collect() } else { Vec::new() };
        let mut pending: Option<Array2<f64>> = None; // Σ′(z^{l-1}) for ∂z/∂z chains
        let mut out = Vec::with_capacity(depths.len());
        for l in 1..=top {
            let t_host = Instant::now();
            // The frames this layer multiplies: Qᵀ, or Qᵀ Σ′(z^{l-1}) for ∂z/∂z chains (a Σ′
            // with exact zeros first as a factor of its own, as on the CPU).
            if l > start {
                if let (Chain::FromLayer(_), Some(d_prev)) = (chain, &pending) {
                    for (f, d) in frames.iter_mut().zip(d_prev.rows()) {
                        if d.iter().any(|&v| v == 0.0) {
                            let q = f.qt.clone();
                            f.absorb(q, Some(d));
                        } else {
                            f.qt *= &d.insert_axis(ndarray::Axis(0));
                        }
                    }
                }
                g.upload_frames(&frames, net.widths[l - 1]);
            }
            let host_w = (!net.weights_are_streamable() || (det_check && l > start)).then(|| net.layer(l).0);
            g.split.host_seconds += t_host.elapsed().as_secs_f64();

            let t_dev = Instant::now();
            let (dsig, y) = g.layer(l, host_w.as_deref(), if l > start { Some(&frames) } else { None })?;
            g.split.device_seconds += t_dev.elapsed().as_secs_f64();

            let t_host = Instant::now();
            if l == start {
                frames = (0..e).map(|_| Frame::identity(net.widths[start])).collect();
                pending = Some(dsig);
                g.split.host_seconds += t_host.elapsed().as_secs_f64();
                continue;
            }
            if l < start {
                continue;
            }
            if let Some(w) = host_w.as_deref().filter(|_| det_check) {
                let dw = log10_abs_det(w);
                for (xi, sdet) in log10_det.iter_mut().enumerate() {
                    *sdet += dw + match chain {
                        Chain::InputOutput => sum_log10(dsig.row(xi)),
                        Chain::FromLayer(_) => sum_log10(pending.as_ref().expect("set at the start layer").row(xi)),
                    };
                }
            }
            let (n_out, s_out) = (net.widths[l], round4(net.widths[l]));
            let mut row = 0;
            for (xi, f) in frames.iter_mut().enumerate() {
                let kf = f.qt.nrows();
                let x = Array2::from_shape_fn((kf, n_out), |(i, j)| y[(row + i) * s_out + j] as f64);
                row += kf;
                match chain {
                    Chain::InputOutput => f.absorb(x, Some(dsig.row(xi))),
                    Chain::FromLayer(_) => f.absorb(x, None),
                }
            }
            if depths.binary_search(&l).is_ok() {
                let count = net.widths[l].min(net.widths[start]);
                let examples = frames
                    .iter()
                    .enumerate()
                    .map(|(xi, f)| Ok(ExampleSpectrum { example: xi, log10_singular_values: f.log10_singular_values(count)? }))
                    .collect::<Result<Vec<_>>>()?;
                out.push(DepthSpectrum { depth: l, examples, log10_abs_det: det_check.then(|| log10_det.clone()) });
            }
            pending = Some(dsig);
            g.split.host_seconds += t_host.elapsed().as_secs_f64();
        }
        // Example indices are the batch's, not the group's.
        for d in &mut out {
            for x in &mut d.examples {
                x.example += xs.start;
            }
        }
        Ok((out, g.split))
    }

    /// a^0 of the group's examples (renormalised when rows carry an exponent).
    fn upload_inputs(&self, xs: std::ops::Range<usize>) {
        let n0 = self.p.net.widths[0];
        let s0 = round4(n0);
        let mut a0 = self.p.inputs.slice(s![xs, ..]).to_owned();
        let mut e0 = vec![0i64; self.e];
        if self.scaled {
            renormalise_rows(&mut a0, &mut e0);
        }
        let mut v = vec![0f32; round4(self.e) * s0];
        for (x, r) in a0.rows().into_iter().enumerate() {
            for (j, &a) in r.iter().enumerate() {
                v[x * s0 + j] = a as f32;
            }
        }
        self.ctx.queue.write_buffer(&self.bufs.a[0], 0, bytemuck::cast_slice(&v));
        let e32: Vec<i32> = e0.iter().map(|&x| x as i32).collect();
        self.ctx.queue.write_buffer(&self.bufs.e[0], 0, bytemuck::cast_slice(&e32));
    }

    /// Every frame's Qᵀ in f32, stacked (example after example), row stride round4(n_in).
    fn upload_frames(&self, frames: &[Frame], n_in: usize) {
        let s_in = round4(n_in);
        let rows: usize = frames.iter().map(|f| f.qt.nrows()).sum();
        let mut v = vec![0f32; rows * s_in];
        let mut r0 = 0;
        for f in frames {
            for (i, r) in f.qt.rows().into_iter().enumerate() {
                for (j, &q) in r.iter().enumerate() {
                    v[(r0 + i) * s_in + j] = q as f32;
                }
            }
            r0 += f.qt.nrows();
        }
        self.ctx.queue.write_buffer(&self.bufs.qa, 0, bytemuck::cast_slice(&v));
    }

    /// Layer l on the device: W^l, the forward product and epilogue, and (with `frames`)
    /// each frame's product Qᵀ W^lᵀ; returns σ′(z^l) (e × n_l) and the products (stacked
    /// rows of stride round4(n_l), empty without frames).
    fn layer(&mut self, l: usize, host_w: Option<&Array2<f64>>, frames: Option<&Vec<Frame>>) -> Result<(Array2<f64>, Vec<f32>)> {
        let net = &self.p.net;
        let (n_in, n_out) = (net.widths[l - 1], net.widths[l]);
        let (s_in, s_out) = (round4(n_in), round4(n_out));
        let (ctx, e) = (self.ctx, self.e);
        let b = &self.bufs;
        let what = move || format!("the spectrum's layer {l} ({e} example(s), {n_in} → {n_out})");
        let mut flights: Vec<InFlight> = Vec::new();
        // W^l: drawn on the device, or uploaded.
        match (&net.params, host_w) {
            (NetParams::Generated { init, seed }, _) if net.weights_are_streamable() => {
                let (kind, scale) = match init.kind {
                    InitKind::XavierUniform => (1, (6.0 / (n_in + n_out) as f64).sqrt()),
                    _ => (0, (init.layer_sigma_w2(n_in, n_out) / n_in as f64).sqrt()),
                };
                let rows = round4(n_out);
                let pr = Params { n_in: n_in as u32, n_out: n_out as u32, s_in: s_in as u32, layer: l as u32, kind, scale: scale as f32, key_lo: *seed as u32, key_hi: (*seed >> 32) as u32, aux0: rows as u32, ..Default::default() };
                self.rec.dispatch(&ctx.draw_weights, pr, &[&b.w], grid((rows * s_in / 4) as u64, 64));
            }
            (_, Some(w)) => {
                let mut v = vec![0f32; round4(n_out) * s_in];
                for ((i, j), &x) in w.indexed_iter() {
                    v[i * s_in + j] = x as f32;
                }
                ctx.queue.write_buffer(&b.w, 0, bytemuck::cast_slice(&v));
            }
            _ => return Err(Error::Internal("the spectrum's weights are neither drawn nor given".into())),
        }
        let bias: Cow<Array1<f64>> = match &net.params {
            NetParams::Generated { init, seed } => Cow::Owned(init.biases(&Stream::new(*seed), l, n_out)),
            NetParams::Stored(sp) => Cow::Borrowed(&sp.b[l - 1]),
        };
        let has_bias = bias.iter().any(|&v| v != 0.0);
        if has_bias {
            let v: Vec<f32> = bias.iter().map(|&x| x as f32).collect();
            ctx.queue.write_buffer(&b.bias, 0, bytemuck::cast_slice(&v));
        }
        // The forward pass, as the probe runs it.
        let act = net.activation_at(l);
        let (kind, alpha) = activation_id(act);
        let mut flags = if self.scaled { FLAG_SCALED } else { 0 } | if has_bias { FLAG_BIAS } else { 0 };
        let (mut right, mut left) = (0f32, 0f32);
        if let (false, Some((r, lf))) = (act.is_homogeneous(), act.slopes_at_zero()) {
            flags |= FLAG_TANGENT;
            (right, left) = (r as f32, lf as f32);
        }
        let sizes = Params { n_in: n_in as u32, n_out: n_out as u32, s_in: s_in as u32, s_out: s_out as u32, layer: l as u32, ..Default::default() };
        let fwd = Params { batch: e as u32, kind, flags, alpha, scale: right, aux0: left.to_bits(), ..sizes };
        let (i, o) = ((l - 1) % 2, l % 2);
        let (mm, groups) = ctx.mm_forward_on(ctx.matmul, n_out, e);
        self.rec.dispatch(mm, fwd, &[&b.a[i], &b.w, &b.bias, &b.e[i], &b.z], groups);
        self.rec.dispatch(&ctx.forward_post, fwd, &[&b.z, &b.a[o], &b.dsig, &b.e[i], &b.e[o], &b.rec], grid(e as u64, 1));
        // Each frame's product: rows row0.. of the stacked frames, no bias, no exponents.
        let mut rows = 0;
        for f in frames.into_iter().flatten() {
            let kf = f.qt.nrows();
            let (mm, groups) = ctx.mm_forward_on(ctx.matmul, n_out, kf);
            self.rec.dispatch(mm, Params { batch: kf as u32, row0: rows as u32, ..sizes }, &[&b.qa, &b.w, &b.bias, &b.ezero, &b.y], groups);
            let madds = (kf * n_in * n_out) as f64;
            self.rec.work += madds;
            self.split.product_madds += madds;
            rows += kf;
            if self.rec.work >= self.rec.work_budget() {
                // A bounded submission (no OS watchdog trips); its results stay on the device.
                flights.extend(self.rec.submit_read(&[], &what));
                self.split.submissions += 1;
            }
        }
        let reads = [(&b.dsig, 0, (e * s_out * 4) as u64), (&b.rec, (5 * e * 4) as u64, (e * 4) as u64), (&b.y, 0, (rows * s_out * 4) as u64)];
        let last = self.rec.submit_read(&reads, &what).ok_or_else(|| Error::Internal("the spectrum's layer recorded nothing".into()))?;
        self.split.submissions += 1;
        for f in flights {
            self.rec.finish(f)?;
        }
        let back = self.rec.finish(last)?;
        let dsig: Vec<f32> = bytemuck::pod_collect_to_vec(&back[0]);
        let finite: Vec<f32> = bytemuck::pod_collect_to_vec(&back[1]);
        if let Some(x) = finite.iter().position(|&v| v != 1.0) {
            return Err(Error::Numerical(format!(
                "the forward pass left f32's range at layer {l} (example {x}) on the GPU, so its Jacobian is undefined there in f32; --backend cpu computes it in f64"
            )));
        }
        let dsig = Array2::from_shape_fn((e, n_out), |(x, j)| dsig[x * s_out + j] as f64);
        Ok((dsig, bytemuck::pod_collect_to_vec(&back[2])))
    }
}
