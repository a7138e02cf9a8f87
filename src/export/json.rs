//! JSON: `{"config": …, "backend": …, "device": …, "version": …, "layers": [ {…}, … ]}`.

use serde::Serialize;

use super::{signal_fields, Exporter, RunInfo};
use crate::error::{Error, Result};
use crate::stats::Report;

pub struct JsonExporter;

#[derive(Serialize)]
struct Doc<'a, C: Serialize> {
    config: &'a C,
    backend: &'a str,
    device: &'a str,
    version: &'a str,
    seconds: f64,
    overflow_layer: Option<usize>,
    #[serde(serialize_with = "crate::stats::finite_or_null")]
    log10_cost: f64,
    mean_field: Option<MeanField<'a>>,
    /// Why the layers' `log10_q` and `c` are null, where the backend does not measure them.
    #[serde(skip_serializing_if = "Option::is_none")]
    signal_unmeasured: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anatomy: Option<&'a Vec<crate::theory::AnatomyRow>>,
    layers: Vec<serde_json::Value>,
}

/// The run's mean-field summary without the per-layer array (that goes into each layer as
/// `log10_grad_b_rms_predicted`).
#[derive(Serialize)]
struct MeanField<'a> {
    unavailable: &'a Option<String>,
    fit_from: usize,
    fit_to: usize,
    fitted_log10_ratio_measured: Option<f64>,
    fitted_log10_ratio_predicted: Option<f64>,
    c_star: Option<f64>,
    xi_c: Option<f64>,
    xi_c_measured: Option<f64>,
    xi_c_measured_unavailable: &'a Option<String>,
}

impl Exporter for JsonExporter {
    fn render<C: Serialize>(&self, r: &Report, info: &RunInfo<C>) -> Result<Vec<u8>> {
        let doc = Doc {
            config: &info.config,
            backend: &r.backend,
            device: &r.device,
            version: info.version,
            seconds: info.seconds,
            overflow_layer: r.overflow_layer,
            log10_cost: r.log10_cost,
            mean_field: info.mean_field.as_ref().map(|m| MeanField {
                unavailable: &m.unavailable,
                fit_from: m.fit_from,
                fit_to: m.fit_to,
                fitted_log10_ratio_measured: m.fitted_log10_ratio_measured.filter(|v| v.is_finite()),
                fitted_log10_ratio_predicted: m.fitted_log10_ratio_predicted.filter(|v| v.is_finite()),
                c_star: m.c_star.filter(|v| v.is_finite()),
                xi_c: m.xi_c.filter(|v| v.is_finite()),
                xi_c_measured: m.xi_c_measured.filter(|v| v.is_finite()),
                xi_c_measured_unavailable: &m.xi_c_measured_unavailable,
            }),
            signal_unmeasured: r.signal_unmeasured,
            anatomy: info.anatomy.as_ref(),
            layers: r
                .layers
                .iter()
                .map(|st| {
                    let mut v = serde_json::to_value(st).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
                    if let (Some(obj), Some(_)) = (v.as_object_mut(), &info.mean_field) {
                        let p = info.predicted(st.layer).filter(|x| x.is_finite());
                        obj.insert("log10_grad_b_rms_predicted".into(), p.map_or(serde_json::Value::Null, serde_json::Value::from));
                    }
                    if let Some(obj) = v.as_object_mut() {
                        for (k, x) in signal_fields(r, info, st.layer) {
                            obj.insert(k.into(), if x.is_finite() { serde_json::Value::from(x) } else { serde_json::Value::Null });
                        }
                    }
                    Ok(v)
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let mut v = serde_json::to_vec_pretty(&doc).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
        v.push(b'\n');
        Ok(v)
    }
}
