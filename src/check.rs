//! Comparing two reports (GPU f32 against the CPU f64 reference), per layer and per field,
//! in decades (|Δ log10|), against a tolerance that grows with depth.

use crate::stats::Report;

/// How far two reports' log10 statistics may differ, in decades.
///
/// ```text
/// |Δ log10| ≤ base + per_layer · n_layers(field, l)
/// n_layers = 0 for log10_weight_norm (the same weights, normed by the f64 Lanczos on
///            both sides, or on the GPU's by its f32 Lanczos to a relative 1e-6 of ‖W‖₂²,
///            i.e. ~2e-7 decades: far below `base`), l for log10_max_dsigma (it sees the
///            forward pass up to layer l), L for the gradient and bound fields and for the
///            batch cost (they see the whole forward pass and the output error; the
///            gradients also the backward pass from L down to l)
/// ```
/// Why these numbers ([`Tolerance::f32_vs_f64`]): every f32 operation is exact to the unit
/// roundoff u = 2^-24 ≈ 6e-8; a layer's product, reductions and σ add a relative error of
/// about √n·u ≈ 2e-6 at n = 1,000 (random rounding; n·u = 6e-5 at worst), and the GPU draws
/// its weights in f32 (Box–Muller within a few ulp of the CPU's f64 draw). Relative errors
/// add along the L layers a statistic depends on: ≈ L·2e-6 worst case, i.e. ≈ 1e-6 decades
/// per layer. `per_layer` = 1e-5 decades leaves a factor 10 for what random rounding cannot
/// show: amplification of perturbations in the chaotic phase (bounded here because the
/// statistics are norms, which self-average), and the rare unit whose pre-activation sits so
/// close to a kink (relu at 0, hard-tanh at ±1) that f32 and f64 take different sides,
/// changing one of n·B derivatives. `base` = 1e-3 decades (0.23 %) covers the batch means'
/// cancellation (‖Σ_x δ_x‖ is √B below the rms: its relative error grows by √B), the f32
/// logarithm in the renormalisation, and that one flipped kink unit in a small layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Decades allowed at any depth.
    pub base: f64,
    /// Decades added per layer the field depends on.
    pub per_layer: f64,
}

impl Tolerance {
    /// The tolerance of f32 (GPU) against f64 (CPU); see the type's documentation.
    pub fn f32_vs_f64() -> Tolerance {
        Tolerance { base: 1e-3, per_layer: 1e-5 }
    }

    /// The allowed |Δ log10| for `field` at layer `l` of an `big_l`-layer network.
    pub fn allowed(&self, field: &str, l: usize, big_l: usize) -> f64 {
        let n = match field {
            "log10_weight_norm" => 0,
            "log10_max_dsigma" => l,
            _ => big_l,
        };
        self.base + self.per_layer * n as f64
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::f32_vs_f64()
    }
}

/// One field of one layer outside the tolerance.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub layer: usize,
    pub field: &'static str,
    pub left: f64,
    pub right: f64,
    /// |Δ log10| in decades (∞ when one side is finite and the other not).
    pub abs: f64,
    /// The same as a relative error of the underlying quantity, 10^|Δ| − 1.
    pub rel: f64,
    pub allowed: f64,
}

/// The outcome of [`compare`].
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Per layer (index l−1), |Δ log10| per field in `LayerStats::log_fields` order.
    pub per_layer: Vec<[f64; 8]>,
    /// Every field outside the tolerance, layer by layer; also status and overflow
    /// disagreements (field "status" / "overflow_layer", abs = ∞).
    pub mismatches: Vec<Mismatch>,
    /// The largest finite |Δ log10| and where it was (layer, field).
    pub max_abs: f64,
    pub worst: Option<(usize, &'static str)>,
    /// Values compared.
    pub compared: usize,
    /// |Δ log10| of the batch cost (outside the tolerance, it is a mismatch of field
    /// "log10_cost" at layer L).
    pub cost_abs: f64,
}

impl Comparison {
    /// True when nothing is outside the tolerance.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// A human summary: the verdict, the worst discrepancy and the first `n` mismatches.
    pub fn summary(&self, n: usize) -> String {
        let mut s = format!(
            "{}: {} values compared, max |Δlog10| = {:.3e} decades{}, cost |Δlog10| = {:.3e}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.compared,
            self.max_abs,
            self.worst.map(|(l, f)| format!(" (layer {l}, {f})")).unwrap_or_default(),
            self.cost_abs
        );
        if !self.mismatches.is_empty() {
            s += &format!("; {} outside tolerance, first {}:", self.mismatches.len(), n.min(self.mismatches.len()));
            for m in self.mismatches.iter().take(n) {
                s += &format!(
                    "\n  layer {:>5} {:<20} {:>14.6} vs {:>14.6}  |Δ| = {:.3e} decades (rel {:.3e}) > {:.3e}",
                    m.layer, m.field, m.left, m.right, m.abs, m.rel, m.allowed
                );
            }
        }
        s
    }
}

fn delta(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else if a.is_finite() && b.is_finite() {
        (a - b).abs()
    } else {
        f64::INFINITY
    }
}

/// Compares `left` (e.g. the GPU) against `right` (the CPU reference) field by field.
///
/// Both −∞ (a true zero) or both NaN count as agreement; one finite and one not is a
/// mismatch; so is a differing layer status or overflow layer.
pub fn compare(left: &Report, right: &Report, tol: &Tolerance) -> Comparison {
    let big_l = right.layers.len();
    let mut c = Comparison { per_layer: Vec::new(), mismatches: Vec::new(), max_abs: 0.0, worst: None, compared: 0, cost_abs: delta(left.log10_cost, right.log10_cost) };
    if left.layers.len() != right.layers.len() || left.overflow_layer != right.overflow_layer {
        c.mismatches.push(Mismatch {
            layer: left.overflow_layer.or(right.overflow_layer).unwrap_or(0),
            field: "overflow_layer",
            left: left.overflow_layer.map_or(f64::NAN, |v| v as f64),
            right: right.overflow_layer.map_or(f64::NAN, |v| v as f64),
            abs: f64::INFINITY,
            rel: f64::INFINITY,
            allowed: 0.0,
        });
    }
    for (a, b) in left.layers.iter().zip(&right.layers) {
        let mut row = [0.0; 8];
        for (k, ((name, x), (_, y))) in a.log_fields().into_iter().zip(b.log_fields()).enumerate() {
            let d = delta(x, y);
            row[k] = d;
            c.compared += 1;
            if d.is_finite() && d > c.max_abs {
                c.max_abs = d;
                c.worst = Some((b.layer, name));
            }
            let allowed = tol.allowed(name, b.layer, big_l);
            if d > allowed {
                c.mismatches.push(Mismatch { layer: b.layer, field: name, left: x, right: y, abs: d, rel: 10f64.powf(d) - 1.0, allowed });
            }
        }
        if a.status != b.status {
            c.mismatches.push(Mismatch { layer: b.layer, field: "status", left: f64::NAN, right: f64::NAN, abs: f64::INFINITY, rel: f64::INFINITY, allowed: 0.0 });
        }
        c.per_layer.push(row);
    }
    let allowed = tol.allowed("log10_cost", big_l, big_l);
    if c.cost_abs > allowed {
        let (x, y) = (left.log10_cost, right.log10_cost);
        c.mismatches.push(Mismatch { layer: big_l, field: "log10_cost", left: x, right: y, abs: c.cost_abs, rel: 10f64.powf(c.cost_abs) - 1.0, allowed });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LayerStats, LayerStatus};

    fn report(cost: f64) -> Report {
        let layers = (1..=3).map(|l| LayerStats::undefined(l, 4, 0.1 * l as f64, -0.2, LayerStatus::Ok)).collect();
        Report { layers, backend: "cpu".into(), device: "test".into(), overflow_layer: None, log10_cost: cost, signal: Vec::new(), signal_unmeasured: None }
    }

    #[test]
    fn a_cost_outside_the_tolerance_fails_the_comparison() {
        let tol = Tolerance::f32_vs_f64();
        let allowed = tol.allowed("log10_cost", 3, 3);
        assert!(compare(&report(-1.0), &report(-1.0 + 0.5 * allowed), &tol).passed());
        let c = compare(&report(-1.0), &report(-1.0 + 2.0 * allowed), &tol);
        assert!(!c.passed(), "{}", c.summary(4));
        assert_eq!(c.mismatches.len(), 1);
        assert_eq!((c.mismatches[0].field, c.mismatches[0].layer), ("log10_cost", 3));
        assert!(!compare(&report(-1.0), &report(f64::NAN), &tol).passed(), "a NaN cost against a finite one");
    }
}
