//! The WGSL sources of the GPU engine, one kernel family per file under `shaders/`, and how
//! they are assembled into modules. Always compiled, so the shader tests run without the
//! `gpu` feature and without a GPU.

/// Shared parameter block and exact power-of-two helpers, prepended to every module.
pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
/// Philox4x32-10 and Box–Muller, bit for bit `src/rng.rs` (the integers; the transcendentals
/// only to a few ulp).
pub const PHILOX: &str = include_str!("../../shaders/philox.wgsl");
/// Drawing generated weights; the raw-Philox test kernel.
pub const WEIGHTS: &str = include_str!("../../shaders/weights.wgsl");
/// Register-blocked layer products (forward `a Wᵀ + b`, backward `δ W`).
pub const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
/// σ, σ′, renormalisation and per-example records.
pub const POINTWISE: &str = include_str!("../../shaders/pointwise.wgsl");
/// Batch-mean and Gram partial sums.
pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
/// Spectral norms of generated weights by Lanczos, a chunk of layers at once.
pub const SPECTRAL: &str = include_str!("../../shaders/spectral.wgsl");

/// One shader module: its label, the entry points it provides, and its full source.
pub struct ModuleSource {
    pub label: &'static str,
    pub entry_points: &'static [&'static str],
    pub source: String,
}

/// Every module the engine builds, each a concatenation of the files it needs.
pub fn modules() -> Vec<ModuleSource> {
    let cat = |parts: &[&str]| parts.concat();
    vec![
        ModuleSource { label: "weights", entry_points: &["draw_weights", "philox_words"], source: cat(&[COMMON, PHILOX, WEIGHTS]) },
        ModuleSource { label: "matmul", entry_points: &["forward", "backward"], source: cat(&[COMMON, MATMUL]) },
        ModuleSource { label: "pointwise", entry_points: &["forward_post", "backward_post"], source: cat(&[COMMON, POINTWISE]) },
        ModuleSource { label: "reduce", entry_points: &["batch_mean", "gram"], source: cat(&[COMMON, REDUCE]) },
        ModuleSource { label: "spectral", entry_points: &["lz_rows", "lz_cols", "lz_dots", "lz_axpy", "lz_norm", "lz_next"], source: cat(&[COMMON, SPECTRAL]) },
    ]
}
