//! Writing results: JSON and CSV behind one trait, written atomically, paths checked first.

mod csv;
mod json;
pub mod npy;
pub mod table;

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::csv::CsvExporter;
pub(crate) use self::csv::num as csv_number;
pub use self::json::JsonExporter;
use crate::error::{Error, Result};
use crate::stats::Report;

/// The run's context, written beside the per-layer statistics.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo<C: Serialize> {
    pub config: C,
    pub version: &'static str,
    pub seconds: f64,
    /// The mean-field prediction beside the measurement, where the run has one.
    pub mean_field: Option<crate::probe::MeanFieldSummary>,
    /// The anatomy of the bound per layer, when asked for.
    pub anatomy: Option<Vec<crate::theory::AnatomyRow>>,
}

impl<C: Serialize> RunInfo<C> {
    /// The predicted log10 grad_b_rms of layer l (1-based), if any.
    pub fn predicted(&self, l: usize) -> Option<f64> {
        self.mean_field.as_ref()?.log10_grad_b_rms_predicted.as_ref()?.get(l - 1).copied()
    }
}

/// Layer l's (1-based) measured and predicted forward signal, in the order and under the
/// names of docs/MATH.md: `log10_q`, `log10_q_predicted`, `c`, `c_predicted` (NaN where a
/// value is absent: no prediction, B = 1, or not measured on this backend).
pub(crate) fn signal_fields<C: Serialize>(r: &Report, info: &RunInfo<C>, l: usize) -> [(&'static str, f64); 4] {
    let m = r.signal.get(l - 1).copied().unwrap_or(crate::stats::Signal::NAN);
    let (qp, cp) = info.mean_field.as_ref().map_or((f64::NAN, f64::NAN), |mf| mf.signal_predicted(l));
    [("log10_q", m.log10_q), ("log10_q_predicted", qp), ("c", m.c), ("c_predicted", cp)]
}

/// An output format for one probe's report.
pub trait Exporter {
    /// Serialises the report to bytes.
    fn render<C: Serialize>(&self, report: &Report, info: &RunInfo<C>) -> Result<Vec<u8>>;
}

/// The exporters by extension: `.json` or `.csv`.
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// The format a path's extension asks for.
    pub fn from_path(path: &Path, flag: &str) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            _ => Err(Error::arg(flag, format!("'{}' must end in .json or .csv", path.display()))),
        }
    }

    pub fn render<C: Serialize>(&self, report: &Report, info: &RunInfo<C>) -> Result<Vec<u8>> {
        match self {
            Format::Json => JsonExporter.render(report, info),
            Format::Csv => CsvExporter.render(report, info),
        }
    }
}

/// Checks, before a long run starts, that `path` can be written: its folder exists and a
/// file can be created there. Nothing is left behind.
pub fn check_writable(path: &Path, flag: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::arg(flag, format!("folder '{}' does not exist", dir.display())));
    }
    if path.is_dir() {
        return Err(Error::arg(flag, format!("'{}' is a folder", path.display())));
    }
    let probe = tmp_path(path);
    fs::write(&probe, b"").map_err(|e| Error::file(path, format!("cannot write here: {e}")))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename,
/// so a reader never sees a half-written file and a failure leaves none.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let res = fs::write(&tmp, bytes).and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::file(path, format!("cannot write: {e}")));
    }
    Ok(())
}
