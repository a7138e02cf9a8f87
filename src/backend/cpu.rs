//! The f64 reference backend: forward pass, backpropagation of δ and every statistic of
//! docs/MATH.md, exact at any depth.
//!
//! Two devices keep it exact and small:
//! - **Power-of-two rescaling.** After every layer each example's δ (and, for positively
//!   homogeneous activations, its activation a) is multiplied by 2^-k so its norm is O(1),
//!   and k is added to an integer exponent. Multiplying by a power of two is exact in
//!   floating point, and backprop is linear in δ, so the rescaled path computes the same
//!   mantissas as the plain one wherever the plain one does not under- or overflow.
//! - **Checkpointing** ([`super::plan::CpuPlan`]). Within the memory budget the forward
//!   pass keeps the top layers' activations and a^s only every K layers below them; the
//!   backward pass recomputes one segment of K layers at a time, so each layer is recomputed
//!   at most once. Past the budget K ≈ √L and memory grows like B·N·√L, never L·N² or L·B·N;
//!   generated weights are redrawn from their Philox counters when they are not kept.
//!
//! The engine measures per-layer sums and hands them to `backend/assemble.rs`, which the GPU
//! engine shares.

use std::borrow::Cow;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};

use super::assemble::{add_scaled, output_error, pow2, renormalise_rows, scale2, signal, top_exponent, Assembly, Grad, LayerSums};
use super::norms::{DrawShare, NormCache};
use super::plan::{self, CpuPlan};
use crate::error::{Error, Result};
use crate::model::{Activation, Cost, Network, Problem};
use crate::stats::{Report, Signal};

/// The CPU backend and its memory policy.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    /// Bytes the backend may spend on stored activations, checkpoints and cached weights
    /// ([`CpuPlan::new`]; less where the OS reports less memory available); with less than
    /// its plans need it checkpoints every ⌈√L⌉ layers.
    pub cache_budget: u64,
    /// The spectral-norm cache (shared by clones of the backend).
    pub norms: NormCache,
    /// Threads that norm the layers beside the products ([`NormCache::beside`]): None picks
    /// half the cores (at least one) for networks of at least two layers per core, and
    /// norms inline otherwise; Some(0) norms each layer inline, on all cores, before its
    /// forward product. The results are the same bits for every choice.
    pub norm_workers: Option<usize>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend { cache_budget: 512 << 20, norms: NormCache::default(), norm_workers: None }
    }
}

/// One forward layer of the log-domain pass ([`forward_step`]): z^l with its exponents,
/// σ′(z^l), a^l = σ(z^l) rescaled with its exponents, and whether z^l is finite.
///
/// Row x of the true z^l is `z.row(x)·2^ez[x]` and of a^l `a.row(x)·2^ea[x]`; σ′ needs no
/// exponent. Exponents are non-zero only where σ is positively homogeneous (relu,
/// leaky-relu, linear) or a row is so small that σ is its tangent at 0.
pub struct ForwardStep {
    pub z: Array2<f64>,
    pub ez: Vec<i64>,
    pub dsig: Array2<f64>,
    pub a: Array2<f64>,
    pub ea: Vec<i64>,
    pub finite: bool,
}

/// Below this (|z| < 2^-60) every activation with σ(0) = 0 is linear to f64 precision on
/// each side of 0 (the next term is O(z) relative at most: silu, gelu, elu, selu).
const TINY_LOG2: i64 = -60;

/// The inputs a^0 of `p` as the forward pass starts from them: rows rescaled to norm ≈ 1,
/// with their exponents.
pub fn initial_activations(p: &Problem) -> (Array2<f64>, Vec<i64>) {
    let mut a = p.inputs.clone();
    let mut ea = vec![0i64; p.batch()];
    renormalise_rows(&mut a, &mut ea);
    (a, ea)
}

/// One layer of the forward pass from (â^{l-1}, exponents): `ẑ = â Wᵀ + b·2^{-e}`
/// (homogeneous σ, or tiny rows) or `z = a Wᵀ + b`, then σ and σ′. Chain it from
/// [`initial_activations`] with `net.layer(l)` to walk a network layer by layer.
pub fn forward_step(act: Activation, w: &Array2<f64>, b: &Array1<f64>, a_prev: &Array2<f64>, ea_prev: &[i64]) -> ForwardStep {
    let mut z = crate::gemm::dot(a_prev, &w.t());
    let mut ea = ea_prev.to_vec();
    if let Some(kb) = top_exponent(b.view()) {
        for (mut row, e) in z.rows_mut().into_iter().zip(ea.iter_mut()) {
            if *e == 0 {
                row += b;
            } else {
                add_scaled(&mut row, e, b.view(), kb, 1.0);
            }
        }
    }
    let mut dsig = Array2::<f64>::zeros(z.dim());
    let mut a = Array2::<f64>::zeros(z.dim());
    let homogeneous = act.is_homogeneous();
    let slopes = act.slopes_at_zero();
    for (((mut zr, mut dr), mut ar), e) in z.rows_mut().into_iter().zip(dsig.rows_mut()).zip(a.rows_mut()).zip(ea.iter_mut()) {
        let tiny = slopes.is_some() && top_exponent(zr.view()).is_none_or(|k| k + *e < TINY_LOG2);
        if homogeneous {
            // σ(2^e ẑ) = 2^e σ(ẑ) and σ′(2^e ẑ) = σ′(ẑ): the exponent carries through.
            Zip::from(&mut ar).and(&mut dr).and(&zr).for_each(|a, d, &x| {
                *a = act.sigma(x);
                *d = act.dsigma(x);
            });
        } else if tiny {
            // Far below 1, σ is its tangent at 0 on each side: still carried exactly.
            let (right, left) = slopes.expect("checked");
            Zip::from(&mut ar).and(&mut dr).and(&zr).for_each(|a, d, &x| {
                *d = if x > 0.0 { right } else { left };
                *a = *d * x;
            });
        } else {
            // Back to the natural scale, where σ itself is evaluated (overflow shows here).
            if *e != 0 {
                let k = *e;
                zr.mapv_inplace(|x| scale2(x, k));
                *e = 0;
            }
            Zip::from(&mut ar).and(&mut dr).and(&zr).for_each(|a, d, &x| {
                *a = act.sigma(x);
                *d = act.dsigma(x);
            });
        }
    }
    let finite = z.iter().all(|v| v.is_finite());
    let ez = ea.clone();
    renormalise_rows(&mut a, &mut ea);
    ForwardStep { z, ez, dsig, a, ea, finite }
}

/// The measured signal of one layer from z^l = ẑ·2^{ez}. The mantissas' Gram is used as it
/// is wherever its diagonal is a normal f64 (the common case: ẑ is O(1) for homogeneous σ
/// and modest for bounded ones); otherwise the rows are first brought to norm ≈ 1, exactly,
/// by powers of two, so neither the squares nor the Gram over- or underflow.
fn measure_signal(z: &Array2<f64>, ez: &[i64]) -> Signal {
    let gram = z.dot(&z.t());
    let normal = gram.diag().iter().all(|&v| v.is_finite() && v > 1e-290);
    let (gram, e) = if normal {
        (gram, ez.to_vec())
    } else {
        let mut zr = z.clone();
        let mut e = ez.to_vec();
        renormalise_rows(&mut zr, &mut e);
        (zr.dot(&zr.t()), e)
    };
    let sq: Vec<f64> = gram.diag().to_vec();
    let e: Vec<f64> = e.iter().map(|&v| v as f64).collect();
    signal(&sq, &e, gram.view(), z.ncols())
}

/// What the backward pass needs of layer l: σ′(z^l) and â^{l-1} with its exponents.
struct LayerKeep {
    dsig: Array2<f64>,
    /// z^l, kept only where layer l is an output (cross-entropy's cost needs it).
    z: Option<Array2<f64>>,
    a_prev: Array2<f64>,
    ea_prev: Vec<i64>,
    w: Option<Array2<f64>>,
}

impl LayerKeep {
    fn new(f: ForwardStep, w: Option<Array2<f64>>, keep_z: bool, a: &mut Array2<f64>, ea: &mut Vec<i64>) -> LayerKeep {
        let z = if keep_z { Some(f.z) } else { None };
        LayerKeep { dsig: f.dsig, z, a_prev: std::mem::replace(a, f.a), ea_prev: std::mem::replace(ea, f.ea), w }
    }
}

/// The forward pass of a multi-depth probe: spectral norms, per-example max |σ′| (both
/// indexed by layer), the checkpoints, the last segment's layers, the top layer's output,
/// and the first layer whose z was not finite.
struct ForwardPass {
    log2_wnorm: Vec<f64>,
    maxd: Vec<Vec<f64>>,
    checkpoints: Vec<(Array2<f64>, Vec<i64>)>,
    keep: Vec<LayerKeep>,
    top: (Array2<f64>, Vec<i64>),
    overflow_layer: Option<usize>,
    /// The measured signal of layers 1..L (index l−1), NaN from an overflow up.
    signal: Vec<Signal>,
}

impl CpuBackend {
    /// The device string reported with the results.
    pub fn device_name() -> String {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        format!("{model} ({threads} threads, f64)")
    }

    /// Bytes the probe will hold at its peak (activations, checkpoints, weights, data), for
    /// a network with these widths and batch; saturates instead of overflowing.
    pub fn memory_needed(&self, widths: &[usize], batch: usize, generated: bool) -> u64 {
        self.plan_for(widths, batch, generated, 0).bytes(widths, batch, generated)
    }

    /// The plan for these widths: the one for `cache_budget`, or for half of it, a quarter…
    /// where that one, with `extra` bytes beside it, would not fit in the memory the OS
    /// reports available. Every plan gives the same bits; a smaller one recomputes more.
    fn plan_for(&self, widths: &[usize], batch: usize, generated: bool, extra: u64) -> CpuPlan {
        let avail = available_memory();
        let mut budget = self.cache_budget;
        loop {
            let pl = CpuPlan::new(widths, batch, generated, budget);
            if budget == 0 || avail.is_none_or(|a| pl.bytes(widths, batch, generated).saturating_add(extra) <= a) {
                return pl;
            }
            budget /= 2;
        }
    }

    /// The plan of a multi-depth probe of `p` at the (validated, sorted) depths `ds`, and the
    /// bytes it holds.
    fn plan_for_depths(&self, p: &Problem, ds: &[usize]) -> (CpuPlan, u64) {
        let widths = &p.net.widths[..=*ds.last().unwrap()];
        let generated = matches!(p.net.params, crate::model::Params::Generated { .. });
        let stacked = CpuPlan::stacked_bytes(ds.len(), p.batch(), *widths.last().unwrap());
        let pl = self.plan_for(widths, p.batch(), generated, stacked);
        (pl, pl.bytes(widths, p.batch(), generated).saturating_add(stacked))
    }

    /// Bytes a multi-depth probe of `p` at the (validated, sorted) depths `ds` holds.
    pub(crate) fn bytes_for_depths(&self, p: &Problem, ds: &[usize]) -> u64 {
        self.plan_for_depths(p, ds).1
    }

    /// Runs the probe: every per-layer statistic of docs/MATH.md for `p`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the plan would not fit in the memory available.
    pub fn probe(&self, p: &Problem) -> Result<Report> {
        let mut v = self.probe_depths(p, &[p.net.depth()])?;
        v.pop().ok_or_else(|| Error::Internal("one depth, one report".into()))
    }

    /// The statistics of the networks of depth `depths[k]` that are prefixes of `p.net`
    /// (same seed, so the same first layers), from one shared forward pass and one batched
    /// backward pass: at layer l the δ's of every depth ≥ l are stacked as extra rows of
    /// one matrix, so each weight matrix is drawn, normed and multiplied once per layer for
    /// all depths together. Each report equals [`CpuBackend::probe`] of that depth.
    ///
    /// # Errors
    /// A depth outside 1..=L, a linear output layer with more than one depth, widths that
    /// change above the smallest depth, or too little memory.
    pub fn probe_depths(&self, p: &Problem, depths: &[usize]) -> Result<Vec<Report>> {
        let ds = plan::validate_depths(&p.net, depths)?;
        let (pl, bytes) = self.plan_for_depths(p, &ds);
        check_memory(bytes, "the CPU probe", "lower --batch, --width or --depth")?;
        let q = plan::prefix(p, *ds.last().unwrap());
        let workers = self.workers_for(&q.net);
        let products = |share: Option<&DrawShare>| {
            let mut fw = self.forward(&q, &ds, pl, share);
            let measured = (std::mem::take(&mut fw.log2_wnorm), std::mem::take(&mut fw.maxd), std::mem::take(&mut fw.signal), fw.overflow_layer);
            let grads = if fw.overflow_layer.is_none() { Some(self.backward(&q, &ds, pl, fw)) } else { None };
            (measured, grads)
        };
        let ((log2_wnorm, maxd, sig, overflow), grads) = if workers == 0 {
            products(None)
        } else {
            let (norms, r) = self.norms.beside(&q.net, workers, |share| products(Some(share)));
            let ((_, maxd, sig, overflow), grads) = r;
            ((norms, maxd, sig, overflow), grads)
        };
        let asm = Assembly { net: &q.net, log2_wnorm: &log2_wnorm, maxd: &maxd, backend: "cpu", device: Self::device_name(), signal: Some(&sig) };
        if let Some(ol) = overflow {
            return asm.with_overflow(&ds, ol, |under| self.probe_depths(&plan::prefix(&q, *under.last().unwrap()), under));
        }
        let (outs, grads) = grads.ok_or_else(|| Error::Internal("a backward pass without overflow".into()))??;
        Ok(ds.iter().zip(outs).zip(&grads).map(|((&d, (log2_err, cost)), g)| asm.report(d, &log2_err, g, cost)).collect())
    }

    /// How many threads norm `net`'s layers beside its products (0: inline, before each
    /// layer's forward product). Inline where the layers are too few to keep the workers
    /// busy (one layer's norm is then split over all cores instead), and for orthogonal
    /// weights ([`NormCache::can_norm_beside`]).
    fn workers_for(&self, net: &Network) -> usize {
        if !NormCache::can_norm_beside(net) {
            return 0;
        }
        let cores = crate::gemm::cores();
        self.norm_workers.unwrap_or(if net.depth() >= 2 * cores { (cores / 2).max(1) } else { 0 })
    }

    /// The forward pass to the top depth of `ds`: norms, max |σ′|, checkpoints every K
    /// layers below the plan's top segment and the top segment's layers kept for the
    /// backward pass.
    /// With a `share` the norms are left at 0 for [`NormCache::beside`] to find, and the
    /// weights come through the share; without, each layer is normed inline.
    fn forward(&self, p: &Problem, ds: &[usize], pl: CpuPlan, share: Option<&DrawShare>) -> ForwardPass {
        let net = &p.net;
        let (top, k, bsz) = (net.depth(), pl.k, p.batch());
        let ce = net.cost == Cost::CrossEntropy;
        let last_seg = top - pl.top;
        let mut fw = ForwardPass { log2_wnorm: vec![0.0; top + 1], maxd: vec![vec![0.0; bsz]; top + 1], checkpoints: Vec::new(), keep: Vec::new(), top: initial_activations(p), overflow_layer: None, signal: vec![Signal::NAN; top] };
        let (a, ea) = &mut fw.top;
        let mut spare = None; // a W whose storage the next layer's may reuse
        for l in 1..=top {
            if l <= last_seg && (l - 1) % k == 0 {
                fw.checkpoints.push((a.clone(), ea.clone()));
            }
            if fw.overflow_layer.is_some() {
                match share {
                    None => fw.log2_wnorm[l] = self.norms.layer_with_norm(net, l).2,
                    Some(s) => s.forward_skips(l),
                }
                continue;
            }
            let (w, b) = match share {
                None => {
                    let (w, b, log2_norm) = self.norms.layer_with_norm(net, l);
                    fw.log2_wnorm[l] = log2_norm;
                    (w, b)
                }
                Some(s) => s.forward_layer(l, &mut spare),
            };
            let f = forward_step(net.activation_at(l), &w, &b, a, ea);
            for (x, row) in f.dsig.rows().into_iter().enumerate() {
                fw.maxd[l][x] = row.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            }
            if !f.finite {
                fw.overflow_layer = Some(l);
                continue;
            }
            fw.signal[l - 1] = measure_signal(&f.z, &f.ez);
            if l > last_seg {
                let w_keep = if pl.top_w {
                    Some(w.into_owned())
                } else {
                    recycle(w, &mut spare);
                    None
                };
                let keep_z = ce && ds.binary_search(&l).is_ok();
                fw.keep.push(LayerKeep::new(f, w_keep, keep_z, a, ea));
            } else {
                recycle(w, &mut spare);
                *a = f.a;
                *ea = f.ea;
            }
        }
        fw
    }

    /// The stacked backward pass, one segment at a time from the top: per depth its output
    /// errors (log2 ‖e_x‖) and cost, and each layer's gradient norms. Active depths are
    /// stacked in the order they join (deepest first): rows j·B..(j+1)·B of δ belong to
    /// depth act[j].
    #[allow(clippy::type_complexity)]
    fn backward(&self, p: &Problem, ds: &[usize], pl: CpuPlan, fw: ForwardPass) -> Result<(Vec<(Vec<f64>, f64)>, Vec<Vec<Grad>>)> {
        let net = &p.net;
        let bsz = p.batch();
        let has_top_dsigma = net.cost == Cost::Quadratic;
        let mut outs: Vec<(Vec<f64>, f64)> = vec![(Vec::new(), f64::NAN); ds.len()];
        let mut grads: Vec<Vec<Grad>> = ds.iter().map(|&d| vec![Grad::default(); d]).collect();
        let mut act: Vec<usize> = Vec::new();
        let mut g: Option<(Array2<f64>, Vec<i64>)> = None; // δ̂^{l+1} W^{l+1} for active depths
        let ForwardPass { checkpoints, mut keep, top: mut a_above, .. } = fw; // a^l while processing layer l
        let segs: Vec<(usize, usize)> = pl.segments(net.depth()).collect();
        for (si, &(s, top)) in segs.iter().enumerate().rev() {
            if si + 1 != segs.len() {
                keep = self.recompute(net, s, top, &checkpoints[si], pl.keep_w, ds);
            }
            for l in (s + 1..=top).rev() {
                let lk = keep.pop().ok_or_else(|| Error::Internal("segment bookkeeping".into()))?;
                let n_l = net.widths[l];
                // δ̂^l of the depths already active: σ′(z^l) ⊙ (δ̂^{l+1} W^{l+1}).
                let (mut delta, mut ed) = match g.take() {
                    None => (Array2::<f64>::zeros((0, n_l)), Vec::new()),
                    Some((gm, ge)) => {
                        let kact = gm.nrows() / bsz;
                        let mut d3 = gm.into_shape_with_order((kact, bsz, n_l)).map_err(|e| Error::Internal(e.to_string()))?;
                        d3 *= &lk.dsig;
                        (d3.into_shape_with_order((kact * bsz, n_l)).map_err(|e| Error::Internal(e.to_string()))?, ge)
                    }
                };
                if let (_, Some(di)) = plan::active_at(ds, l) {
                    // Depth l joins with its own output error e_x = a^l_x − y_x.
                    let oe = output_error(net.cost, &a_above.0, &a_above.1, &p.targets, lk.z.as_ref().map(|z| z.view()))?;
                    let d_new = if has_top_dsigma { &oe.err * &lk.dsig } else { oe.err };
                    delta = ndarray::concatenate(Axis(0), &[delta.view(), d_new.view()]).map_err(|e| Error::Internal(e.to_string()))?;
                    ed.extend(oe.e_err);
                    outs[di] = (oe.log2_err, oe.log10_cost);
                    act.push(di);
                }
                renormalise_rows(&mut delta, &mut ed);
                let prev = PrevActivations::new(&lk.a_prev, &lk.ea_prev);
                for (j, &di) in act.iter().enumerate() {
                    let rows = j * bsz..(j + 1) * bsz;
                    grads[di][l - 1] = prev.grad(delta.slice(ndarray::s![rows.clone(), ..]), &ed[rows]);
                }
                if l > 1 {
                    let w: Cow<Array2<f64>> = match lk.w {
                        Some(w) => Cow::Owned(w),
                        None => net.layer(l).0,
                    };
                    g = Some((crate::gemm::dot(&delta, &w), ed));
                }
                a_above = (lk.a_prev, lk.ea_prev);
            }
        }
        Ok((outs, grads))
    }

    /// Recomputes layers s+1..=top from the checkpoint a^s.
    fn recompute(&self, net: &Network, s: usize, top: usize, cp: &(Array2<f64>, Vec<i64>), keep_w: bool, depths: &[usize]) -> Vec<LayerKeep> {
        let ce = net.cost == Cost::CrossEntropy;
        let mut keep = Vec::with_capacity(top - s);
        let (mut a, mut ea) = cp.clone();
        for l in s + 1..=top {
            let (w, b) = net.layer(l);
            let f = forward_step(net.activation_at(l), &w, &b, &a, &ea);
            let w_keep = if keep_w { Some(w.into_owned()) } else { None };
            keep.push(LayerKeep::new(f, w_keep, ce && depths.binary_search(&l).is_ok(), &mut a, &mut ea));
        }
        keep
    }
}

/// â^{l-1} rescaled for the norms (bounded activations are not rescaled in the forward
/// pass, but unbounded ones can pass 1e154, whose squares overflow), its squared row norms
/// and its B×B Gram matrix, shared by every depth's statistics at layer l.
struct PrevActivations {
    ea: Vec<i64>,
    ea_f: Vec<f64>,
    sq: Vec<f64>,
    gram: Array2<f64>,
}

impl PrevActivations {
    fn new(a_prev: &Array2<f64>, ea: &[i64]) -> Self {
        let mut a = a_prev.clone();
        let mut e = ea.to_vec();
        renormalise_rows(&mut a, &mut e);
        let sq = a.rows().into_iter().map(|r| r.dot(&r)).collect();
        let gram = a.dot(&a.t());
        PrevActivations { ea_f: e.iter().map(|&v| v as f64).collect(), ea: e, sq, gram }
    }

    /// One depth's [`LayerSums`] at layer l from its δ̂ (B × n_l, exponents `ed`), and the
    /// gradient norms they give.
    fn grad(&self, delta: ArrayView2<f64>, ed: &[i64]) -> Grad {
        let sq_d: Vec<f64> = delta.rows().into_iter().map(|r| r.dot(&r)).collect();
        let ed_f: Vec<f64> = ed.iter().map(|&e| e as f64).collect();
        // ‖Σ_x 2^{e_x − m_d} δ̂_x‖²: each example weighted by its exponent's distance to the top.
        let m_d = LayerSums::mean_scale(&sq_d, &ed_f);
        let mean_sq = if m_d.is_finite() {
            let wts: Array1<f64> = ed.iter().map(|&e| pow2(e - m_d as i64)).collect();
            let v = wts.dot(&delta);
            v.dot(&v)
        } else {
            0.0
        };
        // Σ_{x,x'} (δ_x·δ_x')(a_x·a_x') at the common scale m_c, from two B×B Grams.
        let m_c = LayerSums::gram_scale(&sq_d, &ed_f, &self.sq, &self.ea_f);
        let gram = if m_c.is_finite() {
            let wts: Array1<f64> = ed.iter().zip(&self.ea).map(|(a, b)| pow2(a + b - m_c as i64)).collect();
            let dw = &delta * &wts.view().insert_axis(Axis(1));
            let gd = dw.dot(&dw.t());
            let mut s = 0.0;
            Zip::from(&gd).and(&self.gram).for_each(|x, y| s += x * y);
            s
        } else {
            0.0
        };
        LayerSums { sq_d: &sq_d, ed: &ed_f, sq_a: &self.sq, ea: &self.ea_f, mean_sq, gram }.grad()
    }
}

/// Keeps an owned W that is no longer needed as `spare`, whose storage the next layer's W
/// may reuse ([`DrawShare::forward_layer`]).
fn recycle(w: Cow<Array2<f64>>, spare: &mut Option<Array2<f64>>) {
    if let Cow::Owned(w) = w {
        *spare = Some(w);
    }
}

/// Fails with [`Error::OutOfMemory`] when `needed` bytes exceed what the OS reports available.
pub fn check_memory(needed: u64, what: &str, hint: &str) -> Result<()> {
    if let Some(avail) = available_memory() {
        if needed > avail {
            return Err(Error::OutOfMemory { what: what.into(), needed_mib: needed >> 20, available_mib: avail >> 20, hint: hint.into() });
        }
    }
    Ok(())
}

/// MemAvailable from /proc/meminfo, in bytes (None where there is no such file).
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Plain backpropagation without any rescaling, for small networks: per layer the batch
/// gradients ∂C/∂b^l, ∂C/∂W^l and the per-example δ^l (B × n_l). An independent second
/// implementation that the tests hold the log-domain path and finite differences against.
pub struct PlainGrad {
    pub grad_b: Array1<f64>,
    pub grad_w: Array2<f64>,
    pub delta: Array2<f64>,
    pub a_prev: Array2<f64>,
    pub dsig: Array2<f64>,
}

/// Forward pass without rescaling: (z^l, a^l) for l = 1..=L (index 0 holds a^0 = x).
pub fn forward_plain(p: &Problem) -> Vec<(Array2<f64>, Array2<f64>)> {
    let mut out = vec![(Array2::zeros((0, 0)), p.inputs.clone())];
    for l in 1..=p.net.depth() {
        let (w, b) = p.net.layer(l);
        let z = out[l - 1].1.dot(&w.t()) + &b.view().insert_axis(Axis(0));
        let act = p.net.activation_at(l);
        let a = z.mapv(|v| act.sigma(v));
        out.push((z, a));
    }
    out
}

/// C = (1/B) Σ_x C_x, by the plain forward pass.
pub fn cost_plain(p: &Problem) -> f64 {
    let f = forward_plain(p);
    let (z, a) = f.last().unwrap();
    (0..p.batch()).map(|x| p.net.cost.example_cost(z.row(x), a.row(x), p.targets.row(x))).sum::<f64>() / p.batch() as f64
}

/// Backprop without rescaling (docs/MATH.md, "Backpropagation"); index l-1 holds layer l.
pub fn backprop_plain(p: &Problem) -> Vec<PlainGrad> {
    let f = forward_plain(p);
    let big_l = p.net.depth();
    let bsz = p.batch() as f64;
    let mut out: Vec<PlainGrad> = Vec::with_capacity(big_l);
    let mut delta = Array2::zeros((0, 0));
    for l in (1..=big_l).rev() {
        let act = p.net.activation_at(l);
        let dsig = f[l].0.mapv(|v| act.dsigma(v));
        delta = if l == big_l {
            let e = &f[l].1 - &p.targets;
            if p.net.cost == Cost::Quadratic { e * &dsig } else { e }
        } else {
            let (w_above, _) = p.net.layer(l + 1);
            delta.dot(&*w_above) * &dsig
        };
        let a_prev = f[l - 1].1.clone();
        let grad_b = delta.sum_axis(Axis(0)) / bsz;
        let grad_w = delta.t().dot(&a_prev) / bsz;
        out.push(PlainGrad { grad_b, grad_w, delta: delta.clone(), a_prev, dsig });
    }
    out.reverse();
    out
}

/// ‖v‖₂ of a vector view.
pub fn norm2(v: ArrayView1<f64>) -> f64 {
    v.dot(&v).sqrt()
}
