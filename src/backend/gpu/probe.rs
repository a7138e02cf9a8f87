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
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array2;

use super::context::{grid, Context, Params, Recorder, FLAG_BIAS, FLAG_DSIG, FLAG_JOIN, FLAG_REC_NEXT, FLAG_SCALED, FLAG_TANGENT, MAX_NETS, MAX_WORKGROUPS_PER_DIM};
use crate::error::{Error, Result};
use crate::backend::CpuBackend;
use crate::model::{Activation, Cost, InitKind, Params as NetParams, Problem};
use crate::rng::Stream;
use crate::stats::{log2_sum_exp2, LayerStats, LayerStatus, Report, LOG10_2};

/// Kept activations may use this many bytes before the probe switches to √L checkpoints.
pub const KEEP_BUDGET: u64 = 256 << 20;
/// Multiply-adds per submission: about 0.5 s on a 2 GFLOP/s software adapter, far under
/// any OS watchdog (Windows TDR: 2 s) on real GPUs.
const WORK_PER_SUBMIT: f64 = 5e8;
/// Layers per submission (bounds the bias and weight rings).
const LAYERS_PER_SUBMIT: usize = 64;
/// Partial sums per layer of the batch-mean and Gram kernels (MEAN_PARTS, GRAM_PARTS in
/// shaders/reduce.wgsl).
const MEAN_PARTS: usize = 64;
const GRAM_PARTS: usize = 256;
/// Host memory for caching generated orthogonal weights (QR is O(n³) per draw).
const ORTHO_CACHE_BUDGET: u64 = 1 << 30;
/// Bytes of stored weights uploaded per submission.
const WEIGHT_RING_BUDGET: u64 = 256 << 20;
/// Bytes of one stacked buffer (δ, g, output errors, backward records) of a depth sweep;
/// more depths than fit run in several passes.
const STACK_BUDGET: u64 = 256 << 20;

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

fn round4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn binding_limit(ctx: &Context) -> u64 {
    ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size)
}

/// The most depths one pass can stack for this batch, these widths and `nets` networks (≥ 1).
fn max_depths_per_pass(ctx: &Context, p: &Problem, nets: usize) -> usize {
    let b = p.batch() as u64;
    let s = round4(*p.net.widths.iter().max().unwrap()) as u64;
    let rb = (2 * b as usize + MEAN_PARTS + GRAM_PARTS) as u64;
    let cap = STACK_BUDGET.min(binding_limit(ctx)) / nets as u64;
    let by_rows = (cap / (4 * s)).saturating_sub(3) / b;
    let by_rec = cap / (4 * rb);
    let by_grid = (MAX_WORKGROUPS_PER_DIM as u64 * ctx.matmul_block(ctx.matmul).0 as u64) / b;
    by_rows.min(by_rec).min(by_grid).max(1) as usize
}

/// Sizes of one probe, checked against the device before any work starts.
struct Plan {
    b: usize,
    bp: usize,
    l: usize,
    /// Checkpoint interval K and number of segments.
    k: usize,
    nseg: usize,
    /// Widest padded row (floats).
    s: usize,
    /// Forward record size (floats per layer).
    rs: usize,
    /// Batch-mean and Gram partials per backward record, and its size (floats per block).
    p1: usize,
    p2: usize,
    rb: usize,
    /// Depths stacked, rows of the stacked δ (padded), padded output width.
    nd: usize,
    rows: usize,
    s_top: usize,
    /// Floats of the backward-record ring (read back at every submission).
    brec_cap: usize,
    /// Weight buffer slots (1 for drawn weights) and their size in floats.
    ring: usize,
    w_floats: usize,
    /// Networks run side by side (workgroup_id.z); every buffer holds one block per network.
    nets: usize,
}

impl Plan {
    fn new(ctx: &Context, p: &Problem, keep_budget: u64, nd: usize, nets: usize) -> Result<Plan> {
        let net = &p.net;
        let l = net.depth();
        let b = p.batch();
        let bp = round4(b);
        let s = round4(*net.widths.iter().max().unwrap());
        let w_floats = (1..=l).map(|i| round4(net.widths[i]) * round4(net.widths[i - 1])).max().unwrap();
        let row_bytes = (bp * s * 4 * nets) as u64;
        let k = if 3 * l as u64 * row_bytes <= keep_budget { l } else { (l as f64).sqrt().ceil() as usize };
        let nseg = l.div_ceil(k);
        let (p1, p2) = (MEAN_PARTS, GRAM_PARTS);
        let rs = 6 * b;
        let rb = 2 * b + p1 + p2;
        let rows = round4(nd * b);
        let s_top = round4(net.widths[l]);
        let ring_budget = (STACK_BUDGET.min(binding_limit(ctx)) / 4) as usize / nets;
        let brec_cap = (LAYERS_PER_SUBMIT * nd * rb).min(ring_budget.max(nd * rb));
        let ring = if net.weights_are_streamable() { 1 } else { ((WEIGHT_RING_BUDGET / (w_floats as u64 * 4)) as usize).clamp(1, LAYERS_PER_SUBMIT) };
        if nets > 1 && !net.weights_are_streamable() {
            return Err(Error::Internal("only generated (Philox-drawn) weights run several networks at once".into()));
        }
        let plan = Plan { b, bp, l, k, nseg, s, rs, p1, p2, rb, nd, rows, s_top, brec_cap, ring, w_floats, nets };
        plan.check(ctx, p)?;
        Ok(plan)
    }

    /// Floats of one depth's output-error block.
    fn err_floats(&self) -> usize {
        self.b * self.s_top
    }

    /// Device bytes the probe allocates (all networks).
    fn bytes(&self) -> u64 {
        self.bytes_per_net() * self.nets as u64
    }

    fn bytes_per_net(&self) -> u64 {
        let row = (self.bp * self.s * 4) as u64;
        let rows = (self.nseg + 2 * self.k + 3) as u64;
        let stacked = 2 * (self.rows * self.s * 4) as u64 + (self.rows * 4) as u64;
        let errs = 2 * (self.nd * self.err_floats() * 4) as u64 + (self.nd * self.b * 4) as u64;
        rows * row
            + stacked
            + errs
            + (self.brec_cap * 4) as u64
            + (self.ring * self.w_floats * 4) as u64
            + (self.l * self.rs * 4) as u64
            + (LAYERS_PER_SUBMIT * self.s * 4) as u64
    }

    fn check(&self, ctx: &Context, p: &Problem) -> Result<()> {
        // Every buffer holds one block per network: one network's share of a binding.
        let bind = binding_limit(ctx) / self.nets as u64;
        let dev = &ctx.info.name;
        let mib = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
        let fail = |what: String, fits: String| Err(Error::Device(format!("the job does not fit '{dev}': {what}; {fits}")));
        let row = (self.bp * self.s * 4) as u64;
        if row > bind {
            let max_n = bind / (4 * self.bp as u64);
            return fail(format!("one B x N activation block needs {} MiB, one binding holds {} MiB", mib(row), mib(bind)), format!("at batch {} the widest layer may have {max_n} units", self.b));
        }
        if (self.w_floats * 4) as u64 > bind {
            let max_n = ((bind / 4) as f64).sqrt() as u64;
            return fail(format!("one weight matrix needs {} MiB, one binding holds {} MiB", mib((self.w_floats * 4) as u64), mib(bind)), format!("square layers up to about {max_n} units fit"));
        }
        let rec = (self.l * self.rs * 4) as u64;
        if rec > bind {
            let max_l = bind / (self.rs as u64 * 4);
            return fail(format!("the per-layer records need {} MiB, one binding holds {} MiB", mib(rec), mib(bind)), format!("at this batch and width at most {max_l} layers fit"));
        }
        let bias_ring = (LAYERS_PER_SUBMIT * self.s * 4) as u64;
        if bias_ring > bind {
            return fail(format!("the bias ring ({LAYERS_PER_SUBMIT} layers of the widest layer) needs {} MiB, one binding holds {} MiB", mib(bias_ring), mib(bind)), "use narrower layers or fewer networks at once".into());
        }
        let stacked = [(self.rows * self.s * 4) as u64, (self.nd * self.err_floats() * 4) as u64, (self.brec_cap * 4) as u64];
        if stacked.iter().any(|&v| v > bind) {
            return fail(format!("{} depths stacked need {} MiB in one binding, which holds {} MiB", self.nd, mib(*stacked.iter().max().unwrap()), mib(bind)), "sweep fewer depths at once".into());
        }
        let (mm_rows, mm_cols) = ctx.matmul_block(ctx.matmul);
        let groups_needed = [self.b as u64, (self.s as u64).div_ceil(mm_cols as u64), (self.rows as u64).div_ceil(mm_rows as u64), self.nd as u64, self.nets as u64];
        if groups_needed.iter().any(|&g| g > MAX_WORKGROUPS_PER_DIM as u64) {
            return fail(format!("batch {} x {} depths needs more than {} workgroups in one dimension", self.b, self.nd, MAX_WORKGROUPS_PER_DIM), "batches up to 65,535 fit".into());
        }
        if p.net.depth() > u32::MAX as usize / 2 {
            return fail("depth beyond 2^31".into(), "use a smaller depth".into());
        }
        Ok(())
    }
}

/// Device buffers of one probe.
struct Bufs {
    ckpt_a: Vec<wgpu::Buffer>,
    ckpt_e: Vec<wgpu::Buffer>,
    keep_a: Vec<wgpu::Buffer>,
    keep_e: Vec<wgpu::Buffer>,
    keep_d: Vec<wgpu::Buffer>,
    a_last: wgpu::Buffer,
    e_last: wgpu::Buffer,
    z: wgpu::Buffer,
    /// Stacked: g = δ^{l+1} W^{l+1}, δ̂^l and its exponents (rows j·B + x).
    g: wgpu::Buffer,
    delta: wgpu::Buffer,
    ed: wgpu::Buffer,
    /// Per depth: a^d (captured in the forward pass), then its output error ê; exponents;
    /// z^d for the cross-entropy cost.
    errs: wgpu::Buffer,
    err_e: wgpu::Buffer,
    out_z: wgpu::Buffer,
    w: Vec<wgpu::Buffer>,
    bias: wgpu::Buffer,
    /// Forward records (L of them) and the backward-record ring.
    rec: wgpu::Buffer,
    brec: wgpu::Buffer,
}

impl Bufs {
    fn new(ctx: &Context, pl: &Plan, ce: bool) -> Result<Bufs> {
        let n = pl.nets as u64;
        let row = (pl.bp * pl.s * 4) as u64 * n;
        let ex = (pl.bp * 4) as u64 * n;
        let stacked = (pl.rows * pl.s * 4) as u64 * n;
        let errs = (pl.nd * pl.err_floats() * 4) as u64 * n;
        let many = |name: &str, n: usize, bytes: u64| -> Result<Vec<wgpu::Buffer>> { (0..n).map(|i| ctx.storage(&format!("{name}[{i}]"), bytes)).collect() };
        Ok(Bufs {
            ckpt_a: many("checkpoint", pl.nseg, row)?,
            ckpt_e: many("checkpoint exponents", pl.nseg, ex)?,
            keep_a: many("kept activations", pl.k, row)?,
            keep_e: many("kept exponents", pl.k, ex)?,
            keep_d: many("kept dsigma", pl.k, row)?,
            a_last: ctx.storage("a^L", row)?,
            e_last: ctx.storage("exponents of a^L", ex)?,
            z: ctx.storage("z", row)?,
            g: ctx.storage("g", stacked)?,
            delta: ctx.storage("delta", stacked)?,
            ed: ctx.storage("exponents of delta", (pl.rows * 4) as u64 * n)?,
            errs: ctx.storage("output errors", errs)?,
            err_e: ctx.storage("exponents of output errors", (pl.nd * pl.b * 4) as u64 * n)?,
            out_z: ctx.storage("z of output layers", if ce { errs } else { 16 })?,
            w: many("weights", pl.ring, (pl.w_floats * 4) as u64 * n)?,
            bias: ctx.storage("biases", (LAYERS_PER_SUBMIT * pl.s * 4) as u64 * n)?,
            rec: ctx.storage("records", (pl.l * pl.rs * 4) as u64 * n)?,
            brec: ctx.storage("backward records", (pl.brec_cap * 4) as u64 * n)?,
        })
    }
}

/// The four gradient norms of one depth at one layer (log10), and whether δ was all zero.
#[derive(Debug, Clone, Copy)]
struct Grad {
    b_mean: f64,
    b_rms: f64,
    w_mean: f64,
    w_rms: f64,
    zero: bool,
}

impl Default for Grad {
    fn default() -> Self {
        Grad { b_mean: f64::NAN, b_rms: f64::NAN, w_mean: f64::NAN, w_rms: f64::NAN, zero: false }
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

/// Where network n's blocks start in each shared buffer (floats or rows).
#[derive(Clone, Copy)]
struct NetOff {
    /// Rows of the per-example arrays, rows of the stacked arrays.
    row0: usize,
    srow0: usize,
    /// Floats: forward records, backward-record ring, output errors (and z), their
    /// exponents, bias ring, weights.
    rec: usize,
    brec: usize,
    errs: usize,
    err_e: usize,
    bias: usize,
    w: usize,
}

impl Plan {
    fn off(&self, n: usize) -> NetOff {
        NetOff {
            row0: n * self.bp,
            srow0: n * self.rows,
            rec: n * self.l * self.rs,
            brec: n * self.brec_cap,
            errs: n * self.nd * self.err_floats(),
            err_e: n * self.nd * self.b,
            bias: n * LAYERS_PER_SUBMIT * self.s,
            w: n * self.w_floats,
        }
    }
}

impl<'a> Run<'a> {
    fn what(&self) -> String {
        let w = &self.p.net.widths;
        let (lo, hi) = (self.first_layer.min(self.cur_layer), self.first_layer.max(self.cur_layer));
        let nets = if self.pl.nets > 1 { format!(", {} networks at once", self.pl.nets) } else { String::new() };
        format!("{} (layers {lo}..={hi}, batch {}, widths {}..{}{nets})", self.phase, self.pl.b, w.iter().min().unwrap(), w.iter().max().unwrap())
    }

    fn flush(&mut self, b: &Bufs) -> Result<()> {
        let what = self.what();
        self.rec.flush(&|| what.clone())?;
        self.w_used = 0;
        self.b_used = 0;
        self.first_layer = self.cur_layer;
        self.drain(b, &what)
    }

    /// Reads back the backward records of the last submission and turns them into each
    /// depth's gradient norms, with the CPU backend's arithmetic.
    fn drain(&mut self, b: &Bufs, what: &str) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let last = self.pl.off(self.pl.nets - 1).brec + self.brec_used;
        let data = f32s(&self.ctx.read(&b.brec, 0, (last * 4) as u64, &|| format!("reading back {what}"))?);
        let (bsz, rs, rb, p1, p2, nd) = (self.pl.b, self.pl.rs, self.pl.rb, self.pl.p1, self.pl.p2, self.pl.nd);
        let lb = (bsz as f64).log2();
        for (l, off, blocks) in self.pending.drain(..) {
            for n in 0..self.pl.nets {
                let o = self.pl.off(n);
                let f = &self.frec[o.rec + (l - 1) * rs..o.rec + l * rs];
                let sq_a = &f[bsz..2 * bsz];
                let ea = &f[2 * bsz..3 * bsz];
                for j in 0..blocks {
                    let r = &data[o.brec + off + j * rb..o.brec + off + (j + 1) * rb];
                    let (sq_d, ed) = (&r[..bsz], &r[bsz..2 * bsz]);
                    let bmean: f64 = r[2 * bsz..2 * bsz + p1].iter().map(|&v| v as f64).sum();
                    let gram: f64 = r[2 * bsz + p1..2 * bsz + p1 + p2].iter().map(|&v| v as f64).sum();
                    let t_b: Vec<f64> = sq_d.iter().zip(ed).map(|(&s, &e)| 2.0 * e as f64 + (s as f64).log2()).collect();
                    let t_w: Vec<f64> = t_b.iter().zip(sq_a.iter().zip(ea)).map(|(tb, (&s, &e))| tb + 2.0 * e as f64 + (s as f64).log2()).collect();
                    let m_d = ed.iter().zip(sq_d).filter(|(_, s)| **s > 0.0).map(|(e, _)| *e as f64).fold(f64::NEG_INFINITY, f64::max);
                    let m_c = (0..bsz).filter(|&x| sq_d[x] > 0.0 && sq_a[x] > 0.0).map(|x| (ed[x] + ea[x]) as f64).fold(f64::NEG_INFINITY, f64::max);
                    self.grads[n][nd - 1 - j][l - 1] = Grad {
                        b_rms: 0.5 * (log2_sum_exp2(t_b.iter().copied()) - lb) * LOG10_2,
                        w_rms: 0.5 * (log2_sum_exp2(t_w.iter().copied()) - lb) * LOG10_2,
                        b_mean: if m_d.is_finite() { (m_d + 0.5 * bmean.log2() - lb) * LOG10_2 } else { f64::NEG_INFINITY },
                        w_mean: if m_c.is_finite() { (m_c + 0.5 * gram.max(0.0).log2() - lb) * LOG10_2 } else { f64::NEG_INFINITY },
                        zero: sq_d.iter().all(|&v| v == 0.0),
                    };
                }
            }
        }
        self.brec_used = 0;
        Ok(())
    }

    /// Starts work on layer l, submitting what was recorded when a budget is reached.
    /// `rows`: the rows multiplied (B forward, B per active depth backward); `brec`: the
    /// backward-record floats the layer will write.
    fn begin_layer(&mut self, b: &Bufs, l: usize, need_weights: bool, rows: usize, brec: usize) -> Result<()> {
        let (n_out, n_in) = (self.p.net.widths[l], self.p.net.widths[l - 1]);
        let ring_full = (need_weights && self.w_used >= self.pl.ring && self.pl.ring > 1) || self.b_used >= LAYERS_PER_SUBMIT || self.brec_used + brec > self.pl.brec_cap;
        if ring_full || self.rec.full(WORK_PER_SUBMIT, LAYERS_PER_SUBMIT) {
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
                let (kind, scale) = match init.kind {
                    InitKind::XavierUniform => (1, (6.0 / (n_in + n_out) as f64).sqrt()),
                    _ => (0, (init.layer_sigma_w2(n_in, n_out) / n_in as f64).sqrt()),
                };
                params.push(Params {
                    n_in: n_in as u32,
                    n_out: n_out as u32,
                    s_in: s_in as u32,
                    layer: l as u32,
                    kind,
                    scale: scale as f32,
                    key_lo: *seed as u32,
                    key_hi: (*seed >> 32) as u32,
                    aux0: rows as u32,
                    w0: (self.pl.off(n).w / 4) as u32,
                    ..Default::default()
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

    /// Network n's parameters for layer l that every kernel shares: sizes, its forward
    /// record and where its blocks start.
    fn layer_params(&self, l: usize, n: usize) -> Params {
        let (n_out, n_in) = (self.p.net.widths[l], self.p.net.widths[l - 1]);
        let o = self.pl.off(n);
        Params {
            batch: self.pl.b as u32,
            n_in: n_in as u32,
            n_out: n_out as u32,
            s_in: round4(n_in) as u32,
            s_out: round4(n_out) as u32,
            layer: l as u32,
            rec: (o.rec + (l - 1) * self.pl.rs) as u32,
            row0: o.row0 as u32,
            srow0: o.srow0 as u32,
            w0: (o.w / 4) as u32,
            ..Default::default()
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
        let params: Vec<Params> = self
            .ps
            .iter()
            .enumerate()
            .map(|(n, q)| {
                let o = self.pl.off(n);
                let act = q.net.activation_at(l);
                let (kind, alpha) = activation_id(act);
                let mut flags = if self.scaled[n] { FLAG_SCALED } else { 0 } | if has_bias[n] { FLAG_BIAS } else { 0 };
                if l < self.pl.l {
                    flags |= FLAG_REC_NEXT;
                }
                // σ(0) = 0 but not homogeneous: tiny rows are σ's tangent (slopes right, left).
                let (mut right, mut left) = (0f32, 0f32);
                if let (false, Some((r, lf))) = (act.is_homogeneous(), act.slopes_at_zero()) {
                    flags |= FLAG_TANGENT;
                    (right, left) = (r as f32, lf as f32);
                }
                Params {
                    kind,
                    flags,
                    alpha,
                    scale: right,
                    aux0: left.to_bits(),
                    rec_next: (o.rec + l * self.pl.rs) as u32,
                    aux1: (o.bias + bias_off as usize) as u32,
                    ..self.layer_params(l, n)
                }
            })
            .collect();
        let (mm, groups) = self.ctx.mm_forward_on(self.ctx.matmul, n_out, self.pl.b);
        self.rec.dispatch_nets(mm, &params, &[a_in, &b.w[wi], &b.bias, e_in, &b.z], (groups.0, groups.1));
        let (gx, gy, _) = grid(self.pl.b as u64, 1);
        self.rec.dispatch_nets(&self.ctx.forward_post, &params, &[&b.z, a_out, dsig_out, e_in, e_out, &b.rec], (gx, gy));
        Ok(())
    }

    /// Runs layers s+1..=top from checkpoint g; the last output goes to `last` (a, e).
    fn forward_segment(&mut self, b: &Bufs, g: usize, last: Option<usize>) -> Result<()> {
        let k = self.pl.k;
        let (s, top) = (g * k, ((g + 1) * k).min(self.pl.l));
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
        let join = self.ds.binary_search(&l).ok();
        let above = self.ds.len() - self.ds.partition_point(|&d| d <= l);
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
        let params: Vec<Params> = (0..self.pl.nets)
            .map(|n| {
                let o = self.pl.off(n);
                Params {
                    flags,
                    aux0: self.pl.p1 as u32,
                    blocks: blocks as u32,
                    brec: (o.brec + off) as u32,
                    bstride: rb as u32,
                    err: (o.errs + q * self.pl.err_floats()) as u32,
                    err_e: (o.err_e + q * bsz) as u32,
                    ..self.layer_params(l, n)
                }
            })
            .collect();
        let ctx = self.ctx;
        let nb = blocks as u32;
        let (gx, gy, _) = grid((blocks * bsz) as u64, 1);
        self.rec.dispatch_nets(&ctx.backward_post, &params, &[&b.g, &b.keep_d[i], &b.delta, &b.ed, &b.brec, &b.errs, &b.err_e], (gx, gy));
        self.rec.dispatch_nets(&ctx.batch_mean, &params, &[&b.delta, &b.brec], ((MEAN_PARTS / 64) as u32, nb));
        self.rec.dispatch_nets(&ctx.gram, &params, &[&b.delta, a_prev, &b.brec, &b.rec], ((GRAM_PARTS / 64) as u32, nb));
        if l > 1 {
            let wi = self.weights(b, l)?;
            let rows = blocks * bsz;
            // The product reads and writes the stacked rows.
            let pm: Vec<Params> = params.iter().map(|pr| Params { batch: rows as u32, row0: pr.srow0, ..*pr }).collect();
            let (mm, groups) = ctx.mm_backward_on(ctx.matmul, n_in, rows);
            self.rec.dispatch_nets(mm, &pm, &[&b.delta, &b.w[wi], &b.g], (groups.0, groups.1));
        }
        Ok(())
    }
}

/// 2^k exactly for |k| ≤ 1022 (0 or ∞ beyond).
fn pow2(k: i64) -> f64 {
    if k < -1022 {
        return if k < -1074 { 0.0 } else { f64::from_bits(1u64 << (k + 1074)) };
    }
    if k > 1023 {
        return f64::INFINITY;
    }
    f64::from_bits(((k + 1023) as u64) << 52)
}

fn scale2(x: f64, k: i64) -> f64 {
    if (-1000..=1000).contains(&k) { x * pow2(k) } else { x * pow2(k / 2) * pow2(k - k / 2) }
}

/// As the CPU backend: each row to a norm in [2^-½, 2^½) by a power of two, added to `e`.
fn renormalise_rows(m: &mut Array2<f64>, e: &mut [i64]) {
    for (mut row, ex) in m.rows_mut().into_iter().zip(e.iter_mut()) {
        let n2 = row.dot(&row);
        if n2 > 0.0 && n2.is_finite() {
            let k = (0.5 * n2.log2()).round() as i64;
            if k != 0 {
                row.mapv_inplace(|v| scale2(v, -k));
                *ex += k;
            }
        }
    }
}

/// Rows of an f64 matrix as a padded (rows ≥ bp, stride s) f32 buffer.
fn padded(m: &Array2<f64>, bp: usize, s: usize) -> Vec<f32> {
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

/// log2 ‖W^l‖₂ for l = 1..=L (index 0 unused): `known[l]` where the device (or the cache)
/// gave it, else by the CPU backend's f64 Lanczos on the same weights and through its cache
/// (a sweep over σ_w² and activations norms each standard-normal matrix once, and the values
/// equal the CPU's bit for bit), spread over the host's cores while the GPU works.
fn weight_norms(p: &Problem, norms: &CpuBackend, known: &[Option<f64>], cancel: &std::sync::atomic::AtomicBool) -> Vec<f64> {
    let big_l = p.net.depth();
    let next = AtomicUsize::new(1);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(big_l).max(1);
    let mut out = vec![0.0; big_l + 1];
    let parts: Vec<Vec<(usize, f64)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let l = next.fetch_add(1, Ordering::Relaxed);
                        if l > big_l || cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Some(v) = known[l] {
                            mine.push((l, v));
                            continue;
                        }
                        let (w, _) = p.net.layer(l);
                        mine.push((l, norms.log2_weight_norm(&p.net, l, &w)));
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    for (l, v) in parts.into_iter().flatten() {
        out[l] = v;
    }
    out
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

fn output_errors(p: &Problem, pl: &Plan, outs: &[f32], out_e: &[i32], zs: &[f32]) -> OutputErrors {
    let net = &p.net;
    let (bsz, nd, ef, s_top) = (p.batch(), pl.nd, pl.err_floats(), pl.s_top);
    let nl = net.widths[net.depth()];
    let mut r = OutputErrors { err: vec![0f32; nd * ef], err_e: vec![0i32; nd * bsz], log2_err: Vec::with_capacity(nd), log10_cost: Vec::with_capacity(nd) };
    for q in 0..nd {
        let a_hat = unpad(&outs[q * ef..(q + 1) * ef], bsz, nl, s_top);
        let mut err = a_hat.clone();
        let mut e_err: Vec<i64> = out_e[q * bsz..(q + 1) * bsz].iter().map(|&e| e as i64).collect();
        for (x, (mut row, ex)) in err.rows_mut().into_iter().zip(e_err.iter_mut()).enumerate() {
            let y = p.targets.row(x);
            let top_y = y.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            if *ex == 0 {
                row -= &y;
            } else if top_y > 0.0 {
                // As the CPU: row·2^e − y at the common exponent max(e, ⌊log2 max|y|⌋).
                let m = (*ex).max(top_y.log2().floor() as i64);
                let k = *ex - m;
                if k != 0 {
                    row.mapv_inplace(|v| scale2(v, k));
                }
                ndarray::Zip::from(&mut row).and(&y).for_each(|r, &v| *r -= scale2(v, -m));
                *ex = m;
            }
        }
        let log2_err: Vec<f64> = err.rows().into_iter().zip(&e_err).map(|(r, &e)| e as f64 + 0.5 * r.dot(&r).log2()).collect();
        r.log10_cost.push(match net.cost {
            Cost::Quadratic => (log2_sum_exp2(log2_err.iter().map(|v| 2.0 * v)) - 1.0 - (bsz as f64).log2()) * LOG10_2,
            Cost::CrossEntropy => {
                let z = unpad(&zs[q * ef..(q + 1) * ef], bsz, nl, s_top);
                let c: f64 = (0..bsz).map(|x| net.cost.example_cost(z.row(x), a_hat.row(x), p.targets.row(x))).sum::<f64>() / bsz as f64;
                c.log10()
            }
        });
        r.log2_err.push(log2_err);
        renormalise_rows(&mut err, &mut e_err);
        for (x, row) in err.rows().into_iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                r.err[q * ef + x * s_top + j] = *v as f32;
            }
        }
        for (x, &e) in e_err.iter().enumerate() {
            r.err_e[q * bsz + x] = e.clamp(i32::MIN as i64 / 2, i32::MAX as i64 / 2) as i32;
        }
    }
    r
}

/// The device part of a probe of `ps` (one network, or several of equal shape side by side):
/// forward pass with checkpoints, output errors on the host, stacked backward pass.
fn run_device(ctx: &Context, ps: &[&Problem], pl: Plan, ds: &[usize]) -> Result<(Vec<DeviceOut>, Plan)> {
    let p = ps[0];
    let net = &p.net;
    let (big_l, bsz, nets) = (net.depth(), p.batch(), ps.len());
    let ce = net.cost == Cost::CrossEntropy;
    let bufs = Bufs::new(ctx, &pl, ce).map_err(|e| match e {
        Error::Device(m) => Error::Device(format!("{m} (the probe needs about {} MiB of GPU memory in all; lower --batch, --width or --depth)", pl.bytes() >> 20)),
        e => e,
    })?;
    let ortho = matches!(&net.params, NetParams::Generated { .. }) && !net.weights_are_streamable();
    let ortho_bytes: u64 = (1..=big_l).map(|l| (round4(net.widths[l]) * round4(net.widths[l - 1]) * 4) as u64).sum();
    let mut run = Run {
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
        frec: Vec::new(),
        grads: vec![ds.iter().map(|&d| vec![Grad::default(); d]).collect(); nets],
        phase: "forward pass",
        first_layer: 1,
        cur_layer: 1,
        ortho_cache: if ortho && ortho_bytes <= ORTHO_CACHE_BUDGET { Some(vec![None; big_l + 1]) } else { None },
    };
    let (bp, rs, nd, ef) = (run.pl.bp, run.pl.rs, run.pl.nd, run.pl.err_floats());

    // a^0 of each network (renormalised when its rows carry an exponent; the CPU always
    // renormalises) and layer 1's record of it.
    let s0 = round4(net.widths[0]);
    for (n, q) in ps.iter().enumerate() {
        let o = run.pl.off(n);
        let mut a0 = q.inputs.clone();
        let mut e0 = vec![0i64; bsz];
        if run.scaled[n] {
            renormalise_rows(&mut a0, &mut e0);
        }
        ctx.queue.write_buffer(&bufs.ckpt_a[0], (o.row0 * s0 * 4) as u64, bytemuck::cast_slice(&padded(&a0, bp, s0)));
        let e0_32: Vec<i32> = e0.iter().map(|&e| e as i32).collect();
        ctx.queue.write_buffer(&bufs.ckpt_e[0], (o.row0 * 4) as u64, bytemuck::cast_slice(&e0_32));
        let mut rec1 = vec![0f32; 2 * bsz];
        for x in 0..bsz {
            rec1[x] = a0.row(x).dot(&a0.row(x)) as f32;
            rec1[bsz + x] = e0[x] as f32;
        }
        ctx.queue.write_buffer(&bufs.rec, ((o.rec + bsz) * 4) as u64, bytemuck::cast_slice(&rec1));
    }

    // Forward pass: checkpoints every K layers; the last segment's rows stay for backward;
    // every requested depth's output is captured.
    let nseg = run.pl.nseg;
    for g in 0..nseg {
        run.forward_segment(&bufs, g, if g + 1 < nseg { Some(g + 1) } else { None })?;
    }
    run.flush(&bufs)?;
    run.capture = false;
    let what = || "reading the forward pass back".to_string();
    run.frec = f32s(&ctx.read(&bufs.rec, 0, (nets * big_l * rs * 4) as u64, &what)?);
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

    // Each depth's output error, written back in place of a^d (zeros for a network whose
    // forward pass overflowed: its backward pass is not used).
    let outs = f32s(&ctx.read(&bufs.errs, 0, (nets * nd * ef * 4) as u64, &what)?);
    let out_e: Vec<i32> = bytemuck::pod_collect_to_vec(&ctx.read(&bufs.err_e, 0, (nets * nd * bsz * 4) as u64, &what)?);
    let zs = if ce { f32s(&ctx.read(&bufs.out_z, 0, (nets * nd * ef * 4) as u64, &what)?) } else { vec![0f32; nets * nd * ef] };
    let mut errs: Vec<Option<OutputErrors>> = Vec::with_capacity(nets);
    for (n, q) in ps.iter().enumerate() {
        let o = run.pl.off(n);
        let (e0, e1, x0, x1) = (o.errs, o.errs + nd * ef, o.err_e, o.err_e + nd * bsz);
        let oe = overflow[n].is_none().then(|| output_errors(q, &run.pl, &outs[e0..e1], &out_e[x0..x1], &zs[e0..e1]));
        let (err, err_e) = match &oe {
            Some(oe) => (oe.err.clone(), oe.err_e.clone()),
            None => (vec![0f32; nd * ef], vec![0i32; nd * bsz]),
        };
        ctx.queue.write_buffer(&bufs.errs, (e0 * 4) as u64, bytemuck::cast_slice(&err));
        ctx.queue.write_buffer(&bufs.err_e, (x0 * 4) as u64, bytemuck::cast_slice(&err_e));
        errs.push(oe);
    }

    // Backward, one segment at a time from the top, recomputing each from its checkpoint;
    // depths join as the pass reaches their top layers.
    let k = run.pl.k;
    for g in (0..nseg).rev() {
        if g + 1 != nseg {
            run.phase = "recomputing a segment";
            run.forward_segment(&bufs, g, None)?;
        }
        run.phase = "backward pass";
        let (s, top) = (g * k, ((g + 1) * k).min(big_l));
        for l in (s + 1..=top).rev() {
            let i = l - s - 1;
            let a_prev = if i == 0 { &bufs.ckpt_a[g] } else { &bufs.keep_a[i] };
            run.backward_layer(&bufs, l, i, a_prev)?;
        }
    }
    run.flush(&bufs)?;
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

/// log2 ‖W^l‖₂ for l = 1..=L as [`probe_depths`] finds them (device, cache, then host).
pub fn log2_weight_norms(ctx: &Context, p: &Problem, opts: Opts<'_>) -> Result<Vec<f64>> {
    let known = known_norms(ctx, p, opts)?;
    Ok(weight_norms(p, opts.norms, &known, &std::sync::atomic::AtomicBool::new(false)))
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
    pub norms: &'a CpuBackend,
    pub device_norms: bool,
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
    let big_l = ps[0].net.depth();
    let ds = crate::backend::validate_depths(&ps[0].net, depths)?;
    let top = *ds.last().unwrap();
    let qs: Vec<Cow<Problem>> = ps
        .iter()
        .map(|&p| {
            if top == big_l {
                Cow::Borrowed(p)
            } else {
                let mut q = p.clone();
                q.net.widths.truncate(top + 1);
                Cow::Owned(q)
            }
        })
        .collect();
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
        let host = sc.spawn(|| ps.iter().zip(&known).map(|(q, k)| weight_norms(q, norms, k, &cancel)).collect::<Vec<_>>());
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

/// One network's reports from its device output and spectral norms, with the CPU
/// backend's arithmetic for the bounds.
#[allow(clippy::too_many_arguments)]
fn assemble(ctx: &Context, p: &Problem, ds: &[usize], pl: &Plan, log2_wnorm: &[f64], dev: DeviceOut, device: &str, opts: Opts<'_>) -> Result<Vec<Report>> {
    let net = &p.net;
    let top = *ds.last().unwrap();
    let device = device.to_string();
    let bsz = p.batch();
    let maxd = |frec: &[f32], l: usize| -> Vec<f64> { (0..bsz).map(|x| frec[(l - 1) * pl.rs + x] as f64).collect() };
    let layer = |l: usize, frec: &[f32], maxd_ok: bool, status: LayerStatus| {
        let maxd_l = if maxd_ok { maxd(frec, l).iter().fold(0.0_f64, |m, &v| m.max(v)).log10() } else { f64::NAN };
        LayerStats::undefined(l, net.widths[l], log2_wnorm[l] * LOG10_2, maxd_l, status)
    };
    match dev {
        DeviceOut::Overflow { layer: ol, frec } => {
            // Depths below the overflow are unaffected: run them on their own (rare path).
            let below: Vec<usize> = ds.iter().copied().filter(|&d| d < ol).collect();
            let mut out = if below.is_empty() { Vec::new() } else { probe_depths(ctx, p, &below, device.clone(), opts)? };
            out.extend(ds.iter().filter(|&&d| d >= ol).map(|&d| Report {
                layers: (1..=d).map(|l| layer(l, &frec, l < ol, LayerStatus::Overflow)).collect(),
                backend: "gpu".into(),
                device: device.clone(),
                overflow_layer: Some(ol),
                log10_cost: f64::NAN,
            }));
            Ok(out)
        }
        DeviceOut::Done { frec, grads, log2_err, log10_cost } => {
            let maxds: Vec<Vec<f64>> = (0..=top).map(|l| if l == 0 { Vec::new() } else { maxd(&frec, l) }).collect();
            let has_top_dsigma = net.cost == Cost::Quadratic;
            let mut out = Vec::with_capacity(ds.len());
            for (qi, &d) in ds.iter().enumerate() {
                let mut layers: Vec<LayerStats> = (1..=d).map(|l| layer(l, &frec, true, LayerStatus::Ok)).collect();
                let mut tight = log2_err[qi].clone();
                let mut bound = tight.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                let mut status_above = LayerStatus::Ok;
                for l in (1..=d).rev() {
                    if l < d || has_top_dsigma {
                        bound += net.gamma_at(l).log2();
                        for (t, m) in tight.iter_mut().zip(&maxds[l]) {
                            *t += m.log2();
                        }
                    }
                    let gr = grads[qi][l - 1];
                    let st = &mut layers[l - 1];
                    st.log10_grad_b_mean = gr.b_mean;
                    st.log10_grad_b_rms = gr.b_rms;
                    st.log10_grad_w_mean = gr.w_mean;
                    st.log10_grad_w_rms = gr.w_rms;
                    st.log10_bound = bound * LOG10_2;
                    st.log10_bound_tight = tight.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v)) * LOG10_2;
                    st.status = LayerStatus::below(status_above, gr.zero, net.activation_at(l));
                    status_above = st.status;
                    if l > 1 {
                        bound += log2_wnorm[l];
                        for t in tight.iter_mut() {
                            *t += log2_wnorm[l];
                        }
                    }
                }
                out.push(Report { layers, backend: "gpu".into(), device: device.clone(), overflow_layer: None, log10_cost: log10_cost[qi] });
            }
            Ok(out)
        }
    }
}

/// Philox words computed by the shader, for the bit-identity test.
pub fn philox_words(ctx: &Context, counters: &[[u32; 4]], seed: u64) -> Result<Vec<[u32; 4]>> {
    let n = counters.len();
    let flat: Vec<u32> = counters.iter().flatten().copied().collect();
    let cbuf = ctx.storage_init("philox counters", bytemuck::cast_slice(&flat));
    let out = ctx.storage("philox words", (n * 16) as u64)?;
    let mut rec = Recorder::new(ctx);
    let pr = Params { key_lo: seed as u32, key_hi: (seed >> 32) as u32, aux0: n as u32, ..Default::default() };
    rec.dispatch(&ctx.philox_words, pr, &[&cbuf, &out], grid(n as u64, 64));
    let what = || format!("the Philox test kernel ({n} counters)");
    rec.flush(&what)?;
    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&ctx.read(&out, 0, (n * 16) as u64, &what)?);
    Ok(words.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
}
