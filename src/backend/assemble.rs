//! The host-side assembly both engines share: exact power-of-two arithmetic on rows that
//! carry an exponent, the output error and cost, the conversion of one layer's per-example
//! sums into the gradient fields of docs/MATH.md, and the walk from the output down that
//! builds `log10_bound`, `log10_bound_tight` and each layer's status.
//!
//! Each engine computes the same per-layer sums on its own device (f64 on the CPU, f32 on
//! the GPU) and hands them here, so a GPU-against-CPU comparison (`--check`) tests what the
//! devices compute, not two copies of the host code.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, Zip};

use crate::error::Result;
use crate::model::{Cost, Network};
use crate::stats::{log2_sum_exp2, LayerStats, LayerStatus, Report, Signal, LOG10_2};

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
pub(crate) fn scale2(x: f64, k: i64) -> f64 {
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

/// ⌊log2 max|v|⌋, or None for a zero vector.
pub(crate) fn top_exponent(v: ArrayView1<f64>) -> Option<i64> {
    let m = v.iter().fold(0.0_f64, |a, x| a.max(x.abs()));
    (m > 0.0).then(|| m.log2().floor() as i64)
}

/// row·2^e + sign·v  →  mantissa in `row`, exponent in `e`, computed at the common
/// exponent max(e, k_v) (k_v = ⌊log2 max|v|⌋), so neither term overflows and the smaller
/// one underflows only where it is negligible. Scaling by powers of two is exact, so
/// wherever nothing underflows this is the plain sum, rounded once.
pub(crate) fn add_scaled(row: &mut ArrayViewMut1<f64>, e: &mut i64, v: ArrayView1<f64>, k_v: i64, sign: f64) {
    let m = (*e).max(k_v);
    if m != *e {
        let k = *e - m;
        row.mapv_inplace(|x| scale2(x, k));
    }
    Zip::from(row).and(v).for_each(|r, &x| *r += sign * scale2(x, -m));
    *e = m;
}

/// One depth's output error e_x = a_x − y_x, from activations given as mantissas `a` and
/// exponents `ea`: the rescaled mantissas and exponents, log2 ‖e_x‖ per example and log10 C.
pub(crate) struct OutputError {
    pub err: Array2<f64>,
    pub e_err: Vec<i64>,
    pub log2_err: Vec<f64>,
    pub log10_cost: f64,
}

/// The output error and the batch cost C = (1/B) Σ_x C_x of one depth. `z` (the output
/// layer's pre-activations) is needed only for cross-entropy, whose cost is not a function
/// of ‖e_x‖.
///
/// # Errors
/// [`crate::Error::Internal`] when cross-entropy is asked for without `z`.
pub(crate) fn output_error(cost: Cost, a: &Array2<f64>, ea: &[i64], y: &Array2<f64>, z: Option<ArrayView2<f64>>) -> Result<OutputError> {
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
    let log2_err: Vec<f64> = err.rows().into_iter().zip(&e_err).map(|(r, &e)| e as f64 + 0.5 * r.dot(&r).log2()).collect();
    let bsz = a.nrows();
    let log10_cost = match cost {
        Cost::Quadratic => (log2_sum_exp2(log2_err.iter().map(|v| 2.0 * v)) - 1.0 - (bsz as f64).log2()) * LOG10_2,
        Cost::CrossEntropy => {
            let z = z.ok_or_else(|| crate::Error::Internal("z of an output layer was not kept".into()))?;
            let c: f64 = (0..bsz).map(|x| cost.example_cost(z.row(x), a.row(x), y.row(x))).sum::<f64>() / bsz as f64;
            c.log10()
        }
    };
    Ok(OutputError { err, e_err, log2_err, log10_cost })
}

/// The four gradient norms of one depth at one layer (log10), and whether δ was all zero.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grad {
    pub b_mean: f64,
    pub b_rms: f64,
    pub w_mean: f64,
    pub w_rms: f64,
    pub zero: bool,
}

impl Default for Grad {
    fn default() -> Self {
        Grad { b_mean: f64::NAN, b_rms: f64::NAN, w_mean: f64::NAN, w_rms: f64::NAN, zero: false }
    }
}

/// The largest exponent among the examples whose weight is live (`live(x)`), −∞ if none:
/// the common scale of a batch sum Σ_x 2^{e_x} v_x, which each engine forms as
/// Σ_x 2^{e_x − m} v_x so that no term overflows.
pub(crate) fn max_live_exponent(e: impl Iterator<Item = f64>, live: impl Fn(usize) -> bool) -> f64 {
    e.enumerate().filter(|(x, _)| live(*x)).map(|(_, e)| e).fold(f64::NEG_INFINITY, f64::max)
}

/// What an engine measures of one depth at one layer l, per example x: ‖δ̂_x‖² and its
/// exponent e_x (δ_x = δ̂_x·2^{e_x}), ‖â^{l-1}_x‖² and its exponent; and two batch sums at
/// the scales [`LayerSums::mean_scale`] and [`LayerSums::gram_scale`]:
///
/// ```text
/// mean_sq = ‖Σ_x 2^{e_x − m_d} δ̂_x‖²
/// gram    = Σ_{x,x'} 2^{c_x − m_c} 2^{c_x' − m_c} (δ̂_x·δ̂_x')(â_x·â_x'),  c_x = e_x + e^a_x
/// ```
pub(crate) struct LayerSums<'a> {
    pub sq_d: &'a [f64],
    pub ed: &'a [f64],
    pub sq_a: &'a [f64],
    pub ea: &'a [f64],
    pub mean_sq: f64,
    pub gram: f64,
}

impl LayerSums<'_> {
    /// m_d: the scale of `mean_sq` (−∞ when every δ_x is 0).
    pub fn mean_scale(sq_d: &[f64], ed: &[f64]) -> f64 {
        max_live_exponent(ed.iter().copied(), |x| sq_d[x] > 0.0)
    }

    /// m_c: the scale of `gram` (−∞ when no example has both δ_x and a_x non-zero).
    pub fn gram_scale(sq_d: &[f64], ed: &[f64], sq_a: &[f64], ea: &[f64]) -> f64 {
        max_live_exponent(ed.iter().zip(ea).map(|(d, a)| d + a), |x| sq_d[x] > 0.0 && sq_a[x] > 0.0)
    }

    /// The gradient fields of docs/MATH.md, all in the log domain:
    ///
    /// ```text
    /// grad_b_rms  = ½ log Σ_x ‖δ_x‖² − ½ log B
    /// grad_w_rms  = ½ log Σ_x ‖δ_x‖² ‖a_x‖² − ½ log B
    /// grad_b_mean = m_d + ½ log mean_sq − log B
    /// grad_w_mean = m_c + ½ log gram − log B      (two B×B Grams, never the n_l × n_{l-1} gradient)
    /// ```
    pub fn grad(&self) -> Grad {
        let lb = (self.sq_d.len() as f64).log2();
        let t_b: Vec<f64> = self.sq_d.iter().zip(self.ed).map(|(&s, &e)| 2.0 * e + s.log2()).collect();
        let t_w: Vec<f64> = t_b.iter().zip(self.sq_a.iter().zip(self.ea)).map(|(tb, (&s, &e))| tb + 2.0 * e + s.log2()).collect();
        let m_d = Self::mean_scale(self.sq_d, self.ed);
        let m_c = Self::gram_scale(self.sq_d, self.ed, self.sq_a, self.ea);
        Grad {
            b_rms: 0.5 * (log2_sum_exp2(t_b.iter().copied()) - lb) * LOG10_2,
            w_rms: 0.5 * (log2_sum_exp2(t_w.iter().copied()) - lb) * LOG10_2,
            b_mean: if m_d.is_finite() { (m_d + 0.5 * self.mean_sq.log2() - lb) * LOG10_2 } else { f64::NEG_INFINITY },
            w_mean: if m_c.is_finite() { (m_c + 0.5 * self.gram.max(0.0).log2() - lb) * LOG10_2 } else { f64::NEG_INFINITY },
            zero: self.sq_d.iter().all(|&v| v == 0.0),
        }
    }
}

/// One layer's measured forward signal from what an engine sums of z^l = ẑ·2^{e}: the
/// squared row norms `sq[x] = ‖ẑ_x‖²` with their exponents `ez[x]`, and the B×B Gram of the
/// mantissas `gram[(x, x')] = ẑ_x·ẑ_x'`. The correlation is scale-free, so each pair's
/// exponents cancel and only the mantissas are needed; the length is summed in log2 so it
/// is exact at any depth.
///
/// ```text
/// log10_q = log10 Σ_x 2^{2 e_x} ‖ẑ_x‖² − log10 (B n_l)
/// c       = mean_{x<x'} G_xx' / √(G_xx G_x'x')
/// ```
pub(crate) fn signal(sq: &[f64], ez: &[f64], gram: ArrayView2<f64>, width: usize) -> Signal {
    let bsz = sq.len();
    let t = sq.iter().zip(ez).map(|(&s, &e)| 2.0 * e + s.log2());
    let log10_q = (log2_sum_exp2(t) - ((bsz * width) as f64).log2()) * LOG10_2;
    Signal { log10_q, c: crate::theory::signal::c_measured(gram) }
}

/// What every report of one network shares, beside the gradients: its spectral norms and
/// per-example max |σ′| (both indexed by layer, index 0 unused), and where it was computed.
pub(crate) struct Assembly<'a> {
    pub net: &'a Network,
    pub log2_wnorm: &'a [f64],
    pub maxd: &'a [Vec<f64>],
    pub backend: &'static str,
    pub device: String,
    /// The measured signal of layers 1..L (index l−1), or None where the engine does not
    /// measure it (then every report says so and carries NaN).
    pub signal: Option<&'a [Signal]>,
}

/// Why a report's signal is NaN when the engine measures none.
pub(crate) const SIGNAL_UNMEASURED: &str = "not measured on this backend";

impl Assembly<'_> {
    /// The signal of layers 1..=depth, NaN from `overflow_layer` up, and why it is absent.
    fn signal_of(&self, depth: usize, overflow_layer: Option<usize>) -> (Vec<Signal>, Option<&'static str>) {
        match self.signal {
            None => (vec![Signal::NAN; depth], Some(SIGNAL_UNMEASURED)),
            Some(s) => ((1..=depth).map(|l| if overflow_layer.is_none_or(|ol| l < ol) { s.get(l - 1).copied().unwrap_or(Signal::NAN) } else { Signal::NAN }).collect(), None),
        }
    }

    /// Layers 1..=depth with their weight norm and max σ′ (NaN at and above an overflow)
    /// and undefined gradient fields.
    fn shells(&self, depth: usize, overflow_layer: Option<usize>, status: LayerStatus) -> Vec<LayerStats> {
        (1..=depth)
            .map(|l| {
                let maxd_l = if overflow_layer.is_none_or(|ol| l < ol) { self.maxd[l].iter().fold(0.0_f64, |m, &v| m.max(v)).log10() } else { f64::NAN };
                LayerStats::undefined(l, self.net.widths[l], self.log2_wnorm[l] * LOG10_2, maxd_l, status)
            })
            .collect()
    }

    /// The report of depth `depth` from its output errors (log2 ‖e_x‖), cost and each
    /// layer's gradient norms (`grads[l-1]`): the bound (**) and its tight form walked from
    /// the output down, and each layer's status from the one above.
    ///
    /// ```text
    /// bound_l       = max_x ‖e_x‖ · γ^k · Π_{r>l} ‖W^r‖
    /// bound_tight_l = max_x ‖e_x‖ · Π_{r≥l} max|σ′(z^r_x)| · Π_{r>l} ‖W^r‖
    /// ```
    /// (the r = L factor of σ′ is absent under cross-entropy).
    pub fn report(&self, depth: usize, log2_err: &[f64], grads: &[Grad], log10_cost: f64) -> Report {
        let net = self.net;
        let has_top_dsigma = net.cost == Cost::Quadratic;
        let mut layers = self.shells(depth, None, LayerStatus::Ok);
        let mut tight = log2_err.to_vec();
        let mut bound = tight.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let mut above = LayerStatus::Ok;
        for l in (1..=depth).rev() {
            if l < depth || has_top_dsigma {
                bound += net.gamma_at(l).log2();
                for (t, m) in tight.iter_mut().zip(&self.maxd[l]) {
                    *t += m.log2();
                }
            }
            let g = grads[l - 1];
            let st = &mut layers[l - 1];
            st.log10_grad_b_mean = g.b_mean;
            st.log10_grad_b_rms = g.b_rms;
            st.log10_grad_w_mean = g.w_mean;
            st.log10_grad_w_rms = g.w_rms;
            st.log10_bound = bound * LOG10_2;
            st.log10_bound_tight = tight.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v)) * LOG10_2;
            st.status = LayerStatus::below(above, g.zero, net.activation_at(l));
            above = st.status;
            if l > 1 {
                bound += self.log2_wnorm[l];
                for t in tight.iter_mut() {
                    *t += self.log2_wnorm[l];
                }
            }
        }
        let (signal, signal_unmeasured) = self.signal_of(depth, None);
        Report { layers, backend: self.backend.into(), device: self.device.clone(), overflow_layer: None, log10_cost, signal, signal_unmeasured }
    }

    /// The reports of depths `ds` when the forward pass overflowed at layer `ol`: the
    /// depths below it are unaffected and come from `below` (a probe of the prefix that
    /// stops under the overflow, the rare path); the others say `overflow`.
    ///
    /// # Errors
    /// Whatever `below` returns.
    pub fn with_overflow(&self, ds: &[usize], ol: usize, below: impl FnOnce(&[usize]) -> Result<Vec<Report>>) -> Result<Vec<Report>> {
        let under: Vec<usize> = ds.iter().copied().filter(|&d| d < ol).collect();
        let mut out = if under.is_empty() { Vec::new() } else { below(&under)? };
        out.extend(ds.iter().filter(|&&d| d >= ol).map(|&d| Report {
            layers: self.shells(d, Some(ol), LayerStatus::Overflow),
            backend: self.backend.into(),
            device: self.device.clone(),
            overflow_layer: Some(ol),
            log10_cost: f64::NAN,
            signal: self.signal_of(d, Some(ol)).0,
            signal_unmeasured: self.signal_of(d, Some(ol)).1,
        }));
        Ok(out)
    }
}
