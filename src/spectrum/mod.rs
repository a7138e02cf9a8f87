//! The singular values of the input–output Jacobian `J_x` (or of ∂z^L/∂z^l), exact in the
//! log domain at any depth: `gradscope spectrum` and `gradscope reproduce isometry`.
//!
//! The chain `J_x = Σ′(z^L) W^L ⋯ Σ′(z^1) W^1` is multiplied onto an orthonormal frame one
//! layer at a time and re-orthonormalised by a QR after every layer (Benettin et al. 1980;
//! Eckmann & Ruelle 1985): `Σ′(z^l) W^l Q_{l-1} = Q_l R_l`, so `J_x = Q_L T_L` with
//! `T_L = R_L ⋯ R_1`. T is kept with one power-of-two exponent per row, so its entries never
//! under- or overflow, and its singular values (those of J) come from a one-sided Jacobi SVD
//! that works with those exponents. Units whose σ′ is exactly 0 (relu's dead units) are
//! dropped from the frame, so J's exact zero singular values come out as exact zeros.

pub(crate) mod linalg;
pub mod output;
pub mod predict;
mod cli;
pub mod plot;
pub mod isometry;
pub mod device;

pub use cli::{SpectrumArgs, run_spectrum};
pub use device::SpectrumSplit;

use ndarray::{Array2, ArrayView2, Axis, s};
use serde::Serialize;

use crate::backend::assemble::{pow2, renormalise_rows};
use crate::backend::cpu::{check_memory, forward_step};
use crate::error::{Error, Result};
use crate::model::Problem;
use crate::stats::LOG10_2;

/// Which derivative to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Chain {
    /// `J_x = ∂a^L/∂a^0 = Σ′(z^L) W^L ⋯ Σ′(z^1) W^1`.
    InputOutput,
    /// `∂z^L/∂z^l = W^L Σ′(z^{L-1}) ⋯ W^{l+1} Σ′(z^l)`, for 1 ≤ l < L.
    FromLayer(usize),
}

impl Chain {
    /// The layer whose space the chain starts in (0 for the input).
    pub fn start(self) -> usize {
        match self {
            Chain::InputOutput => 0,
            Chain::FromLayer(l) => l,
        }
    }
}

/// One example's spectrum at one depth.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleSpectrum {
    /// Index of the example in the batch.
    pub example: usize,
    /// log10 s_1 ≥ … ≥ log10 s_k, all min(n_L, n_start) of them; −∞ for an exact zero.
    #[serde(serialize_with = "crate::spectrum::output::finite_or_null_seq")]
    pub log10_singular_values: Vec<f64>,
}

/// The spectra of every example of the chain ending at layer `depth`.
#[derive(Debug, Clone, Serialize)]
pub struct DepthSpectrum {
    pub depth: usize,
    pub examples: Vec<ExampleSpectrum>,
    /// With the determinant check (square chains), per example
    /// `Σ_l (log10 |det W^l| + Σ_i log10 |σ′(z^l_i)|)` over the chain's factors, which
    /// equals Σ_i log10 s_i exactly (docs/MATH.md).
    pub log10_abs_det: Option<Vec<f64>>,
}

/// log10 |det W| from the LU factorisation's pivots (never the determinant itself, which
/// leaves f64's range for n in the hundreds).
pub fn log10_abs_det(w: &Array2<f64>) -> f64 {
    let n = w.nrows();
    let m = nalgebra::DMatrix::from_fn(n, n, |i, j| w[[i, j]]);
    let lu = m.lu();
    let u = lu.u();
    (0..n).map(|i| u[(i, i)].abs().log10()).sum()
}

/// An orthonormal frame and the accumulated triangular factor: the chain so far is
/// `qtᵀ · diag(2^te) · t`.
struct Frame {
    /// Qᵀ, k × n_l (orthonormal rows).
    qt: Array2<f64>,
    /// T with its rows renormalised, k × n_start.
    t: Array2<f64>,
    /// One exponent per row of T.
    te: Vec<i64>,
}

impl Frame {
    fn identity(n: usize) -> Frame {
        Frame { qt: Array2::eye(n), t: Array2::eye(n), te: vec![0; n] }
    }

    /// Multiplies the chain on the left by `diag(d)`, the factor of a ∂z/∂z chain that
    /// precedes W^l. A `d` with exact zeros is a factor of its own (re-orthonormalised
    /// here), so the rank it removes drops exactly; otherwise it is folded into Qᵀ, which
    /// the next [`Frame::absorb`] replaces.
    fn pre(&mut self, d: ndarray::ArrayView1<f64>) {
        if d.iter().any(|&v| v == 0.0) {
            let q = self.qt.clone();
            self.absorb(q, Some(d));
        } else {
            self.qt *= &d.insert_axis(Axis(0));
        }
    }

    /// Takes the layer product `x = (W Q)ᵀ = Qᵀ Wᵀ` (k × n_out), however it was computed
    /// (by the CPU or the GPU): multiplies it by `diag(d)` and re-orthonormalises, so the
    /// frame gains the layer and T gains R.
    fn absorb(&mut self, mut x: Array2<f64>, d: Option<ndarray::ArrayView1<f64>>) {
        if let Some(d) = d {
            x *= &d.view().insert_axis(Axis(0));
        }
        // A global power of two keeps the QR's entries near 1; every row of R shares it.
        let top = x.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let shift = if top > 0.0 && top.is_finite() { top.log2().floor() as i64 } else { 0 };
        if shift != 0 {
            let f = pow2(-shift.clamp(-1022, 1022));
            x.mapv_inplace(|v| v * f);
        }
        // Units with σ′ = 0 exactly contribute zero rows to Σ′WQ: leave them out, so the
        // rank they remove is removed exactly rather than left at rounding level.
        let n_out = x.ncols();
        let live: Vec<usize> = (0..n_out).filter(|&i| x.column(i).iter().any(|&v| v != 0.0)).collect();
        let xl = if live.len() == n_out { x } else { x.select(Axis(1), &live) };
        let (qt_live, r) = linalg::householder_qr_t(xl);
        let m = qt_live.nrows();
        self.qt = if live.len() == n_out {
            qt_live
        } else {
            let mut q = Array2::zeros((m, n_out));
            for (j, &i) in live.iter().enumerate() {
                q.column_mut(i).assign(&qt_live.column(j));
            }
            q
        };
        // T ← R T with row exponents: row i of R·diag(2^te) is brought to the scale of its
        // largest live term, so nothing overflows and only negligible terms underflow.
        let mut rs = r;
        let mut me = vec![0i64; m];
        for (i, mut row) in rs.rows_mut().into_iter().enumerate() {
            let top = row.iter().zip(&self.te).filter(|(v, _)| **v != 0.0).map(|(_, &e)| e).max();
            if let Some(mi) = top {
                me[i] = mi;
                row.iter_mut().zip(&self.te).filter(|(v, _)| **v != 0.0).for_each(|(v, &e)| *v *= pow2((e - mi).max(-1100)));
            }
        }
        let mut t = Array2::zeros((m, self.t.ncols()));
        linalg::upper_times_upper(rs.view(), self.t.view(), &mut t.view_mut());
        me.iter_mut().for_each(|e| *e += shift);
        renormalise_rows(&mut t, &mut me);
        self.t = t;
        self.te = me;
    }

    /// log10 of the chain's singular values, padded with −∞ to `count` (exact zeros).
    fn log10_singular_values(&self, count: usize) -> Result<Vec<f64>> {
        let mut v: Vec<f64> = linalg::graded_jacobi_log2_sv(&self.t, &self.te)?.into_iter().map(|x| x * LOG10_2).collect();
        v.resize(count, f64::NEG_INFINITY);
        v.truncate(count);
        Ok(v)
    }
}

/// Bytes one example's frame holds at its peak (Qᵀ, T, the layer product and the QR's copy).
fn frame_bytes(widths: &[usize], start: usize) -> u64 {
    let n = *widths.iter().max().unwrap() as u64;
    let n0 = widths[start] as u64;
    8 * (4 * n * n0 + n * n)
}

/// Checks [`measure`]'s arguments (shared with the GPU engine's spectrum); returns the
/// deepest depth.
pub(crate) fn validate(p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool) -> Result<usize> {
    let net = &p.net;
    let big_l = net.depth();
    let start = chain.start();
    if let Chain::FromLayer(l) = chain {
        if l == 0 || l >= big_l {
            return Err(Error::arg("--from-layer", format!("must be in 1..={} (the network has L = {big_l} layers), got {l}", big_l.saturating_sub(1))));
        }
    }
    if examples == 0 || examples > p.batch() {
        return Err(Error::arg("--examples", format!("must be in 1..={} (the batch), got {examples}", p.batch())));
    }
    if depths.is_empty() || depths.windows(2).any(|w| w[0] >= w[1]) || depths[0] <= start || *depths.last().unwrap() > big_l {
        return Err(Error::Internal(format!("depths {depths:?} must be sorted, unique and in {}..={big_l}", start + 1)));
    }
    let top = *depths.last().unwrap();
    if det_check && net.widths[start..=top].iter().any(|&n| n != net.widths[start]) {
        return Err(Error::arg("--det-check", format!("needs square layers (every width from n_{start} to n_{top} equal); the widths are {:?}", &net.widths[start..=top])));
    }
    Ok(top)
}

/// The spectra of the first `examples` examples of `p`, for the chain `chain` ending at each
/// layer in `depths` (sorted, unique, above the chain's start, at most L): one pass over the
/// layers serves every depth, as the chain of depth d is the prefix of a deeper one.
///
/// Cost per layer and example: O(n_l n_{l-1} k) for the product and O(n_l k²) for the QR,
/// k = the frame's rank (≤ n_start); memory O(n k) per example.
///
/// With `det_check`, each depth also carries the chain's log10 |det| from the determinant
/// identity (square chains only).
///
/// # Errors
/// Out-of-range depths or examples, too little memory, a forward pass that overflows f64,
/// or `det_check` on a chain whose layers are not all square.
pub fn measure(p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool) -> Result<Vec<DepthSpectrum>> {
    measure_with(p, examples, chain, depths, det_check, &mut |_, w, qts| Ok(qts.iter().map(|q| q.dot(&w.t())).collect()))
}

/// The layer products of [`measure_with`]: given l, W^l and every example's frame Qᵀ
/// (k × n_{l-1}), each `Qᵀ W^lᵀ` (k × n_l).
pub(crate) type Products<'a> = dyn FnMut(usize, &Array2<f64>, &[ArrayView2<f64>]) -> Result<Vec<Array2<f64>>> + 'a;

/// [`measure`] with the layer products computed by `products` (the CPU's own, or the GPU's);
/// the forward pass, the QR, T and the SVD are always the CPU engine's, in f64.
pub(crate) fn measure_with(p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool, products: &mut Products<'_>) -> Result<Vec<DepthSpectrum>> {
    let net = &p.net;
    let start = chain.start();
    let top = validate(p, examples, chain, depths, det_check)?;
    let mut log10_det = vec![0.0; examples];
    let sum_log10 = |d: ndarray::ArrayView1<f64>| d.iter().map(|v| v.abs().log10()).sum::<f64>();
    check_memory(examples as u64 * frame_bytes(&net.widths[..=top], start), "the spectrum", "lower --examples or the width")?;
    // The CPU engine's forward pass, one layer at a time, with its per-example exponents.
    let mut a = p.inputs.slice(s![..examples, ..]).to_owned();
    let mut ea = vec![0i64; examples];
    renormalise_rows(&mut a, &mut ea);
    let mut frames: Vec<Frame> = if start == 0 { (0..examples).map(|_| Frame::identity(net.widths[0])).collect() } else { Vec::new() };
    let mut out: Vec<DepthSpectrum> = Vec::with_capacity(depths.len());
    let mut pending: Option<Array2<f64>> = None; // Σ′(z^{l-1}) for ∂z/∂z chains
    let mut pending_applied = false; // … and whether the frames hold it already
    for l in 1..=top {
        let (w, b) = net.layer(l);
        let f = forward_step(net.activation_at(l), &w, &b, &a, &ea);
        if !f.finite {
            return Err(Error::Numerical(format!("the forward pass overflowed f64 at layer {l}: the Jacobian is undefined there")));
        }
        let dsig = f.dsig;
        (a, ea) = (f.a, f.ea);
        if l < start {
            continue;
        }
        if l == start {
            frames = (0..examples).map(|_| Frame::identity(net.widths[start])).collect();
            pending = Some(dsig);
            continue;
        }
        if det_check {
            let dw = log10_abs_det(&w);
            for (xi, s) in log10_det.iter_mut().enumerate() {
                *s += dw + match chain {
                    Chain::InputOutput => sum_log10(dsig.row(xi)),
                    Chain::FromLayer(_) => sum_log10(pending.as_ref().expect("set at the start layer").row(xi)),
                };
            }
        }
        let recorded = depths.binary_search(&l).is_ok();
        let count = net.widths[l].min(net.widths[start]);
        // ∂z^l/∂z^start = W^l Σ′(z^{l-1}) ⋯: Σ′(z^{l-1}) first, unless it joined already.
        if let (Chain::FromLayer(_), Some(d_prev), false) = (chain, &pending, pending_applied) {
            frames.iter_mut().zip(d_prev.rows()).for_each(|(f, d)| f.pre(d));
        }
        let xs = {
            let qts: Vec<ArrayView2<f64>> = frames.iter().map(|f| f.qt.view()).collect();
            products(l, &w, &qts)?
        };
        let mut spectra = Vec::new();
        // Σ′(z^l) joins after the product, exactly in f64 whatever rounded the product (a
        // Σ′ folded into Qᵀ first would share the product's rounding: in f32 on the GPU its
        // small entries' directions drown in the large ones' errors). A ∂z/∂z chain that
        // is reported at depth l ends at W^l, so there it waits for the next layer.
        let fold = chain == Chain::InputOutput || (!recorded && l < top);
        for ((xi, f), x) in frames.iter_mut().enumerate().zip(xs) {
            f.absorb(x, fold.then(|| dsig.row(xi)));
            if recorded {
                spectra.push(ExampleSpectrum { example: xi, log10_singular_values: f.log10_singular_values(count)? });
            }
        }
        pending = Some(dsig);
        pending_applied = fold;
        if recorded {
            out.push(DepthSpectrum { depth: l, examples: spectra, log10_abs_det: det_check.then(|| log10_det.clone()) });
        }
    }
    Ok(out)
}
