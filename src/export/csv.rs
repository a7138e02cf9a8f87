//! CSV: one row per layer, the columns of `stats::FIELDS`, then the prediction and the
//! forward signal (`log10_q`, `log10_q_predicted`, `c`, `c_predicted`); ±inf and nan written as numpy
//! reads them (`np.genfromtxt(f, delimiter=",", names=True, dtype=None)`).

use serde::Serialize;

use super::{signal_fields, Exporter, RunInfo};
use crate::error::{Error, Result};
use crate::stats::{FIELDS, Report};

pub struct CsvExporter;

/// A float as numpy's CSV readers take it: `nan`, `inf`, `-inf`, or the shortest exact form.
pub(crate) fn num(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v}")
    }
}

impl Exporter for CsvExporter {
    fn render<C: Serialize>(&self, r: &Report, info: &RunInfo<C>) -> Result<Vec<u8>> {
        let mut w = ::csv::Writer::from_writer(Vec::new());
        let err = |e: ::csv::Error| Error::Internal(format!("CSV: {e}"));
        let mut header: Vec<&str> = FIELDS.to_vec();
        if info.mean_field.is_some() {
            header.push("log10_grad_b_rms_predicted");
        }
        header.extend(signal_fields(r, info, 1).map(|(k, _)| k));
        w.write_record(&header).map_err(err)?;
        for st in &r.layers {
            let mut rec = vec![st.layer.to_string(), st.width.to_string()];
            rec.extend(st.log_fields().iter().map(|(_, v)| num(*v)));
            rec.push(serde_json::to_value(st.status).map(|v| v.as_str().unwrap_or("").to_string()).unwrap_or_default());
            if info.mean_field.is_some() {
                rec.push(num(info.predicted(st.layer).unwrap_or(f64::NAN)));
            }
            rec.extend(signal_fields(r, info, st.layer).map(|(_, v)| num(v)));
            w.write_record(&rec).map_err(err)?;
        }
        w.into_inner().map_err(|e| Error::Internal(format!("CSV: {e}")))
    }
}
