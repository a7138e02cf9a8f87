//! SGD on the device (`train --backend gpu`): the weights live in f32 buffers, one per layer,
//! and every step (batch gather, forward, output error, backward, gradient and update) is
//! recorded as dispatches, many steps per submission, with nothing read back but a status
//! word until a record asks for the weights.
//!
//! The forward and backward layer kernels are the probe's (shaders/matmul.wgsl,
//! shaders/pointwise.wgsl) called as they are; shaders/train.wgsl adds the gather, the output
//! error, the forward finiteness check and the fused gradient + update. The backward rows
//! carry one power-of-two exponent per example (pointwise.wgsl's renormalisation), so a
//! 100-layer sigmoid network's 10^-60 gradients are exact until they are added to W, where
//! f32 rounds them away exactly as f64 would (an update changes W_ij only above half an ulp
//! of W_ij). The forward pass runs at its natural scale: a pre-activation beyond f32's range
//! (3.4e38) stops the run, naming the step and layer.

use ndarray::{Array1, Array2};

use super::buffers::round4;
use super::context::{make_kernel, Access, Context, Kernel, FLAG_BIAS, FLAG_DSIG, FLAG_JOIN};
use super::params::{Family, MatmulParams, PointwiseParams, TrainParams};
use super::probe::{activation_id, padded as padded_rows};
use super::recorder::{grid, InFlight, Recorder};
use super::GpuBackend;
use crate::error::{Error, Result};
use crate::model::{Cost, Network};

/// Workgroup shape of `update` (16 × 4 invocations, each a 4 × 4 block of W).
const UPDATE_WG: (usize, usize) = (16, 4);
/// Work (multiply-adds) per submission is bounded by the recorder; layers are not.
const LAYER_BUDGET: usize = usize::MAX;
/// The most bytes one readback of the weights copies at once.
const READ_CHUNK: u64 = 128 << 20;

struct TrainKernels {
    gather: Kernel<TrainParams>,
    output_error: Kernel<TrainParams>,
    check_forward: Kernel<TrainParams>,
    update: Kernel<TrainParams>,
}

impl TrainKernels {
    fn new(ctx: &Context) -> Result<TrainKernels> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let source = crate::backend::shaders::module(Family::Train.label()).ok_or_else(|| Error::Internal("shaders::modules has no train module".into()))?.source;
        let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("train"), source: wgpu::ShaderSource::Wgsl(source.into()) });
        use Access::{Read as R, ReadWrite as W};
        let opts = wgpu::PipelineCompilationOptions::default();
        let kernel = |name, b: &[(u32, Access)]| make_kernel(&ctx.device, &module, name, b, &opts);
        let k = TrainKernels {
            gather: kernel("gather", &[(1, R), (2, R), (3, W)]),
            output_error: kernel("output_error", &[(1, R), (2, R), (3, W)]),
            check_forward: kernel("check_forward", &[(1, R), (4, W)]),
            update: kernel("update", &[(1, R), (2, R), (4, W), (5, R), (6, W), (7, W), (8, W)]),
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!("building the training kernels on '{}' failed: {e}", ctx.info.name)));
        }
        Ok(k)
    }
}

/// What a training run holds on the device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainMemory {
    /// W^l and b^l of every layer: Σ_l round4(n_l)·round4(n_{l-1}) + n_l floats (≈ L·N²).
    pub weights: u64,
    /// a^l and σ′(z^l) of every layer for one batch, and the work rows (≈ 2·L·B·N).
    pub activations: u64,
    /// The training set, resident (n × (n_0 + n_L) floats), and its order.
    pub data: u64,
    /// The largest single buffer (one binding must hold it).
    pub largest: u64,
    pub largest_what: &'static str,
}

impl TrainMemory {
    /// The device bytes of training `widths` with batches of `batch` on `examples` examples.
    pub fn of(widths: &[usize], batch: usize, examples: usize) -> TrainMemory {
        let big_l = widths.len() - 1;
        let bp = round4(batch) as u64;
        let s: Vec<u64> = widths.iter().map(|&n| round4(n) as u64).collect();
        let smax = *s.iter().max().unwrap();
        let w_layer: Vec<u64> = (1..=big_l).map(|l| 4 * s[l] * s[l - 1]).collect();
        let weights = w_layer.iter().sum::<u64>() + 4 * s[1..].iter().sum::<u64>();
        let activations = 4 * bp * (s.iter().sum::<u64>() + s[1..].iter().sum::<u64>() + 4 * smax + s[big_l]) + 4 * 8 * bp * big_l as u64;
        let (x_bytes, y_bytes) = (4 * examples as u64 * s[0], 4 * examples as u64 * s[big_l]);
        let data = x_bytes + y_bytes + 4 * examples as u64;
        let wmax = *w_layer.iter().max().unwrap();
        let (largest, largest_what) = [(wmax, "one layer's weights"), (x_bytes, "the training inputs"), (4 * bp * smax, "one batch's rows")]
            .into_iter()
            .max_by_key(|p| p.0)
            .unwrap();
        TrainMemory { weights, activations, data, largest, largest_what }
    }

    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.data
    }
}

/// The device memory of a run, or why it will not fit: each buffer must fit one binding of
/// the adapter (wgpu reports no total; an allocation beyond the device's memory fails
/// before the first step, in [`Trainer::new`]).
///
/// # Errors
/// [`Error::OutOfMemory`] naming the largest buffer, the weights' total and the limit.
pub fn fits(gpu: &GpuBackend, widths: &[usize], batch: usize, examples: usize) -> Result<TrainMemory> {
    let ctx = gpu.context();
    let memory = TrainMemory::of(widths, batch, examples);
    let limit = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
    if memory.largest > limit {
        return Err(Error::OutOfMemory {
            what: format!(
                "training on '{}': {} ({:.1} MiB; the weights are {:.1} MiB in all, Σ_l n_l·n_(l-1) ≈ L·N² f32)",
                ctx.info.name,
                memory.largest_what,
                memory.largest as f64 / 1048576.0,
                memory.weights as f64 / 1048576.0
            ),
            needed_mib: memory.largest.div_ceil(1 << 20),
            available_mib: limit >> 20,
            hint: "that is the most one GPU binding may hold; lower the widths, --examples or --batch, or use --backend cpu".into(),
        });
    }
    Ok(memory)
}

/// A network being trained on the device.
pub struct Trainer<'c> {
    ctx: &'c Context,
    k: TrainKernels,
    rec: Recorder<'c>,
    widths: Vec<usize>,
    s: Vec<usize>,
    acts: Vec<(u32, f32)>,
    quadratic: bool,
    bmax: usize,
    lr: f32,
    decay: f32,
    w: Vec<wgpu::Buffer>,
    b: Vec<wgpu::Buffer>,
    /// a^0 (the gathered batch) .. a^L, and σ′(z^l) at index l − 1.
    a: Vec<wgpu::Buffer>,
    dsig: Vec<wgpu::Buffer>,
    z: wgpu::Buffer,
    d: wgpu::Buffer,
    g: wgpu::Buffer,
    y: wgpu::Buffer,
    err: wgpu::Buffer,
    zeros_e: wgpu::Buffer,
    e_scratch: wgpu::Buffer,
    e_io: wgpu::Buffer,
    frec: wgpu::Buffer,
    brec: wgpu::Buffer,
    sums: wgpu::Buffer,
    /// Per layer: where its sums start and how many workgroups wrote partials.
    sums_at: Vec<(usize, usize)>,
    status: wgpu::Buffer,
    x_all: wgpu::Buffer,
    y_all: wgpu::Buffer,
    order: wgpu::Buffer,
    in_flight: Option<InFlight>,
    /// The status words of the last submission waited for.
    last_status: [u32; 3],
    pub memory: TrainMemory,
}

/// Where a step left f32's range: the step (1-based), the layer and the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    pub step: u64,
    pub layer: usize,
    pub pass: &'static str,
}

impl<'c> Trainer<'c> {
    /// Allocates everything and uploads `w`, `b` (rounded to f32) and the data `x`, `y`
    /// (n × n_0, n × n_L); learning rate `lr`, decay `ηλ/n`, batches of at most `batch`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] (said before anything is allocated) when a buffer exceeds what
    /// one binding may hold on the adapter; [`Error::Device`] when an allocation fails or the
    /// kernels do not build.
    #[allow(clippy::too_many_arguments)]
    pub fn new(gpu: &'c GpuBackend, net: &Network, w: &[Array2<f64>], b: &[Array1<f64>], x: &Array2<f64>, y: &Array2<f64>, batch: usize, lr: f64, decay: f64) -> Result<Trainer<'c>> {
        let ctx = gpu.context();
        let widths = net.widths.clone();
        let big_l = widths.len() - 1;
        let memory = fits(gpu, &widths, batch, x.nrows())?;
        let s: Vec<usize> = widths.iter().map(|&n| round4(n)).collect();
        let smax = *s.iter().max().unwrap();
        let bp = round4(batch);
        let f = |n: usize| (4 * n) as u64;
        let mut wb = Vec::with_capacity(big_l);
        let mut bb = Vec::with_capacity(big_l);
        for l in 1..=big_l {
            let buf = ctx.storage(&format!("W^{l}"), f(s[l] * s[l - 1]))?;
            ctx.queue.write_buffer(&buf, 0, bytemuck::cast_slice(&padded_rows(&w[l - 1], s[l], s[l - 1])));
            wb.push(buf);
            let bv: Vec<f32> = b[l - 1].iter().map(|&v| v as f32).collect();
            let buf = ctx.storage(&format!("b^{l}"), f(s[l]))?;
            ctx.queue.write_buffer(&buf, 0, bytemuck::cast_slice(&bv));
            bb.push(buf);
        }
        let a = (0..=big_l).map(|l| ctx.storage(&format!("a^{l}"), f(bp * s[l]))).collect::<Result<Vec<_>>>()?;
        let dsig = (1..=big_l).map(|l| ctx.storage(&format!("σ′(z^{l})"), f(bp * s[l]))).collect::<Result<Vec<_>>>()?;
        let x_all = ctx.storage("training inputs", f(x.nrows() * s[0]))?;
        ctx.queue.write_buffer(&x_all, 0, bytemuck::cast_slice(&padded_rows(x, x.nrows(), s[0])));
        let y_all = ctx.storage("training targets", f(y.nrows() * s[big_l]))?;
        ctx.queue.write_buffer(&y_all, 0, bytemuck::cast_slice(&padded_rows(y, y.nrows(), s[big_l])));
        let mut sums_at = Vec::with_capacity(big_l);
        let mut at = 0;
        for l in 1..=big_l {
            let (gx, gy) = Self::update_grid(s[l - 1], s[l]);
            sums_at.push((at, gx * gy));
            at += 1 + 2 * gx * gy;
        }
        let acts = (1..=big_l).map(|l| activation_id(net.activation_at(l))).collect();
        Ok(Trainer {
            ctx,
            k: TrainKernels::new(ctx)?,
            rec: Recorder::new(ctx),
            quadratic: net.cost == Cost::Quadratic,
            bmax: batch,
            lr: lr as f32,
            decay: decay as f32,
            w: wb,
            b: bb,
            a,
            dsig,
            z: ctx.storage("z", f(bp * smax))?,
            d: ctx.storage("δ̂", f(bp * smax))?,
            g: ctx.storage("δ̂ W", f(bp * smax))?,
            y: ctx.storage("batch targets", f(bp * s[big_l]))?,
            err: ctx.storage("output error", f(bp * s[big_l]))?,
            zeros_e: ctx.storage("zero exponents", f(bp))?,
            e_scratch: ctx.storage("forward exponents", f(bp))?,
            e_io: ctx.storage("backward exponents", f(bp))?,
            frec: ctx.storage("forward records", f(6 * batch * big_l))?,
            brec: ctx.storage("backward records", f(2 * batch * big_l))?,
            sums: ctx.storage("update norms", f(at))?,
            sums_at,
            status: ctx.storage("status", 16)?,
            x_all,
            y_all,
            order: ctx.storage("example order", f(x.nrows()))?,
            in_flight: None,
            last_status: [0; 3],
            widths,
            s,
            acts,
            memory,
        })
    }

    fn update_grid(s_in: usize, s_out: usize) -> (usize, usize) {
        ((s_in / 4).div_ceil(UPDATE_WG.0), (s_out / 4).div_ceil(UPDATE_WG.1))
    }

    fn depth(&self) -> usize {
        self.widths.len() - 1
    }

    /// Sets the order examples are drawn in (an epoch's permutation); what was recorded with
    /// the previous order is submitted first (a buffer write lands before the next submission).
    ///
    /// # Errors
    /// A device failure.
    pub fn set_order(&mut self, order: &[usize]) -> Result<()> {
        self.flush()?;
        let o: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        self.ctx.queue.write_buffer(&self.order, 0, bytemuck::cast_slice(&o));
        Ok(())
    }

    /// Records step `step` (1-based) on the examples `order[offset..offset + batch]`,
    /// submitting when the recorder's work budget is reached.
    ///
    /// # Errors
    /// A device failure, or [`Error::Numerical`] when an earlier step left f32's range.
    pub fn step(&mut self, step: u64, offset: usize, batch: usize) -> Result<()> {
        let big_l = self.depth();
        let (s, n) = (self.s.clone(), self.widths.clone());
        let bmax = self.bmax;
        let base = TrainParams { batch: batch as u32, step: step as u32, lr: self.lr, decay: self.decay, inv_b: 1.0 / batch as f32, ..Default::default() };
        let k = &self.k;
        let gx = grid((batch * s[0]) as u64, 64);
        self.rec.dispatch(&k.gather, TrainParams { s_in: s[0] as u32, offset: offset as u32, ..base }, &[&self.x_all, &self.order, &self.a[0]], gx);
        let gy = grid((batch * s[big_l]) as u64, 64);
        self.rec.dispatch(&k.gather, TrainParams { s_in: s[big_l] as u32, offset: offset as u32, ..base }, &[&self.y_all, &self.order, &self.y], gy);
        for l in 1..=big_l {
            let (kind, alpha) = self.acts[l - 1];
            let p = MatmulParams { flags: FLAG_BIAS, ..self.layer_params(l, batch) };
            let (mm, groups) = self.ctx.mm_forward_on(self.ctx.matmul, n[l], batch);
            self.rec.dispatch(mm, p, &[&self.a[l - 1], &self.w[l - 1], &self.b[l - 1], &self.zeros_e, &self.z], groups);
            let post = PointwiseParams { batch: p.batch, n_out: p.n_out, s_out: p.s_out, activation: kind, alpha, rec: ((l - 1) * 6 * bmax) as u32, ..Default::default() };
            self.rec.dispatch(&self.ctx.forward_post, post, &[&self.z, &self.a[l], &self.dsig[l - 1], &self.zeros_e, &self.e_scratch, &self.frec], grid(batch as u64, 1));
            self.layer_done(batch * n[l - 1] * n[l])?;
        }
        let k = &self.k;
        self.rec.dispatch(&k.check_forward, TrainParams { layer: big_l as u32, frec: (6 * bmax) as u32, ..base }, &[&self.frec, &self.status], (1, 1, 1));
        let pe = TrainParams { n_out: n[big_l] as u32, s_out: s[big_l] as u32, ..base };
        self.rec.dispatch(&k.output_error, pe, &[&self.a[big_l], &self.y, &self.err], gy);
        for l in (1..=big_l).rev() {
            let top = l == big_l;
            let flags = if top { FLAG_JOIN | if self.quadratic { FLAG_DSIG } else { 0 } } else { 0 };
            let brec = (l - 1) * 2 * bmax;
            let m = self.layer_params(l, batch);
            let p = PointwiseParams { batch: m.batch, n_out: m.n_out, s_out: m.s_out, flags, blocks: 1, brec: brec as u32, bstride: (2 * bmax) as u32, ..Default::default() };
            self.rec.dispatch(&self.ctx.backward_post, p, &[&self.g, &self.dsig[l - 1], &self.d, &self.e_io, &self.brec, &self.err, &self.zeros_e], grid(batch as u64, 1));
            if l > 1 {
                let (mm, groups) = self.ctx.mm_backward_on(self.ctx.matmul, n[l - 1], batch);
                self.rec.dispatch(mm, m, &[&self.d, &self.w[l - 1], &self.g], groups);
            }
            let (ux, uy) = Self::update_grid(s[l - 1], s[l]);
            let pu = TrainParams {
                n_in: n[l - 1] as u32,
                n_out: n[l] as u32,
                s_in: s[l - 1] as u32,
                s_out: s[l] as u32,
                layer: l as u32,
                offset: self.sums_at[l - 1].0 as u32,
                frec: brec as u32,
                ..base
            };
            let k = &self.k;
            self.rec.dispatch(&k.update, pu, &[&self.d, &self.a[l - 1], &self.status, &self.brec, &self.w[l - 1], &self.b[l - 1], &self.sums], (ux as u32, uy as u32, 1));
            self.layer_done(2 * batch * n[l - 1] * n[l])?;
        }
        Ok(())
    }

    /// The layer products' parameter block of layer l: its sizes and strides, one network at
    /// row 0, no bias.
    fn layer_params(&self, l: usize, batch: usize) -> MatmulParams {
        let (n, s) = (&self.widths, &self.s);
        MatmulParams { batch: batch as u32, n_in: n[l - 1] as u32, n_out: n[l] as u32, s_in: s[l - 1] as u32, s_out: s[l] as u32, ..Default::default() }
    }

    /// Counts a layer's work and submits when the budget is reached.
    fn layer_done(&mut self, work: usize) -> Result<()> {
        self.rec.work += work as f64;
        self.rec.layers += 1;
        if self.rec.full(LAYER_BUDGET) {
            self.flush()?;
        }
        Ok(())
    }

    /// Submits what was recorded with the status word read back, then waits for the
    /// submission before it (one in flight while the host records the next).
    fn flush(&mut self) -> Result<()> {
        let big_l = self.depth();
        let what = move || format!("training ({big_l} layers)");
        let f = self.rec.submit_read(&[(&self.status, 0, 12)], &what);
        let prev = std::mem::replace(&mut self.in_flight, f);
        self.settle(prev)
    }

    fn settle(&mut self, f: Option<InFlight>) -> Result<()> {
        if let Some(f) = f {
            let back = self.rec.finish(f)?;
            let st: Vec<u32> = bytemuck::pod_collect_to_vec(&back[0]);
            self.last_status = [st[0], st[1], st[2]];
        }
        Ok(())
    }

    /// Waits for everything recorded so far; the first step that left f32's range, if any.
    ///
    /// # Errors
    /// A device failure.
    pub fn sync(&mut self) -> Result<Option<OutOfRange>> {
        self.flush()?;
        let f = self.in_flight.take();
        self.settle(f)?;
        Ok(self.out_of_range())
    }

    /// The status of the last submission waited for.
    pub fn out_of_range(&self) -> Option<OutOfRange> {
        let [step, layer, pass] = self.last_status;
        (step != 0).then(|| OutOfRange { step: step as u64, layer: layer as usize, pass: if pass == 1 { "forward" } else { "backward" } })
    }

    /// The weights as they stand (after [`Trainer::sync`]), in f64.
    ///
    /// # Errors
    /// A device failure.
    pub fn weights(&mut self) -> Result<(Vec<Array2<f64>>, Vec<Array1<f64>>)> {
        let big_l = self.depth();
        let (s, n) = (&self.s, &self.widths);
        let mut reads: Vec<(usize, bool, u64)> = Vec::new();
        for l in 1..=big_l {
            reads.push((l, true, (4 * s[l] * s[l - 1]) as u64));
            reads.push((l, false, (4 * n[l]) as u64));
        }
        let mut ws = vec![Array2::zeros((0, 0)); big_l];
        let mut bs = vec![Array1::zeros(0); big_l];
        let mut i = 0;
        while i < reads.len() {
            let mut j = i;
            let mut bytes = 0;
            while j < reads.len() && (j == i || bytes + reads[j].2 <= READ_CHUNK) {
                bytes += reads[j].2;
                j += 1;
            }
            let list: Vec<(&wgpu::Buffer, u64, u64)> = reads[i..j].iter().map(|&(l, is_w, b)| (if is_w { &self.w[l - 1] } else { &self.b[l - 1] }, 0, b)).collect();
            let back = self.rec.flush_read(&list, &|| "reading back the weights".to_string())?;
            for (&(l, is_w, _), bytes) in reads[i..j].iter().zip(back) {
                let v: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
                if is_w {
                    ws[l - 1] = Array2::from_shape_fn((n[l], n[l - 1]), |(r, c)| v[r * s[l - 1] + c] as f64);
                } else {
                    bs[l - 1] = v.iter().map(|&x| x as f64).collect();
                }
            }
            i = j;
        }
        Ok((ws, bs))
    }

    /// `log10_update_w` of the last step taken, per layer (after [`Trainer::sync`]): from
    /// the update kernel's partial sums of t² (t = ΔW·2^{−S}) and W², added in f64.
    ///
    /// # Errors
    /// A device failure.
    pub fn log10_update_w(&mut self) -> Result<Vec<f64>> {
        let total = self.sums_at.last().map(|&(at, g)| at + 1 + 2 * g).unwrap_or(0);
        let back = self.rec.flush_read(&[(&self.sums, 0, (4 * total) as u64)], &|| "reading back the update norms".to_string())?;
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&back[0]);
        Ok(self
            .sums_at
            .iter()
            .map(|&(at, g)| {
                let big_s = v[at] as f64;
                let (mut tt, mut ww) = (0.0f64, 0.0f64);
                for k in 0..g {
                    tt += v[at + 1 + 2 * k] as f64;
                    ww += v[at + 2 + 2 * k] as f64;
                }
                big_s * std::f64::consts::LOG10_2 + 0.5 * tt.log10() - 0.5 * ww.log10()
            })
            .collect())
    }

    /// The adapter's name, as the probe reports it.
    pub fn device(&self) -> String {
        format!("{} ({:?}, f32)", self.ctx.info.name, self.ctx.info.backend)
    }
}
