//! Mean-field theory of signal and gradient propagation (Poole et al. 2016; Schoenholz et
//! al. 2017): the length map and its fixed point `q_star`, `chi1`, the correlation map and
//! `c_star`, the depth scales `xi_q`, `xi_c`, `xi_grad`, and the critical σ_w².
//!
//! With z, z₁, z₂ independent N(0,1) and u₁ = √q z₁, u₂ = √q (c z₁ + √(1−c²) z₂):
//!
//! ```text
//! V(q)      = σ_w² E[σ(√q z)²] + σ_b²                  length map, q^{l+1} = V(q^l)
//! χ(q)      = σ_w² E[σ′(√q z)²]                         chi1 = χ(q*)
//! V′(q)     = σ_w² E[σ(√q z) σ′(√q z) z] / √q           = χ(q) + σ_w² E[σ σ″] (Stein)
//! C(c)      = (σ_w² E[σ(u₁)σ(u₂)] + σ_b²) / q*           correlation map, c* its stable point
//! C′(c)     = σ_w² E[σ′(u₁)σ′(u₂)]                       (Price's theorem)
//! xi_q      = −1 / ln V′(q*)      xi_c = −1 / ln C′(c*)      xi_grad = −1 / ln chi1
//! ```

use crate::error::{Error, Result};
use crate::model::Activation;

use super::quadrature::GaussianQuadrature;

/// q beyond which the length map is declared divergent.
pub const Q_MAX: f64 = 1e200;
/// q below which a shrinking length map is declared to reach q* = 0.
pub const Q_MIN: f64 = 1e-250;

/// ε for the one-sided derivatives σ′(0±).
const EPS0: f64 = 1e-200;

fn check_params(sigma_w2: f64, sigma_b2: f64) -> Result<()> {
    if !(sigma_w2.is_finite() && sigma_w2 > 0.0) {
        return Err(Error::arg("--sigma-w2", format!("σ_w² must be finite and > 0, got {sigma_w2}")));
    }
    if !(sigma_b2.is_finite() && sigma_b2 >= 0.0) {
        return Err(Error::arg("--sigma-b2", format!("σ_b² must be finite and ≥ 0, got {sigma_b2}")));
    }
    Ok(())
}

/// `E[σ(√q z)²]`.
pub fn mean_sq_sigma(act: Activation, q: f64) -> f64 {
    if q == 0.0 {
        return act.sigma(0.0).powi(2);
    }
    match act {
        Activation::Linear => q,
        Activation::Relu => 0.5 * q,
        Activation::LeakyRelu(a) => 0.5 * (1.0 + a * a) * q,
        // The same rule, a vector pass at a time (theory/fastquad.rs).
        Activation::Tanh if q.is_finite() => super::fastquad::expect_tanh_sq(GaussianQuadrature::shared().legendre(), q, false).unwrap_or(f64::NAN),
        _ => GaussianQuadrature::shared().expect_scaled(q, act.kinks(), |x| act.sigma(x).powi(2)),
    }
}

/// `E[σ′(√q z)²]`; at q = 0 the two-sided limit `(σ′(0+)² + σ′(0−)²)/2`.
pub fn mean_sq_dsigma(act: Activation, q: f64) -> f64 {
    if q == 0.0 {
        return 0.5 * (act.dsigma(EPS0).powi(2) + act.dsigma(-EPS0).powi(2));
    }
    match act {
        Activation::Linear => 1.0,
        Activation::Relu => 0.5,
        Activation::LeakyRelu(a) => 0.5 * (1.0 + a * a),
        // The same rule, a vector pass at a time (theory/fastquad.rs).
        Activation::Tanh if q.is_finite() => super::fastquad::expect_tanh_sq(GaussianQuadrature::shared().legendre(), q, true).unwrap_or(f64::NAN),
        _ => GaussianQuadrature::shared().expect_scaled(q, act.kinks(), |x| act.dsigma(x).powi(2)),
    }
}

/// The length map `V(q) = σ_w² E[σ(√q z)²] + σ_b²`.
pub fn length_map(act: Activation, sigma_w2: f64, sigma_b2: f64, q: f64) -> f64 {
    sigma_w2 * mean_sq_sigma(act, q) + sigma_b2
}

/// `χ(q) = σ_w² E[σ′(√q z)²]`: the expected factor of ‖δ‖² per layer at pre-activation
/// variance q.
pub fn chi(act: Activation, sigma_w2: f64, q: f64) -> f64 {
    sigma_w2 * mean_sq_dsigma(act, q)
}

/// The slope V′(q) of the length map, by Stein's lemma (no σ″ needed, so kinks cost
/// nothing): `σ_w² E[σ(√q z) σ′(√q z) z]/√q`. At q = 0 with σ(0) = 0 it is χ(0).
pub fn length_map_slope(act: Activation, sigma_w2: f64, q: f64) -> f64 {
    if act.is_homogeneous() {
        return sigma_w2 * mean_sq_sigma(act, 1.0);
    }
    if q == 0.0 {
        if act.sigma(0.0) == 0.0 {
            return chi(act, sigma_w2, 0.0);
        }
        // σ(0) ≠ 0: V′(0) = σ_w² (σ′(0)² + σ(0)σ″(0)); σ″(0) by central difference.
        let h = 1e-5;
        let d2 = (act.dsigma(h) - act.dsigma(-h)) / (2.0 * h);
        return sigma_w2 * (act.dsigma(0.0).powi(2) + act.sigma(0.0) * d2);
    }
    let s = q.sqrt();
    let quad = GaussianQuadrature::shared();
    let e = quad.expect_scaled(q, act.kinks(), |x| act.sigma(x) * act.dsigma(x) * x);
    // E[σσ′(√q z) z] = E[σσ′(x) x]/√q with x = √q z.
    sigma_w2 * e / (s * s)
}

/// How q^l behaves from a given q^1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixedPointKind {
    /// q^l → q* > 0.
    Positive,
    /// q^l → 0 (σ_b² = 0, σ(0) = 0, V′(0) ≤ 1): the signal dies; χ₁ is the q → 0 limit.
    Zero,
    /// Every q is a fixed point (a homogeneous σ with σ_b² = 0 and σ_w² E[σ(z)²] = 1):
    /// q* is q^1.
    Neutral,
}

/// The mean-field quantities of one (σ, σ_w², σ_b²).
///
/// ```
/// use gradscope::model::Activation;
/// use gradscope::theory::MeanField;
/// let mf = MeanField::new(Activation::Tanh, 1.0, 0.05).unwrap();
/// assert!((mf.chi1() - 0.759).abs() < 1e-3);
/// assert_eq!(MeanField::new(Activation::Relu, 1.5, 0.0).unwrap().chi1(), 0.75);
/// assert!(MeanField::new(Activation::Relu, 3.0, 0.0).is_err()); // q^l → ∞
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MeanField {
    pub activation: Activation,
    pub sigma_w2: f64,
    pub sigma_b2: f64,
    q_star: f64,
    kind: FixedPointKind,
    chi1: f64,
}

impl MeanField {
    /// The mean-field quantities reached from inputs with ‖x‖²/n₀ = 1, i.e.
    /// q¹ = σ_w² + σ_b². See [`MeanField::from_q1`].
    ///
    /// # Errors
    /// As [`MeanField::from_q1`].
    pub fn new(act: Activation, sigma_w2: f64, sigma_b2: f64) -> Result<MeanField> {
        MeanField::from_q1(act, sigma_w2, sigma_b2, sigma_w2 + sigma_b2)
    }

    /// The fixed point q* that q^{l+1} = V(q^l) reaches from q¹ (the stable one, since V is
    /// increasing: the iteration moves monotonically to the nearest root of V(q) = q in its
    /// direction), and χ₁ there.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for σ_w² ≤ 0, σ_b² < 0, q¹ < 0 or non-finite values;
    /// [`Error::Numerical`] when q^l grows without bound (no finite fixed point: an
    /// unbounded σ with σ_w² too large), or the root solver fails.
    pub fn from_q1(act: Activation, sigma_w2: f64, sigma_b2: f64, q1: f64) -> Result<MeanField> {
        check_params(sigma_w2, sigma_b2)?;
        if !(q1.is_finite() && q1 >= 0.0) {
            return Err(Error::arg("--input-norm2", format!("q¹ must be finite and ≥ 0, got {q1}")));
        }
        let (q_star, kind) = solve_q_star(act, sigma_w2, sigma_b2, q1)?;
        let chi1 = chi(act, sigma_w2, q_star);
        if !chi1.is_finite() {
            return Err(Error::Numerical(format!("χ₁ is not finite for {act} at q* = {q_star:e}")));
        }
        Ok(MeanField { activation: act, sigma_w2, sigma_b2, q_star, kind, chi1 })
    }

    /// q*, the fixed point of the length map (0 when the signal dies out).
    pub fn q_star(&self) -> f64 {
        self.q_star
    }

    /// Whether q* is positive, zero or one of a continuum.
    pub fn kind(&self) -> FixedPointKind {
        self.kind
    }

    /// χ₁ = σ_w² E[σ′(√q* z)²].
    pub fn chi1(&self) -> f64 {
        self.chi1
    }

    /// ξ_∇ = −1/ln χ₁: the number of layers over which E‖δ‖² changes by a factor e
    /// (negative when it grows, in the chaotic phase; +∞ at χ₁ = 1).
    pub fn xi_grad(&self) -> f64 {
        depth_scale(self.chi1)
    }

    /// V′(q*), the slope of the length map at its fixed point.
    pub fn length_map_slope(&self) -> f64 {
        length_map_slope(self.activation, self.sigma_w2, self.q_star)
    }

    /// ξ_q = −1/ln V′(q*) (Schoenholz et al. 2017, eq. 5): how fast q^l forgets q¹.
    pub fn xi_q(&self) -> f64 {
        depth_scale(self.length_map_slope())
    }

    /// Whether the correlation map does not depend on q (a homogeneous σ with σ_b² = 0).
    fn scale_free(&self) -> bool {
        self.activation.is_homogeneous() && self.sigma_b2 == 0.0
    }

    /// The q at which the correlation map is evaluated: q*, or 1 when it is scale-free.
    fn c_map_q(&self) -> Result<f64> {
        if self.scale_free() {
            return Ok(1.0);
        }
        if self.kind == FixedPointKind::Zero {
            return Err(Error::Numerical(format!(
                "c* is undefined for {} at σ_w² = {}, σ_b² = {}: q^l → 0, where the network is linear and \
                 maps every correlation to itself",
                self.activation, self.sigma_w2, self.sigma_b2
            )));
        }
        Ok(self.q_star)
    }

    /// The correlation map C(c) at q*.
    ///
    /// # Errors
    /// As [`MeanField::c_star`].
    pub fn correlation_map(&self, c: f64) -> Result<f64> {
        let q = self.c_map_q()?;
        Ok(self.c_map_at(q, c))
    }

    fn c_map_at(&self, q: f64, c: f64) -> f64 {
        let act = self.activation;
        let e = if act == Activation::Relu {
            relu_pair(q, c)
        } else {
            GaussianQuadrature::shared().expect_pair(q, c, act.kinks(), |a, b| act.sigma(a) * act.sigma(b))
        };
        (self.sigma_w2 * e + self.sigma_b2) / (self.sigma_w2 * mean_sq_sigma(act, q) + self.sigma_b2)
    }

    /// C′(c) = σ_w² q E[σ′(u₁)σ′(u₂)] / V(q) (= σ_w² E[σ′σ′] at q = q*).
    ///
    /// # Errors
    /// As [`MeanField::c_star`].
    pub fn correlation_map_slope(&self, c: f64) -> Result<f64> {
        let q = self.c_map_q()?;
        let act = self.activation;
        let e = if c >= 1.0 {
            mean_sq_dsigma(act, q)
        } else if act == Activation::Relu {
            relu_dpair(c)
        } else {
            GaussianQuadrature::shared().expect_pair(q, c, act.kinks(), |a, b| act.dsigma(a) * act.dsigma(b))
        };
        Ok(self.sigma_w2 * q * e / (self.sigma_w2 * mean_sq_sigma(act, q) + self.sigma_b2))
    }

    /// c*, the stable fixed point of the correlation map: 1 in the ordered phase
    /// (C′(1) = χ₁ ≤ 1), the root of C(c) = c below 1 in the chaotic phase.
    ///
    /// # Errors
    /// [`Error::Numerical`] when q* = 0 for a smooth σ (the map tends to the identity, so
    /// every c is a fixed point), or the root solver fails.
    pub fn c_star(&self) -> Result<f64> {
        let slope1 = self.correlation_map_slope(1.0)?;
        if slope1 <= 1.0 + MARGINAL {
            return Ok(1.0);
        }
        let q = self.c_map_q()?;
        let g = |c: f64| self.c_map_at(q, c) - c;
        // Just below 1, C(c) − c ≈ (χ₁ − 1)(1 − c)·(−1) < 0; C(−1) ≥ −1 so g(−1) ≥ 0.
        // |C(c) − c| below ZERO is quadrature noise: such a c is a fixed point (c = 0 for an
        // odd σ with σ_b² = 0 is one exactly).
        const ZERO: f64 = 1e-13;
        let mut hi = 1.0 - 2f64.powi(-30);
        let mut g_hi = g(hi);
        if g_hi >= -ZERO {
            return Ok(hi); // the root is within 1e-9 of 1: C′(1) is barely above 1
        }
        let mut k = 29;
        loop {
            let lo = if k >= 1 { 1.0 - 2f64.powi(-k) } else if k == 0 { 0.0 } else { -1.0 };
            let g_lo = g(lo);
            if g_lo >= -ZERO {
                if g_lo <= ZERO {
                    return Ok(lo);
                }
                return brent(g, lo, hi, g_lo, g_hi, 1e-15, "c*");
            }
            if k < 0 {
                return Err(Error::Numerical(format!(
                    "no fixed point of the correlation map found in [−1, 1) for {} (σ_w² = {}, σ_b² = {})",
                    self.activation, self.sigma_w2, self.sigma_b2
                )));
            }
            hi = lo;
            g_hi = g_lo;
            k -= 1;
        }
    }

    /// ξ_c = −1/ln C′(c*) (Schoenholz et al. 2017, eq. 9): the depth over which two inputs'
    /// correlation relaxes to c* (+∞ at criticality).
    ///
    /// # Errors
    /// As [`MeanField::c_star`].
    pub fn xi_c(&self) -> Result<f64> {
        let c = self.c_star()?;
        Ok(depth_scale(self.correlation_map_slope(c)?))
    }
}

/// Within this of 1, a map's slope is 1 to the accuracy of the quadrature (~1e-13), so
/// its depth scale is reported as +∞ rather than as ±10¹³ of noise.
pub const MARGINAL: f64 = 1e-12;

/// −1/ln x; +∞ for |x − 1| ≤ [`MARGINAL`].
pub fn depth_scale(x: f64) -> f64 {
    if (x - 1.0).abs() <= MARGINAL { f64::INFINITY } else { -1.0 / x.ln() }
}

/// E[relu(u₁) relu(u₂)] in closed form (Cho & Saul 2009): q (√(1−c²) + (π − arccos c) c) / 2π.
pub(crate) fn relu_pair(q: f64, c: f64) -> f64 {
    let c = c.clamp(-1.0, 1.0);
    q * ((1.0 - c * c).sqrt() + (std::f64::consts::PI - c.acos()) * c) / (2.0 * std::f64::consts::PI)
}

/// E[relu′(u₁) relu′(u₂)] = (π − arccos c) / 2π.
fn relu_dpair(c: f64) -> f64 {
    (std::f64::consts::PI - c.clamp(-1.0, 1.0).acos()) / (2.0 * std::f64::consts::PI)
}

/// The asymptotic slope lim_{q→∞} E[σ(√q z)²]/q for a homogeneous σ (exact for all q).
fn homogeneous_gain(act: Activation) -> f64 {
    mean_sq_sigma(act, 1.0)
}

/// The fixed point q* reached from q¹, and its kind.
fn solve_q_star(act: Activation, sw2: f64, sb2: f64, q1: f64) -> Result<(f64, FixedPointKind)> {
    if act.is_homogeneous() {
        // V(q) = m q + σ_b² exactly.
        let m = sw2 * homogeneous_gain(act);
        let diverges = |why: &str| {
            Error::Numerical(format!(
                "the length map of {act} at σ_w² = {sw2}, σ_b² = {sb2} has no finite fixed point: {why}; \
                 χ = σ_w² E[σ′(z)²] = {} at every q (σ′ is scale-free)",
                chi(act, sw2, 1.0)
            ))
        };
        return if m < 1.0 {
            let q = sb2 / (1.0 - m);
            Ok((q, if q > 0.0 { FixedPointKind::Positive } else { FixedPointKind::Zero }))
        } else if m == 1.0 && sb2 == 0.0 {
            Ok((q1, FixedPointKind::Neutral))
        } else if m == 1.0 {
            Err(diverges("q^l grows by σ_b² every layer"))
        } else {
            Err(diverges(&format!("q^l grows by a factor σ_w² E[σ(z)²] = {m} per layer")))
        };
    }
    let g = |q: f64| length_map(act, sw2, sb2, q) - q;
    let v0 = length_map(act, sw2, sb2, 0.0);
    let g1 = g(q1);
    if g1 == 0.0 {
        return Ok((q1, if q1 > 0.0 { FixedPointKind::Positive } else { FixedPointKind::Zero }));
    }
    if !g1.is_finite() {
        return Err(Error::Numerical(format!("the length map of {act} is not finite at q¹ = {q1:e}")));
    }
    if g1 > 0.0 {
        // q^l increases: the first root above q¹, found by doubling.
        let (mut lo, mut g_lo) = (q1, g1);
        let mut hi = if q1 > 0.0 { 2.0 * q1 } else { v0.max(1e-300) };
        loop {
            let g_hi = g(hi);
            if !g_hi.is_finite() || hi > Q_MAX {
                return Err(Error::Numerical(format!(
                    "the length map of {act} at σ_w² = {sw2}, σ_b² = {sb2} has no finite fixed point: \
                     q^l grows past {Q_MAX:e} (σ_w² is too large for an unbounded σ)"
                )));
            }
            if g_hi <= 0.0 {
                if g_hi == 0.0 {
                    return Ok((hi, FixedPointKind::Positive));
                }
                let q = brent(g, lo, hi, g_lo, g_hi, 1e-15, "q*")?;
                return Ok((q, FixedPointKind::Positive));
            }
            lo = hi;
            g_lo = g_hi;
            hi *= 2.0;
        }
    }
    // q^l decreases: the first root below q¹, or 0.
    let (mut hi, mut g_hi) = (q1, g1);
    loop {
        let lo = 0.5 * hi;
        if lo < Q_MIN {
            if v0 == 0.0 {
                return Ok((0.0, FixedPointKind::Zero));
            }
            let q = brent(g, 0.0, hi, v0, g_hi, 1e-15, "q*")?;
            return Ok((q, FixedPointKind::Positive));
        }
        let g_lo = g(lo);
        if g_lo >= 0.0 {
            if g_lo == 0.0 {
                return Ok((lo, FixedPointKind::Positive));
            }
            let q = brent(g, lo, hi, g_lo, g_hi, 1e-15, "q*")?;
            return Ok((q, FixedPointKind::Positive));
        }
        hi = lo;
        g_hi = g_lo;
    }
}

/// Brent's method (Brent 1973, `zeroin`) for a root of f in [a, b] with f(a), f(b) of
/// opposite signs, to a relative tolerance `rtol`.
///
/// # Errors
/// [`Error::Numerical`] when the bracket is not a bracket or 200 iterations do not converge.
pub fn brent(mut f: impl FnMut(f64) -> f64, a: f64, b: f64, fa: f64, fb: f64, rtol: f64, what: &str) -> Result<f64> {
    let (mut a, mut b, mut fa, mut fb) = (a, b, fa, fb);
    if fa * fb > 0.0 || fa.is_nan() || fb.is_nan() {
        return Err(Error::Numerical(format!("{what}: [{a:e}, {b:e}] does not bracket a root")));
    }
    let (mut c, mut fc) = (a, fa);
    let mut d = b - a;
    let mut e = d;
    for _ in 0..200 {
        if fb * fc > 0.0 {
            c = a;
            fc = fa;
            d = b - a;
            e = d;
        }
        if fc.abs() < fb.abs() {
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol = 2.0 * f64::EPSILON * b.abs() + 0.5 * rtol * b.abs().max(1e-300);
        let m = 0.5 * (c - b);
        if m.abs() <= tol || fb == 0.0 {
            return Ok(b);
        }
        if e.abs() >= tol && fa.abs() > fb.abs() {
            let s = fb / fa;
            let (mut p, mut qq);
            if a == c {
                p = 2.0 * m * s;
                qq = 1.0 - s;
            } else {
                let q0 = fa / fc;
                let r = fb / fc;
                p = s * (2.0 * m * q0 * (q0 - r) - (b - a) * (r - 1.0));
                qq = (q0 - 1.0) * (r - 1.0) * (s - 1.0);
            }
            if p > 0.0 {
                qq = -qq;
            } else {
                p = -p;
            }
            if 2.0 * p < (3.0 * m * qq - (tol * qq).abs()).min((e * qq).abs()) {
                e = d;
                d = p / qq;
            } else {
                d = m;
                e = m;
            }
        } else {
            d = m;
            e = m;
        }
        a = b;
        fa = fb;
        b += if d.abs() > tol { d } else { tol.copysign(m) };
        fb = f(b);
        if fb.is_nan() {
            return Err(Error::Numerical(format!("{what}: the function is NaN at {b:e}")));
        }
    }
    Err(Error::Numerical(format!("{what}: Brent's method did not converge in 200 iterations")))
}

/// q¹ … q^depth from q¹ = σ_w² ‖x‖²/n₀ + σ_b² (`input_norm2` = ‖x‖²/n₀), q^{l+1} = V(q^l).
/// Values past 1e300 are reported as +∞ (the sequence diverges).
///
/// # Errors
/// [`Error::InvalidArgument`] for bad σ_w², σ_b² or input norm.
pub fn q_sequence(act: Activation, sigma_w2: f64, sigma_b2: f64, input_norm2: f64, depth: usize) -> Result<Vec<f64>> {
    check_params(sigma_w2, sigma_b2)?;
    if !(input_norm2.is_finite() && input_norm2 >= 0.0) {
        return Err(Error::arg("--input-norm2", format!("‖x‖²/n₀ must be finite and ≥ 0, got {input_norm2}")));
    }
    let mut q = sigma_w2 * input_norm2 + sigma_b2;
    let mut out = Vec::with_capacity(depth);
    for _ in 0..depth {
        out.push(if q > 1e300 { f64::INFINITY } else { q });
        if q.is_finite() && q <= 1e300 {
            let next = length_map(act, sigma_w2, sigma_b2, q);
            q = next;
        }
    }
    Ok(out)
}

/// Where χ₁ = 1 was or was not found.
#[derive(Debug, Clone, PartialEq)]
pub enum Critical {
    /// The critical σ_w².
    At(f64),
    /// No root: why, in words.
    None(String),
}

/// The critical σ_w² for a given σ_b²: the root of χ₁(σ_w²) = 1, χ₁ taken at the q* reached
/// from q¹ = σ_w² + σ_b².
///
/// Homogeneous σ in closed form (1/E[σ′(z)²]: relu 2, leaky-relu 2/(1+α²), linear 1);
/// otherwise a scan of σ_w² over [10⁻³, 10⁶] in steps of ×1.25 (where q* is finite) for a
/// sign change of χ₁ − 1, refined by Brent's method to 1e-12 relative. Where q* stops being
/// finite between two grid points, the scan bisects towards that boundary (to 1e-13
/// relative) before giving up, since the root may sit just below it (gelu, silu).
///
/// # Errors
/// [`Error::InvalidArgument`] for σ_b² < 0; [`Error::Numerical`] when a solver fails.
pub fn critical_sigma_w2(act: Activation, sigma_b2: f64) -> Result<Critical> {
    check_params(1.0, sigma_b2)?;
    if act.is_homogeneous() {
        return Ok(Critical::At(1.0 / mean_sq_dsigma(act, 1.0)));
    }
    let chi_m1 = |w: f64| -> Result<f64> { Ok(MeanField::new(act, w, sigma_b2)?.chi1() - 1.0) };
    // Brent on a bracket where q* is finite, so chi_m1 cannot fail inside it.
    let refine = |a: f64, b: f64, fa: f64, fb: f64| -> Result<Critical> {
        let mut err = None;
        let root = brent(
            |x| match chi_m1(x) {
                Ok(v) => v,
                Err(e) => {
                    err = Some(e);
                    f64::NAN
                }
            },
            a,
            b,
            fa,
            fb,
            1e-12,
            "critical σ_w²",
        );
        if let Some(e) = err {
            return Err(e);
        }
        Ok(Critical::At(root?))
    };
    // Records χ₁ at x in `range`; the answer once χ₁ − 1 is 0 at x or has changed sign
    // since `prev`.
    let settle = |range: &mut (f64, f64), prev: Option<(f64, f64)>, x: f64, fx: f64| -> Option<Result<Critical>> {
        *range = (range.0.min(fx + 1.0), range.1.max(fx + 1.0));
        if fx == 0.0 {
            return Some(Ok(Critical::At(x)));
        }
        match prev {
            Some((a, fa)) if fa * fx < 0.0 => Some(refine(a, x, fa, fx)),
            _ => None,
        }
    };
    let (mut w_prev, mut f_prev) = (1e-3, None::<f64>);
    let mut w = 1e-3;
    let mut range = (f64::INFINITY, f64::NEG_INFINITY);
    while w <= 1e6 {
        match chi_m1(w) {
            Ok(f) => {
                if let Some(answer) = settle(&mut range, f_prev.map(|fp| (w_prev, fp)), w, f) {
                    return answer;
                }
                f_prev = Some(f);
                w_prev = w;
            }
            Err(Error::Numerical(_)) if f_prev.is_some() => {
                // q* is finite at w_prev and not at w. A relu-like σ (gelu, silu) reaches χ₁ = 1
                // only as q* → ∞, i.e. just below the σ_w² where the fixed point disappears
                // (gelu, σ_b² = 1: 1.97668 against a boundary at 2), which a ×1.25 grid steps
                // over. So bisect towards that boundary, watching χ₁ − 1 change sign.
                let (mut a, mut fa, mut b) = (w_prev, f_prev.unwrap(), w);
                while b - a > 1e-13 * b {
                    let m = 0.5 * (a + b);
                    match chi_m1(m) {
                        Ok(fm) => {
                            if let Some(answer) = settle(&mut range, Some((a, fa)), m, fm) {
                                return answer;
                            }
                            (a, fa) = (m, fm);
                        }
                        Err(Error::Numerical(_)) => b = m,
                        Err(e) => return Err(e),
                    }
                }
                let (lo_chi, hi_chi) = range;
                return Ok(Critical::None(format!(
                    "χ₁ stays in [{lo_chi:.4}, {hi_chi:.4}] for σ_w² < {b:.6}, beyond which q^l diverges: \
                     {act} with σ_b² = {sigma_b2} has no σ_w² with χ₁ = 1 and a finite q*"
                )));
            }
            Err(e) => return Err(e),
        }
        w *= 1.25;
    }
    let (lo_chi, hi_chi) = range;
    Ok(Critical::None(format!(
        "χ₁ stays in [{lo_chi:.4}, {hi_chi:.4}] for σ_w² in [1e-3, 1e6]: {act} with σ_b² = {sigma_b2} has no critical σ_w²"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brent_finds_simple_roots() {
        let r = brent(|x| x * x - 2.0, 0.0, 2.0, -2.0, 2.0, 1e-15, "√2").unwrap();
        assert!((r - 2f64.sqrt()).abs() < 1e-14);
        assert!(brent(|x| x * x + 1.0, 0.0, 2.0, 1.0, 5.0, 1e-15, "none").is_err());
    }

    #[test]
    fn tanh_worked_values() {
        let mf = MeanField::new(Activation::Tanh, 1.0, 0.05).unwrap();
        assert!((mf.chi1() - 0.759).abs() < 1e-3, "χ₁ = {}", mf.chi1());
        match critical_sigma_w2(Activation::Tanh, 0.05).unwrap() {
            Critical::At(w) => {
                assert!((w - 1.7610).abs() < 1e-3, "critical σ_w² = {w}");
                let q = MeanField::new(Activation::Tanh, w, 0.05).unwrap().q_star();
                assert!((q - 0.570).abs() < 2e-3, "q* = {q}");
            }
            Critical::None(why) => panic!("{why}"),
        }
    }
}
