//! gradscope: exact, at-scale measurement of vanishing and exploding gradients in deep
//! fully-connected networks, beside the rigorous bound and mean-field theory.
//!
//! The quantities and their names are those of `docs/MATH.md`: per layer l, the norms of
//! ∂C/∂b^l and ∂C/∂W^l (batch mean and rms over examples), the spectral norm of W^l, the
//! largest σ′ seen, and the bound (**) of docs/DERIVATION.md with its tight form — all
//! as base-10 logarithms, exact at any depth.

pub mod backend;
pub mod check;
pub mod error;
pub mod gemm;
pub mod linalg;
pub mod model;
pub mod rng;
pub mod stats;
pub mod theory;
pub mod spectrum;

pub use error::{Error, Result};
pub mod export;
pub mod plot;
pub mod probe;
pub mod cli;
pub mod sweep;
pub mod train;
