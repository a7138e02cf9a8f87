//! One SGD step in f64: the batched forward and backward passes and the update rule of
//! docs/MATH.md, "Training" (Nielsen's `network2.py` with L2 weight decay).
//!
//! The step works on plain f64 values, without the probe engine's power-of-two rescaling:
//! a gradient entry below ~1e-308 underflows to 0 here. That loses nothing the update could
//! have kept: W^l_ij changes only if η·∂C/∂W^l_ij exceeds half an ulp of W^l_ij (~1e-17·|W^l_ij|),
//! so any entry the rescaling would have saved is rounded away when it is added to W. The
//! recorded statistics come from the log-domain engine, which sees 10^-600 as 10^-600.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::gemm;
use crate::model::{Activation, Cost, Network};

/// The parameters being trained: `w[l-1]` is W^l (n_l × n_{l-1}), `b[l-1]` is b^l.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub w: Vec<Array2<f64>>,
    pub b: Vec<Array1<f64>>,
}

impl Weights {
    /// The parameters of `net` as it stands (drawn from its seed, or its stored ones).
    pub fn of(net: &Network) -> Weights {
        let (w, b) = (1..=net.depth())
            .map(|l| {
                let (w, b) = net.layer(l);
                (w.into_owned(), b.into_owned())
            })
            .unzip();
        Weights { w, b }
    }
}

/// ∂C/∂W^l and ∂C/∂b^l of the batch cost `C = (1/B) Σ_x C_x`, and C itself.
#[derive(Debug, Clone)]
pub struct Gradients {
    pub w: Vec<Array2<f64>>,
    pub b: Vec<Array1<f64>>,
    pub cost: f64,
}

/// Where a step left the range of f64: the first layer whose values are not finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diverged {
    pub layer: usize,
    /// "forward" (z^l or the cost) or "backward" (δ^l or ∂C/∂W^l).
    pub pass: &'static str,
}

fn all_finite<'a>(v: impl IntoIterator<Item = &'a f64>) -> bool {
    v.into_iter().all(|x| x.is_finite())
}

/// `(z^l, a^l)` of every layer, B × n_l each.
pub type Layers = Vec<(Array2<f64>, Array2<f64>)>;

/// The forward pass: `(z^l, a^l)` for l = 1..=L at index l − 1 (the input is not copied).
///
/// # Errors
/// The first layer whose pre-activations are not finite.
pub fn forward(net: &Network, p: &Weights, x: ArrayView2<f64>) -> Result<Layers, Diverged> {
    let mut out: Vec<(Array2<f64>, Array2<f64>)> = Vec::with_capacity(net.depth());
    for l in 1..=net.depth() {
        let a_prev = if l == 1 { x } else { out[l - 2].1.view() };
        let z = gemm::dot(&a_prev, &p.w[l - 1].t()) + p.b[l - 1].view().insert_axis(Axis(0));
        if !all_finite(&z) {
            return Err(Diverged { layer: l, pass: "forward" });
        }
        let act = net.activation_at(l);
        let a = z.mapv(|v| act.sigma(v));
        out.push((z, a));
    }
    Ok(out)
}

/// σ(z) and σ′(z) of every entry in one pass: the logistic's two share their exponential
/// (the same `exp(−|z|)` and the same operations as `Activation::sigma` and `dsigma`, so the
/// values are bit-for-bit theirs).
fn sigma_and_dsigma(act: Activation, z: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    if act == Activation::Sigmoid {
        let mut a = Array2::zeros(z.raw_dim());
        let mut d = Array2::zeros(z.raw_dim());
        ndarray::Zip::from(&mut a).and(&mut d).and(z).for_each(|a, d, &v| {
            let e = (-v.abs()).exp();
            *a = if v >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
            *d = e / ((1.0 + e) * (1.0 + e));
        });
        (a, d)
    } else {
        (z.mapv(|v| act.sigma(v)), z.mapv(|v| act.dsigma(v)))
    }
}

/// Inputs with most entries zero (MNIST-like images), by rows: the nonzero entries' columns
/// and values, row i at `start[i]..start[i + 1]`. Built once for the data set; a batch is a
/// list of its rows.
pub(crate) struct SparseRows {
    start: Vec<usize>,
    col: Vec<u32>,
    val: Vec<f64>,
    /// The same nonzeros by columns (rows ascending within each), for `Δᵀ X` over a run of
    /// rows: column j at `cstart[j]..cstart[j + 1]`.
    cstart: Vec<usize>,
    crow: Vec<u32>,
    cval: Vec<f64>,
}

impl SparseRows {
    /// The nonzeros of `x`, or None when more than [`SPARSE_DENSITY`] of it is nonzero (the
    /// dense product is then the faster one).
    pub(crate) fn of(x: ArrayView2<f64>) -> Option<SparseRows> {
        let limit = (SPARSE_DENSITY * x.len() as f64) as usize;
        if u32::try_from(x.ncols()).is_err() {
            return None;
        }
        if u32::try_from(x.nrows()).is_err() {
            return None;
        }
        let mut out = SparseRows { start: Vec::with_capacity(x.nrows() + 1), col: Vec::new(), val: Vec::new(), cstart: vec![0; x.ncols() + 1], crow: Vec::new(), cval: Vec::new() };
        out.start.push(0);
        for row in x.rows() {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    out.col.push(j as u32);
                    out.val.push(v);
                }
            }
            if out.val.len() > limit {
                return None;
            }
            out.start.push(out.val.len());
        }
        // By columns: count, prefix sums, then place each entry (rows come in order).
        for &j in &out.col {
            out.cstart[j as usize + 1] += 1;
        }
        for j in 0..x.ncols() {
            out.cstart[j + 1] += out.cstart[j];
        }
        let mut next = out.cstart.clone();
        out.crow = vec![0; out.val.len()];
        out.cval = vec![0.0; out.val.len()];
        for i in 0..x.nrows() {
            for k in out.start[i]..out.start[i + 1] {
                let j = out.col[k] as usize;
                out.crow[next[j]] = i as u32;
                out.cval[next[j]] = out.val[k];
                next[j] += 1;
            }
        }
        Some(out)
    }

    /// `X Wᵀ + b` (B × n_1) over the rows `idx` for W (n_1 × n_0): each nonzero x_ij adds
    /// x_ij times row j of Wᵀ.
    fn times_wt_plus_b(&self, idx: &[usize], w: &Array2<f64>, b: &Array1<f64>) -> Array2<f64> {
        let n1 = w.nrows();
        let np = n1.next_multiple_of(LANES);
        let mut wt = Array2::<f64>::zeros((w.ncols(), np));
        wt.slice_mut(ndarray::s![.., ..n1]).assign(&w.t());
        let mut z = Array2::from_shape_fn((idx.len(), np), |(_, j)| if j < n1 { b[j] } else { 0.0 });
        let rows = idx.iter().enumerate().map(|(r, &i)| (r, self.start[i]..self.start[i + 1]));
        sparse_sums(rows, &self.col, &self.val, 0, wt.as_slice().expect("standard layout"), z.as_slice_mut().expect("standard layout"), np);
        z.slice_move(ndarray::s![.., ..n1]).as_standard_layout().into_owned()
    }

    /// `Δᵀ X` (n_1 × n_0) over the rows `idx` for Δ (B × n_1): each nonzero x_ij adds x_ij
    /// times row i of Δ to column j.
    fn delta_t_times(&self, idx: &[usize], delta: &Array2<f64>, n0: usize) -> Array2<f64> {
        let n1 = delta.ncols();
        let np = n1.next_multiple_of(LANES);
        let mut d = Array2::<f64>::zeros((delta.nrows(), np));
        d.slice_mut(ndarray::s![.., ..n1]).assign(delta);
        let mut gt = Array2::<f64>::zeros((n0, np));
        let (src, dst) = (d.as_slice().expect("standard layout"), gt.as_slice_mut().expect("standard layout"));
        let r0 = idx.first().copied().unwrap_or(0);
        if idx.iter().enumerate().all(|(r, &i)| i == r0 + r) {
            // A run of rows r0..r1: column j of X over it is a run of column j's entries.
            let r1 = (r0 + idx.len()) as u32;
            let cols = (0..n0).map(|j| {
                let c = &self.crow[self.cstart[j]..self.cstart[j + 1]];
                (j, self.cstart[j] + c.partition_point(|&i| i < r0 as u32)..self.cstart[j] + c.partition_point(|&i| i < r1))
            });
            sparse_sums(cols, &self.crow, &self.cval, r0, src, dst, np);
        } else {
            sparse_scatter(self, idx, src, dst, np);
        }
        gt.slice(ndarray::s![.., ..n1]).t().as_standard_layout().into_owned()
    }
}

/// Rows of the sparse products are padded to whole vectors of this many f64 (AVX-512's 8).
const LANES: usize = 8;

/// Row r of `dst` += Σ_{k ∈ range} val_k · row (ix_k − offset) of `src`, for every
/// `(r, range)` of `ranges`; rows of length n, a multiple of [`LANES`]. Plain multiplies and
/// adds in the order of the entries (no fused multiply-add), so the AVX-512 build gives the
/// baseline's bits.
fn sparse_sums(ranges: impl Iterator<Item = (usize, std::ops::Range<usize>)>, ix: &[u32], val: &[f64], offset: usize, src: &[f64], dst: &mut [f64], n: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        unsafe { sparse_sums_avx512(ranges, ix, val, offset, src, dst, n) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { sparse_sums_avx2(ranges, ix, val, offset, src, dst, n) };
        return;
    }
    sparse_sums_impl(ranges, ix, val, offset, src, dst, n);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sparse_sums_avx512(ranges: impl Iterator<Item = (usize, std::ops::Range<usize>)>, ix: &[u32], val: &[f64], offset: usize, src: &[f64], dst: &mut [f64], n: usize) {
    sparse_sums_impl(ranges, ix, val, offset, src, dst, n);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sparse_sums_avx2(ranges: impl Iterator<Item = (usize, std::ops::Range<usize>)>, ix: &[u32], val: &[f64], offset: usize, src: &[f64], dst: &mut [f64], n: usize) {
    sparse_sums_impl(ranges, ix, val, offset, src, dst, n);
}

#[inline(always)]
fn sparse_sums_impl(ranges: impl Iterator<Item = (usize, std::ops::Range<usize>)>, ix: &[u32], val: &[f64], offset: usize, src: &[f64], dst: &mut [f64], n: usize) {
    // Up to 4 vectors a row, the sums stay in registers across the entries.
    match n / LANES {
        1 => sums_in_registers::<1>(ranges, ix, val, offset, src, dst),
        2 => sums_in_registers::<2>(ranges, ix, val, offset, src, dst),
        3 => sums_in_registers::<3>(ranges, ix, val, offset, src, dst),
        4 => sums_in_registers::<4>(ranges, ix, val, offset, src, dst),
        _ => {
            for (r, range) in ranges {
                let d = &mut dst[r * n..(r + 1) * n];
                for k in range {
                    let (j, v) = (ix[k] as usize - offset, val[k]);
                    d.iter_mut().zip(&src[j * n..(j + 1) * n]).for_each(|(d, s)| *d += v * s);
                }
            }
        }
    }
}

#[inline(always)]
fn sums_in_registers<const C: usize>(ranges: impl Iterator<Item = (usize, std::ops::Range<usize>)>, ix: &[u32], val: &[f64], offset: usize, src: &[f64], dst: &mut [f64]) {
    let n = C * LANES;
    for (r, range) in ranges {
        let d = &mut dst[r * n..(r + 1) * n];
        let mut acc = [[0.0f64; LANES]; C];
        for (c, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&d[c * LANES..(c + 1) * LANES]);
        }
        for k in range {
            let (j, v) = (ix[k] as usize - offset, val[k]);
            let s = &src[j * n..(j + 1) * n];
            for (c, a) in acc.iter_mut().enumerate() {
                for l in 0..LANES {
                    a[l] += v * s[c * LANES + l];
                }
            }
        }
        for (c, a) in acc.iter().enumerate() {
            d[c * LANES..(c + 1) * LANES].copy_from_slice(a);
        }
    }
}

/// `dst` row j += x_ij · row r of `src` for every nonzero x_ij of the rows `idx` (r = the
/// position of i in `idx`): `Δᵀ X` for a batch that is not a run of rows.
fn sparse_scatter(x: &SparseRows, idx: &[usize], src: &[f64], dst: &mut [f64], n: usize) {
    for (r, &i) in idx.iter().enumerate() {
        let s = &src[r * n..(r + 1) * n];
        for k in x.start[i]..x.start[i + 1] {
            let (j, v) = (x.col[k] as usize, x.val[k]);
            dst[j * n..(j + 1) * n].iter_mut().zip(s).for_each(|(d, s)| *d += v * s);
        }
    }
}

/// The largest share of nonzero inputs for which the first layer's products go by rows of
/// nonzeros rather than through the dense matrix product (MNIST's images are ~19% nonzero).
const SPARSE_DENSITY: f64 = 0.4;

/// Backpropagation over the batch (x: B × n_0, y: B × n_L), as matrix products:
/// `Δ^l = (Δ^{l+1} W^{l+1}) ∘ σ′(Z^l)`, `∂C/∂W^l = (1/B) (Δ^l)ᵀ A^{l-1}`,
/// `∂C/∂b^l = (1/B) Σ_x δ^l_x`. Only the shapes, σ and cost of `net` are used. A sparse
/// batch (most inputs exactly zero) takes the first layer's two products over its nonzeros.
///
/// # Errors
/// The first layer where a value left the range of f64.
pub fn gradients(net: &Network, p: &Weights, x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<Gradients, Diverged> {
    let all: Vec<usize> = (0..x.nrows()).collect();
    gradients_by(net, p, x, y, SparseRows::of(x).as_ref().map(|sp| (sp, &all[..])))
}

/// [`gradients`] with the batch's nonzeros given as rows of a [`SparseRows`] (None: the
/// dense products throughout).
pub(crate) fn gradients_by(net: &Network, p: &Weights, x: ArrayView2<f64>, y: ArrayView2<f64>, sparse: Option<(&SparseRows, &[usize])>) -> Result<Gradients, Diverged> {
    let big_l = net.depth();
    // The forward pass, keeping σ′(Z^l) for the backward one.
    let mut f: Vec<(Array2<f64>, Array2<f64>, Array2<f64>)> = Vec::with_capacity(big_l);
    for l in 1..=big_l {
        let z = match (l, sparse) {
            (1, Some((sp, idx))) => sp.times_wt_plus_b(idx, &p.w[0], &p.b[0]),
            _ => {
                let a_prev = if l == 1 { x } else { f[l - 2].1.view() };
                gemm::dot(&a_prev, &p.w[l - 1].t()) + p.b[l - 1].view().insert_axis(Axis(0))
            }
        };
        if !all_finite(&z) {
            return Err(Diverged { layer: l, pass: "forward" });
        }
        let (a, d) = sigma_and_dsigma(net.activation_at(l), &z);
        f.push((z, a, d));
    }
    let bsz = x.nrows() as f64;
    let (z_top, a_top, _) = &f[big_l - 1];
    let cost = (0..x.nrows()).map(|i| net.cost.example_cost(z_top.row(i), a_top.row(i), y.row(i))).sum::<f64>() / bsz;
    if !cost.is_finite() {
        return Err(Diverged { layer: big_l, pass: "forward" });
    }
    let mut gw = Vec::with_capacity(big_l);
    let mut gb = Vec::with_capacity(big_l);
    let mut delta = Array2::zeros((0, 0));
    for l in (1..=big_l).rev() {
        let dsig = &f[l - 1].2;
        delta = if l == big_l {
            let e = &f[l - 1].1 - &y;
            if net.cost == Cost::Quadratic { e * dsig } else { e }
        } else {
            gemm::dot(&delta, &p.w[l]) * dsig
        };
        let g_w = match (l, sparse) {
            (1, Some((sp, idx))) => sp.delta_t_times(idx, &delta, x.ncols()) / bsz,
            _ => {
                let a_prev = if l == 1 { x } else { f[l - 2].1.view() };
                gemm::dot(&delta.t(), &a_prev) / bsz
            }
        };
        if !all_finite(&delta) || !all_finite(&g_w) {
            return Err(Diverged { layer: l, pass: "backward" });
        }
        gb.push(delta.sum_axis(Axis(0)) / bsz);
        gw.push(g_w);
    }
    gw.reverse();
    gb.reverse();
    Ok(Gradients { w: gw, b: gb, cost })
}

/// log10 of the Euclidean (Frobenius) norm, scaled by the largest entry so squares of tiny
/// or huge entries neither underflow nor overflow: −∞ for a zero array.
pub fn log10_norm<'a>(v: impl IntoIterator<Item = &'a f64> + Clone) -> f64 {
    let m = v.clone().into_iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if m == 0.0 {
        return f64::NEG_INFINITY;
    }
    if !m.is_finite() {
        return f64::NAN;
    }
    let s: f64 = v.into_iter().map(|x| (x / m) * (x / m)).sum();
    m.log10() + 0.5 * s.log10()
}

/// The update rule: `W ← (1 − ηλ/n) W − η ∂C/∂W`, `b ← b − η ∂C/∂b`, with n the size of
/// the training set. Returns `log10_update_w` per layer, `log10 ‖ΔW^l‖_F / ‖W^l‖_F` with
/// ΔW^l = −(ηλ/n) W^l − η ∂C/∂W^l as computed (before it is added to W^l) and W^l before
/// the step.
pub fn apply(p: &mut Weights, g: &Gradients, lr: f64, l2: f64, n: usize) -> Vec<f64> {
    let decay = lr * l2 / n as f64;
    let mut out = Vec::with_capacity(p.w.len());
    for (l, (w, b)) in p.w.iter_mut().zip(p.b.iter_mut()).enumerate() {
        // One pass and one allocation (mapv, mapv and the difference made three), with the
        // same operations in the same order, so ΔW is bit-for-bit what it was.
        let dw = ndarray::Zip::from(&*w).and(&g.w[l]).map_collect(|&v, &gv| -decay * v - lr * gv);
        out.push(log10_norm(dw.iter()) - log10_norm(w.iter()));
        *w += &dw;
        b.scaled_add(-lr, &g.b[l]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Init, InitKind, Params};

    /// The first layer over the nonzeros of a sparse batch gives the dense products' values
    /// (to rounding: the sums run in another order).
    #[test]
    fn sparse_first_layer_equals_the_dense_one() {
        let net = Network::new(vec![50, 7, 3], Activation::Sigmoid, false, Cost::CrossEntropy, Params::Generated { init: Init::new(InitKind::Nielsen, None, None).unwrap(), seed: 4 }).unwrap();
        let p = Weights::of(&net);
        let mut s = 9u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let x = Array2::from_shape_fn((20, 50), |_| if next() < 0.2 { next() } else { 0.0 });
        let y = Array2::from_shape_fn((20, 3), |(i, j)| f64::from(u8::from(i % 3 == j)));
        let sp = SparseRows::of(x.view()).expect("20% nonzero is sparse");
        assert!(SparseRows::of(Array2::from_elem((4, 5), 1.0).view()).is_none());
        let all: Vec<usize> = (0..20).collect();
        let (a, b) = (gradients_by(&net, &p, x.view(), y.view(), Some((&sp, &all[..]))).unwrap(), gradients_by(&net, &p, x.view(), y.view(), None).unwrap());
        assert!((a.cost - b.cost).abs() <= 1e-14 * b.cost);
        // A batch that is not a run of rows (the scatter path) against its dense copy.
        let idx = [7usize, 2, 19, 3];
        let (xs, ys) = (x.select(Axis(0), &idx), y.select(Axis(0), &idx));
        let (c, d) = (gradients_by(&net, &p, xs.view(), ys.view(), Some((&sp, &idx[..]))).unwrap(), gradients_by(&net, &p, xs.view(), ys.view(), None).unwrap());
        let top = d.w[0].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(c.w[0].iter().zip(&d.w[0]).all(|(u, v)| (u - v).abs() <= 1e-13 * top));
        for (ga, gb) in a.w.iter().chain(&a.b.iter().map(|v| v.clone().insert_axis(Axis(0))).collect::<Vec<_>>()).zip(b.w.iter().chain(&b.b.iter().map(|v| v.clone().insert_axis(Axis(0))).collect::<Vec<_>>())) {
            let top = gb.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(top > 0.0);
            assert!(ga.iter().zip(gb).all(|(u, v)| (u - v).abs() <= 1e-13 * top));
        }
    }
}
