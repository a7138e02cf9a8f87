//! One SGD step in f64: the batched forward and backward passes and the update rule of
//! docs/MATH.md, "Training" (Nielsen's `network2.py` with L2 weight decay).
//!
//! The step works on plain f64 values, without the probe engine's power-of-two rescaling:
//! a gradient entry below ~1e-308 underflows to 0 here. That loses nothing the update could
//! have kept: W^l_ij changes only if η·∂C/∂W^l_ij exceeds half an ulp of W^l_ij (~1e-17·|W^l_ij|),
//! so any entry the rescaling would have saved is rounded away when it is added to W. The
//! recorded statistics come from the log-domain engine, which sees 10^-600 as 10^-600.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::model::{Cost, Network};

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
        let z = a_prev.dot(&p.w[l - 1].t()) + p.b[l - 1].view().insert_axis(Axis(0));
        if !all_finite(&z) {
            return Err(Diverged { layer: l, pass: "forward" });
        }
        let act = net.activation_at(l);
        let a = z.mapv(|v| act.sigma(v));
        out.push((z, a));
    }
    Ok(out)
}

/// Backpropagation over the batch (x: B × n_0, y: B × n_L), as matrix products:
/// `Δ^l = (Δ^{l+1} W^{l+1}) ∘ σ′(Z^l)`, `∂C/∂W^l = (1/B) (Δ^l)ᵀ A^{l-1}`,
/// `∂C/∂b^l = (1/B) Σ_x δ^l_x`. Only the shapes, σ and cost of `net` are used.
///
/// # Errors
/// The first layer where a value left the range of f64.
pub fn gradients(net: &Network, p: &Weights, x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<Gradients, Diverged> {
    let big_l = net.depth();
    let f = forward(net, p, x)?;
    let bsz = x.nrows() as f64;
    let (z_top, a_top) = &f[big_l - 1];
    let cost = (0..x.nrows()).map(|i| net.cost.example_cost(z_top.row(i), a_top.row(i), y.row(i))).sum::<f64>() / bsz;
    if !cost.is_finite() {
        return Err(Diverged { layer: big_l, pass: "forward" });
    }
    let mut gw = Vec::with_capacity(big_l);
    let mut gb = Vec::with_capacity(big_l);
    let mut delta = Array2::zeros((0, 0));
    for l in (1..=big_l).rev() {
        let act = net.activation_at(l);
        let dsig = f[l - 1].0.mapv(|v| act.dsigma(v));
        delta = if l == big_l {
            let e = &f[l - 1].1 - &y;
            if net.cost == Cost::Quadratic { e * &dsig } else { e }
        } else {
            delta.dot(&p.w[l]) * &dsig
        };
        let a_prev = if l == 1 { x } else { f[l - 2].1.view() };
        let g_w = delta.t().dot(&a_prev) / bsz;
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
