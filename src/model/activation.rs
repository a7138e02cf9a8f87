//! Activation functions σ, their derivatives σ′ and γ = sup|σ′| (docs/MATH.md, "Activations").

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// λ of SELU (Klambauer et al. 2017).
pub const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
/// α of SELU (Klambauer et al. 2017).
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_2;

/// An elementwise activation function, the same on every layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Sigmoid,
    Tanh,
    Relu,
    /// `x` for x > 0, `αx` otherwise.
    LeakyRelu(f64),
    Linear,
    /// Unscaled `erf(x)`: σ′(0) = 2/√π.
    Erf,
    HardTanh,
    Softplus,
    Silu,
    /// The exact form `x·Φ(x)`.
    Gelu,
    Elu,
    Selu,
}

/// Every activation name `--activation` accepts (leaky-relu takes `:α`, default 0.01).
pub const ACTIVATION_NAMES: &[&str] = &[
    "sigmoid",
    "tanh",
    "relu",
    "leaky-relu:ALPHA",
    "linear",
    "erf",
    "hard-tanh",
    "softplus",
    "silu",
    "gelu",
    "elu",
    "selu",
];

#[inline]
fn logistic(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// The standard normal density φ.
#[inline]
pub fn std_normal_pdf(x: f64) -> f64 {
    FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// The standard normal CDF Φ, through erfc so the left tail keeps full relative precision.
#[inline]
pub fn std_normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

impl Activation {
    /// σ(x).
    #[inline]
    pub fn sigma(&self, x: f64) -> f64 {
        match *self {
            Activation::Sigmoid => logistic(x),
            Activation::Tanh => x.tanh(),
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::Linear => x,
            Activation::Erf => libm::erf(x),
            Activation::HardTanh => x.clamp(-1.0, 1.0),
            Activation::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            Activation::Silu => x * logistic(x),
            Activation::Gelu => x * std_normal_cdf(x),
            Activation::Elu => {
                if x > 0.0 {
                    x
                } else {
                    x.exp_m1()
                }
            }
            Activation::Selu => {
                if x > 0.0 {
                    SELU_LAMBDA * x
                } else {
                    SELU_LAMBDA * SELU_ALPHA * x.exp_m1()
                }
            }
        }
    }

    /// σ′(x), written so that saturated tails keep their relative precision
    /// (e.g. tanh′ = 4e^{−2|x|}/(1+e^{−2|x|})², not 1 − tanh², which is 0 past |x| ≈ 19).
    /// At kinks σ′ takes its left piece's value, as docs/MATH.md says: relu′(0) = 0, leaky′(0) = α.
    #[inline]
    pub fn dsigma(&self, x: f64) -> f64 {
        match *self {
            Activation::Sigmoid => {
                let e = (-x.abs()).exp();
                e / ((1.0 + e) * (1.0 + e))
            }
            Activation::Tanh => {
                let e = (-2.0 * x.abs()).exp();
                4.0 * e / ((1.0 + e) * (1.0 + e))
            }
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a
                }
            }
            Activation::Linear => 1.0,
            Activation::Erf => std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
            Activation::HardTanh => {
                if x > -1.0 && x < 1.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Softplus => logistic(x),
            Activation::Silu => {
                let s = logistic(x);
                s * (1.0 + x * logistic(-x))
            }
            Activation::Gelu => std_normal_cdf(x) + x * std_normal_pdf(x),
            Activation::Elu => {
                if x > 0.0 {
                    1.0
                } else {
                    x.exp()
                }
            }
            Activation::Selu => {
                if x > 0.0 {
                    SELU_LAMBDA
                } else {
                    SELU_LAMBDA * SELU_ALPHA * x.exp()
                }
            }
        }
    }

    /// γ = sup_t |σ′(t)|, the constant of the bound (**).
    ///
    /// How each is obtained: sigmoid ¼ at 0; tanh, erf (2/√π), relu, linear, hard-tanh, elu at
    /// or next to 0 in closed form; leaky-relu max(1, |α|); softplus 1 (the supremum of the
    /// logistic, approached but not attained); selu λα (its left limit at 0); gelu
    /// Φ(√2) + √2 φ(√2) (σ″ = φ(x)(2 − x²) vanishes at √2); silu numerically, by bisection
    /// of σ″(x) = s(1−s)(2 + x(1 − 2s)) = 0 on [2, 3] to machine precision (x* ≈ 2.39936),
    /// γ ≈ 1.0998.
    pub fn gamma(&self) -> f64 {
        match *self {
            Activation::Sigmoid => 0.25,
            Activation::Tanh
            | Activation::Relu
            | Activation::Linear
            | Activation::HardTanh
            | Activation::Softplus
            | Activation::Elu => 1.0,
            Activation::LeakyRelu(a) => a.abs().max(1.0),
            Activation::Erf => std::f64::consts::FRAC_2_SQRT_PI,
            Activation::Gelu => {
                let r = std::f64::consts::SQRT_2;
                std_normal_cdf(r) + r * std_normal_pdf(r)
            }
            Activation::Silu => self.dsigma(silu_dsigma_argmax()),
            Activation::Selu => SELU_LAMBDA * SELU_ALPHA,
        }
    }

    /// Positively homogeneous of degree 1 (σ(cx) = cσ(x) for c > 0): relu, leaky-relu,
    /// linear. For these the forward pass can carry a per-example scale in the log domain.
    pub fn is_homogeneous(&self) -> bool {
        matches!(
            self,
            Activation::Relu | Activation::LeakyRelu(_) | Activation::Linear
        )
    }

    /// For σ with σ(0) = 0: the slopes (x > 0, x ≤ 0) of its tangent at 0, which σ equals to
    /// f64 precision for |x| < 2^-60 (tanh, erf, hard-tanh, silu, gelu, elu: one slope; selu
    /// and the homogeneous ones: one per side). None where σ(0) ≠ 0 (sigmoid, softplus).
    /// The CPU backend uses it to carry vanishing activations in the log domain.
    pub fn slopes_at_zero(&self) -> Option<(f64, f64)> {
        match *self {
            Activation::Sigmoid | Activation::Softplus => None,
            Activation::Relu => Some((1.0, 0.0)),
            Activation::LeakyRelu(a) => Some((1.0, a)),
            Activation::Linear | Activation::Tanh | Activation::HardTanh | Activation::Elu => Some((1.0, 1.0)),
            Activation::Erf => Some((std::f64::consts::FRAC_2_SQRT_PI, std::f64::consts::FRAC_2_SQRT_PI)),
            Activation::Silu | Activation::Gelu => Some((0.5, 0.5)),
            Activation::Selu => Some((SELU_LAMBDA, SELU_LAMBDA * SELU_ALPHA)),
        }
    }

    /// Points where σ or a low derivative is not smooth, where a quadrature should split.
    pub fn kinks(&self) -> &'static [f64] {
        match self {
            Activation::Relu | Activation::LeakyRelu(_) | Activation::Elu | Activation::Selu => {
                &[0.0]
            }
            Activation::HardTanh => &[-1.0, 1.0],
            _ => &[],
        }
    }
}

/// The maximiser of silu′ on (0, ∞), where silu″ changes sign; bisection to machine precision.
fn silu_dsigma_argmax() -> f64 {
    let g = |x: f64| 2.0 + x * (1.0 - 2.0 * logistic(x));
    let (mut lo, mut hi) = (2.0_f64, 3.0_f64); // g(2) > 0 > g(3)
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if g(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Sigmoid => write!(f, "sigmoid"),
            Activation::Tanh => write!(f, "tanh"),
            Activation::Relu => write!(f, "relu"),
            Activation::LeakyRelu(a) => write!(f, "leaky-relu:{a}"),
            Activation::Linear => write!(f, "linear"),
            Activation::Erf => write!(f, "erf"),
            Activation::HardTanh => write!(f, "hard-tanh"),
            Activation::Softplus => write!(f, "softplus"),
            Activation::Silu => write!(f, "silu"),
            Activation::Gelu => write!(f, "gelu"),
            Activation::Elu => write!(f, "elu"),
            Activation::Selu => write!(f, "selu"),
        }
    }
}

impl FromStr for Activation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::arg(
                "--activation",
                format!(
                    "unknown activation '{s}' (expected one of: {})",
                    ACTIVATION_NAMES.join(", ")
                ),
            )
        };
        let lower = s.trim().to_ascii_lowercase();
        let (name, param) = match lower.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (lower.as_str(), None),
        };
        let act = match name {
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "leaky-relu" | "leaky_relu" | "leakyrelu" => {
                let a = match param {
                    None => 0.01,
                    Some(p) => p.parse::<f64>().map_err(|_| {
                        Error::arg(
                            "--activation",
                            format!("leaky-relu slope '{p}' is not a number"),
                        )
                    })?,
                };
                if !a.is_finite() {
                    return Err(Error::arg(
                        "--activation",
                        format!("leaky-relu slope must be finite, got {a}"),
                    ));
                }
                return Ok(Activation::LeakyRelu(a));
            }
            "linear" | "identity" => Activation::Linear,
            "erf" => Activation::Erf,
            "hard-tanh" | "hardtanh" | "hard_tanh" => Activation::HardTanh,
            "softplus" => Activation::Softplus,
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "elu" => Activation::Elu,
            "selu" => Activation::Selu,
            _ => return Err(bad()),
        };
        if param.is_some() {
            return Err(Error::arg(
                "--activation",
                format!("'{name}' takes no parameter (got '{s}')"),
            ));
        }
        Ok(act)
    }
}

/// Every activation once, leaky-relu with slope 0.01 (handy for tests and sweeps).
pub fn all_activations() -> Vec<Activation> {
    vec![
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::Linear,
        Activation::Erf,
        Activation::HardTanh,
        Activation::Softplus,
        Activation::Silu,
        Activation::Gelu,
        Activation::Elu,
        Activation::Selu,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivative_matches_central_difference() {
        for act in all_activations() {
            for &x in &[-3.7, -1.3, -0.4, 0.3, 0.9, 2.2, 5.1] {
                let h = 1e-6;
                let fd = (act.sigma(x + h) - act.sigma(x - h)) / (2.0 * h);
                let d = act.dsigma(x);
                assert!(
                    (fd - d).abs() <= 1e-7 * (1.0 + d.abs()),
                    "{act} at {x}: σ′ {d} vs finite difference {fd}"
                );
            }
        }
    }

    #[test]
    fn gamma_is_the_supremum_of_the_derivative() {
        for act in all_activations() {
            let g = act.gamma();
            let mut seen = 0.0_f64;
            for k in -200_000..=200_000 {
                let x = k as f64 * 1e-4;
                let d = act.dsigma(x).abs();
                assert!(d <= g * (1.0 + 1e-12), "{act}: |σ′({x})| = {d} > γ = {g}");
                seen = seen.max(d);
            }
            // On a 1e-4 grid the maximum is reached to second order: within 1e-7 relative.
            assert!(
                seen >= g * (1.0 - 1e-7),
                "{act}: max on grid {seen} well below γ = {g}"
            );
        }
    }

    #[test]
    fn tangent_at_zero_is_exact_below_two_to_the_minus_60() {
        for act in all_activations() {
            let Some((right, left)) = act.slopes_at_zero() else {
                assert!(act.sigma(0.0) != 0.0, "{act}");
                continue;
            };
            for x in [2f64.powi(-61), -(2f64.powi(-61)), 3e-30, -7e-25, 1e-300, -1e-300] {
                let slope = if x > 0.0 { right } else { left };
                let (s, t) = (act.sigma(x), slope * x);
                assert!((s - t).abs() <= 2.0 * f64::EPSILON * t.abs(), "{act} at {x:e}: σ {s:e} vs tangent {t:e}");
                assert!((act.dsigma(x) - slope).abs() <= 2.0 * f64::EPSILON * slope.abs().max(1e-300), "{act}′ at {x:e}");
            }
        }
    }

    #[test]
    fn gamma_closed_forms() {
        assert_eq!(Activation::Sigmoid.gamma(), 0.25);
        assert!((Activation::Gelu.gamma() - 1.128_904_145_185_155).abs() < 1e-12);
        assert!((Activation::Silu.gamma() - 1.099_839_3).abs() < 1e-7);
        assert_eq!(Activation::LeakyRelu(-3.0).gamma(), 3.0);
    }

    #[test]
    fn tails_keep_relative_precision() {
        // tanh′(30) = 4e^{-60}/(1+e^{-60})², not 0.
        let d = Activation::Tanh.dsigma(30.0);
        assert!((d / (4.0 * (-60.0_f64).exp()) - 1.0).abs() < 1e-14);
        let d = Activation::Sigmoid.dsigma(-600.0);
        assert!(d > 0.0 && (d.ln() + 600.0).abs() < 1e-9);
    }

    #[test]
    fn parse_round_trips_and_rejects() {
        for act in all_activations() {
            assert_eq!(act.to_string().parse::<Activation>().unwrap(), act);
        }
        assert_eq!(
            "leaky-relu:0.2".parse::<Activation>().unwrap(),
            Activation::LeakyRelu(0.2)
        );
        assert!("sigmund".parse::<Activation>().is_err());
        assert!("tanh:2".parse::<Activation>().is_err());
        assert!("leaky-relu:x".parse::<Activation>().is_err());
    }
}
