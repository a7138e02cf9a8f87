//! The probe on the GPU: forward pass with √L checkpoints, segment-wise recomputation and
//! backpropagation of renormalised δ, per-layer records read back and turned into the
//! log10 statistics of docs/MATH.md in f64 on the host (the same arithmetic as the CPU backend).
//!
//! Several depths at once (a depth sweep, [`probe_depths`]): networks of different depth
//! with the same seed share their first layers, so one forward pass to the deepest depth
//! serves every depth, and the backward pass stacks the δ's of every depth ≥ l as extra
//! rows (B per active depth): a depth joins at its own top layer with its own output error,
//! and each layer's weights are drawn and multiplied once for all depths. A single probe is
//! the one-depth case.
//!
//! Several networks of equal widths (a sweep's configurations: other activations, inits,
//! σ_w, σ_b, seeds) run side by side ([`probe_depths_many`]): every dispatch covers all of
//! them (workgroup_id.z = network), each network reading its own parameter slot, which says
//! where its block of every shared buffer starts.
//!
//! Device memory per network: ⌈L/K⌉ checkpoints and 2K kept rows of B × N floats (K ≈ √L),
//! one layer's weights, L small forward records, and D·B × N for the stacked δ and the D
//! output errors: B·N·(√L + D), never L·N² or L·B·N. Backward records are read back per
//! submission.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use ndarray::Array2;

use super::buffers::{max_depths_per_pass, round4, Bufs, Plan, GRAM_PARTS, LAYERS_PER_SUBMIT, MEAN_PARTS, ORTHO_CACHE_BUDGET};
use super::context::{Context, FLAG_BIAS, FLAG_DSIG, FLAG_JOIN, FLAG_REC_NEXT, FLAG_SCALED, FLAG_TANGENT, MAX_NETS};
use super::params::{MatmulParams, PointwiseParams, ReduceParams, WeightsParams};
use super::recorder::{grid, InFlight, Recorder};
use crate::backend::assemble::{output_error, renormalise_rows, Assembly, Grad, LayerSums};
use crate::backend::norms::NormCache;
use crate::backend::plan;
use crate::error::{Error, Result};
use crate::model::{Activation, Cost, InitKind, Params as NetParams, Problem};
use crate::rng::Stream;
use crate::stats::Report;


/// The activation's id in shaders/pointwise.wgsl.
pub fn activation_id(a: Activation) -> (u32, f32) {
    match a {
        Activation::Sigmoid => (0, 0.0),
        Activation::Tanh => (1, 0.0),
        Activation::Relu => (2, 0.0),
        Activation::LeakyRelu(s) => (3, s as f32),
        Activation::Linear => (4, 0.0),
        Activation::Erf => (5, 0.0),
        Activation::HardTanh => (6, 0.0),
        Activation::Softplus => (7, 0.0),
        Activation::Silu => (8, 0.0),
        Activation::Gelu => (9, 0.0),
        Activation::Elu => (10, 0.0),
        Activation::Selu => (11, 0.0),
    }
}

/// One probe in flight: the networks (one, or several of equal shape run side by side), their
/// plan and buffers, the recorder, and where it is.
struct Run<'a> {
    ctx: &'a Context,
    /// The networks; `p` is the first, whose widths, batch, depth and cost all share.
    ps: &'a [&'a Problem],
    p: &'a Problem,
    pl: Plan,
    rec: Recorder<'a>,
    /// Per network: do its rows carry a power-of-two exponent (the log domain)? Homogeneous
    /// σ at every scale, σ with σ(0) = 0 (its tangent) while the row is tiny.
    scaled: Vec<bool>,
    /// The depths (sorted), and whether the forward pass captures their outputs.
    ds: &'a [usize],
    capture: bool,
    /// Weight-ring and bias-ring slots used in the current submission.
    w_used: usize,
    b_used: usize,
    /// Backward-record ring: floats used this submission, and (layer, offset, blocks) of
    /// each layer recorded in it.
    brec_used: usize,
    pending: Vec<(usize, usize, usize)>,
    /// The last submission, still running, with the layers whose records it reads back:
    /// the host drains it while the device runs the next one.
    in_flight: Option<(InFlight, Vec<(usize, usize, usize)>)>,
    /// The forward records of every network (L·rs floats each), on the host once the
    /// forward pass is done.
    frec: Vec<f32>,
    /// grads[n][q][l-1]: network n, depth ds[q], layer l.
    grads: Vec<Vec<Vec<Grad>>>,
    phase: &'static str,
    first_layer: usize,
    cur_layer: usize,
    ortho_cache: Option<Vec<Option<std::sync::Arc<Vec<f32>>>>>,
}

impl<'a> Run<'a> {
    fn what(&self) -> String {
        let w = &self.p.net.widths;
        let (lo, hi) = (self.first_layer.min(self.cur_layer), self.first_layer.max(self.cur_layer));
        let nets = if self.pl.nets > 1 { format!(", {} networks at once", self.pl.nets) } else { String::new() };
        format!("{} (layers {lo}..={hi}, batch {}, widths {}..{}{nets})", self.phase, self.pl.b, w.iter().min().unwrap(), w.iter().max().unwrap())
    }

    /// Submits what was recorded, with the backward records it writes and `reads` copied
    /// back in the same submission; returns it with the layers whose records it carries.
    fn submit(&mut self, b: &Bufs, reads: &[(&wgpu::Buffer, u64, u64)]) -> Option<(InFlight, Vec<(usize, usize, usize)>)> {
        let what = self.what();
        let brec_bytes = if self.pending.is_empty() { 0 } else { ((self.pl.off(self.pl.nets - 1).brec + self.brec_used) * 4) as u64 };
        let mut all = vec![(&b.brec, 0, brec_bytes)];
        all.extend_from_slice(reads);
        let f = self.rec.submit_read(&all, &|| what.clone());
        let pending = std::mem::take(&mut self.pending);
        self.w_used = 0;
        self.b_used = 0;
        self.brec_used = 0;
        self.first_layer = self.cur_layer;
        f.map(|f| (f, pending))
    }

    /// Submits what was recorded, then drains the previous submission's records (waiting
    /// for it, once) while the device runs this one: records are double-buffered.
    fn flush(&mut self, b: &Bufs) -> Result<()> {
        let f = self.submit(b, &[]);
        self.settle()?;
        self.in_flight = f;
        Ok(())
    }

    /// Waits for the submission in flight, if any, and drains its records; returns the
    /// bytes of its other reads.
    fn settle(&mut self) -> Result<Vec<Vec<u8>>> {
        let Some((f, pending)) = self.in_flight.take() else { return Ok(Vec::new()) };
        let mut back = self.rec.finish(f)?;
        let brec = back.remove(0);
        self.drain(&pending, &f32s(&brec));
        Ok(back)
    }

    /// Submits what was recorded with `reads` copied back in the same submission, waits for
    /// it (after the one in flight) and returns the bytes of `reads`.
    fn flush_reading(&mut self, b: &Bufs, reads: &[(&wgpu::Buffer, u64, u64)]) -> Result<Vec<Vec<u8>>> {
        let f = self.submit(b, reads);
        self.settle()?;
        self.in_flight = f;
        let back = self.settle()?;
        Ok(if back.is_empty() { reads.iter().map(|_| Vec::new()).collect() } else { back })
    }

    /// Turns the backward records of the last submission into each depth's gradient norms
    /// ([`LayerSums`], the CPU engine's arithmetic).
    fn drain(&mut self, pending: &[(usize, usize, usize)], data: &[f32]) {
        let (bsz, rs, rb, p1, p2, nd) = (self.pl.b, self.pl.rs, self.pl.rb, self.pl.p1, self.pl.p2, self.pl.nd);
        let f64s = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
        for &(l, off, blocks) in pending {
            for n in 0..self.pl.nets {
                let o = self.pl.off(n);
                let f = &self.frec[o.rec + (l - 1) * rs..o.rec + l * rs];
                let (sq_a, ea) = (f64s(&f[bsz..2 * bsz]), f64s(&f[2 * bsz..3 * bsz]));
                for j in 0..blocks {
                    let r = &data[o.brec + off + j * rb..o.brec + off + (j + 1) * rb];
                    let (sq_d, ed) = (f64s(&r[..bsz]), f64s(&r[bsz..2 * bsz]));
                    // The device's partial sums, at the scales LayerSums defines.
                    let mean_sq: f64 = r[2 * bsz..2 * bsz + p1].iter().map(|&v| v as f64).sum();
                    let gram: f64 = r[2 * bsz + p1..2 * bsz + p1 + p2].iter().map(|&v| v as f64).sum();
                    let sums = LayerSums { sq_d: &sq_d, ed: &ed, sq_a: &sq_a, ea: &ea, mean_sq, gram };
                    self.grads[n][nd - 1 - j][l - 1] = sums.grad();
                }
            }
        }
    }

    /// Starts work on layer l, submitting what was recorded when a budget is reached.
    /// `rows`: the rows multiplied (B forward, B per active depth backward); `brec`: the
    /// backward-record floats the layer will write.
    fn begin_layer(&mut self, b: &Bufs, l: usize, need_weights: bool, rows: usize, brec: usize) -> Result<()> {
        let (n_out, n_in) = (self.p.net.widths[l], self.p.net.widths[l - 1]);
        let ring_full = (need_weights && self.w_used >= self.pl.ring && self.pl.ring > 1) || self.b_used >= LAYERS_PER_SUBMIT || self.brec_used + brec > self.pl.brec_cap;
        if ring_full || self.rec.full(LAYERS_PER_SUBMIT) {
            self.flush(b)?;
        }
        if self.rec.layers == 0 {
            self.first_layer = l;
        }
        self.cur_layer = l;
        self.rec.layers += 1;
        let draw = if self.p.net.weights_are_streamable() && need_weights { 25.0 * (n_in * n_out) as f64 } else { 0.0 };
        self.rec.work += ((rows * n_in * n_out) as f64 + draw) * self.pl.nets as f64;
        Ok(())
    }

    /// Puts W^l of every network into a weight buffer (drawn on the device, or uploaded)
    /// and returns the buffer's index.
    fn weights(&mut self, b: &Bufs, l: usize) -> Result<usize> {
        let net = &self.p.net;
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let (rows, s_in) = (round4(n_out), round4(n_in));
        if net.weights_are_streamable() {
            let mut params = Vec::with_capacity(self.pl.nets);
            for (n, q) in self.ps.iter().enumerate() {
                let NetParams::Generated { init, seed } = &q.net.params else {
                    return Err(Error::Internal("networks run together must all have generated weights".into()));
                };
                let (dist, scale) = match init.kind {
                    InitKind::XavierUniform => (1, (6.0 / (n_in + n_out) as f64).sqrt()),
                    _ => (0, (init.layer_sigma_w2(n_in, n_out) / n_in as f64).sqrt()),
                };
                params.push(WeightsParams {
                    n_in: n_in as u32,
                    n_out: n_out as u32,
                    s_in: s_in as u32,
                    rows: rows as u32,
                    layer: l as u32,
                    dist,
                    scale: scale as f32,
                    key_lo: *seed as u32,
                    key_hi: (*seed >> 32) as u32,
                    w0: (self.pl.off(n).w / 4) as u32,
                    count: 0,
                });
            }
            let (gx, gy, _) = grid((rows * s_in / 4) as u64, 64);
            self.rec.dispatch_nets(&self.ctx.draw_weights, &params, &[&b.w[0]], (gx, gy));
            return Ok(0);
        }
        let slot = self.w_used % self.pl.ring;
        self.w_used += 1;
        let data = self.host_weights(l);
        self.ctx.queue.write_buffer(&b.w[slot], 0, bytemuck::cast_slice(&data[..]));
        Ok(slot)
    }

    /// W^l as padded f32 rows, from stored parameters or the (cached) orthogonal draw
    /// (one network: stored and orthogonal weights never run side by side).
    fn host_weights(&mut self, l: usize) -> std::sync::Arc<Vec<f32>> {
        if let Some(cache) = &self.ortho_cache {
            if let Some(w) = &cache[l] {
                return w.clone();
            }
        }
        let net = &self.p.net;
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let s_in = round4(n_in);
        let (w, _) = net.layer(l);
        let mut out = vec![0f32; round4(n_out) * s_in];
        for (i, r) in w.rows().into_iter().enumerate() {
            for (j, v) in r.iter().enumerate() {
                out[i * s_in + j] = *v as f32;
            }
        }
        let out = std::sync::Arc::new(out);
        if let Some(cache) = &mut self.ortho_cache {
            cache[l] = Some(out.clone());
        }
        out
    }

    /// Uploads b^l of every network into the bias ring; returns the slot's offset within
    /// each network's ring (floats) and, per network, whether its b^l is non-zero.
    fn bias(&mut self, bufs: &Bufs, l: usize) -> (u32, Vec<bool>) {
        let slot = self.b_used;
        let off = slot * self.pl.s;
        let mut nonzero = Vec::with_capacity(self.pl.nets);
        for (n, q) in self.ps.iter().enumerate() {
            let net = &q.net;
            let b: Cow<ndarray::Array1<f64>> = match &net.params {
                NetParams::Generated { init, seed } => Cow::Owned(init.biases(&Stream::new(*seed), l, net.widths[l])),
                NetParams::Stored(sp) => Cow::Borrowed(&sp.b[l - 1]),
            };
            let nz = b.iter().any(|&v| v != 0.0);
            if nz {
                let data: Vec<f32> = b.iter().map(|&v| v as f32).collect();
                self.ctx.queue.write_buffer(&bufs.bias, ((self.pl.off(n).bias + off) * 4) as u64, bytemuck::cast_slice(&data));
            }
            nonzero.push(nz);
        }
        if nonzero.iter().any(|&z| z) {
            self.b_used += 1;
        }
        (off as u32, nonzero)
    }

    /// Network n's sizes and offsets at layer l, from which each family's block is built.
    fn geometry(&self, l: usize, n: usize) -> Geometry {
        let (n_out, n_in) = (self.p.net.widths[l], self.p.net.widths[l - 1]);
        let o = self.pl.off(n);
        Geometry {
            batch: self.pl.b as u32,
            n_in: n_in as u32,
            n_out: n_out as u32,
            s_in: round4(n_in) as u32,
            s_out: round4(n_out) as u32,
            rec: (o.rec + (l - 1) * self.pl.rs) as u32,
            row0: o.row0 as u32,
            srow0: o.srow0 as u32,
            w0: (o.w / 4) as u32,
        }
    }

    /// Forward layer l of every network from (a_in, e_in) into (a_out, e_out) with σ′ into
    /// dsig_out.
    fn forward_layer(&mut self, b: &Bufs, l: usize, io: [&wgpu::Buffer; 5]) -> Result<()> {
        let [a_in, e_in, a_out, e_out, dsig_out] = io;
        self.begin_layer(b, l, true, self.pl.b, 0)?;
        let wi = self.weights(b, l)?;
        let (bias_off, has_bias) = self.bias(b, l);
        let n_out = self.p.net.widths[l];
        let mut mm_params = Vec::with_capacity(self.pl.nets);
        let mut post_params = Vec::with_capacity(self.pl.nets);
        for (n, q) in self.ps.iter().enumerate() {
            let (g, o) = (self.geometry(l, n), self.pl.off(n));
            let act = q.net.activation_at(l);
            let (activation, alpha) = activation_id(act);
            let mut flags = if self.scaled[n] { FLAG_SCALED } else { 0 } | if has_bias[n] { FLAG_BIAS } else { 0 };
            if l < self.pl.l {
                flags |= FLAG_REC_NEXT;
            }
            // σ(0) = 0 but not homogeneous: tiny rows are σ's tangent (slopes right, left).
            let (mut slope_right, mut slope_left) = (0f32, 0f32);
            if let (false, Some((r, lf))) = (act.is_homogeneous(), act.slopes_at_zero()) {
                flags |= FLAG_TANGENT;
                (slope_right, slope_left) = (r as f32, lf as f32);
            }
            mm_params.push(g.matmul(flags, (o.bias + bias_off as usize) as u32));
            post_params.push(PointwiseParams { activation, alpha, slope_right, slope_left, rec_next: (o.rec + l * self.pl.rs) as u32, ..g.pointwise(flags) });
        }
        let (mm, groups) = self.ctx.mm_forward_on(self.ctx.matmul, n_out, self.pl.b);
        self.rec.dispatch_nets(mm, &mm_params, &[a_in, &b.w[wi], &b.bias, e_in, &b.z], (groups.0, groups.1));
        let (gx, gy, _) = grid(self.pl.b as u64, 1);
        self.rec.dispatch_nets(&self.ctx.forward_post, &post_params, &[&b.z, a_out, dsig_out, e_in, e_out, &b.rec], (gx, gy));
        Ok(())
    }

    /// Runs layers s+1..=top from checkpoint g; the last output goes to `last` (a, e).
    fn forward_segment(&mut self, b: &Bufs, g: usize, last: Option<usize>) -> Result<()> {
        let (s, top) = plan::segments(self.pl.l, self.pl.k).nth(g).ok_or_else(|| Error::Internal(format!("no segment {g}")))?;
        for l in s + 1..=top {
            let i = l - s - 1;
            let (a_in, e_in) = if i == 0 { (&b.ckpt_a[g], &b.ckpt_e[g]) } else { (&b.keep_a[i], &b.keep_e[i]) };
            let (a_out, e_out) = if l < top {
                (&b.keep_a[i + 1], &b.keep_e[i + 1])
            } else {
                match last {
                    Some(next) => (&b.ckpt_a[next], &b.ckpt_e[next]),
                    None => (&b.a_last, &b.e_last),
                }
            };
            self.forward_layer(b, l, [a_in, e_in, a_out, e_out, &b.keep_d[i]])?;
            if let (true, Ok(q)) = (self.capture, self.ds.binary_search(&l)) {
                // Depth l's output a^l (and z^l) for its output error, computed on the host.
                let (ef, bsz) = (self.pl.err_floats(), self.pl.b);
                let s_l = round4(self.p.net.widths[l]);
                for n in 0..self.pl.nets {
                    let o = self.pl.off(n);
                    let (src, dst) = ((o.row0 * s_l * 4) as u64, ((o.errs + q * ef) * 4) as u64);
                    self.rec.copy(a_out, src, &b.errs, dst, (ef * 4) as u64);
                    self.rec.copy(e_out, (o.row0 * 4) as u64, &b.err_e, ((o.err_e + q * bsz) * 4) as u64, (bsz * 4) as u64);
                    if self.p.net.cost == Cost::CrossEntropy {
                        self.rec.copy(&b.z, src, &b.out_z, dst, (ef * 4) as u64);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Run<'_> {
    /// Backward layer l for every active depth at once: δ^l from g (or, for the depth whose
    /// top layer l is, from its output error ê) and σ′(z^l), renormalised; each depth's batch
    /// partial sums against â^{l-1}; then g ← δ^l W^l (all depths' rows) for layer l-1.
    fn backward_layer(&mut self, b: &Bufs, l: usize, i: usize, a_prev: &wgpu::Buffer) -> Result<()> {
        let (above, join) = plan::active_at(self.ds, l);
        let blocks = above + usize::from(join.is_some());
        if blocks == 0 {
            return Err(Error::Internal(format!("no depth is active at layer {l}")));
        }
        let (bsz, rb) = (self.pl.b, self.pl.rb);
        self.begin_layer(b, l, l > 1, blocks * bsz, blocks * rb)?;
        let off = self.brec_used;
        self.brec_used += blocks * rb;
        self.pending.push((l, off, blocks));
        let net = &self.p.net;
        let n_in = net.widths[l - 1];
        let q = join.unwrap_or(0);
        let mut flags = if net.cost == Cost::Quadratic { FLAG_DSIG } else { 0 };
        if join.is_some() {
            flags |= FLAG_JOIN;
        }
        let (mut post, mut reduce) = (Vec::with_capacity(self.pl.nets), Vec::with_capacity(self.pl.nets));
        for n in 0..self.pl.nets {
            let (g, o) = (self.geometry(l, n), self.pl.off(n));
            let brec = (o.brec + off) as u32;
            let (err, err_e) = ((o.errs + q * self.pl.err_floats()) as u32, (o.err_e + q * bsz) as u32);
            post.push(PointwiseParams { blocks: blocks as u32, brec, bstride: rb as u32, err, err_e, ..g.pointwise(flags) });
            reduce.push(ReduceParams { brec, bstride: rb as u32, gram0: self.pl.p1 as u32, ..g.reduce() });
        }
        let ctx = self.ctx;
        let nb = blocks as u32;
        let (gx, gy, _) = grid((blocks * bsz) as u64, 1);
        self.rec.dispatch_nets(&ctx.backward_post, &post, &[&b.g, &b.keep_d[i], &b.delta, &b.ed, &b.brec, &b.errs, &b.err_e], (gx, gy));
        self.rec.dispatch_nets(&ctx.batch_mean, &reduce, &[&b.delta, &b.brec], ((MEAN_PARTS / 64) as u32, nb));
        self.rec.dispatch_nets(&ctx.gram, &reduce, &[&b.delta, a_prev, &b.brec, &b.rec], ((GRAM_PARTS / 64) as u32, nb));
        if l > 1 {
            let wi = self.weights(b, l)?;
            let rows = blocks * bsz;
            // The product reads and writes the stacked rows.
            let pm: Vec<MatmulParams> = (0..self.pl.nets).map(|n| self.geometry(l, n)).map(|g| MatmulParams { batch: rows as u32, row0: g.srow0, ..g.matmul(0, 0) }).collect();
            let (mm, groups) = ctx.mm_backward_on(ctx.matmul, n_in, rows);
            self.rec.dispatch_nets(mm, &pm, &[&b.delta, &b.w[wi], &b.g], (groups.0, groups.1));
        }
        Ok(())
    }
}

/// Rows of an f64 matrix as a padded (rows ≥ bp, stride s) f32 buffer.
pub(super) fn padded(m: &Array2<f64>, bp: usize, s: usize) -> Vec<f32> {
    let mut out = vec![0f32; bp * s];
    for (x, r) in m.rows().into_iter().enumerate() {
        for (j, v) in r.iter().enumerate() {
            out[x * s + j] = *v as f32;
        }
    }
    out
}

fn unpad(v: &[f32], b: usize, n: usize, s: usize) -> Array2<f64> {
    Array2::from_shape_fn((b, n), |(x, j)| v[x * s + j] as f64)
}

/// One network's sizes and offsets at one layer ([`Run::geometry`]): the fields the
/// families' parameter blocks share, each block built from it.
#[derive(Clone, Copy)]
struct Geometry {
    batch: u32,
    n_in: u32,
    n_out: u32,
    s_in: u32,
    s_out: u32,
    /// Offset (floats) of layer l's forward record.
    rec: u32,
    /// First per-example row, first stacked row, first vec4 of W^l.
    row0: u32,
    srow0: u32,
    w0: u32,
}

impl Geometry {
    fn matmul(&self, flags: u32, bias0: u32) -> MatmulParams {
        let Geometry { batch, n_in, n_out, s_in, s_out, row0, w0, .. } = *self;
        MatmulParams { batch, n_in, s_in, n_out, s_out, flags, row0, w0, bias0 }
    }

    /// The pointwise block's shared fields; the kernel's own ones are zero.
    fn pointwise(&self, flags: u32) -> PointwiseParams {
        let Geometry { batch, n_out, s_out, rec, row0, srow0, .. } = *self;
        PointwiseParams { batch, n_out, s_out, flags, row0, srow0, rec, ..Default::default() }
    }

    /// The reduce block's shared fields; the backward records' are zero.
    fn reduce(&self) -> ReduceParams {
        let Geometry { batch, s_in, n_out, s_out, row0, srow0, rec, .. } = *self;
        ReduceParams { batch, s_in, n_out, s_out, row0, srow0, rec, ..Default::default() }
    }
}

/// What the device part of the probe hands to the host assembly, per network.
enum DeviceOut {
    /// z was not finite at this layer (the first such); the forward records up to it.
    Overflow { layer: usize, frec: Vec<f32> },
    Done { frec: Vec<f32>, grads: Vec<Vec<Grad>>, log2_err: Vec<Vec<f64>>, log10_cost: Vec<f64> },
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

/// Each depth's output error e_x = a^d_x − y_x of one network as mantissa and exponent, in
/// f64 as on the CPU, padded for the device; with log2 ‖e_x‖ per example and log10 C.
struct OutputErrors {
    err: Vec<f32>,
    err_e: Vec<i32>,
    log2_err: Vec<Vec<f64>>,
    log10_cost: Vec<f64>,
}

fn output_errors(p: &Problem, pl: &Plan, outs: &[f32], out_e: &[i32], zs: &[f32]) -> Result<OutputErrors> {
    let net = &p.net;
    let (bsz, nd, ef, s_top) = (p.batch(), pl.nd, pl.err_floats(), pl.s_top);
    let nl = net.widths[net.depth()];
    let mut r = OutputErrors { err: vec![0f32; nd * ef], err_e: vec![0i32; nd * bsz], log2_err: Vec::with_capacity(nd), log10_cost: Vec::with_capacity(nd) };
    for q in 0..nd {
        let a_hat = unpad(&outs[q * ef..(q + 1) * ef], bsz, nl, s_top);
        let ea: Vec<i64> = out_e[q * bsz..(q + 1) * bsz].iter().map(|&e| e as i64).collect();
        let z = (net.cost == Cost::CrossEntropy).then(|| unpad(&zs[q * ef..(q + 1) * ef], bsz, nl, s_top));
        let oe = output_error(net.cost, &a_hat, &ea, &p.targets, z.as_ref().map(|z| z.view()))?;
        for (x, row) in oe.err.rows().into_iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                r.err[q * ef + x * s_top + j] = *v as f32;
            }
        }
        for (x, &e) in oe.e_err.iter().enumerate() {
            r.err_e[q * bsz + x] = e.clamp(i32::MIN as i64 / 2, i32::MAX as i64 / 2) as i32;
        }
        r.log2_err.push(oe.log2_err);
        r.log10_cost.push(oe.log10_cost);
    }
    Ok(r)
}

/// The device part of a probe of `ps` (one network, or several of equal shape side by side):
/// forward pass with checkpoints, output errors on the host, stacked backward pass.
fn run_device(ctx: &Context, ps: &[&Problem], pl: Plan, ds: &[usize]) -> Result<(Vec<DeviceOut>, Plan)> {
    let ce = ps[0].net.cost == Cost::CrossEntropy;
    let bufs = Bufs::new(ctx, &pl, ce).map_err(|e| match e {
        Error::Device(m) => Error::Device(format!("{m} (the probe needs about {} MiB of GPU memory in all; lower --batch, --width or --depth)", pl.bytes() >> 20)),
        e => e,
    })?;
    let mut run = Run::new(ctx, ps, pl, ds);
    run.upload_inputs(&bufs);
    let (big_l, bsz, nets) = (run.pl.l, run.pl.b, run.pl.nets);
    let (rs, nd, ef) = (run.pl.rs, run.pl.nd, run.pl.err_floats());

    // Forward pass: checkpoints every K layers; the last segment's rows stay for backward;
    // every requested depth's output is captured. The forward records and the outputs come
    // back with the last forward submission.
    let nseg = run.pl.nseg;
    for g in 0..nseg {
        run.forward_segment(&bufs, g, if g + 1 < nseg { Some(g + 1) } else { None })?;
    }
    let ef_bytes = (nets * nd * ef * 4) as u64;
    let reads = [(&bufs.rec, 0, (nets * big_l * rs * 4) as u64), (&bufs.errs, 0, ef_bytes), (&bufs.err_e, 0, (nets * nd * bsz * 4) as u64), (&bufs.out_z, 0, if ce { ef_bytes } else { 0 })];
    let back = run.flush_reading(&bufs, &reads)?;
    run.capture = false;
    run.frec = f32s(&back[0]);
    let overflow: Vec<Option<usize>> = (0..nets)
        .map(|n| {
            let f = &run.frec[run.pl.off(n).rec..];
            (1..=big_l).find(|&l| (0..bsz).any(|x| f[(l - 1) * rs + 5 * bsz + x] != 1.0))
        })
        .collect();
    let net_frec = |frec: &[f32], n: usize| frec[n * big_l * rs..(n + 1) * big_l * rs].to_vec();
    if overflow.iter().all(Option::is_some) {
        let frec = std::mem::take(&mut run.frec);
        let out = overflow.iter().enumerate().map(|(n, o)| DeviceOut::Overflow { layer: o.unwrap(), frec: net_frec(&frec, n) }).collect();
        return Ok((out, run.pl));
    }
    let zs = if ce { f32s(&back[3]) } else { vec![0f32; nets * nd * ef] };
    let errs = run.output_errors(&bufs, &overflow, &f32s(&back[1]), &bytemuck::pod_collect_to_vec(&back[2]), &zs)?;
    run.backward_pass(&bufs)?;
    let frec = std::mem::take(&mut run.frec);
    let grads = std::mem::take(&mut run.grads);
    let out = grads
        .into_iter()
        .zip(errs)
        .enumerate()
        .map(|(n, (grads, oe))| match oe {
            Some(oe) => DeviceOut::Done { frec: net_frec(&frec, n), grads, log2_err: oe.log2_err, log10_cost: oe.log10_cost },
            None => DeviceOut::Overflow { layer: overflow[n].unwrap_or(big_l), frec: net_frec(&frec, n) },
        })
        .collect();
    Ok((out, run.pl))
}

impl<'a> Run<'a> {
    fn new(ctx: &'a Context, ps: &'a [&'a Problem], pl: Plan, ds: &'a [usize]) -> Run<'a> {
        let p = ps[0];
        let net = &p.net;
        let big_l = net.depth();
        let ortho = matches!(&net.params, NetParams::Generated { .. }) && !net.weights_are_streamable();
        let ortho_bytes: u64 = (1..=big_l).map(|l| (round4(net.widths[l]) * round4(net.widths[l - 1]) * 4) as u64).sum();
        Run {
            ctx,
            ps,
            p,
            pl,
            rec: Recorder::new(ctx),
            scaled: ps.iter().map(|q| q.net.activation.is_homogeneous() || q.net.activation.slopes_at_zero().is_some()).collect(),
            ds,
            capture: true,
            w_used: 0,
            b_used: 0,
            brec_used: 0,
            pending: Vec::new(),
            in_flight: None,
            frec: Vec::new(),
            grads: vec![ds.iter().map(|&d| vec![Grad::default(); d]).collect(); ps.len()],
            phase: "forward pass",
            first_layer: 1,
            cur_layer: 1,
            ortho_cache: if ortho && ortho_bytes <= ORTHO_CACHE_BUDGET { Some(vec![None; big_l + 1]) } else { None },
        }
    }

    /// a^0 of each network (renormalised when its rows carry an exponent; the CPU always
    /// renormalises) and layer 1's record of it.
    fn upload_inputs(&self, bufs: &Bufs) {
        let (bp, bsz) = (self.pl.bp, self.pl.b);
        let s0 = round4(self.p.net.widths[0]);
        for (n, q) in self.ps.iter().enumerate() {
            let o = self.pl.off(n);
            let mut a0 = q.inputs.clone();
            let mut e0 = vec![0i64; bsz];
            if self.scaled[n] {
                renormalise_rows(&mut a0, &mut e0);
            }
            let queue = &self.ctx.queue;
            queue.write_buffer(&bufs.ckpt_a[0], (o.row0 * s0 * 4) as u64, bytemuck::cast_slice(&padded(&a0, bp, s0)));
            let e0_32: Vec<i32> = e0.iter().map(|&e| e as i32).collect();
            queue.write_buffer(&bufs.ckpt_e[0], (o.row0 * 4) as u64, bytemuck::cast_slice(&e0_32));
            let mut rec1 = vec![0f32; 2 * bsz];
            for x in 0..bsz {
                rec1[x] = a0.row(x).dot(&a0.row(x)) as f32;
                rec1[bsz + x] = e0[x] as f32;
            }
            queue.write_buffer(&bufs.rec, ((o.rec + bsz) * 4) as u64, bytemuck::cast_slice(&rec1));
        }
    }

    /// Each depth's output error from the captured outputs, by the shared assembly, written
    /// back in place of a^d (zeros for a network whose forward pass overflowed: its backward
    /// pass is not used).
    fn output_errors(&self, bufs: &Bufs, overflow: &[Option<usize>], outs: &[f32], out_e: &[i32], zs: &[f32]) -> Result<Vec<Option<OutputErrors>>> {
        let (nd, ef, bsz) = (self.pl.nd, self.pl.err_floats(), self.pl.b);
        let mut errs = Vec::with_capacity(self.ps.len());
        for (n, q) in self.ps.iter().enumerate() {
            let o = self.pl.off(n);
            let (e0, e1, x0, x1) = (o.errs, o.errs + nd * ef, o.err_e, o.err_e + nd * bsz);
            let oe = overflow[n].is_none().then(|| output_errors(q, &self.pl, &outs[e0..e1], &out_e[x0..x1], &zs[e0..e1])).transpose()?;
            let (err, err_e) = match &oe {
                Some(oe) => (oe.err.clone(), oe.err_e.clone()),
                None => (vec![0f32; nd * ef], vec![0i32; nd * bsz]),
            };
            self.ctx.queue.write_buffer(&bufs.errs, (e0 * 4) as u64, bytemuck::cast_slice(&err));
            self.ctx.queue.write_buffer(&bufs.err_e, (x0 * 4) as u64, bytemuck::cast_slice(&err_e));
            errs.push(oe);
        }
        Ok(errs)
    }

    /// Backward, one segment at a time from the top, recomputing each from its checkpoint;
    /// depths join as the pass reaches their top layers.
    fn backward_pass(&mut self, bufs: &Bufs) -> Result<()> {
        let nseg = self.pl.nseg;
        for (g, (s, top)) in plan::segments(self.pl.l, self.pl.k).enumerate().rev() {
            if g + 1 != nseg {
                self.phase = "recomputing a segment";
                self.forward_segment(bufs, g, None)?;
            }
            self.phase = "backward pass";
            for l in (s + 1..=top).rev() {
                let i = l - s - 1;
                let a_prev = if i == 0 { &bufs.ckpt_a[g] } else { &bufs.keep_a[i] };
                self.backward_layer(bufs, l, i, a_prev)?;
            }
        }
        self.flush(bufs)?;
        self.settle().map(|_| ())
    }
}

/// log2 ‖W^l‖₂ for l = 1..=L as [`probe_depths`] finds them (device, cache, then host).
pub fn log2_weight_norms(ctx: &Context, p: &Problem, opts: Opts<'_>) -> Result<Vec<f64>> {
    let known = known_norms(ctx, p, opts)?;
    Ok(opts.norms.host_norms(p, &known, &std::sync::atomic::AtomicBool::new(false)))
}

/// The norms the device (or the cache) gives before the host's Lanczos fills in the rest:
/// [`super::norms::device_norms`] when `opts.device_norms`, else none.
fn known_norms(ctx: &Context, p: &Problem, opts: Opts<'_>) -> Result<Vec<Option<f64>>> {
    if opts.device_norms { super::norms::device_norms(ctx, p, opts.norms) } else { Ok(vec![None; p.net.depth() + 1]) }
}

/// How a probe runs, beside the device: see the fields of [`super::GpuBackend`].
#[derive(Clone, Copy)]
pub struct Opts<'a> {
    pub keep_budget: u64,
    pub norms: &'a NormCache,
    pub device_norms: bool,
}

/// Device bytes a probe of `p` at `depths` allocates: see [`super::GpuBackend::memory_needed`].
pub fn memory_needed(ctx: &Context, p: &Problem, depths: &[usize], keep_budget: u64) -> Result<u64> {
    let ds = plan::validate_depths(&p.net, depths)?;
    let q = plan::prefix(p, *ds.last().unwrap());
    let nd = ds.len().min(max_depths_per_pass(ctx, &q, 1));
    Ok(Plan::new(ctx, &q, keep_budget, nd, 1)?.bytes())
}

/// The GPU probe of one network: the one-depth case of [`probe_depths`].
pub fn probe(ctx: &Context, p: &Problem, device: String, opts: Opts<'_>) -> Result<Report> {
    let mut v = probe_depths(ctx, p, &[p.net.depth()], device, opts)?;
    v.pop().ok_or_else(|| Error::Internal("one depth, one report".into()))
}

/// The statistics of the networks of depth `depths[k]` that are prefixes of `p.net` (same
/// seed, so the same first layers), from one forward pass to the deepest depth and one
/// stacked backward pass, as [`crate::backend::CpuBackend::probe_depths`] (same errors,
/// same semantics); reports in ascending depth order, deduplicated.
///
/// # Errors
/// A depth outside 1..=L, a linear output layer with more than one depth, unequal output
/// widths, a job that does not fit the device, or a device failure.
pub fn probe_depths(ctx: &Context, p: &Problem, depths: &[usize], device: String, opts: Opts<'_>) -> Result<Vec<Report>> {
    let mut v = probe_depths_many(ctx, &[p], depths, device, opts)?;
    v.pop().ok_or_else(|| Error::Internal("one network, one list of reports".into()))
}

/// Why `ps` cannot run side by side in one dispatch, if they cannot: they must share widths,
/// batch, cost and output layer, and (when more than one) have generated, non-orthogonal
/// weights (drawn on the device). Activation, init, σ_w, σ_b, seed, inputs and targets may
/// all differ.
pub fn batch_mismatch(ps: &[&Problem]) -> Option<String> {
    let p = ps.first()?;
    for q in ps {
        if q.net.widths != p.net.widths || q.batch() != p.batch() || q.net.cost != p.net.cost || q.net.linear_output != p.net.linear_output {
            return Some("networks run together need equal widths, batch, cost and output layer".into());
        }
        if ps.len() > 1 && !q.net.weights_are_streamable() {
            return Some("only generated, non-orthogonal weights run several networks together".into());
        }
    }
    None
}

/// [`probe_depths`] for several networks of equal shape at once (see [`batch_mismatch`]):
/// every dispatch covers all of them (workgroup_id.z = network), so a sweep over
/// activations, σ_w², σ_b² and seeds at one width pays for one dispatch per kernel and layer
/// instead of one per network. Each network's reports equal its own [`probe_depths`] bit for
/// bit (the same kernels on the same numbers).
///
/// # Errors
/// As [`probe_depths`]; an internal error when the networks cannot run together.
pub fn probe_depths_many(ctx: &Context, ps: &[&Problem], depths: &[usize], device: String, opts: Opts<'_>) -> Result<Vec<Vec<Report>>> {
    if let Some(why) = batch_mismatch(ps) {
        return Err(Error::Internal(why));
    }
    if ps.len() > MAX_NETS {
        let mut out = Vec::with_capacity(ps.len());
        for chunk in ps.chunks(MAX_NETS) {
            out.extend(probe_depths_many(ctx, chunk, depths, device.clone(), opts)?);
        }
        return Ok(out);
    }
    let Opts { keep_budget, norms, .. } = opts;
    let ds = plan::validate_depths(&ps[0].net, depths)?;
    let top = *ds.last().unwrap();
    let qs: Vec<Cow<Problem>> = ps.iter().map(|&p| plan::prefix(p, top)).collect();
    let ps: Vec<&Problem> = qs.iter().map(|q| &**q).collect();
    let (p, nets) = (ps[0], ps.len());
    let per_pass = max_depths_per_pass(ctx, p, nets);
    if ds.len() > per_pass {
        // More depths than one stacked buffer holds: several passes, each to its own top.
        let mut out = vec![Vec::with_capacity(ds.len()); nets];
        for chunk in ds.chunks(per_pass) {
            for (o, r) in out.iter_mut().zip(probe_depths_many(ctx, &ps, chunk, device.clone(), opts)?) {
                o.extend(r);
            }
        }
        return Ok(out);
    }
    let pl = match Plan::new(ctx, p, keep_budget, ds.len(), nets) {
        Ok(pl) => pl,
        Err(Error::Device(_)) if nets > 1 => {
            // Too big side by side: half as many at once.
            let (a, b) = ps.split_at(nets / 2);
            let mut out = probe_depths_many(ctx, a, &ds, device.clone(), opts)?;
            out.extend(probe_depths_many(ctx, b, &ds, device, opts)?);
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    // Spectral norms of generated weights on the device first (or from the cache); the rest
    // on the host's cores while the device runs the probe.
    let known = ps.iter().map(|q| known_norms(ctx, q, opts)).collect::<Result<Vec<_>>>()?;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (dev, log2_wnorms) = std::thread::scope(|sc| {
        let host = sc.spawn(|| ps.iter().zip(&known).map(|(q, k)| norms.host_norms(q, k, &cancel)).collect::<Vec<_>>());
        let dev = run_device(ctx, &ps, pl, &ds);
        if dev.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        (dev, host.join())
    });
    let (dev, pl) = dev?;
    let log2_wnorms = log2_wnorms.map_err(|_| Error::Internal("the spectral-norm thread panicked".into()))?;
    let mut out = Vec::with_capacity(nets);
    for ((q, d), w) in ps.iter().zip(dev).zip(&log2_wnorms) {
        out.push(assemble(ctx, q, &ds, &pl, w, d, &device, opts)?);
    }
    Ok(out)
}

/// One network's reports from its device output and spectral norms, by the assembly the
/// CPU engine uses ([`crate::backend::assemble`]).
#[allow(clippy::too_many_arguments)]
fn assemble(ctx: &Context, p: &Problem, ds: &[usize], pl: &Plan, log2_wnorm: &[f64], dev: DeviceOut, device: &str, opts: Opts<'_>) -> Result<Vec<Report>> {
    let (DeviceOut::Overflow { frec, .. } | DeviceOut::Done { frec, .. }) = &dev;
    let bsz = p.batch();
    let maxd: Vec<Vec<f64>> = (0..=*ds.last().unwrap()).map(|l| if l == 0 { Vec::new() } else { (0..bsz).map(|x| frec[(l - 1) * pl.rs + x] as f64).collect() }).collect();
    let asm = Assembly { net: &p.net, log2_wnorm, maxd: &maxd, backend: "gpu", device: device.to_string(), signal: None };
    match dev {
        DeviceOut::Overflow { layer: ol, .. } => asm.with_overflow(ds, ol, |under| probe_depths(ctx, p, under, device.to_string(), opts)),
        DeviceOut::Done { grads, log2_err, log10_cost, .. } => Ok(ds.iter().enumerate().map(|(q, &d)| asm.report(d, &log2_err[q], &grads[q], log10_cost[q])).collect()),
    }
}

/// Philox words computed by the shader, for the bit-identity test.
pub fn philox_words(ctx: &Context, counters: &[[u32; 4]], seed: u64) -> Result<Vec<[u32; 4]>> {
    let n = counters.len();
    let flat: Vec<u32> = counters.iter().flatten().copied().collect();
    let cbuf = ctx.storage_init("philox counters", bytemuck::cast_slice(&flat));
    let out = ctx.storage("philox words", (n * 16) as u64)?;
    let mut rec = Recorder::new(ctx);
    let pr = WeightsParams { key_lo: seed as u32, key_hi: (seed >> 32) as u32, count: n as u32, ..Default::default() };
    rec.dispatch(&ctx.philox_words, pr, &[&cbuf, &out], grid(n as u64, 64));
    let what = || format!("the Philox test kernel ({n} counters)");
    let back = rec.flush_read(&[(&out, 0, (n * 16) as u64)], &what)?;
    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&back[0]);
    Ok(words.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
}
