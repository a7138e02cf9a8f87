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
//!
//! Q is kept as the QR's Householder reflectors and applied to the next layer's Wᵀ, never
//! formed (on the CPU). Where the frame stays well conditioned (near-isometric chains)
//! several layers are multiplied on between two QRs; where the layers spread it (ρ, see
//! `RHO_MAX`) each gets its own, as above.

pub(crate) mod linalg;
pub mod output;
pub mod predict;
pub mod density;
mod cli;
pub mod plot;
pub mod isometry;
pub mod device;

pub use cli::{SpectrumArgs, run_spectrum};
pub use device::SpectrumSplit;

use ndarray::{Array1, Array2, ArrayView2, Axis, s};
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

/// The frame Q (n_l × k) of a [`Frame`]: formed, or as the reflectors of the last QR.
#[derive(Clone)]
enum Basis {
    /// Qᵀ as a matrix (k × n_l): the identity, or a product not yet factored.
    Formed(Array2<f64>),
    /// Qᵀ = Eᵀ P_{B−1}ᵀ ⋯ P_0ᵀ on the coordinates `live` of n_out (all when None).
    Reflectors { q: linalg::Reflectors, live: Option<Vec<usize>>, n_out: usize },
}

impl Basis {
    /// `Qᵀ diag(pre) Wᵀ` (k × n_out of W; W = I when absent).
    fn times_wt(&self, pre: Option<ndarray::ArrayView1<f64>>, w: Option<&Array2<f64>>) -> Array2<f64> {
        match self {
            Basis::Formed(qt) => {
                let scaled;
                let qt = match pre {
                    Some(pre) => {
                        scaled = qt * &pre.insert_axis(Axis(0));
                        &scaled
                    }
                    None => qt,
                };
                match w {
                    Some(w) => crate::gemm::dot(qt, &w.t()),
                    None => qt.clone(),
                }
            }
            Basis::Reflectors { q, live, n_out } => {
                // Y = diag(pre) Wᵀ on the live coordinates, then Qᵀ Y by the reflectors.
                let mut y = match (w, live) {
                    (Some(w), None) => w.t().as_standard_layout().into_owned(),
                    (Some(w), Some(live)) => w.t().select(Axis(0), live),
                    (None, None) => Array2::eye(*n_out),
                    (None, Some(live)) => Array2::from_shape_fn((live.len(), *n_out), |(a, c)| f64::from(u8::from(live[a] == c))),
                };
                if let Some(pre) = pre {
                    let pre = match live {
                        Some(live) => pre.select(Axis(0), live),
                        None => pre.to_owned(),
                    };
                    y *= &pre.insert_axis(Axis(1));
                }
                debug_assert_eq!(y.nrows(), q.rows());
                q.apply_qt(y)
            }
        }
    }
}

/// An orthonormal frame and the accumulated triangular factor: the chain so far is
/// `2^shift · Xᵀ · diag(2^te) · t`, where X = Q right after a factorisation (`pending` = 0)
/// and Q times the layers pushed since otherwise.
#[derive(Clone)]
struct Frame {
    basis: Basis,
    /// T with its rows renormalised, k × n_start.
    t: Array2<f64>,
    /// One exponent per row of T.
    te: Vec<i64>,
    /// Layers multiplied onto the basis since the last QR.
    pending: usize,
    /// The power of two taken out of the basis since the last QR.
    shift: i64,
    /// Layers to take per QR next.
    block: usize,
    /// The most layers per QR ([`MAX_BLOCK`]; 1 for a QR after every layer).
    max_block: usize,
    /// ln ρ per layer, averaged over the recent blocks (None before the first QR).
    ln_rho: Option<f64>,
    /// A ∂z/∂z chain's Σ′(z^{l-1}) waiting to join on the right of Qᵀ with the next product
    /// (Qᵀ diag(d) Wᵀ), when Q is held as reflectors.
    right: Option<Array1<f64>>,
}

impl Frame {
    fn identity(n: usize) -> Frame {
        Frame { basis: Basis::Formed(Array2::eye(n)), t: Array2::eye(n), te: vec![0; n], pending: 0, shift: 0, block: 1, max_block: MAX_BLOCK, ln_rho: None, right: None }
    }

    /// `Qᵀ diag(right) Wᵀ` (k × n_out of W; W = I when absent): the next layer's product on
    /// the CPU, through the reflectors when Q is held so.
    fn times_wt(&self, w: Option<&Array2<f64>>) -> Array2<f64> {
        self.basis.times_wt(self.right.as_ref().map(|r| r.view()), w)
    }

    /// Qᵀ as a matrix (for products taken elsewhere, on the GPU): the reflectors and a
    /// waiting Σ′ are applied to the identity once.
    fn formed_qt(&mut self) -> ArrayView2<'_, f64> {
        if matches!(self.basis, Basis::Reflectors { .. }) || self.right.is_some() {
            self.basis = Basis::Formed(self.times_wt(None));
            self.right = None;
        }
        match &self.basis {
            Basis::Formed(qt) => qt.view(),
            Basis::Reflectors { .. } => unreachable!("formed just above"),
        }
    }

    /// Multiplies the chain on the left by `diag(d)`, the factor of a ∂z/∂z chain that
    /// precedes W^l. A `d` with exact zeros is a factor of its own (re-orthonormalised
    /// here), so the rank it removes drops exactly; otherwise it is folded into Qᵀ (or, when
    /// Q is held as reflectors, waits for the next product).
    fn pre(&mut self, d: ndarray::ArrayView1<f64>) {
        if d.iter().any(|&v| v == 0.0) {
            let x = self.times_wt(None);
            self.absorb(x, Some(d));
        } else if let (Basis::Formed(qt), None) = (&mut self.basis, &self.right) {
            *qt *= &d.insert_axis(Axis(0));
        } else {
            self.right = Some(match self.right.take() {
                Some(r) => r * &d,
                None => d.to_owned(),
            });
        }
    }

    /// Takes the layer product `x = (W Q)ᵀ = Qᵀ Wᵀ` (k × n_out), however it was computed
    /// (by the CPU or the GPU) and multiplies it by `diag(d)`; the frame is
    /// re-orthonormalised (T gains R) once the block is complete or the layer has exact
    /// zeros.
    fn absorb(&mut self, mut x: Array2<f64>, d: Option<ndarray::ArrayView1<f64>>) {
        if let Some(d) = d {
            x *= &d.view().insert_axis(Axis(0));
        }
        // A global power of two keeps the entries near 1; every row of R shares it.
        let top = x.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let shift = if top > 0.0 && top.is_finite() { top.log2().floor() as i64 } else { 0 };
        if shift != 0 {
            let f = pow2(-shift.clamp(-1022, 1022));
            x.mapv_inplace(|v| v * f);
        }
        let dead = dead_columns(&x);
        self.basis = Basis::Formed(x);
        self.right = None;
        self.shift += shift;
        self.pending += 1;
        // Units with σ′ = 0 exactly contribute zero rows to Σ′WQ, and a layer narrower than
        // the frame caps its rank: both are factored at once, so the rank they remove is
        // removed exactly rather than left at rounding level.
        let narrow = matches!(&self.basis, Basis::Formed(x) if x.nrows() > x.ncols());
        if dead || narrow || self.pending >= self.block {
            self.factor();
        }
    }

    /// The QR of the pending block: `qt` becomes orthonormal again and T ← R T.
    fn factor(&mut self) {
        let Basis::Formed(x) = std::mem::replace(&mut self.basis, Basis::Formed(Array2::zeros((0, 0)))) else {
            return; // already factored
        };
        let shift = self.shift;
        let n_out = x.ncols();
        let live: Vec<usize> = (0..n_out).filter(|&i| x.column(i).iter().any(|&v| v != 0.0)).collect();
        let xl = if live.len() == n_out { x } else { x.select(Axis(1), &live) };
        let norms: Vec<f64> = xl.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
        let (q, r) = linalg::compact_qr_t(xl);
        let m = r.nrows();
        let rho = (0..m).map(|j| norms[j] / r[[j, j]].abs()).fold(1.0_f64, f64::max);
        // ρ of one block says little about the next (its tail is heavy): the plan follows a
        // running average, so one quiet layer does not open a long block.
        let now = rho.ln() / self.pending as f64;
        let avg = self.ln_rho.map_or(now, |a| a + (now - a) / 4.0);
        self.ln_rho = Some(avg);
        self.block = next_block(avg, self.max_block);
        self.pending = 0;
        self.shift = 0;
        self.basis = Basis::Reflectors { q, live: (live.len() < n_out).then_some(live), n_out };
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

    /// log10 of the chain's singular values, padded with −∞ to `count` (exact zeros). A
    /// pending block is factored on a copy, so the frame goes on exactly as if unrecorded.
    fn log10_singular_values(&self, count: usize) -> Result<Vec<f64>> {
        let done;
        let f = if self.pending > 0 {
            let mut c = self.clone();
            c.factor();
            done = c;
            &done
        } else {
            self
        };
        let mut v: Vec<f64> = linalg::graded_jacobi_log2_sv(&f.t, &f.te)?.into_iter().map(|x| x * LOG10_2).collect();
        v.resize(count, f64::NEG_INFINITY);
        v.truncate(count);
        Ok(v)
    }
}

/// Whether a column of `x` (a unit of the layer) is exactly zero in every frame vector.
fn dead_columns(x: &Array2<f64>) -> bool {
    let mut live = vec![false; x.ncols()];
    for row in x.rows() {
        live.iter_mut().zip(row).for_each(|(l, &v)| *l |= v != 0.0);
    }
    live.contains(&false)
}

/// The most layers multiplied onto the frame between two QRs.
const MAX_BLOCK: usize = 8;

/// The largest ρ = max_j ‖x_j‖ / |R_jj| a block is planned to reach. A QR is backward stable
/// column by column, so R_jj carries a relative error of about ε ρ_j: a block of layers
/// whose columns have drawn this close together (as happens fast where the Lyapunov
/// exponents spread, ~100 per layer at tanh's critical point and width 512) loses that
/// many more digits than one layer would. 1e3 is the per-layer ρ of a typical such layer,
/// so only well-conditioned chains (near-isometries) take more than one layer per QR.
const RHO_MAX: f64 = 1e3;

/// Layers per QR in the next block (at most `cap`), from the growth of ln ρ per layer.
fn next_block(ln_rho_per_layer: f64, cap: usize) -> usize {
    if !(ln_rho_per_layer > 0.0) {
        return cap;
    }
    ((RHO_MAX.ln() / ln_rho_per_layer).floor() as usize).clamp(1, cap)
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
    measure_by(p, examples, chain, depths, det_check, None)
}

/// The layer products of [`measure_with`]: given l, W^l and every example's frame Qᵀ
/// (k × n_{l-1}), each `Qᵀ W^lᵀ` (k × n_l).
pub(crate) type Products<'a> = dyn FnMut(usize, &Array2<f64>, &[ArrayView2<f64>]) -> Result<Vec<Array2<f64>>> + 'a;

/// [`measure`] with the layer products computed by `products` (the CPU's own, or the GPU's);
/// the forward pass, the QR, T and the SVD are always the CPU engine's, in f64.
pub(crate) fn measure_with(p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool, products: &mut Products<'_>) -> Result<Vec<DepthSpectrum>> {
    measure_by(p, examples, chain, depths, det_check, Some(products))
}

/// [`measure`] (`products` None: Q applied through its reflectors on the CPU) or
/// [`measure_with`].
fn measure_by(p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool, mut products: Option<&mut Products<'_>>) -> Result<Vec<DepthSpectrum>> {
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
        let xs = match products.as_mut() {
            None => frames.iter().map(|f| f.times_wt(Some(&w))).collect(),
            Some(products) => {
                // A product rounded elsewhere (f32 on the GPU) is taken on an orthonormal
                // frame every layer: a pending block's spread would share its rounding.
                frames.iter_mut().for_each(|f| f.max_block = 1);
                let qts: Vec<ArrayView2<f64>> = frames.iter_mut().map(|f| f.formed_qt()).collect();
                products(l, &w, &qts)?
            }
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

#[cfg(test)]
mod tests {
    use super::linalg::tests::lcg;
    use super::*;

    /// Near-isometric layers (I + a small perturbation, σ′ near 1) are well conditioned:
    /// the frame takes several of them per QR and gives the values a QR per layer gives.
    #[test]
    fn blocks_of_well_conditioned_layers_match_a_qr_per_layer() {
        let (n, depth) = (24, 300);
        let mut s = 3;
        let mut blocked = Frame::identity(n);
        let mut single = Frame { max_block: 1, ..Frame::identity(n) };
        let mut longest = 0;
        for _ in 0..depth {
            let w = Array2::from_shape_fn((n, n), |(i, j)| f64::from(u8::from(i == j)) + 0.1 * lcg(&mut s));
            let d = Array1::from_shape_fn(n, |_| 0.9 + 0.1 * lcg(&mut s));
            for f in [&mut blocked, &mut single] {
                let x = f.times_wt(Some(&w));
                f.absorb(x, Some(d.view()));
            }
            longest = longest.max(blocked.block);
            assert_eq!(single.pending, 0);
        }
        assert!(longest >= 4, "the blocks stayed at {longest} layers");
        let (a, b) = (blocked.log10_singular_values(n).unwrap(), single.log10_singular_values(n).unwrap());
        assert!(a[0] - a[n - 1] > 3.0, "spread {}", a[0] - a[n - 1]);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
    }

    /// At tanh's critical point the layers spread the frame ~100-fold each: one QR per layer.
    #[test]
    fn ill_conditioned_layers_get_a_qr_each() {
        let n = 64;
        let mut s = 5;
        let mut f = Frame::identity(n);
        for _ in 0..40 {
            let w = Array2::from_shape_fn((n, n), |_| 4.6 * lcg(&mut s) / (n as f64).sqrt());
            let d = Array1::from_shape_fn(n, |_| 0.5 + lcg(&mut s));
            let x = f.times_wt(Some(&w));
            f.absorb(x, Some(d.view()));
            assert_eq!(f.pending, 0);
        }
    }
}
