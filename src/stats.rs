//! The per-layer statistics of docs/MATH.md, their log-domain arithmetic, and how they print.
//!
//! Everything is carried as base-2 exponents plus O(1) mantissas inside the backends and
//! reported as base-10 logarithms, so a 10,000-layer sigmoid network's ‖δ¹‖ ≈ 10^-6000 is a
//! finite number, never 0.

use serde::{Serialize, Serializer};

/// Why a layer's gradient fields are what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerStatus {
    /// Every field is a finite logarithm.
    Ok,
    /// δ^l is exactly 0 for every example, because σ′ is exactly 0 (dead relu units, a
    /// saturated hard-tanh): a true zero, so the log10 fields are −∞ (JSON null).
    ZeroGradient,
    /// δ^l is 0 in f64 because σ′(z) underflowed (|z| > ~745 for sigmoid): the true value is
    /// positive but below 10^-308 per unit; the log10 fields are −∞ (JSON null).
    Underflow,
    /// The forward pass overflowed to ±Inf or NaN at this layer or below (a
    /// non-homogeneous activation whose pre-activations passed 1.8e308); the gradient
    /// fields are undefined (NaN, JSON null).
    Overflow,
}

/// The statistics of one layer l (docs/MATH.md, "Per-layer statistics"); field names are the
/// output column / JSON key names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStats {
    /// l, 1..L.
    pub layer: usize,
    /// n_l.
    pub width: usize,
    /// `log10 ‖(1/B) Σ_x δ^l_x‖₂`: the norm of ∂C/∂b^l.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_grad_b_mean: f64,
    /// `log10 sqrt((1/B) Σ_x ‖δ^l_x‖₂²)`.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_grad_b_rms: f64,
    /// `log10 ‖(1/B) Σ_x δ^l_x (a^{l-1}_x)ᵀ‖_F`: the norm of ∂C/∂W^l.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_grad_w_mean: f64,
    /// `log10 sqrt((1/B) Σ_x ‖δ^l_x‖₂² ‖a^{l-1}_x‖₂²)`.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_grad_w_rms: f64,
    /// `log10 ‖W^l‖₂`.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_weight_norm: f64,
    /// `log10 max_x max_i |σ′(z^l_{x,i})|`.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_max_dsigma: f64,
    /// `log10 [γ^k Π_{r=l+1..L} ‖W^r‖₂ max_x ‖a^L_x − y_x‖₂]`, the bound (**).
    #[serde(serialize_with = "finite_or_null")]
    pub log10_bound: f64,
    /// `log10 max_x [Π_{r=l..L} ‖Σ′(z^r_x)‖₂ Π_{r=l+1..L} ‖W^r‖₂ ‖a^L_x − y_x‖₂]`.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_bound_tight: f64,
    pub status: LayerStatus,
}

impl LayerStatus {
    /// A layer's status from the status of the layer above and whether its δ is exactly 0
    /// for every example: a zero below a zero inherits its cause; a fresh zero is a true
    /// zero for piecewise-linear σ (σ′ is exactly 0 there) and an f64 underflow otherwise.
    pub fn below(above: LayerStatus, all_zero: bool, act: crate::model::Activation) -> LayerStatus {
        use crate::model::Activation::*;
        if above != LayerStatus::Ok {
            above
        } else if !all_zero {
            LayerStatus::Ok
        } else if matches!(act, Relu | LeakyRelu(_) | HardTanh | Linear) {
            LayerStatus::ZeroGradient
        } else {
            LayerStatus::Underflow
        }
    }
}

impl LayerStats {
    /// A layer whose gradient fields are not (yet) known: NaN, with the given status.
    pub fn undefined(layer: usize, width: usize, log10_weight_norm: f64, log10_max_dsigma: f64, status: LayerStatus) -> LayerStats {
        LayerStats {
            layer,
            width,
            log10_grad_b_mean: f64::NAN,
            log10_grad_b_rms: f64::NAN,
            log10_grad_w_mean: f64::NAN,
            log10_grad_w_rms: f64::NAN,
            log10_weight_norm,
            log10_max_dsigma,
            log10_bound: f64::NAN,
            log10_bound_tight: f64::NAN,
            status,
        }
    }
}

/// The per-layer field names, in output order (the CSV header).
pub const FIELDS: &[&str] = &[
    "layer",
    "width",
    "log10_grad_b_mean",
    "log10_grad_b_rms",
    "log10_grad_w_mean",
    "log10_grad_w_rms",
    "log10_weight_norm",
    "log10_max_dsigma",
    "log10_bound",
    "log10_bound_tight",
    "status",
];

impl LayerStats {
    /// The eight log10 fields with their names, in [`FIELDS`] order.
    pub fn log_fields(&self) -> [(&'static str, f64); 8] {
        [
            ("log10_grad_b_mean", self.log10_grad_b_mean),
            ("log10_grad_b_rms", self.log10_grad_b_rms),
            ("log10_grad_w_mean", self.log10_grad_w_mean),
            ("log10_grad_w_rms", self.log10_grad_w_rms),
            ("log10_weight_norm", self.log10_weight_norm),
            ("log10_max_dsigma", self.log10_max_dsigma),
            ("log10_bound", self.log10_bound),
            ("log10_bound_tight", self.log10_bound_tight),
        ]
    }
}

/// JSON has no ±Inf or NaN: such values are written as `null` (the `status` says why).
pub fn finite_or_null<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() { s.serialize_f64(*v) } else { s.serialize_none() }
}

/// The result of probing one network on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub layers: Vec<LayerStats>,
    /// "cpu" or "gpu".
    pub backend: String,
    /// The device the numbers came from (CPU model or adapter name).
    pub device: String,
    /// The first layer whose forward pass overflowed, if any.
    pub overflow_layer: Option<usize>,
    /// log10 of the batch cost C = (1/B) Σ_x C_x (null when it over- or underflows f64).
    #[serde(serialize_with = "finite_or_null")]
    pub log10_cost: f64,
    /// The measured forward signal of layers 1..L (docs/MATH.md, "The forward signal,
    /// measured"); the exporters place it in each layer's row.
    #[serde(skip)]
    pub signal: Vec<Signal>,
    /// Why `signal` is NaN throughout, where the engine does not measure it.
    #[serde(skip)]
    pub signal_unmeasured: Option<&'static str>,
}

/// One layer's measured forward signal: `log10_q = log10 (1/B) Σ_x ‖z^l_x‖² / n_l` and `c`,
/// the mean over pairs x < x' of the correlation of z^l_x and z^l_x' (NaN for B = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub log10_q: f64,
    pub c: f64,
}

impl Signal {
    pub const NAN: Signal = Signal { log10_q: f64::NAN, c: f64::NAN };
}

pub const LOG10_2: f64 = std::f64::consts::LOG10_2;

/// log2 Σ_i 2^{t_i} without overflow (−∞ for an empty or all −∞ input).
pub fn log2_sum_exp2(t: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let m = t.clone().into_iter().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    let s: f64 = t.into_iter().map(|v| (v - m).exp2()).sum();
    m + s.log2()
}

/// Formats 10^`log10` as a mantissa and exponent, e.g. `3.10e-1234`, valid far beyond f64's
/// range; `0`, `inf` and `nan` for −∞, +∞ and NaN.
///
/// ```
/// assert_eq!(gradscope::stats::sci(-1233.508638306), "3.10e-1234");
/// assert_eq!(gradscope::stats::sci(0.0), "1.00e+0");
/// assert_eq!(gradscope::stats::sci(f64::NEG_INFINITY), "0");
/// ```
pub fn sci(log10: f64) -> String {
    if log10.is_nan() {
        return "nan".into();
    }
    if log10 == f64::NEG_INFINITY {
        return "0".into();
    }
    if log10 == f64::INFINITY {
        return "inf".into();
    }
    let mut e = log10.floor();
    let mut m = 10f64.powf(log10 - e);
    if (m * 100.0).round() >= 1000.0 {
        m /= 10.0;
        e += 1.0;
    }
    format!("{m:.2}e{}{}", if e < 0.0 { "-" } else { "+" }, e.abs() as i64)
}
