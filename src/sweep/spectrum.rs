//! `sweep --spectrum K`: the summary of J_x's singular values per (configuration, depth),
//! from one QR pass per configuration to its deepest depth (the chain of depth L is the
//! prefix of a deeper one, so every shallower depth's spectrum is the SVD of the triangular
//! factor accumulated so far).

use std::path::Path;
use std::time::Instant;

use ndarray::{Array1, Array3, s};
use ndarray_npy::{NpzReader, WriteNpyExt};

use super::{Group, SummaryRow, SweepPlan};
use crate::error::{Error, Result};
use crate::export::write_atomic;
use crate::export::npy::Column;
use crate::spectrum::output::ExampleSummary;
use crate::spectrum::{Chain, measure, predict};

/// The spectrum's summary at one depth, each value the mean over the K examples.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumPoint {
    pub log10_top: f64,
    pub log10_median: f64,
    pub log10_bottom_nonzero: f64,
    pub var_over_mean2: f64,
    /// The free-probability L (μ₂/μ₁² − 1 − s₁) (docs/MATH.md); NaN where it has none.
    pub var_over_mean2_predicted: f64,
    /// Every example's log10 s at this depth, K rows (−∞ for an exact zero).
    pub log10_singular_values: Vec<Vec<f64>>,
}

/// The name of the spectra in a group's `.npz`.
pub const SPECTRA_FIELD: &str = "log10_singular_values";

/// The summary columns `--spectrum` adds, in the order summary.csv and summary.npy hold them.
pub const SPECTRUM_COLUMNS: &[&str] = &["spectrum_log10_top", "spectrum_log10_median", "spectrum_log10_bottom_nonzero", "spectrum_var_over_mean2", "spectrum_var_over_mean2_predicted"];

impl SweepPlan {
    /// The spectrum at every depth of a group (None without `--spectrum`), and the seconds
    /// it took.
    ///
    /// # Errors
    /// Too little memory for K frames, or a forward pass that overflows f64.
    pub fn spectra(&self, g: &Group) -> Result<Option<(Vec<SpectrumPoint>, f64)>> {
        let Some(k) = self.spectrum else { return Ok(None) };
        let t0 = Instant::now();
        let p = self.problem(g)?;
        let measured = measure(&p, k, Chain::InputOutput, &self.depths, false)?;
        let out = measured
            .iter()
            .map(|d| {
                let s: Vec<ExampleSummary> = d.examples.iter().map(ExampleSummary::new).collect();
                let mean = |f: fn(&ExampleSummary) -> f64| s.iter().map(f).sum::<f64>() / s.len() as f64;
                SpectrumPoint {
                    log10_top: mean(|e| e.log10_top),
                    log10_median: mean(|e| e.log10_median),
                    log10_bottom_nonzero: mean(|e| e.log10_bottom_nonzero),
                    var_over_mean2: mean(|e| e.var_over_mean2),
                    var_over_mean2_predicted: predict::predict(&p, Chain::InputOutput, d.depth).map_or(f64::NAN, |q| q.var_over_mean2),
                    log10_singular_values: d.examples.iter().map(|e| e.log10_singular_values.clone()).collect(),
                }
            })
            .collect();
        Ok(Some((out, t0.elapsed().as_secs_f64())))
    }
}

impl SummaryRow {
    /// Fills the `spectrum_*` columns from one depth's spectrum.
    pub fn set_spectrum(&mut self, s: &SpectrumPoint) {
        self.spectrum_log10_top = Some(s.log10_top);
        self.spectrum_log10_median = Some(s.log10_median);
        self.spectrum_log10_bottom_nonzero = Some(s.log10_bottom_nonzero);
        self.spectrum_var_over_mean2 = Some(s.var_over_mean2);
        self.spectrum_var_over_mean2_predicted = Some(s.var_over_mean2_predicted);
    }

    fn spectrum_values(&self) -> [Option<f64>; 5] {
        [self.spectrum_log10_top, self.spectrum_log10_median, self.spectrum_log10_bottom_nonzero, self.spectrum_var_over_mean2, self.spectrum_var_over_mean2_predicted]
    }
}

/// The `spectrum_*` columns of summary.npy (NaN for a row without them).
pub fn spectrum_columns(rows: &[&SummaryRow]) -> Vec<Column<'static>> {
    SPECTRUM_COLUMNS.iter().enumerate().map(|(i, name)| Column::F64(name, rows.iter().map(|r| r.spectrum_values()[i].unwrap_or(f64::NAN)).collect())).collect()
}

/// serde for `Option<f64>` columns present only in some sweeps: None is skipped (with
/// `skip_serializing_if`), a value is written as [`super::store::nonfinite`] writes it.
pub mod nonfinite_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::super::store::nonfinite::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::super::store::nonfinite")] f64);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

/// Writes `spectra.npy`: rows × K × max width, float64, row i the K examples' log10 s at
/// summary row i's configuration and depth (descending; −inf for an exact zero; NaN pads a
/// narrower configuration), from each finished group's `.npz`.
///
/// # Errors
/// A group file without its spectra or of the wrong length.
pub fn write_spectra_npy(out: &Path, groups: &[(&Path, &[SummaryRow])], k: usize) -> Result<()> {
    let rows: usize = groups.iter().map(|(_, r)| r.len()).sum();
    let n_max = groups.iter().flat_map(|(_, r)| r.iter().map(|r| r.width)).max().unwrap_or(0);
    let mut all = Array3::<f64>::from_elem((rows, k, n_max), f64::NAN);
    let mut row0 = 0;
    for (npz, rs) in groups {
        let bad = |e: String| Error::file(npz, format!("corrupt: {e}"));
        let file = std::fs::File::open(npz).map_err(|e| Error::file(npz, format!("cannot open: {e}")))?;
        let a: Array1<f64> = NpzReader::new(file).and_then(|mut z| z.by_name(SPECTRA_FIELD)).map_err(|e| bad(e.to_string()))?;
        if a.len() != rs.iter().map(|r| k * r.width).sum::<usize>() {
            return Err(bad("its spectra do not hold K × width values per depth".into()));
        }
        let mut at = 0;
        for r in rs.iter() {
            let block = a.slice(s![at..at + k * r.width]).into_shape_with_order((k, r.width)).map_err(|e| bad(e.to_string()))?;
            all.slice_mut(s![row0, .., ..r.width]).assign(&block);
            at += k * r.width;
            row0 += 1;
        }
    }
    let mut buf = Vec::new();
    all.write_npy(&mut buf).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(out, &buf)
}
