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
/// Layer products (forward `a Wᵀ + b`, backward `δ W`): register-blocked, and workgroup-tiled
/// with the tile sizes as override constants ([`Tiling`]).
pub const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
/// σ, σ′, renormalisation and per-example records.
pub const POINTWISE: &str = include_str!("../../shaders/pointwise.wgsl");
/// Batch-mean and Gram partial sums.
pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
/// Spectral norms of generated weights by Lanczos, a chunk of layers at once.
pub const SPECTRAL: &str = include_str!("../../shaders/spectral.wgsl");
/// What SGD adds to the probe's kernels: the batch gathered, the output error, the forward
/// finiteness check and the fused gradient and update (`train --backend gpu`).
pub const TRAIN: &str = include_str!("../../shaders/train.wgsl");

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
        ModuleSource { label: "matmul", entry_points: &["forward", "backward", "forward_tiled", "backward_tiled"], source: cat(&[COMMON, MATMUL]) },
        ModuleSource { label: "pointwise", entry_points: &["forward_post", "backward_post"], source: cat(&[COMMON, POINTWISE]) },
        ModuleSource { label: "reduce", entry_points: &["batch_mean", "gram"], source: cat(&[COMMON, REDUCE]) },
        ModuleSource { label: "spectral", entry_points: &["lz_rows", "lz_cols", "lz_dots", "lz_axpy", "lz_norm", "lz_next"], source: cat(&[COMMON, SPECTRAL]) },
        ModuleSource { label: "train", entry_points: &["gather", "output_error", "check_forward", "update"], source: cat(&[COMMON, TRAIN]) },
    ]
}

/// The module labelled `label` (a [`ModuleSource::label`]), if there is one.
pub fn module(label: &str) -> Option<ModuleSource> {
    modules().into_iter().find(|m| m.label == label)
}

/// Tile sizes of the workgroup-tiled products (`forward_tiled`, `backward_tiled` in
/// shaders/matmul.wgsl), passed as its override constants `WG_X`, `WG_Y`, `TILE_K`.
///
/// Each invocation of a `wg_x` × `wg_y` workgroup owns a 4 × 4 register block, so one
/// workgroup computes a `tile_m` × `tile_n` output tile (`tile_m = 4·wg_y` examples,
/// `tile_n = 4·wg_x` units or columns), staging `tile_k` inner-dimension floats of both
/// operands per step:
/// ```text
/// workgroup storage = 4 · tile_k · (tile_m + tile_n) bytes   (8 KiB for 64 × 64 × 16)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub wg_x: u32,
    pub wg_y: u32,
    pub tile_k: u32,
}

impl Tiling {
    /// The configurations tried, largest first: 64 × 64 × 16 fits WebGPU's guaranteed
    /// minimum limits (256 invocations, 16 KiB of workgroup storage); the smaller ones are
    /// for adapters that report less.
    pub const CANDIDATES: [Tiling; 4] = [
        Tiling { wg_x: 16, wg_y: 16, tile_k: 16 },
        Tiling { wg_x: 16, wg_y: 8, tile_k: 16 },
        Tiling { wg_x: 8, wg_y: 8, tile_k: 8 },
        Tiling { wg_x: 4, wg_y: 4, tile_k: 4 },
    ];

    /// Output rows (examples) per workgroup.
    pub fn tile_m(&self) -> u32 {
        4 * self.wg_y
    }

    /// Output columns (units) per workgroup.
    pub fn tile_n(&self) -> u32 {
        4 * self.wg_x
    }

    /// Bytes of `var<workgroup>` the kernels declare.
    pub fn workgroup_bytes(&self) -> u32 {
        16 * self.tile_k * (self.wg_x + self.wg_y)
    }

    /// The WGSL override constants, as wgpu's `PipelineCompilationOptions::constants` (and
    /// naga's `PipelineConstants`) take them.
    pub fn constants(&self) -> [(&'static str, f64); 3] {
        [("WG_X", self.wg_x as f64), ("WG_Y", self.wg_y as f64), ("TILE_K", self.tile_k as f64)]
    }

    /// The largest candidate within these limits (`None` when not even 4 × 4 × 4 fits).
    pub fn largest_within(invocations: u32, size_x: u32, size_y: u32, workgroup_bytes: u32) -> Option<Tiling> {
        Tiling::CANDIDATES
            .into_iter()
            .find(|t| t.wg_x * t.wg_y <= invocations && t.wg_x <= size_x && t.wg_y <= size_y && t.workgroup_bytes() <= workgroup_bytes)
    }
}
