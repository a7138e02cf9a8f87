//! The plan and buffers of one GPU probe: sizes checked against the device before any work
//! starts (the checkpoint interval from [`crate::backend::plan`]), where each network's
//! blocks start in the shared buffers, and the buffers themselves.

use super::context::{Context, MAX_WORKGROUPS_PER_DIM};
use crate::backend::plan;
use crate::error::{Error, Result};
use crate::model::Problem;

/// Kept activations may use this many bytes before the probe switches to √L checkpoints.
pub const KEEP_BUDGET: u64 = 256 << 20;
/// Layers per submission (bounds the bias and weight rings).
pub(super) const LAYERS_PER_SUBMIT: usize = 64;
/// Partial sums per layer of the batch-mean and Gram kernels (MEAN_PARTS, GRAM_PARTS in
/// shaders/reduce.wgsl).
pub(super) const MEAN_PARTS: usize = 64;
pub(super) const GRAM_PARTS: usize = 256;
/// Host memory for caching generated orthogonal weights (QR is O(n³) per draw).
pub(super) const ORTHO_CACHE_BUDGET: u64 = 1 << 30;
/// Bytes of stored weights uploaded per submission.
pub(super) const WEIGHT_RING_BUDGET: u64 = 256 << 20;
/// Bytes of one stacked buffer (δ, g, output errors, backward records) of a depth sweep;
/// more depths than fit run in several passes.
pub(super) const STACK_BUDGET: u64 = 256 << 20;

pub(super) fn round4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

pub(super) fn binding_limit(ctx: &Context) -> u64 {
    ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size)
}

/// The most depths one pass can stack for this batch, these widths and `nets` networks (≥ 1).
pub(super) fn max_depths_per_pass(ctx: &Context, p: &Problem, nets: usize) -> usize {
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
pub(super) struct Plan {
    pub(super) b: usize,
    pub(super) bp: usize,
    pub(super) l: usize,
    /// Checkpoint interval K and number of segments.
    pub(super) k: usize,
    pub(super) nseg: usize,
    /// Widest padded row (floats).
    pub(super) s: usize,
    /// Forward record size (floats per layer).
    pub(super) rs: usize,
    /// Batch-mean and Gram partials per backward record, and its size (floats per block).
    pub(super) p1: usize,
    pub(super) p2: usize,
    pub(super) rb: usize,
    /// Depths stacked, rows of the stacked δ (padded), padded output width.
    pub(super) nd: usize,
    pub(super) rows: usize,
    pub(super) s_top: usize,
    /// Floats of the backward-record ring (read back at every submission).
    pub(super) brec_cap: usize,
    /// Weight buffer slots (1 for drawn weights) and their size in floats.
    pub(super) ring: usize,
    pub(super) w_floats: usize,
    /// Networks run side by side (workgroup_id.z); every buffer holds one block per network.
    pub(super) nets: usize,
}

impl Plan {
    pub(super) fn new(ctx: &Context, p: &Problem, keep_budget: u64, nd: usize, nets: usize) -> Result<Plan> {
        let net = &p.net;
        let l = net.depth();
        let b = p.batch();
        let bp = round4(b);
        let s = round4(*net.widths.iter().max().unwrap());
        let w_floats = (1..=l).map(|i| round4(net.widths[i]) * round4(net.widths[i - 1])).max().unwrap();
        let row_bytes = (bp * s * 4 * nets) as u64;
        let k = plan::checkpoint_interval(l, 3 * l as u128 * row_bytes as u128, keep_budget as u128);
        let nseg = plan::segments(l, k).count();
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
    pub(super) fn err_floats(&self) -> usize {
        self.b * self.s_top
    }

    /// Device bytes the probe allocates (all networks).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes_per_net() * self.nets as u64
    }

    pub(super) fn bytes_per_net(&self) -> u64 {
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

    pub(super) fn check(&self, ctx: &Context, p: &Problem) -> Result<()> {
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
pub(super) struct Bufs {
    pub(super) ckpt_a: Vec<wgpu::Buffer>,
    pub(super) ckpt_e: Vec<wgpu::Buffer>,
    pub(super) keep_a: Vec<wgpu::Buffer>,
    pub(super) keep_e: Vec<wgpu::Buffer>,
    pub(super) keep_d: Vec<wgpu::Buffer>,
    pub(super) a_last: wgpu::Buffer,
    pub(super) e_last: wgpu::Buffer,
    pub(super) z: wgpu::Buffer,
    /// Stacked: g = δ^{l+1} W^{l+1}, δ̂^l and its exponents (rows j·B + x).
    pub(super) g: wgpu::Buffer,
    pub(super) delta: wgpu::Buffer,
    pub(super) ed: wgpu::Buffer,
    /// Per depth: a^d (captured in the forward pass), then its output error ê; exponents;
    /// z^d for the cross-entropy cost.
    pub(super) errs: wgpu::Buffer,
    pub(super) err_e: wgpu::Buffer,
    pub(super) out_z: wgpu::Buffer,
    pub(super) w: Vec<wgpu::Buffer>,
    pub(super) bias: wgpu::Buffer,
    /// Forward records (L of them) and the backward-record ring.
    pub(super) rec: wgpu::Buffer,
    pub(super) brec: wgpu::Buffer,
}

impl Bufs {
    pub(super) fn new(ctx: &Context, pl: &Plan, ce: bool) -> Result<Bufs> {
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

/// Where network n's blocks start in each shared buffer (floats or rows).
#[derive(Clone, Copy)]
pub(super) struct NetOff {
    /// Rows of the per-example arrays, rows of the stacked arrays.
    pub(super) row0: usize,
    pub(super) srow0: usize,
    /// Floats: forward records, backward-record ring, output errors (and z), their
    /// exponents, bias ring, weights.
    pub(super) rec: usize,
    pub(super) brec: usize,
    pub(super) errs: usize,
    pub(super) err_e: usize,
    pub(super) bias: usize,
    pub(super) w: usize,
}

impl Plan {
    pub(super) fn off(&self, n: usize) -> NetOff {
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

