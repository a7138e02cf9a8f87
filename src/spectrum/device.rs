//! The spectrum on the GPU engine, seen from the command: where its time went, and
//! `--check`, which holds the GPU's log10 s_i against the f64 CPU engine's within a stated
//! tolerance.

use serde::Serialize;

use super::{Chain, DepthSpectrum};
use crate::error::Result;
use crate::model::Problem;

/// Where a GPU spectrum's time went, and what the device was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SpectrumSplit {
    /// Wall time of the layer products: the frames and weights converted to f32 and
    /// uploaded, the products on the device, their readback and conversion to f64.
    pub device_seconds: f64,
    /// Everything else, on the host in f64: the forward pass (and drawing the weights),
    /// the QR and T ← R T after every layer, the SVD of T at the depths asked for, and
    /// the determinant check's LU.
    pub host_seconds: f64,
    /// Multiply-adds of the products on the device (Σ over layers and examples of
    /// k·n_{l-1}·n_l).
    pub product_madds: f64,
    /// Submissions (one per layer, more where a layer's products exceed the work one
    /// submission may hold).
    pub submissions: usize,
}

/// A spectrum computed on the GPU: the spectra, the adapter's name and the split.
pub struct GpuSpectrum {
    pub spectra: Vec<DepthSpectrum>,
    pub device: String,
    pub split: SpectrumSplit,
}

/// [`super::measure`] on the GPU adapter `adapter` names (any, software included, when
/// `None`): forward pass and layer products in f32 on the device, QR, T and SVD in f64 on
/// the host.
///
/// # Errors
/// No adapter (or a build without the `gpu` feature), and as
/// [`crate::backend::gpu::GpuBackend::spectrum`].
#[cfg(feature = "gpu")]
pub fn measure_gpu(adapter: Option<String>, p: &Problem, examples: usize, chain: Chain, depths: &[usize], det_check: bool) -> Result<GpuSpectrum> {
    use crate::backend::gpu::{GpuBackend, GpuOptions};
    let g = GpuBackend::new(&GpuOptions { adapter, allow_software: true })?;
    let (spectra, split) = g.spectrum(p, examples, chain, depths, det_check)?;
    Ok(GpuSpectrum { spectra, device: g.device_name(), split })
}

#[cfg(not(feature = "gpu"))]
pub fn measure_gpu(_adapter: Option<String>, _p: &Problem, _examples: usize, _chain: Chain, _depths: &[usize], _det_check: bool) -> Result<GpuSpectrum> {
    Err(crate::error::Error::Device("--backend gpu: this gradscope was built without GPU support (cargo feature \"gpu\")".into()))
}

/// How far the GPU's log10 s_i may sit from the CPU's, in decades, for a chain of
/// `layers` layers:
///
/// ```text
/// |Δ log10 s_i| ≤ base + per_layer · layers      (1e-3 + 1e-4 · layers for f32 products)
/// ```
/// Why these numbers ([`SpectrumTolerance::f32_vs_f64`]): the two engines share the f64
/// forward pass, QR, T and SVD, and differ only in each layer's product Qᵀ W^lᵀ, rounded to
/// f32 on the GPU (u = 2^-24: the frame's and the weights' entries, and sums of n terms,
/// ≈ √n·u ≈ 1e-6 relative at n = 1,000). Those are backward errors of each layer, which
/// the QR method carries without compounding; a singular value feels them amplified by
/// the layer's condition number (small ones most), and they add along the chain. Measured
/// (tanh critical, chaotic and orthogonal, relu, sigmoid; widths 16–256; depths 10–400;
/// J_x and ∂z^L/∂z^l): at most 4.4e-3 decades at depth 400 and 3.4e-4 at depth 100, in
/// the bottom half of the spectrum (the top half 10× closer): a tenth of the tolerance or
/// less. `base` covers short chains, where the per-layer term is small.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpectrumTolerance {
    pub base: f64,
    pub per_layer: f64,
}

impl SpectrumTolerance {
    /// The tolerance of the GPU engine (f32 products and σ′) against the CPU (f64).
    pub fn f32_vs_f64() -> SpectrumTolerance {
        SpectrumTolerance { base: 1e-3, per_layer: 1e-4 }
    }

    /// Decades allowed for a chain of `layers` layers.
    pub fn allowed(&self, layers: usize) -> f64 {
        self.base + self.per_layer * layers as f64
    }
}

/// One singular value outside the tolerance.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumMismatch {
    pub example: usize,
    /// 1-based: s_1 is the largest.
    pub index: usize,
    pub left: f64,
    pub right: f64,
    pub abs: f64,
}

/// The outcome of [`compare`].
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumComparison {
    pub compared: usize,
    /// The largest finite |Δ log10 s_i| and where (example, index).
    pub max_abs: f64,
    pub worst: Option<(usize, usize)>,
    /// The largest |Δ| among the top half of each spectrum and among the bottom half.
    pub max_abs_top_half: f64,
    pub max_abs_bottom_half: f64,
    pub allowed: f64,
    pub mismatches: Vec<SpectrumMismatch>,
}

impl SpectrumComparison {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// The verdict, the worst value and the first `n` mismatches, one per line.
    pub fn summary(&self, n: usize) -> String {
        let mut s = format!(
            "{}: {} singular values compared, max |Δlog10 s| = {:.3e} decades{} (top half {:.3e}, bottom half {:.3e}); allowed {:.3e}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.compared,
            self.max_abs,
            self.worst.map(|(x, i)| format!(" (example {x}, s_{i})")).unwrap_or_default(),
            self.max_abs_top_half,
            self.max_abs_bottom_half,
            self.allowed
        );
        if !self.mismatches.is_empty() {
            s += &format!("; {} outside the tolerance, first {}:", self.mismatches.len(), n.min(self.mismatches.len()));
            for m in self.mismatches.iter().take(n) {
                s += &format!("\n  example {:>4} s_{:<6} log10 {:>14.6} vs {:>14.6}  |Δ| = {:.3e} decades", m.example, m.index, m.left, m.right, m.abs);
            }
        }
        s
    }
}

/// `left` (the GPU) against `right` (the CPU) value by value, for a chain of `layers`
/// layers. Both −∞ (an exact zero) agree; one −∞ and one finite is a mismatch (a unit whose
/// f32 pre-activation fell on the other side of a kink than the f64 one, e.g. relu at 0).
pub fn compare(left: &DepthSpectrum, right: &DepthSpectrum, layers: usize, tol: &SpectrumTolerance) -> SpectrumComparison {
    let allowed = tol.allowed(layers);
    let mut c = SpectrumComparison { compared: 0, max_abs: 0.0, worst: None, max_abs_top_half: 0.0, max_abs_bottom_half: 0.0, allowed, mismatches: Vec::new() };
    for (a, b) in left.examples.iter().zip(&right.examples) {
        let m = b.log10_singular_values.len();
        for (i, (&x, &y)) in a.log10_singular_values.iter().zip(&b.log10_singular_values).enumerate() {
            c.compared += 1;
            let d = if x == y { 0.0 } else if x.is_finite() && y.is_finite() { (x - y).abs() } else { f64::INFINITY };
            if d.is_finite() {
                if d > c.max_abs {
                    c.max_abs = d;
                    c.worst = Some((b.example, i + 1));
                }
                let half = if 2 * i < m { &mut c.max_abs_top_half } else { &mut c.max_abs_bottom_half };
                *half = half.max(d);
            }
            if !(d <= allowed) {
                c.mismatches.push(SpectrumMismatch { example: b.example, index: i + 1, left: x, right: y, abs: d });
            }
        }
    }
    if left.examples.len() != right.examples.len() {
        c.mismatches.push(SpectrumMismatch { example: left.examples.len().min(right.examples.len()), index: 0, left: f64::NAN, right: f64::NAN, abs: f64::INFINITY });
    }
    c
}

/// `--det-check` on the GPU: the largest relative difference allowed between Σ_i log10 s_i
/// and Σ_l (log10 |det W^l| + Σ_i log10 |σ′(z^l_i)|). The right-hand side is exact f64 (the
/// host's weights and forward pass); the left carries the f32 products' rounding, which
/// adds like a random walk (~√L·n·u decades) while the sum grows like L·n: measured at most
/// 1.5e-7 relative (width 16, depth 100), so 1e-6 leaves a factor of 6.
pub const GPU_DET_RTOL: f64 = 1e-6;
