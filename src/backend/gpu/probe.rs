//! The probe on the GPU: forward pass with √L checkpoints, segment-wise recomputation and
//! backpropagation of renormalised δ, per-layer records read back and turned into the
//! log10 statistics of MATH.md in f64 on the host (the same arithmetic as the CPU backend).
//!
//! Device memory: ⌈L/K⌉ checkpoints and 2K kept rows of B × N floats (K ≈ √L), one layer's
//! weights, and L small per-layer records: B·N·√L, never L·N² or L·B·N.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array2;

use super::context::{grid, Context, Params, Recorder, FLAG_BIAS, FLAG_DSIG, FLAG_REC_NEXT, FLAG_SCALED, MAX_WORKGROUPS_PER_DIM};
use crate::error::{Error, Result};
use crate::linalg::spectral_norm;
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
    /// Batch-mean and Gram partials per record, and the record size (floats).
    p1: usize,
    p2: usize,
    rs: usize,
    /// Weight buffer slots (1 for drawn weights) and their size in floats.
    ring: usize,
    w_floats: usize,
}

impl Plan {
    fn new(ctx: &Context, p: &Problem, keep_budget: u64) -> Result<Plan> {
        let net = &p.net;
        let l = net.depth();
        let b = p.batch();
        let bp = round4(b);
        let s = round4(*net.widths.iter().max().unwrap());
        let w_floats = (1..=l).map(|i| round4(net.widths[i]) * round4(net.widths[i - 1])).max().unwrap();
        let row_bytes = (bp * s * 4) as u64;
        let k = if 3 * l as u64 * row_bytes <= keep_budget { l } else { (l as f64).sqrt().ceil() as usize };
        let nseg = l.div_ceil(k);
        let (p1, p2) = (MEAN_PARTS, GRAM_PARTS);
        let rs = 6 * b + p1 + p2;
        let ring = if net.weights_are_streamable() { 1 } else { ((WEIGHT_RING_BUDGET / (w_floats as u64 * 4)) as usize).clamp(1, LAYERS_PER_SUBMIT) };
        let plan = Plan { b, bp, l, k, nseg, s, p1, p2, rs, ring, w_floats };
        plan.check(ctx, p)?;
        Ok(plan)
    }

    /// Device bytes the probe allocates.
    fn bytes(&self) -> u64 {
        let row = (self.bp * self.s * 4) as u64;
        let rows = (self.nseg + 2 * self.k + 5) as u64;
        rows * row + (self.ring * self.w_floats * 4) as u64 + (self.l * self.rs * 4) as u64 + (LAYERS_PER_SUBMIT * self.s * 4) as u64
    }

    fn check(&self, ctx: &Context, p: &Problem) -> Result<()> {
        let lim = &ctx.limits;
        let bind = lim.max_storage_buffer_binding_size.min(lim.max_buffer_size);
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
        let groups_needed = [self.b as u64, (self.s as u64).div_ceil(64), (self.b as u64).div_ceil(16)];
        if groups_needed.iter().any(|&g| g > MAX_WORKGROUPS_PER_DIM as u64) {
            return fail(format!("batch {} needs more than {} workgroups in one dimension", self.b, MAX_WORKGROUPS_PER_DIM), "batches up to 65,535 fit".into());
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
    g: wgpu::Buffer,
    delta: wgpu::Buffer,
    ed: wgpu::Buffer,
    w: Vec<wgpu::Buffer>,
    bias: wgpu::Buffer,
    rec: wgpu::Buffer,
}

impl Bufs {
    fn new(ctx: &Context, pl: &Plan) -> Result<Bufs> {
        let row = (pl.bp * pl.s * 4) as u64;
        let ex = (pl.bp * 4) as u64;
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
            g: ctx.storage("g", row)?,
            delta: ctx.storage("delta", row)?,
            ed: ctx.storage("exponents of delta", ex)?,
            w: many("weights", pl.ring, (pl.w_floats * 4) as u64)?,
            bias: ctx.storage("biases", (LAYERS_PER_SUBMIT * pl.s * 4) as u64)?,
            rec: ctx.storage("records", (pl.l * pl.rs * 4) as u64)?,
        })
    }
}

/// One probe in flight: the problem, its plan and buffers, the recorder, and where it is.
struct Run<'a> {
    ctx: &'a Context,
    p: &'a Problem,
    pl: Plan,
    rec: Recorder<'a>,
    scaled: bool,
    /// Weight-ring and bias-ring slots used in the current submission.
    w_used: usize,
    b_used: usize,
    phase: &'static str,
    first_layer: usize,
    cur_layer: usize,
    ortho_cache: Option<Vec<Option<std::sync::Arc<Vec<f32>>>>>,
}

impl<'a> Run<'a> {
    fn what(&self) -> String {
        let w = &self.p.net.widths;
        let (lo, hi) = (self.first_layer.min(self.cur_layer), self.first_layer.max(self.cur_layer));
        format!("{} (layers {lo}..={hi}, batch {}, widths {}..{})", self.phase, self.pl.b, w.iter().min().unwrap(), w.iter().max().unwrap())
    }

    fn flush(&mut self) -> Result<()> {
        let what = self.what();
        self.rec.flush(&|| what.clone())?;
        self.w_used = 0;
        self.b_used = 0;
        self.first_layer = self.cur_layer;
        Ok(())
    }

    /// Starts work on layer l, submitting what was recorded when a budget is reached.
    fn begin_layer(&mut self, l: usize, need_weights: bool) -> Result<()> {
        let (n_out, n_in) = (self.p.net.widths[l], self.p.net.widths[l - 1]);
        let ring_full = (need_weights && self.w_used >= self.pl.ring && self.pl.ring > 1) || self.b_used >= LAYERS_PER_SUBMIT;
        if ring_full || self.rec.full(WORK_PER_SUBMIT, LAYERS_PER_SUBMIT) {
            self.flush()?;
        }
        if self.rec.layers == 0 {
            self.first_layer = l;
        }
        self.cur_layer = l;
        self.rec.layers += 1;
        self.rec.work += (self.pl.b * n_in * n_out) as f64 + if self.p.net.weights_are_streamable() && need_weights { 25.0 * (n_in * n_out) as f64 } else { 0.0 };
        Ok(())
    }

    /// Puts W^l into a weight buffer (drawn on the device, or uploaded) and returns its index.
    fn weights(&mut self, b: &Bufs, l: usize) -> Result<usize> {
        let net = &self.p.net;
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let (rows, s_in) = (round4(n_out), round4(n_in));
        if let (true, NetParams::Generated { init, seed }) = (net.weights_are_streamable(), &net.params) {
            let (kind, scale) = match init.kind {
                InitKind::XavierUniform => (1, (6.0 / (n_in + n_out) as f64).sqrt()),
                _ => (0, (init.layer_sigma_w2(n_in, n_out) / n_in as f64).sqrt()),
            };
            let params = Params {
                n_in: n_in as u32,
                n_out: n_out as u32,
                s_in: s_in as u32,
                layer: l as u32,
                kind,
                scale: scale as f32,
                key_lo: *seed as u32,
                key_hi: (*seed >> 32) as u32,
                aux0: rows as u32,
                ..Default::default()
            };
            let k = &self.ctx.draw_weights;
            self.rec.dispatch(k, params, &[&b.w[0]], grid((rows * s_in / 4) as u64, 64));
            return Ok(0);
        }
        let slot = self.w_used % self.pl.ring;
        self.w_used += 1;
        let data = self.host_weights(l);
        self.ctx.queue.write_buffer(&b.w[slot], 0, bytemuck::cast_slice(&data[..]));
        Ok(slot)
    }

    /// W^l as padded f32 rows, from stored parameters or the (cached) orthogonal draw.
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

    /// Uploads b^l into the bias ring; returns (offset in floats, non-zero?).
    fn bias(&mut self, bufs: &Bufs, l: usize) -> (u32, bool) {
        let net = &self.p.net;
        let n = net.widths[l];
        let b: Cow<ndarray::Array1<f64>> = match &net.params {
            NetParams::Generated { init, seed } => Cow::Owned(init.biases(&Stream::new(*seed), l, n)),
            NetParams::Stored(sp) => Cow::Borrowed(&sp.b[l - 1]),
        };
        if b.iter().all(|&v| v == 0.0) {
            return (0, false);
        }
        let slot = self.b_used;
        self.b_used += 1;
        let data: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        let off = slot * self.pl.s;
        self.ctx.queue.write_buffer(&bufs.bias, (off * 4) as u64, bytemuck::cast_slice(&data));
        (off as u32, true)
    }

    /// Forward layer l from (a_in, e_in) into (a_out, e_out) with σ′ into dsig_out.
    fn forward_layer(&mut self, b: &Bufs, l: usize, io: [&wgpu::Buffer; 5]) -> Result<()> {
        let [a_in, e_in, a_out, e_out, dsig_out] = io;
        self.begin_layer(l, true)?;
        let wi = self.weights(b, l)?;
        let (bias_off, has_bias) = self.bias(b, l);
        let net = &self.p.net;
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let (kind, alpha) = activation_id(net.activation_at(l));
        let mut flags = if self.scaled { FLAG_SCALED } else { 0 } | if has_bias { FLAG_BIAS } else { 0 };
        if l < self.pl.l {
            flags |= FLAG_REC_NEXT;
        }
        let pr = Params {
            batch: self.pl.b as u32,
            n_in: n_in as u32,
            n_out: n_out as u32,
            s_in: round4(n_in) as u32,
            s_out: round4(n_out) as u32,
            layer: l as u32,
            kind,
            flags,
            alpha,
            rec: ((l - 1) * self.pl.rs) as u32,
            rec_next: (l * self.pl.rs) as u32,
            aux1: bias_off,
            ..Default::default()
        };
        let groups = (n_out.div_ceil(64) as u32, self.pl.b.div_ceil(16) as u32, 1);
        self.rec.dispatch(&self.ctx.mm_forward, pr, &[a_in, &b.w[wi], &b.bias, e_in, &b.z], groups);
        self.rec.dispatch(&self.ctx.forward_post, pr, &[&b.z, a_out, dsig_out, e_in, e_out, &b.rec], grid(self.pl.b as u64, 1));
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
        }
        Ok(())
    }
}

impl Run<'_> {
    /// Backward layer l: δ^l from g (or ê at the top) and σ′(z^l), renormalised; its batch
    /// partial sums against â^{l-1}; then g ← δ^l W^l for layer l-1.
    fn backward_layer(&mut self, b: &Bufs, l: usize, i: usize, a_prev: &wgpu::Buffer) -> Result<()> {
        self.begin_layer(l, l > 1)?;
        let net = &self.p.net;
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let use_dsig = l < self.pl.l || net.cost == Cost::Quadratic;
        let pr = Params {
            batch: self.pl.b as u32,
            n_in: n_in as u32,
            n_out: n_out as u32,
            s_in: round4(n_in) as u32,
            s_out: round4(n_out) as u32,
            layer: l as u32,
            flags: if use_dsig { FLAG_DSIG } else { 0 },
            rec: ((l - 1) * self.pl.rs) as u32,
            aux0: self.pl.p1 as u32,
            ..Default::default()
        };
        let ctx = self.ctx;
        self.rec.dispatch(&ctx.backward_post, pr, &[&b.g, &b.keep_d[i], &b.delta, &b.ed, &b.rec], grid(self.pl.b as u64, 1));
        self.rec.dispatch(&ctx.batch_mean, pr, &[&b.delta, &b.rec], ((MEAN_PARTS / 64) as u32, 1, 1));
        self.rec.dispatch(&ctx.gram, pr, &[&b.delta, a_prev, &b.rec], ((GRAM_PARTS / 64) as u32, 1, 1));
        if l > 1 {
            let wi = self.weights(b, l)?;
            let groups = (round4(n_in).div_ceil(64) as u32, self.pl.b.div_ceil(16) as u32, 1);
            self.rec.dispatch(&ctx.mm_backward, pr, &[&b.delta, &b.w[wi], &b.g], groups);
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

/// log2 ‖W^l‖₂ for l = 1..=L (index 0 unused), by the CPU's f64 Lanczos on the same
/// weights, spread over the host's cores while the GPU works.
fn weight_norms(p: &Problem, cancel: &std::sync::atomic::AtomicBool) -> Vec<f64> {
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
                        let (w, _) = p.net.layer(l);
                        mine.push((l, spectral_norm(w.view()).log2()));
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

/// What the device part of the probe hands to the host assembly.
enum DeviceOut {
    Overflow(usize),
    Done { rec: Vec<f32>, log2_err: Vec<f64>, log10_cost: f64 },
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

fn run_device(ctx: &Context, p: &Problem, pl: Plan) -> Result<(DeviceOut, Plan)> {
    let net = &p.net;
    let (big_l, bsz) = (net.depth(), p.batch());
    let scaled = net.activation.is_homogeneous();
    let bufs = Bufs::new(ctx, &pl).map_err(|e| match e {
        Error::Device(m) => Error::Device(format!("{m} (the probe needs about {} MiB of GPU memory in all; lower --batch, --width or --depth)", pl.bytes() >> 20)),
        e => e,
    })?;
    let ortho = matches!(&net.params, NetParams::Generated { .. }) && !net.weights_are_streamable();
    let ortho_bytes: u64 = (1..=big_l).map(|l| (round4(net.widths[l]) * round4(net.widths[l - 1]) * 4) as u64).sum();
    let mut run = Run {
        ctx,
        p,
        pl,
        rec: Recorder::new(ctx),
        scaled,
        w_used: 0,
        b_used: 0,
        phase: "forward pass",
        first_layer: 1,
        cur_layer: 1,
        ortho_cache: if ortho && ortho_bytes <= ORTHO_CACHE_BUDGET { Some(vec![None; big_l + 1]) } else { None },
    };
    let (bp, rs) = (run.pl.bp, run.pl.rs);

    // a^0 (renormalised for homogeneous σ, as on the CPU) and layer 1's record of it.
    let mut a0 = p.inputs.clone();
    let mut e0 = vec![0i64; bsz];
    if scaled {
        renormalise_rows(&mut a0, &mut e0);
    }
    let s0 = round4(net.widths[0]);
    ctx.queue.write_buffer(&bufs.ckpt_a[0], 0, bytemuck::cast_slice(&padded(&a0, bp, s0)));
    let e0_32: Vec<i32> = e0.iter().map(|&e| e as i32).collect();
    ctx.queue.write_buffer(&bufs.ckpt_e[0], 0, bytemuck::cast_slice(&e0_32));
    let mut rec1 = vec![0f32; 2 * bsz];
    for x in 0..bsz {
        rec1[x] = a0.row(x).dot(&a0.row(x)) as f32;
        rec1[bsz + x] = e0[x] as f32;
    }
    ctx.queue.write_buffer(&bufs.rec, (bsz * 4) as u64, bytemuck::cast_slice(&rec1));

    // Forward pass: checkpoints every K layers; the last segment's rows stay for backward.
    let nseg = run.pl.nseg;
    for g in 0..nseg {
        run.forward_segment(&bufs, g, if g + 1 < nseg { Some(g + 1) } else { None })?;
    }
    run.flush()?;
    let what = || "reading the forward pass back".to_string();
    let rec = f32s(&ctx.read(&bufs.rec, 0, (big_l * rs * 4) as u64, &what)?);
    for l in 1..=big_l {
        let r = &rec[(l - 1) * rs..];
        if (0..bsz).any(|x| r[5 * bsz + x] != 1.0) {
            return Ok((DeviceOut::Overflow(l), run.pl));
        }
    }

    // The output error e_x = a^L_x − y_x as mantissa and exponent, in f64 as on the CPU.
    let nl = net.widths[big_l];
    let sl = round4(nl);
    let a_hat = unpad(&f32s(&ctx.read(&bufs.a_last, 0, (bsz * sl * 4) as u64, &what)?), bsz, nl, sl);
    let e_out: Vec<i64> = bytemuck::pod_collect_to_vec::<u8, i32>(&ctx.read(&bufs.e_last, 0, (bsz * 4) as u64, &what)?).into_iter().map(|e| e as i64).collect();
    let mut err = a_hat.clone();
    let mut e_err = e_out.clone();
    for (x, (mut row, ex)) in err.rows_mut().into_iter().zip(e_err.iter_mut()).enumerate() {
        let y = p.targets.row(x);
        if *ex == 0 {
            row -= &y;
        } else if *ex < -900 {
            let kk = *ex;
            row.mapv_inplace(|v| scale2(v, kk));
            row -= &y;
            *ex = 0;
        } else {
            row.scaled_add(-pow2(-*ex), &y);
        }
    }
    let log2_err: Vec<f64> = err.rows().into_iter().zip(&e_err).map(|(r, &e)| e as f64 + 0.5 * r.dot(&r).log2()).collect();
    let log10_cost = match net.cost {
        Cost::Quadratic => (log2_sum_exp2(log2_err.iter().map(|v| 2.0 * v)) - 1.0 - (bsz as f64).log2()) * LOG10_2,
        Cost::CrossEntropy => {
            let z_last = unpad(&f32s(&ctx.read(&bufs.z, 0, (bsz * sl * 4) as u64, &what)?), bsz, nl, sl);
            let c: f64 = (0..bsz).map(|x| net.cost.example_cost(z_last.row(x), a_hat.row(x), p.targets.row(x))).sum::<f64>() / bsz as f64;
            c.log10()
        }
    };
    renormalise_rows(&mut err, &mut e_err);
    ctx.queue.write_buffer(&bufs.g, 0, bytemuck::cast_slice(&padded(&err, bp, sl)));
    let ed: Vec<i32> = e_err.iter().map(|&e| e.clamp(i32::MIN as i64 / 2, i32::MAX as i64 / 2) as i32).collect();
    ctx.queue.write_buffer(&bufs.ed, 0, bytemuck::cast_slice(&ed));

    // Backward, one segment at a time from the top, recomputing each from its checkpoint.
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
    run.flush()?;
    let what = || "reading the backward pass back".to_string();
    let rec = f32s(&ctx.read(&bufs.rec, 0, (big_l * rs * 4) as u64, &what)?);
    Ok((DeviceOut::Done { rec, log2_err, log10_cost }, run.pl))
}

/// The GPU probe: device work and, alongside on the host, the spectral norms.
pub fn probe(ctx: &Context, p: &Problem, device: String, keep_budget: u64) -> Result<Report> {
    let pl = Plan::new(ctx, p, keep_budget)?;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (dev, log2_wnorm) = std::thread::scope(|sc| {
        let norms = sc.spawn(|| weight_norms(p, &cancel));
        let dev = run_device(ctx, p, pl);
        if dev.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        (dev, norms.join())
    });
    let (dev, pl) = dev?;
    let log2_wnorm = log2_wnorm.map_err(|_| Error::Internal("the spectral-norm thread panicked".into()))?;
    Ok(assemble(p, &pl, dev, &log2_wnorm, device))
}

/// The log10 statistics from the device's records, with the CPU backend's arithmetic.
fn assemble(p: &Problem, pl: &Plan, dev: DeviceOut, log2_wnorm: &[f64], device: String) -> Report {
    let net = &p.net;
    let (big_l, bsz) = (net.depth(), p.batch());
    let mut layers: Vec<LayerStats> = (1..=big_l)
        .map(|l| LayerStats {
            layer: l,
            width: net.widths[l],
            log10_grad_b_mean: f64::NAN,
            log10_grad_b_rms: f64::NAN,
            log10_grad_w_mean: f64::NAN,
            log10_grad_w_rms: f64::NAN,
            log10_weight_norm: log2_wnorm[l] * LOG10_2,
            log10_max_dsigma: f64::NAN,
            log10_bound: f64::NAN,
            log10_bound_tight: f64::NAN,
            status: LayerStatus::Overflow,
        })
        .collect();
    let (rec, log2_err, log10_cost) = match dev {
        DeviceOut::Overflow(l) => {
            return Report { layers, backend: "gpu".into(), device, overflow_layer: Some(l), log10_cost: f64::NAN };
        }
        DeviceOut::Done { rec, log2_err, log10_cost } => (rec, log2_err, log10_cost),
    };
    let rs = pl.rs;
    let field = |l: usize, f: usize, x: usize| rec[(l - 1) * rs + f * bsz + x] as f64;
    let maxd: Vec<Vec<f64>> = (0..=big_l).map(|l| if l == 0 { Vec::new() } else { (0..bsz).map(|x| field(l, 0, x)).collect() }).collect();
    for l in 1..=big_l {
        layers[l - 1].log10_max_dsigma = maxd[l].iter().fold(0.0_f64, |m, &v| m.max(v)).log10();
    }
    let lb = (bsz as f64).log2();
    let has_top_dsigma = net.cost == Cost::Quadratic;
    let mut tight = log2_err.clone();
    let mut bound = log2_err.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let mut status_above = LayerStatus::Ok;
    for l in (1..=big_l).rev() {
        let sq_a: Vec<f64> = (0..bsz).map(|x| field(l, 1, x)).collect();
        let ea: Vec<f64> = (0..bsz).map(|x| field(l, 2, x)).collect();
        let sq_d: Vec<f64> = (0..bsz).map(|x| field(l, 3, x)).collect();
        let ed: Vec<f64> = (0..bsz).map(|x| field(l, 4, x)).collect();
        let base = (l - 1) * rs + 6 * bsz;
        let bmean: f64 = rec[base..base + pl.p1].iter().map(|&v| v as f64).sum();
        let gram: f64 = rec[base + pl.p1..base + pl.p1 + pl.p2].iter().map(|&v| v as f64).sum();
        if l < big_l || has_top_dsigma {
            bound += net.gamma_at(l).log2();
            for (t, m) in tight.iter_mut().zip(&maxd[l]) {
                *t += m.log2();
            }
        }
        let st = &mut layers[l - 1];
        let t_b: Vec<f64> = sq_d.iter().zip(&ed).map(|(s, e)| 2.0 * e + s.log2()).collect();
        st.log10_grad_b_rms = 0.5 * (log2_sum_exp2(t_b.iter().copied()) - lb) * LOG10_2;
        let t_w: Vec<f64> = t_b.iter().zip(sq_a.iter().zip(&ea)).map(|(tb, (s, e))| tb + 2.0 * e + s.log2()).collect();
        st.log10_grad_w_rms = 0.5 * (log2_sum_exp2(t_w.iter().copied()) - lb) * LOG10_2;
        let m_d = ed.iter().zip(&sq_d).filter(|(_, s)| **s > 0.0).map(|(e, _)| *e).fold(f64::NEG_INFINITY, f64::max);
        st.log10_grad_b_mean = if m_d.is_finite() { (m_d + 0.5 * bmean.log2() - lb) * LOG10_2 } else { f64::NEG_INFINITY };
        let m_c = (0..bsz).filter(|&x| sq_d[x] > 0.0 && sq_a[x] > 0.0).map(|x| ed[x] + ea[x]).fold(f64::NEG_INFINITY, f64::max);
        st.log10_grad_w_mean = if m_c.is_finite() { (m_c + 0.5 * gram.max(0.0).log2() - lb) * LOG10_2 } else { f64::NEG_INFINITY };
        st.log10_bound = bound * LOG10_2;
        st.log10_bound_tight = tight.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v)) * LOG10_2;
        st.status = if status_above != LayerStatus::Ok {
            status_above
        } else if sq_d.iter().all(|&v| v == 0.0) {
            if matches!(net.activation_at(l), Activation::Relu | Activation::LeakyRelu(_) | Activation::HardTanh | Activation::Linear) {
                LayerStatus::ZeroGradient
            } else {
                LayerStatus::Underflow
            }
        } else {
            LayerStatus::Ok
        };
        status_above = st.status;
        if l > 1 {
            bound += log2_wnorm[l];
            for t in tight.iter_mut() {
                *t += log2_wnorm[l];
            }
        }
    }
    Report { layers, backend: "gpu".into(), device, overflow_layer: None, log10_cost }
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
