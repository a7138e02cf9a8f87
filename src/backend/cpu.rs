//! The f64 reference backend: forward pass, backpropagation of δ and every statistic of
//! MATH.md, exact at any depth.
//!
//! Two devices keep it exact and small:
//! - **Power-of-two rescaling.** After every layer each example's δ (and, for positively
//!   homogeneous activations, its activation a) is multiplied by 2^-k so its norm is O(1),
//!   and k is added to an integer exponent. Multiplying by a power of two is exact in
//!   floating point, and backprop is linear in δ, so the rescaled path computes the same
//!   mantissas as the plain one wherever the plain one does not under- or overflow.
//! - **Checkpointing.** The forward pass keeps a^l only every K ≈ √L layers; the backward
//!   pass recomputes one segment of K layers at a time. Memory grows like B·N·√L, never
//!   L·N² or L·B·N; generated weights are redrawn from their Philox counters when needed.

use std::borrow::Cow;

use ndarray::{Array1, Array2, ArrayView1, Axis, Zip};

use crate::error::{Error, Result};
use crate::linalg::spectral_norm;
use crate::model::{Activation, Cost, Network, Problem};
use crate::stats::{LOG10_2, LayerStats, LayerStatus, Report, log2_sum_exp2};

/// The CPU backend and its memory policy.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    /// Bytes the backend may spend on stored activations and cached weights before it
    /// switches to √L checkpointing and redrawing weights.
    pub cache_budget: u64,
    /// log2 ‖G‖₂ of the standard-normal matrices G already normed, keyed by (seed, layer,
    /// n_out, n_in): gaussian-family weights are std·G, so a sweep over σ_w² and
    /// activations runs one Lanczos per layer, not one per configuration.
    pub norm_cache: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(u64, usize, usize, usize), f64>>>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend { cache_budget: 512 << 20, norm_cache: Default::default() }
    }
}

/// 2^k as an f64, exactly, for |k| ≤ 1022 (beyond: 0 or +∞, which callers avoid).
#[inline]
pub(crate) fn pow2(k: i64) -> f64 {
    if k < -1022 {
        return if k < -1074 { 0.0 } else { f64::from_bits(1u64 << (k + 1074)) };
    }
    if k > 1023 {
        return f64::INFINITY;
    }
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// Multiplies x by 2^k in at most two exact steps.
#[inline]
fn scale2(x: f64, k: i64) -> f64 {
    if (-1000..=1000).contains(&k) { x * pow2(k) } else { x * pow2(k / 2) * pow2(k - k / 2) }
}

/// Rescales each row to a norm in [2^-½, 2^½) by powers of two and adds those powers to
/// `e`. The largest entry is brought near 1 first, so rows whose squares would overflow
/// (entries past 1e154) or underflow are handled exactly too. Zero and non-finite rows are
/// left alone.
pub(crate) fn renormalise_rows(m: &mut Array2<f64>, e: &mut [i64]) {
    for (mut row, ex) in m.rows_mut().into_iter().zip(e.iter_mut()) {
        let top = row.iter().fold(0.0_f64, |a, v| a.max(v.abs()));
        if !(top > 0.0 && top.is_finite()) {
            continue;
        }
        let k0 = top.log2().floor() as i64;
        if k0 != 0 {
            row.mapv_inplace(|v| scale2(v, -k0));
            *ex += k0;
        }
        let n2 = row.dot(&row);
        let k = (0.5 * n2.log2()).round() as i64;
        if k != 0 {
            row.mapv_inplace(|v| scale2(v, -k));
            *ex += k;
        }
    }
}

/// One forward layer: `ẑ = â W^T + b·2^{-e}` (homogeneous σ) or `z = a W^T + b`, then
/// σ and σ′. Returns (z, σ′(z), a, exponents of a, finite?).
struct Forward {
    z: Array2<f64>,
    dsig: Array2<f64>,
    a: Array2<f64>,
    ea: Vec<i64>,
    finite: bool,
}

/// Below this (|z| < 2^-60) every activation with σ(0) = 0 is linear to f64 precision on
/// each side of 0 (the next term is O(z) relative at most: silu, gelu, elu, selu).
const TINY_LOG2: i64 = -60;

fn forward_layer(act: Activation, w: &Array2<f64>, b: &Array1<f64>, a_prev: &Array2<f64>, ea_prev: &[i64]) -> Forward {
    // ẑ = â Wᵀ (+ b at the common exponent): z = ẑ·2^e per example.
    let mut z = a_prev.dot(&w.t());
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
    renormalise_rows(&mut a, &mut ea);
    Forward { z, dsig, a, ea, finite }
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

    /// The checkpoint interval K and whether a segment's weights are kept while it is
    /// processed, for these widths, batch and parameter source.
    fn plan(&self, widths: &[usize], batch: usize, generated: bool) -> (usize, bool) {
        let l = widths.len() - 1;
        let b = batch as u128;
        let act_bytes: u128 = (1..=l).map(|i| b * (widths[i] + widths[i - 1]) as u128 * 8).sum();
        let k = if act_bytes <= self.cache_budget as u128 { l } else { (l as f64).sqrt().ceil() as usize };
        let max_w: u128 = (1..=l).map(|i| (widths[i] * widths[i - 1]) as u128 * 8).max().unwrap_or(0);
        let keep_w = generated && max_w * k as u128 <= self.cache_budget as u128;
        (k.max(1), keep_w)
    }

    /// Bytes the probe will hold at its peak (activations, checkpoints, weights, data), for
    /// a network with these widths and batch; saturates instead of overflowing.
    pub fn memory_needed(&self, widths: &[usize], batch: usize, generated: bool) -> u64 {
        let (k, keep_w) = self.plan(widths, batch, generated);
        let l = (widths.len() - 1) as u128;
        let b = batch as u128;
        let n = *widths.iter().max().unwrap() as u128;
        let max_w = (1..widths.len()).map(|i| (widths[i] * widths[i - 1]) as u128 * 8).max().unwrap_or(0);
        let stored: u128 = if generated { 0 } else { (1..widths.len()).map(|i| (widths[i] * widths[i - 1] + widths[i]) as u128 * 8).sum() };
        let segments = l.div_ceil(k as u128);
        let checkpoints = segments * b * n * 8;
        let segment = k as u128 * b * 2 * n * 8 + if keep_w { k as u128 * max_w } else { 0 };
        let per_example = l * b * 8 * 2;
        let total = checkpoints + segment + per_example + 4 * max_w + 10 * b * n * 8 + stored;
        total.min(u64::MAX as u128) as u64
    }

    /// log2 ‖W^l‖₂. Gaussian-family weights are W = std·G with G the stream's standard-normal
    /// matrix, and their norm is *defined* as log2 std + log2 ‖G‖₂ with ‖G‖₂ cached, so the
    /// value is the same whichever configuration normed G first (a resumed or sharded sweep
    /// equals an uninterrupted one bit for bit).
    /// `(W^l, b^l, log2 ‖W^l‖₂)`. On a cache miss for gaussian-family weights the unit matrix
    /// G is drawn once, normed, and scaled into W = std·G (the very operations of
    /// `Init::weights`, so W is bit-identical), saving a second draw.
    fn layer_with_norm<'n>(&self, net: &'n Network, l: usize) -> (Cow<'n, Array2<f64>>, Cow<'n, Array1<f64>>, f64) {
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        if let crate::model::Params::Generated { init, seed } = &net.params {
            if let Some(std) = init.normal_std(n_in, n_out).filter(|s| *s > 0.0) {
                if self.cached_unit_norm(*seed, l, n_out, n_in).is_none() {
                    let (mut g, v) = self.norm_unit_matrix(*seed, l, n_out, n_in);
                    if std != 1.0 {
                        g.mapv_inplace(|x| x * std);
                    }
                    return (Cow::Owned(g), Cow::Owned(init.biases(&crate::rng::Stream::new(*seed), l, n_out)), v + std.log2());
                }
            }
        }
        let (w, b) = net.layer(l);
        let v = self.log2_weight_norm(net, l, &w);
        (w, b, v)
    }

    /// log2 ‖G‖₂ of the stream's standard-normal matrix for (seed, layer, shape), if normed.
    pub(crate) fn cached_unit_norm(&self, seed: u64, l: usize, n_out: usize, n_in: usize) -> Option<f64> {
        self.norm_cache.lock().ok().and_then(|c| c.get(&(seed, l, n_out, n_in)).copied())
    }

    /// Draws the stream's standard-normal matrix G for (seed, layer, shape), norms it and
    /// caches log2 ‖G‖₂; returns both.
    fn norm_unit_matrix(&self, seed: u64, l: usize, n_out: usize, n_in: usize) -> (Array2<f64>, f64) {
        let unit_init = crate::model::Init { kind: crate::model::InitKind::Gaussian, sigma_w2: Some(n_in as f64), sigma_b2: 0.0 };
        let g = unit_init.weights(&crate::rng::Stream::new(seed), l, n_out, n_in);
        let v = spectral_norm(g.view()).log2();
        self.cache_unit_norm(seed, l, n_out, n_in, v);
        (g, v)
    }

    /// Records log2 ‖G‖₂ of the stream's standard-normal matrix for (seed, layer, shape)
    /// (also from the GPU's Lanczos, `backend::gpu`).
    pub(crate) fn cache_unit_norm(&self, seed: u64, l: usize, n_out: usize, n_in: usize, v: f64) {
        if let Ok(mut c) = self.norm_cache.lock() {
            if c.len() < 10_000_000 {
                c.insert((seed, l, n_out, n_in), v);
            }
        }
    }

    pub(crate) fn log2_weight_norm(&self, net: &Network, l: usize, w: &Array2<f64>) -> f64 {
        let (n_out, n_in) = w.dim();
        let unit = match &net.params {
            crate::model::Params::Generated { init, seed } => init.normal_std(n_in, n_out).filter(|s| *s > 0.0).map(|s| (s, *seed)),
            _ => None,
        };
        let Some((std, seed)) = unit else { return spectral_norm(w.view()).log2() };
        let g = self.cached_unit_norm(seed, l, n_out, n_in).unwrap_or_else(|| self.norm_unit_matrix(seed, l, n_out, n_in).1);
        g + std.log2()
    }

    /// Runs the probe: every per-layer statistic of MATH.md for `p`.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the plan would not fit in the memory available.
    pub fn probe(&self, p: &Problem) -> Result<Report> {
        let mut v = self.probe_depths(p, &[p.net.depth()])?;
        Ok(v.pop().expect("one depth, one report"))
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
        let net = &p.net;
        let ds = super::validate_depths(net, depths)?;
        let n_top = *net.widths.last().unwrap();
        let generated = matches!(net.params, crate::model::Params::Generated { .. });
        let bsz = p.batch();
        let extra = (ds.len() as u128 * bsz as u128 * n_top as u128 * 8 * 2).min(u64::MAX as u128) as u64;
        check_memory(self.memory_needed(&net.widths, bsz, generated).saturating_add(extra), "the CPU probe", "lower --batch, --width or --depth")?;
        let top_depth = *ds.last().unwrap();
        let (k, keep_w) = self.plan(&net.widths[..=top_depth], bsz, generated);
        let ce = net.cost == Cost::CrossEntropy;
        let seg_start = |l: usize| ((l - 1) / k) * k; // layers s+1..=s+k share checkpoint a^s
        let last_seg = seg_start(top_depth);
        let is_depth = |l: usize| ds.binary_search(&l).is_ok();

        // Forward pass 1: spectral norms, per-example max |σ′|, checkpoints, last segment.
        let mut log2_wnorm = vec![0.0; top_depth + 1];
        let mut maxd = vec![vec![0.0; bsz]; top_depth + 1];
        let mut checkpoints: Vec<(Array2<f64>, Vec<i64>)> = Vec::new();
        let mut keep: Vec<LayerKeep> = Vec::new();
        let mut a = p.inputs.clone();
        let mut ea = vec![0i64; bsz];
        renormalise_rows(&mut a, &mut ea);
        let mut overflow_layer = None;
        for l in 1..=top_depth {
            if (l - 1) % k == 0 {
                checkpoints.push((a.clone(), ea.clone()));
            }
            let (w, b, log2_norm) = self.layer_with_norm(net, l);
            log2_wnorm[l] = log2_norm;
            if overflow_layer.is_some() {
                continue;
            }
            let f = forward_layer(net.activation_at(l), &w, &b, &a, &ea);
            for (x, row) in f.dsig.rows().into_iter().enumerate() {
                maxd[l][x] = row.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            }
            if !f.finite {
                overflow_layer = Some(l);
                continue;
            }
            if l > last_seg {
                let w_keep = if keep_w { Some(w.into_owned()) } else { None };
                let z = if ce && is_depth(l) { Some(f.z) } else { None };
                keep.push(LayerKeep { dsig: f.dsig, z, a_prev: std::mem::replace(&mut a, f.a), ea_prev: std::mem::replace(&mut ea, f.ea), w: w_keep });
            } else {
                a = f.a;
                ea = f.ea;
            }
        }
        let device = Self::device_name();
        let empty_report = |depth: usize, status: LayerStatus| Report {
            layers: (1..=depth)
                .map(|l| {
                    let maxd_l = if overflow_layer.is_none_or(|ol| l < ol) { maxd[l].iter().fold(0.0_f64, |m, &v| m.max(v)).log10() } else { f64::NAN };
                    LayerStats::undefined(l, net.widths[l], log2_wnorm[l] * LOG10_2, maxd_l, status)
                })
                .collect(),
            backend: "cpu".into(),
            device: device.clone(),
            overflow_layer: overflow_layer.filter(|&ol| ol <= depth),
            log10_cost: f64::NAN,
        };
        if let Some(ol) = overflow_layer {
            // Depths below the overflow are unaffected: run them on their own (rare path).
            let below: Vec<usize> = ds.iter().copied().filter(|&d| d < ol).collect();
            let mut out = if below.is_empty() {
                Vec::new()
            } else {
                let mut q = p.clone();
                q.net.widths.truncate(below.last().unwrap() + 1);
                self.probe_depths(&q, &below)?
            };
            out.extend(ds.iter().filter(|&&d| d >= ol).map(|&d| empty_report(d, LayerStatus::Overflow)));
            return Ok(out);
        }
        let mut reports: Vec<Report> = ds.iter().map(|&d| empty_report(d, LayerStatus::Ok)).collect();

        // Backward, one segment at a time from the top. Active depths are stacked in the
        // order they join (deepest first): rows j·B..(j+1)·B of δ belong to depth act[j].
        let has_top_dsigma = !ce;
        let mut act: Vec<usize> = Vec::new(); // indices into ds
        let mut tight: Vec<Vec<f64>> = Vec::new(); // per active depth, per example, log2
        let mut bound: Vec<f64> = Vec::new();
        let mut status_above: Vec<LayerStatus> = Vec::new();
        let mut g: Option<(Array2<f64>, Vec<i64>)> = None; // δ̂^{l+1} W^{l+1} for active depths
        let mut a_above: (Array2<f64>, Vec<i64>) = (a, ea); // a^l while processing layer l
        let mut seg = Some(last_seg);
        while let Some(s) = seg {
            let top = (s + k).min(top_depth);
            if s != last_seg {
                keep = self.recompute(net, s, top, &checkpoints[s / k], keep_w, ce, &ds);
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
                if let Ok(di) = ds.binary_search(&l) {
                    // Depth l joins: its output error e_x = a^l_x − y_x.
                    let (err, e_err) = output_error(&a_above.0, &a_above.1, &p.targets);
                    let log2_err: Vec<f64> = err.rows().into_iter().zip(&e_err).map(|(r, &e)| e as f64 + 0.5 * r.dot(&r).log2()).collect();
                    reports[di].log10_cost = if ce {
                        let zl = lk.z.as_ref().ok_or_else(|| Error::Internal("z of an output layer was not kept".into()))?;
                        let c: f64 = (0..bsz).map(|x| net.cost.example_cost(zl.row(x), a_above.0.row(x), p.targets.row(x))).sum::<f64>() / bsz as f64;
                        c.log10()
                    } else {
                        (log2_sum_exp2(log2_err.iter().map(|v| 2.0 * v)) - 1.0 - (bsz as f64).log2()) * LOG10_2
                    };
                    let d_new = if has_top_dsigma { &err * &lk.dsig } else { err };
                    delta = ndarray::concatenate(Axis(0), &[delta.view(), d_new.view()]).map_err(|e| Error::Internal(e.to_string()))?;
                    ed.extend(e_err);
                    bound.push(log2_err.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v)));
                    tight.push(log2_err);
                    status_above.push(LayerStatus::Ok);
                    act.push(di);
                }
                renormalise_rows(&mut delta, &mut ed);
                let prev = PrevActivations::new(&lk.a_prev, &lk.ea_prev);
                for (j, &di) in act.iter().enumerate() {
                    let top_layer = ds[di] == l;
                    // Bound factors of layer l: Σ′(z^l) (absent at the output under
                    // cross-entropy); ‖W^{l+1}‖ was added when leaving layer l+1.
                    if !top_layer || has_top_dsigma {
                        bound[j] += net.gamma_at(l).log2();
                        for (t, m) in tight[j].iter_mut().zip(&maxd[l]) {
                            *t += m.log2();
                        }
                    }
                    let rows = j * bsz..(j + 1) * bsz;
                    let block = delta.slice(ndarray::s![rows.clone(), ..]);
                    let st = &mut reports[di].layers[l - 1];
                    fill_gradient_stats(st, block, &ed[rows], &prev);
                    st.log10_bound = bound[j] * LOG10_2;
                    st.log10_bound_tight = tight[j].iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v)) * LOG10_2;
                    st.status = LayerStatus::below(status_above[j], block.iter().all(|&v| v == 0.0), net.activation_at(l));
                    status_above[j] = st.status;
                    if l > 1 {
                        bound[j] += log2_wnorm[l];
                        for t in tight[j].iter_mut() {
                            *t += log2_wnorm[l];
                        }
                    }
                }
                if l > 1 {
                    let w: Cow<Array2<f64>> = match lk.w {
                        Some(w) => Cow::Owned(w),
                        None => net.layer(l).0,
                    };
                    g = Some((delta.dot(&*w), ed));
                }
                a_above = (lk.a_prev, lk.ea_prev);
            }
            seg = if s == 0 { None } else { Some(s - k) };
        }
        Ok(reports)
    }

    /// Recomputes layers s+1..=top from the checkpoint a^s.
    #[allow(clippy::too_many_arguments)]
    fn recompute(&self, net: &Network, s: usize, top: usize, cp: &(Array2<f64>, Vec<i64>), keep_w: bool, ce: bool, depths: &[usize]) -> Vec<LayerKeep> {
        let mut keep = Vec::with_capacity(top - s);
        let (mut a, mut ea) = cp.clone();
        for l in s + 1..=top {
            let (w, b) = net.layer(l);
            let f = forward_layer(net.activation_at(l), &w, &b, &a, &ea);
            let w_keep = if keep_w { Some(w.into_owned()) } else { None };
            let z = if ce && depths.binary_search(&l).is_ok() { Some(f.z) } else { None };
            keep.push(LayerKeep { dsig: f.dsig, z, a_prev: std::mem::replace(&mut a, f.a), ea_prev: std::mem::replace(&mut ea, f.ea), w: w_keep });
        }
        keep
    }
}

/// e_x = a_x − y_x for activations given as mantissas `a` and exponents `ea`, returned as
/// rescaled mantissas and exponents.
fn output_error(a: &Array2<f64>, ea: &[i64], y: &Array2<f64>) -> (Array2<f64>, Vec<i64>) {
    let mut err = a.clone();
    let mut e_err = ea.to_vec();
    for (x, (mut row, ex)) in err.rows_mut().into_iter().zip(e_err.iter_mut()).enumerate() {
        let yx = y.row(x);
        if *ex == 0 {
            row -= &yx;
        } else if let Some(ky) = top_exponent(yx) {
            add_scaled(&mut row, ex, yx, ky, -1.0);
        }
    }
    renormalise_rows(&mut err, &mut e_err);
    (err, e_err)
}

/// ⌊log2 max|v|⌋, or None for a zero vector.
fn top_exponent(v: ndarray::ArrayView1<f64>) -> Option<i64> {
    let m = v.iter().fold(0.0_f64, |a, x| a.max(x.abs()));
    (m > 0.0).then(|| m.log2().floor() as i64)
}

/// row·2^e + sign·v  →  mantissa in `row`, exponent in `e`, computed at the common
/// exponent max(e, k_v) (k_v = ⌊log2 max|v|⌋), so neither term overflows and the smaller
/// one underflows only where it is negligible. Scaling by powers of two is exact, so
/// wherever nothing underflows this is the plain sum, rounded once.
fn add_scaled(row: &mut ndarray::ArrayViewMut1<f64>, e: &mut i64, v: ndarray::ArrayView1<f64>, k_v: i64, sign: f64) {
    let m = (*e).max(k_v);
    if m != *e {
        let k = *e - m;
        row.mapv_inplace(|x| scale2(x, k));
    }
    Zip::from(row).and(v).for_each(|r, &x| *r += sign * scale2(x, -m));
    *e = m;
}

/// â^{l-1} rescaled for the norms (bounded activations are not rescaled in the forward
/// pass, but unbounded ones can pass 1e154, whose squares overflow), its squared row norms
/// and its B×B Gram matrix, shared by every depth's statistics at layer l.
struct PrevActivations {
    ea: Vec<i64>,
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
        PrevActivations { ea: e, sq, gram }
    }
}

/// The four gradient norms of one layer from δ̂ (B × n_l, exponents ed) and â^{l-1}, all in
/// the log domain.
fn fill_gradient_stats(st: &mut LayerStats, delta: ndarray::ArrayView2<f64>, ed: &[i64], prev: &PrevActivations) {
    let bsz = delta.nrows() as f64;
    let lb = bsz.log2();
    let sq_d: Vec<f64> = delta.rows().into_iter().map(|r| r.dot(&r)).collect();
    let t_b: Vec<f64> = sq_d.iter().zip(ed).map(|(s, &e)| 2.0 * e as f64 + s.log2()).collect();
    st.log10_grad_b_rms = 0.5 * (log2_sum_exp2(t_b.iter().copied()) - lb) * LOG10_2;
    let t_w: Vec<f64> = t_b.iter().zip(prev.sq.iter().zip(&prev.ea)).map(|(tb, (s, &e))| tb + 2.0 * e as f64 + s.log2()).collect();
    st.log10_grad_w_rms = 0.5 * (log2_sum_exp2(t_w.iter().copied()) - lb) * LOG10_2;

    // ‖(1/B) Σ_x δ_x‖: weight each example by 2^{e_x − max e}.
    let live = |sq: f64| sq > 0.0;
    let m_d = ed.iter().zip(&sq_d).filter(|(_, s)| live(**s)).map(|(e, _)| *e).max();
    st.log10_grad_b_mean = match m_d {
        None => f64::NEG_INFINITY,
        Some(m) => {
            let wts: Array1<f64> = ed.iter().map(|&e| pow2(e - m)).collect();
            let v = wts.dot(&delta);
            (m as f64 + 0.5 * v.dot(&v).log2() - lb) * LOG10_2
        }
    };
    // ‖(1/B) Σ_x δ_x a_xᵀ‖_F² = (1/B²) Σ_{x,x'} (δ_x·δ_x')(a_x·a_x'), from two B×B Grams.
    let c: Vec<i64> = ed.iter().zip(&prev.ea).map(|(a, b)| a + b).collect();
    let m_c = c.iter().zip(sq_d.iter().zip(&prev.sq)).filter(|(_, (d, a))| live(**d) && live(**a)).map(|(c, _)| *c).max();
    st.log10_grad_w_mean = match m_c {
        None => f64::NEG_INFINITY,
        Some(m) => {
            let wts: Array1<f64> = c.iter().map(|&e| pow2(e - m)).collect();
            let dw = &delta * &wts.view().insert_axis(Axis(1));
            let gd = dw.dot(&dw.t());
            let mut s = 0.0;
            Zip::from(&gd).and(&prev.gram).for_each(|x, y| s += x * y);
            (m as f64 + 0.5 * s.max(0.0).log2() - lb) * LOG10_2
        }
    };
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

/// Backprop without rescaling (MATH.md, "Backpropagation"); index l-1 holds layer l.
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

/// The probe's forward step, one layer at a time, for callers that need σ′(z^l) of every
/// example exactly at any depth (the Jacobian's spectrum, `crate::spectrum`): each example
/// carries its power-of-two exponent as in the probe, so vanishing activations stay exact.
pub(crate) struct ForwardWalk {
    a: Array2<f64>,
    ea: Vec<i64>,
}

impl ForwardWalk {
    /// Starts at a^0 = `inputs` (B × n_0).
    pub(crate) fn new(inputs: &Array2<f64>) -> Self {
        let mut a = inputs.clone();
        let mut ea = vec![0i64; a.nrows()];
        renormalise_rows(&mut a, &mut ea);
        ForwardWalk { a, ea }
    }

    /// Applies one layer; returns σ′(z^l) (B × n_l), or None when z^l overflowed f64.
    pub(crate) fn step(&mut self, act: Activation, w: &Array2<f64>, b: &Array1<f64>) -> Option<Array2<f64>> {
        let f = forward_layer(act, w, b, &self.a, &self.ea);
        if !f.finite {
            return None;
        }
        self.a = f.a;
        self.ea = f.ea;
        Some(f.dsig)
    }
}
