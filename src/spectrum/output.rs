//! The spectrum's outputs: a per-example summary, the terminal table, and JSON, CSV and
//! `.npy` files with `log10_singular_values` per example.

use std::path::Path;

use serde::{Serialize, Serializer};

use super::predict::{SpectrumPrediction, lambda_moments};
use super::{DepthSpectrum, ExampleSpectrum};
use crate::error::{Error, Result};
use crate::stats::finite_or_null;

/// A sequence of f64 with non-finite values as `null` (JSON has no −∞; here −∞ is an exact
/// zero singular value).
pub fn finite_or_null_seq<S: Serializer>(v: &[f64], s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&x.is_finite().then_some(*x))?;
    }
    seq.end()
}

/// One example's spectrum in a few numbers.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleSummary {
    pub example: usize,
    /// log10 s_1, the median and the smallest nonzero value.
    #[serde(serialize_with = "finite_or_null")]
    pub log10_top: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub log10_median: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub log10_bottom_nonzero: f64,
    /// log10_top − log10_bottom_nonzero.
    #[serde(serialize_with = "finite_or_null")]
    pub spread_decades: f64,
    /// The standard deviation of log10 s over the nonzero values.
    #[serde(serialize_with = "finite_or_null")]
    pub sd_log10: f64,
    /// How many singular values are exactly 0 (σ′ = 0 on dead units, or a narrow layer).
    pub zero_count: usize,
    /// log10 of mean(λ), λ = s² (the eigenvalues of J Jᵀ), and var(λ)/mean(λ)².
    #[serde(serialize_with = "finite_or_null")]
    pub log10_mean_lambda: f64,
    #[serde(serialize_with = "finite_or_null")]
    pub var_over_mean2: f64,
}

impl ExampleSummary {
    pub fn new(e: &ExampleSpectrum) -> ExampleSummary {
        let v = &e.log10_singular_values;
        let nz: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let (m1, vm) = lambda_moments(e);
        let (top, bottom) = (nz.first().copied().unwrap_or(f64::NEG_INFINITY), nz.last().copied().unwrap_or(f64::NEG_INFINITY));
        let mean = nz.iter().sum::<f64>() / nz.len() as f64;
        let sd = if nz.len() > 1 { (nz.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (nz.len() - 1) as f64).sqrt() } else { f64::NAN };
        ExampleSummary {
            example: e.example,
            log10_top: top,
            log10_median: if v.is_empty() { f64::NAN } else { v[v.len() / 2] },
            log10_bottom_nonzero: bottom,
            spread_decades: top - bottom,
            sd_log10: sd,
            zero_count: v.len() - nz.len(),
            log10_mean_lambda: m1,
            var_over_mean2: vm,
        }
    }
}

/// Everything `spectrum --out FILE.json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct SpectrumOutput<C: Serialize> {
    pub config: C,
    /// "input-output" (J_x = ∂a^L/∂a^0) or "from-layer l" (∂z^L/∂z^l).
    pub chain: String,
    pub depth: usize,
    pub backend: &'static str,
    pub version: &'static str,
    pub seconds: f64,
    /// With `--top k`: `log10_singular_values` holds s_1..s_k and
    /// `log10_singular_values_bottom` the last k (both descending).
    pub top: Option<usize>,
    pub examples: Vec<ExampleOut>,
    pub prediction: Option<SpectrumPrediction>,
    pub prediction_unavailable: Option<String>,
}

/// One example in the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleOut {
    pub example: usize,
    /// min(n_L, n_start): how many singular values the chain has.
    pub count: usize,
    #[serde(serialize_with = "finite_or_null_seq")]
    pub log10_singular_values: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_seq")]
    pub log10_singular_values_bottom: Option<Vec<f64>>,
    pub summary: ExampleSummary,
}

fn opt_seq<S: Serializer>(v: &Option<Vec<f64>>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(v) => finite_or_null_seq(v, s),
        None => s.serialize_none(),
    }
}

impl ExampleOut {
    /// The example's values, all of them or the top and bottom `top`.
    pub fn new(e: &ExampleSpectrum, top: Option<usize>) -> ExampleOut {
        let v = &e.log10_singular_values;
        let (head, bottom) = match top {
            Some(k) if 2 * k < v.len() => (v[..k].to_vec(), Some(v[v.len() - k..].to_vec())),
            _ => (v.clone(), None),
        };
        ExampleOut { example: e.example, count: v.len(), log10_singular_values: head, log10_singular_values_bottom: bottom, summary: ExampleSummary::new(e) }
    }

    /// The values written to CSV and .npy: the top k then the bottom k, or all.
    pub fn values(&self) -> Vec<(usize, f64)> {
        let mut out: Vec<(usize, f64)> = self.log10_singular_values.iter().enumerate().map(|(i, &v)| (i + 1, v)).collect();
        if let Some(b) = &self.log10_singular_values_bottom {
            let total = self.count;
            out.extend(b.iter().enumerate().map(|(i, &v)| (total - b.len() + i + 1, v)));
        }
        out
    }
}

/// The output formats of `spectrum --out`, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpectrumFormat {
    Json,
    Csv,
    /// A K × m float64 array of log10 s (−inf for exact zeros).
    Npy,
}

impl SpectrumFormat {
    /// # Errors
    /// An extension other than .json, .csv or .npy.
    pub fn from_path(path: &Path) -> Result<SpectrumFormat> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("json") => Ok(SpectrumFormat::Json),
            Some("csv") => Ok(SpectrumFormat::Csv),
            Some("npy") => Ok(SpectrumFormat::Npy),
            _ => Err(Error::arg("--out", format!("'{}' must end in .json, .csv or .npy", path.display()))),
        }
    }

    /// The file's bytes.
    ///
    /// # Errors
    /// A serialisation failure (a bug).
    pub fn render<C: Serialize>(self, out: &SpectrumOutput<C>) -> Result<Vec<u8>> {
        match self {
            SpectrumFormat::Json => {
                let mut v = serde_json::to_vec_pretty(out).map_err(|e| Error::Internal(e.to_string()))?;
                v.push(b'\n');
                Ok(v)
            }
            SpectrumFormat::Csv => {
                let mut s = String::from("example,index,log10_singular_value\n");
                for e in &out.examples {
                    for (i, v) in e.values() {
                        s.push_str(&format!("{},{i},{v}\n", e.example));
                    }
                }
                Ok(s.into_bytes())
            }
            SpectrumFormat::Npy => {
                use ndarray_npy::WriteNpyExt;
                let m = out.examples.first().map_or(0, |e| e.values().len());
                let flat: Vec<f64> = out.examples.iter().flat_map(|e| e.values().into_iter().map(|(_, v)| v)).collect();
                let a = ndarray::Array2::from_shape_vec((out.examples.len(), m), flat).map_err(|e| Error::Internal(e.to_string()))?;
                let mut buf = Vec::new();
                a.write_npy(&mut buf).map_err(|e| Error::Internal(e.to_string()))?;
                Ok(buf)
            }
        }
    }
}

/// The terminal table: one row per example, then the prediction where there is one.
pub fn table(d: &DepthSpectrum, prediction: &std::result::Result<SpectrumPrediction, String>) -> String {
    use crate::stats::sci;
    let mut s = format!(
        "{:>7}  {:>10}  {:>10}  {:>10}  {:>8}  {:>7}  {:>5}  {:>10}  {:>9}\n",
        "example", "top s_1", "median", "bottom≠0", "spread", "sd", "zeros", "mean λ", "var/mean²"
    );
    for e in &d.examples {
        let m = ExampleSummary::new(e);
        s.push_str(&format!(
            "{:>7}  {:>10}  {:>10}  {:>10}  {:>8.3}  {:>7.3}  {:>5}  {:>10}  {:>9.4}\n",
            m.example,
            sci(m.log10_top),
            sci(m.log10_median),
            sci(m.log10_bottom_nonzero),
            m.spread_decades,
            m.sd_log10,
            m.zero_count,
            sci(m.log10_mean_lambda),
            m.var_over_mean2
        ));
    }
    s.push_str("(spread: log10 s_1 − log10 of the smallest nonzero s, in decades; sd: of log10 s over the nonzero values; λ = s², the eigenvalues of J Jᵀ)\n");
    match prediction {
        Ok(p) => {
            s.push_str(&format!(
                "predicted (free probability, wide limit, q = q* = {:.4}, χ₁ = {:.6}, μ₂/μ₁² = {:.4}, s₁ = {}): mean λ = χ₁^{} = {}, var/mean² = L(μ₂/μ₁² − 1 − s₁) = {:.4}\n",
                p.q_star,
                p.chi1,
                p.mu2 / (p.mu1 * p.mu1),
                p.s1,
                p.layers,
                sci(p.log10_mean_lambda),
                p.var_over_mean2
            ));
            match p.q_star_reached_at_layer {
                Some(l) if l > 1 => s.push_str(&format!("note: the inputs' q¹ reaches q* (within 1%) only at layer {l}; the prediction assumes q = q* from layer 1\n")),
                Some(_) => {}
                None => s.push_str("note: the inputs' q¹ does not reach q* (within 1%) in this chain; the prediction assumes q = q* throughout\n"),
            }
            // Over m values λ ≥ 0, var/mean² ≤ m − 1 (all the mass on one value): a prediction
            // above that cannot be met by any spectrum, so the measurement is not a miss.
            let m = d.examples.first().map_or(0, |e| e.log10_singular_values.len());
            if m > 0 && p.var_over_mean2 > (m - 1) as f64 {
                s.push_str(&format!(
                    "note: var/mean² of {m} values can never exceed m − 1 = {}: the prediction is the wide limit (L ≪ n) and this chain is past it\n",
                    m - 1
                ));
            }
        }
        Err(why) => s.push_str(&format!("prediction: unavailable ({why})\n")),
    }
    s
}
