//! Theory beside measurement: mean-field predictions (q*, χ₁, c*, depth scales, the
//! critical line), the predicted per-layer gradient profile, the anatomy of the bound, and
//! reproductions of published results. Formulas, sources and assumptions: docs/THEORY.md.
//!
//! ```
//! use gradscope::model::Activation;
//! use gradscope::theory::{Critical, MeanField, critical_sigma_w2};
//! let mf = MeanField::new(Activation::Tanh, 1.0, 0.05)?;
//! println!("q* = {:.4}, χ₁ = {:.4}, ξ_∇ = {:.2}", mf.q_star(), mf.chi1(), mf.xi_grad());
//! let Critical::At(w) = critical_sigma_w2(Activation::Tanh, 0.05)? else { unreachable!() };
//! assert!((w - 1.7610).abs() < 1e-3);
//! # Ok::<(), gradscope::Error>(())
//! ```

pub mod anatomy;
pub mod cli;
pub mod hanin;
pub mod meanfield;
mod fastquad;
pub mod predict;
pub mod quadrature;
pub mod reproduce;
pub mod signal;

pub use anatomy::{AnatomyRow, anatomy, anatomy_table};
pub use cli::{ReproduceArgs, TheoryArgs, run_reproduce, run_theory};
pub use meanfield::{Critical, FixedPointKind, MeanField, chi, critical_sigma_w2, length_map, q_sequence};
pub use predict::{Prediction, fit_line, fitted_log10_ratio, predict, predicted_log10_grad_b_rms};
pub use reproduce::{REPRODUCTIONS, ReproduceOptions, Reproduction, reproduce};
pub use signal::{XiCFit, c_measured, c_predicted, log10_q_measured, log10_q_predicted, xi_c_measured};

/// The critical σ_w² for an activation given by name and a σ_b², or None where there is
/// none or the name does not parse (for drawing the χ₁ = 1 line on sweep plots).
pub fn critical_sigma_w2_by_name(activation: &str, sigma_b2: f64) -> Option<f64> {
    let act: crate::model::Activation = activation.parse().ok()?;
    match critical_sigma_w2(act, sigma_b2) {
        Ok(Critical::At(w)) => Some(w),
        _ => None,
    }
}
