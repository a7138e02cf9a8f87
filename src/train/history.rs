//! The training history as a step × layer × field array, its CSV and `.npy` forms, and the
//! checkpoint file that carries the weights and the history together (one atomic rename,
//! so a killed run never leaves the two out of step).

use std::path::Path;

use ndarray::{Array1, Array2, Array3, Axis};
use ndarray_npy::{NpzReader, NpzWriter, WriteNpyExt};

use super::sgd::Weights;
use crate::error::{Error, Result};
use crate::stats::{LayerStatus, Report};

/// The fields of one (step, layer) row: history.csv's columns and history.npy's last axis.
/// `step` and `epoch`, then the probe's fields ([`crate::stats::FIELDS`]) with the status
/// last, and the training fields of docs/MATH.md before it.
pub static HISTORY_FIELDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let probe = crate::stats::FIELDS;
    let mut f = vec!["step", "epoch"];
    f.extend(probe.iter().filter(|n| **n != "status"));
    f.extend(["log10_update_w", "log10_cost", "accuracy", "status"]);
    f
});

/// Index of a field in [`HISTORY_FIELDS`].
pub fn field(name: &str) -> usize {
    HISTORY_FIELDS.iter().position(|f| *f == name).expect("a history field")
}

/// The statuses in the order of their numeric code in history.npy.
pub const STATUS_CODES: [LayerStatus; 4] = [LayerStatus::Ok, LayerStatus::ZeroGradient, LayerStatus::Underflow, LayerStatus::Overflow];

fn status_name(code: f64) -> String {
    STATUS_CODES
        .get(code as usize)
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "nan".into())
}

/// One record: L rows of [`HISTORY_FIELDS`].
pub fn record_rows(step: u64, epoch: f64, report: &Report, update: &[f64], accuracy: f64) -> Array2<f64> {
    let mut m = Array2::from_elem((report.layers.len(), HISTORY_FIELDS.len()), f64::NAN);
    for (i, st) in report.layers.iter().enumerate() {
        let mut row = vec![step as f64, epoch, st.layer as f64, st.width as f64];
        row.extend(st.log_fields().iter().map(|(_, v)| *v));
        row.push(update.get(i).copied().unwrap_or(f64::NAN));
        row.push(report.log10_cost);
        row.push(accuracy);
        row.push(STATUS_CODES.iter().position(|s| *s == st.status).unwrap_or(0) as f64);
        m.row_mut(i).assign(&Array1::from(row));
    }
    m
}

/// The records stacked: records × layers × fields.
pub fn stack(history: &[Array2<f64>]) -> Result<Array3<f64>> {
    if history.is_empty() {
        return Ok(Array3::zeros((0, 0, HISTORY_FIELDS.len())));
    }
    let views: Vec<_> = history.iter().map(|h| h.view()).collect();
    ndarray::stack(Axis(0), &views).map_err(|e| Error::Internal(format!("history: {e}")))
}

/// history.csv: one row per (record, layer), integers for step/layer/width, the status by
/// name, ±inf and nan as numpy reads them.
pub fn csv(history: &[Array2<f64>]) -> Result<Vec<u8>> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let err = |e: ::csv::Error| Error::Internal(format!("CSV: {e}"));
    w.write_record(HISTORY_FIELDS.iter()).map_err(err)?;
    let ints = [field("step"), field("layer"), field("width")];
    let status = field("status");
    for rec in history {
        for row in rec.rows() {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, &v)| if ints.contains(&i) { format!("{}", v as u64) } else if i == status { status_name(v) } else { crate::export::csv_number(v) })
                .collect();
            w.write_record(&cells).map_err(err)?;
        }
    }
    w.into_inner().map_err(|e| Error::Internal(format!("CSV: {e}")))
}

/// history.npy: the float64 array records × layers × fields.
pub fn npy(history: &[Array2<f64>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    stack(history)?.write_npy(&mut out).map_err(|e| Error::Internal(format!("npy: {e}")))?;
    Ok(out)
}

/// The checkpoint: w1..wL, b1..bL (float64, the layout `--weights` reads), `step` (the number
/// of updates taken) and `history` (as history.npy).
pub fn checkpoint_npz(p: &Weights, step: u64, history: &[Array2<f64>]) -> Result<Vec<u8>> {
    let err = |e: ndarray_npy::WriteNpzError| Error::Internal(format!("writing the checkpoint: {e}"));
    let mut npz = NpzWriter::new(std::io::Cursor::new(Vec::new()));
    for (l, (wl, bl)) in p.w.iter().zip(&p.b).enumerate() {
        npz.add_array(format!("w{}", l + 1), wl).map_err(err)?;
        npz.add_array(format!("b{}", l + 1), bl).map_err(err)?;
    }
    npz.add_array("step", &Array1::from(vec![step])).map_err(err)?;
    npz.add_array("history", &stack(history)?).map_err(err)?;
    Ok(npz.finish().map_err(err)?.into_inner())
}

/// Reads a checkpoint written by [`checkpoint_npz`].
///
/// # Errors
/// An unreadable or foreign file.
pub fn read_checkpoint(path: &Path) -> Result<(Weights, u64, Vec<Array2<f64>>)> {
    let sp = crate::model::files::read_params(path)?;
    let f = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let bad = |e: ndarray_npy::ReadNpzError| Error::file(path, format!("not a gradscope training checkpoint ({e})"));
    let mut z = NpzReader::new(std::io::BufReader::new(f)).map_err(bad)?;
    let step: Array1<u64> = z.by_name("step").map_err(bad)?;
    let h: Array3<f64> = z.by_name("history").map_err(bad)?;
    let step = *step.first().ok_or_else(|| Error::file(path, "empty 'step'"))?;
    let history = h.outer_iter().map(|r| r.to_owned()).collect();
    Ok((Weights { w: sp.w, b: sp.b }, step, history))
}
