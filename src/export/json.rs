//! JSON: `{"config": …, "backend": …, "device": …, "version": …, "layers": [ {…}, … ]}`.

use serde::Serialize;

use super::{Exporter, RunInfo};
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
    layers: &'a [crate::stats::LayerStats],
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
            layers: &r.layers,
        };
        let mut v = serde_json::to_vec_pretty(&doc).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
        v.push(b'\n');
        Ok(v)
    }
}
