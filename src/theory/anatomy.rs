//! The anatomy of the bound, layer by layer: the factors γ‖W^r‖₂ of the bound (**) beside
//! the measured per-layer ratio ‖δ^l‖/‖δ^{l+1}‖, the slack of the bound in decades, the
//! Pascanu–Mikolov–Bengio verdict, and the random-matrix expectation of ‖W^l‖₂.
//!
//! ```text
//! log10_factor      = log10 (γ_l ‖W^{l+1}‖₂)                (l < L; γ_l = sup|σ_l′|)
//! log10_ratio       = log10_grad_b_rms^l − log10_grad_b_rms^{l+1}
//! log10_slack       = log10_bound − log10_grad_b_rms        (decades the bound gives away)
//! vanishing_guaranteed(l) ⟺ γ‖W^r‖₂ < 1 for every r > l    (Pascanu, Mikolov & Bengio 2013)
//! ‖W‖₂ ≈ σ_w (1 + √(n_out/n_in))   for W_ij iid, mean 0, Var σ_w²/n_in (Geman 1980; Yin, Bai & Krishnaiah 1988)
//! ‖W‖₂ = σ_w                        for σ_w · (semi-)orthogonal Q
//! ```

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{InitKind, Network, Params};
use crate::stats::{Report, finite_or_null, sci};

use super::predict::layer_variances;

/// One layer of the anatomy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnatomyRow {
    /// l, 1..L.
    pub layer: usize,
    /// n_l.
    pub width: usize,
    /// `log10 ‖W^l‖₂`, measured.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_weight_norm: f64,
    /// `log10` of the random-matrix expectation of ‖W^l‖₂ for the init (for stored weights:
    /// for iid entries with the stored weights' variance).
    #[serde(serialize_with = "finite_or_null")]
    pub log10_weight_norm_rmt: f64,
    /// `log10 (γ_l ‖W^{l+1}‖₂)`, the factor the bound allows for the step δ^{l+1} → δ^l
    /// (null on layer L).
    pub log10_factor: Option<f64>,
    /// `log10 (grad_b_rms^l / grad_b_rms^{l+1})`, the measured step (null on layer L or
    /// where a gradient is 0 or undefined).
    pub log10_ratio: Option<f64>,
    /// `log10_bound − log10_grad_b_rms`: decades of slack (≥ 0 for the per-example norms).
    #[serde(serialize_with = "finite_or_null")]
    pub log10_slack: f64,
    /// `log10_bound_tight − log10_grad_b_rms`.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_slack_tight: f64,
    /// `max_{r>l} log10 (γ‖W^r‖₂)`: log10 of the η of Pascanu et al. (null on layer L).
    pub log10_eta: Option<f64>,
    /// γ‖W^r‖₂ < 1 for every r > l: vanishing is guaranteed at layer l.
    pub vanishing_guaranteed: bool,
}

/// The anatomy of a probe's report for its network.
pub fn anatomy(report: &Report, net: &Network) -> Vec<AnatomyRow> {
    let big_l = net.depth();
    let vars = layer_variances(net);
    let by_layer = |l: usize| report.layers.iter().find(|s| s.layer == l);
    let factor = |r: usize| -> Option<f64> {
        // The step into layer r − 1 multiplies by Σ′(z^{r−1}) (W^r)ᵀ.
        let s = by_layer(r)?;
        let f = net.gamma_at(r - 1).log10() + s.log10_weight_norm;
        f.is_finite().then_some(f)
    };
    let mut rows = Vec::with_capacity(big_l);
    for l in 1..=big_l {
        let Some(s) = by_layer(l) else { continue };
        let (n_in, n_out) = (net.widths[l - 1] as f64, net.widths[l] as f64);
        let rmt = match &net.params {
            Params::Generated { init, .. } if init.kind == InitKind::Orthogonal => 0.5 * init.sigma_w2.unwrap_or(1.0).log10(),
            _ => 0.5 * vars[l - 1].0.log10() + (1.0 + (n_out / n_in).sqrt()).log10(),
        };
        let (log10_factor, log10_ratio) = if l < big_l {
            let up = by_layer(l + 1).map(|u| s.log10_grad_b_rms - u.log10_grad_b_rms).filter(|v| v.is_finite());
            (factor(l + 1), up)
        } else {
            (None, None)
        };
        let factors: Vec<Option<f64>> = ((l + 1)..=big_l).map(factor).collect();
        let log10_eta = if l < big_l && factors.iter().all(|f| f.is_some()) {
            factors.iter().map(|f| f.unwrap()).reduce(f64::max)
        } else {
            None
        };
        rows.push(AnatomyRow {
            layer: l,
            width: s.width,
            log10_weight_norm: s.log10_weight_norm,
            log10_weight_norm_rmt: rmt,
            log10_factor,
            log10_ratio,
            log10_slack: s.log10_bound - s.log10_grad_b_rms,
            log10_slack_tight: s.log10_bound_tight - s.log10_grad_b_rms,
            log10_eta,
            vanishing_guaranteed: log10_eta.is_some_and(|e| e < 0.0),
        });
    }
    rows
}

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:+.digits$}"),
        _ => "-".into(),
    }
}

/// The anatomy as an aligned text table (one line per layer, decades as signed log10).
pub fn anatomy_table(rows: &[AnatomyRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} {:>6} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8} {:>9}",
        "layer", "width", "‖W‖₂", "‖W‖₂ rmt", "log γ‖Wˡ⁺¹‖", "log ratio", "slack", "tight", "PMB"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6} {:>6} {:>10} {:>10} {:>12} {:>12} {:>8} {:>8} {:>9}",
            r.layer,
            r.width,
            sci(r.log10_weight_norm),
            sci(r.log10_weight_norm_rmt),
            opt(r.log10_factor, 4),
            opt(r.log10_ratio, 4),
            opt(Some(r.log10_slack), 2),
            opt(Some(r.log10_slack_tight), 2),
            if r.log10_eta.is_none() { "-" } else if r.vanishing_guaranteed { "vanishes" } else { "open" }
        );
    }
    let _ = writeln!(
        out,
        "log γ‖Wˡ⁺¹‖: log10 of the bound's factor for the step δ^(l+1) → δ^l; log ratio: the measured \
         log10 grad_b_rms^l − grad_b_rms^(l+1); slack/tight: decades between the bound (tight bound) \
         and grad_b_rms; PMB: 'vanishes' where γ‖W^r‖₂ < 1 for every r > l (Pascanu et al. 2013)."
    );
    out
}
