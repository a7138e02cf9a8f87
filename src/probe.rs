//! `gradscope probe`: a validated configuration, the problem it describes, and its run.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::cpu::{CpuBackend, check_memory};
use crate::error::{Error, Result};
use crate::model::checkpoint::{WeightsRead, read_weights};
use crate::model::{Activation, Cost, Init, InputSpec, Network, Params, Problem, TargetSpec};

/// Everything that defines a probe, validated; serialised as the `config` of the outputs.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeConfig {
    /// n_0..n_L (from the weights file when `weights` is set).
    pub widths: Vec<usize>,
    pub activation: String,
    pub linear_output: bool,
    pub cost: Cost,
    /// The init's name, or "file" for `--weights`.
    pub init: String,
    /// σ_w and σ_w² (null where the scheme sets the variance per layer, e.g. xavier).
    pub sigma_w: Option<f64>,
    pub sigma_w2: Option<f64>,
    pub sigma_b: Option<f64>,
    pub sigma_b2: Option<f64>,
    pub inputs: String,
    pub targets: String,
    pub batch: usize,
    pub seed: u64,
    pub weights: Option<PathBuf>,
    /// What `weights` held and which of its keys were used.
    pub weights_read: Option<WeightsRead>,
    #[serde(skip)]
    pub act: Activation,
    #[serde(skip)]
    pub init_spec: Option<Init>,
    #[serde(skip)]
    pub input_spec: InputSpec,
    #[serde(skip)]
    pub target_spec: TargetSpec,
}

/// The pieces of a network the user gave, before validation.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    pub width: Option<usize>,
    pub depth: Option<usize>,
    pub input_width: Option<usize>,
    pub output_width: Option<usize>,
    pub widths: Option<Vec<usize>>,
    pub activation: String,
    pub linear_output: bool,
    pub cost: String,
    pub init: String,
    pub sigma_w: Option<f64>,
    pub sigma_w2: Option<f64>,
    pub sigma_b: Option<f64>,
    pub sigma_b2: Option<f64>,
    pub inputs: String,
    pub targets: String,
    pub batch: usize,
    pub seed: u64,
    pub weights: Option<PathBuf>,
    /// `--layers`: which linear layers of a state_dict `weights` file to use, in what order.
    pub layers: Option<String>,
}

fn variance(flag_sd: &str, sd: Option<f64>, flag_var: &str, var: Option<f64>) -> Result<Option<f64>> {
    match (sd, var) {
        (Some(_), Some(_)) => Err(Error::arg(flag_var, format!("give {flag_sd} or {flag_var}, not both"))),
        (Some(s), None) => {
            if !(s.is_finite() && s >= 0.0) {
                Err(Error::arg(flag_sd, format!("must be finite and ≥ 0, got {s}")))
            } else {
                Ok(Some(s * s))
            }
        }
        (None, v) => Ok(v),
    }
}

impl NetworkRequest {
    /// Validates the request into a [`ProbeConfig`]; a weights file is read for its widths.
    ///
    /// # Errors
    /// Any malformed or contradictory value, named by its flag.
    pub fn validate(&self) -> Result<(ProbeConfig, Option<Arc<crate::model::StoredParams>>)> {
        let act: Activation = self.activation.parse()?;
        let cost: Cost = self.cost.parse()?;
        let input_spec: InputSpec = self.inputs.parse()?;
        let target_spec: TargetSpec = self.targets.parse()?;
        let sw2 = variance("--sigma-w", self.sigma_w, "--sigma-w2", self.sigma_w2)?;
        let sb2 = variance("--sigma-b", self.sigma_b, "--sigma-b2", self.sigma_b2)?;
        if self.layers.is_some() && self.weights.is_none() {
            return Err(Error::arg("--layers", "selects layers of a --weights file; give --weights"));
        }
        let mut weights_read = None;
        let (widths, init_spec, stored) = if let Some(path) = &self.weights {
            for (given, flag) in [
                (self.width.is_some(), "--width"),
                (self.depth.is_some(), "--depth"),
                (self.widths.is_some(), "--widths"),
                (self.input_width.is_some(), "--input-width"),
                (self.output_width.is_some(), "--output-width"),
                (sw2.is_some(), "--sigma-w2"),
                (sb2.is_some(), "--sigma-b2"),
            ] {
                if given {
                    return Err(Error::arg(flag, "the network comes from --weights; drop this flag"));
                }
            }
            let (p, read) = read_weights(path, self.layers.as_deref())?;
            weights_read = Some(read);
            let mut widths = vec![p.w[0].ncols()];
            widths.extend(p.w.iter().map(|w| w.nrows()));
            (widths, None, Some(Arc::new(p)))
        } else {
            let widths = match (&self.widths, self.width, self.depth) {
                (Some(w), None, None) => {
                    if self.input_width.is_some() || self.output_width.is_some() {
                        return Err(Error::arg("--widths", "already names n_0 and n_L; drop --input-width/--output-width"));
                    }
                    w.clone()
                }
                (Some(_), _, _) => return Err(Error::arg("--widths", "give --widths or --width with --depth, not both")),
                (None, Some(n), Some(l)) => {
                    if l == 0 {
                        return Err(Error::arg("--depth", "must be ≥ 1"));
                    }
                    let mut w = vec![n; l + 1];
                    w[0] = self.input_width.unwrap_or(n);
                    w[l] = self.output_width.unwrap_or(n);
                    w
                }
                (None, None, _) => return Err(Error::arg("--width", "missing: give --width N --depth L, or --widths n0,n1,…,nL")),
                (None, Some(_), None) => return Err(Error::arg("--depth", "missing: give --width N --depth L, or --widths n0,n1,…,nL")),
            };
            let kind = self.init.parse()?;
            (widths, Some(Init::new(kind, sw2, sb2)?), None)
        };
        if widths.len() < 2 {
            return Err(Error::arg("--widths", "needs at least two widths (n_0 and n_L)"));
        }
        if let Some(i) = widths.iter().position(|&n| n == 0) {
            return Err(Error::arg(if self.widths.is_some() { "--widths" } else { "--width" }, format!("n_{i} is 0; widths must be ≥ 1")));
        }
        if self.batch == 0 {
            return Err(Error::arg("--batch", "must be ≥ 1"));
        }
        let (sigma_w2, sigma_b2) = match &init_spec {
            Some(i) => (i.sigma_w2, Some(i.sigma_b2)),
            None => (None, None),
        };
        let cfg = ProbeConfig {
            widths,
            activation: act.to_string(),
            linear_output: self.linear_output,
            cost,
            init: init_spec.map(|i| i.kind.to_string()).unwrap_or_else(|| "file".into()),
            sigma_w: sigma_w2.map(f64::sqrt),
            sigma_w2,
            sigma_b: sigma_b2.map(f64::sqrt),
            sigma_b2,
            inputs: input_spec.to_string(),
            targets: target_spec.to_string(),
            batch: self.batch,
            seed: self.seed,
            weights: self.weights.clone(),
            weights_read,
            act,
            init_spec,
            input_spec,
            target_spec,
        };
        Ok((cfg, stored))
    }
}

impl ProbeConfig {
    /// Builds the network and its data, checking memory before anything large is allocated.
    ///
    /// # Errors
    /// Data files that do not fit the network, or a size beyond the memory available.
    pub fn problem(&mut self, stored: Option<Arc<crate::model::StoredParams>>) -> Result<Problem> {
        let params = match (&stored, &self.init_spec) {
            (Some(p), _) => Params::Stored(p.clone()),
            (None, Some(init)) => Params::Generated { init: *init, seed: self.seed },
            (None, None) => return Err(Error::Internal("no parameter source".into())),
        };
        let net = Network::new(self.widths.clone(), self.act, self.linear_output, self.cost, params)?;
        let n0 = self.widths[0];
        let nl = *self.widths.last().unwrap();
        // A batch from files sets B; otherwise --batch does.
        let inputs = match &self.input_spec {
            InputSpec::File(_) => self.input_spec.materialise(self.seed, 0, n0)?,
            spec => {
                let need = (self.batch as u128 * (n0 + nl) as u128 * 8).min(u64::MAX as u128) as u64;
                check_memory(need, "the inputs and targets", "lower --batch or the widths")?;
                spec.materialise(self.seed, self.batch, n0)?
            }
        };
        self.batch = inputs.nrows();
        check_memory(CpuBackend::default().memory_needed(&self.widths, self.batch, stored.is_none()), "this probe", "lower --batch, --width or --depth")?;
        let targets = match &self.target_spec {
            TargetSpec::File(_) => self.target_spec.materialise(self.seed, 0, nl)?,
            spec => spec.materialise(self.seed, self.batch, nl)?,
        };
        Problem::new(net, inputs, targets)
    }
}

/// The mean-field prediction beside a probe's measurement (docs/THEORY.md): the predicted
/// per-layer `log10_grad_b_rms` and the fitted per-layer log10 ratio ‖δ^l‖/‖δ^{l+1}‖ of
/// both profiles over the same layers (the top layer is left out of the fit: the output
/// error sets it, not the per-layer factor χ₁).
#[derive(Debug, Clone, Serialize)]
pub struct MeanFieldSummary {
    /// Predicted log10 grad_b_rms for l = 1..L; None where the theory does not cover the
    /// network (then `unavailable` says why).
    pub log10_grad_b_rms_predicted: Option<Vec<f64>>,
    pub unavailable: Option<String>,
    /// Layers of the fit, inclusive.
    pub fit_from: usize,
    pub fit_to: usize,
    /// −slope of the measured log10 grad_b_rms against l (decades per layer).
    pub fitted_log10_ratio_measured: Option<f64>,
    /// The same for the prediction (½ log10 χ₁ at equal widths).
    pub fitted_log10_ratio_predicted: Option<f64>,
    /// The forward signal's theory per layer (l = 1..L), placed in each layer's row.
    #[serde(skip)]
    pub log10_q_predicted: Option<Vec<f64>>,
    #[serde(skip)]
    pub c_predicted: Option<Vec<f64>>,
    /// c* and ξ_c of the top hidden layer's correlation map (docs/THEORY.md §6).
    pub c_star: Option<f64>,
    pub xi_c: Option<f64>,
    /// ξ_c fitted to the measured `c` profile, and why there is none where there is none.
    pub xi_c_measured: Option<f64>,
    pub xi_c_measured_unavailable: Option<String>,
}

/// The correlation map of the top hidden layer (layer L−1 → L, or layer 1 for L = 1) with
/// its fixed point and depth scale, where the theory has one.
fn top_map(p: &Problem) -> Result<(f64, f64)> {
    let vars = crate::theory::predict::layer_variances(&p.net);
    let l = p.net.depth().max(2) - 1;
    let (w, b) = vars[l.min(vars.len() - 1)];
    let mf = crate::theory::meanfield::MeanField::new(p.net.activation_at(l), w, b)?;
    Ok((mf.c_star()?, mf.xi_c()?))
}

/// `xi_c_measured` of a measured profile against the theory's c*, with the noise floor of
/// the narrowest hidden layer (`theory::signal::c_noise`).
fn fit_xi_c(p: &Problem, r: &crate::stats::Report, c_star: Option<f64>) -> std::result::Result<f64, String> {
    if let Some(why) = r.signal_unmeasured {
        return Err(why.into());
    }
    let c_star = c_star.ok_or("no c* from the theory to fit against")?;
    let n = p.net.widths[1..].iter().copied().min().unwrap_or(1);
    let c: Vec<f64> = r.signal.iter().map(|s| s.c).collect();
    crate::theory::signal::xi_c_measured(&c, c_star, crate::theory::signal::c_noise(n)).map(|f| f.xi_c_measured).map_err(|e| e.to_string())
}

impl MeanFieldSummary {
    pub fn new(p: &Problem, r: &crate::stats::Report) -> MeanFieldSummary {
        let big_l = r.layers.len();
        let (fit_from, fit_to) = (1, if big_l >= 3 { big_l - 1 } else { big_l });
        let (pred, unavailable) = match crate::theory::predicted_log10_grad_b_rms(p) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let (c_star, xi_c) = top_map(p).map_or((None, None), |(c, x)| (Some(c), Some(x)));
        let xi_fit = fit_xi_c(p, r, c_star);
        MeanFieldSummary {
            log10_q_predicted: crate::theory::signal::log10_q_predicted(p).ok(),
            c_predicted: crate::theory::signal::c_predicted(p).ok(),
            c_star,
            xi_c,
            xi_c_measured: xi_fit.as_ref().ok().copied(),
            xi_c_measured_unavailable: xi_fit.err(),
            fitted_log10_ratio_measured: crate::theory::fitted_log10_ratio(r, fit_from, fit_to),
            fitted_log10_ratio_predicted: pred.as_deref().and_then(|v| crate::theory::predict::fitted_log10_ratio_of(v, fit_from, fit_to)),
            log10_grad_b_rms_predicted: pred,
            unavailable,
            fit_from,
            fit_to,
        }
    }

    /// One line for the terminal.
    pub fn line(&self) -> String {
        match (&self.unavailable, self.fitted_log10_ratio_measured, self.fitted_log10_ratio_predicted) {
            (Some(why), m, _) => format!(
                "mean field: unavailable ({why}); measured ‖δ^l‖/‖δ^(l+1)‖ = {} per layer",
                m.map(|v| crate::stats::sci(v)).unwrap_or_else(|| "n/a".into())
            ),
            (None, Some(m), Some(p)) => format!(
                "mean field (docs/THEORY.md): ‖δ^l‖/‖δ^(l+1)‖ fitted over layers {}..{}: measured {}, predicted {} per layer; layer 1 predicted {}",
                self.fit_from,
                self.fit_to,
                crate::stats::sci(m),
                crate::stats::sci(p),
                self.log10_grad_b_rms_predicted.as_ref().map(|v| crate::stats::sci(v[0])).unwrap_or_default()
            ),
            _ => "mean field: too few layers to fit a per-layer ratio".into(),
        }
    }

    /// One line on the correlation depth scale, theory beside measurement.
    pub fn xi_line(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
        let measured = match (&self.xi_c_measured, &self.xi_c_measured_unavailable) {
            (Some(v), _) => format!("{v:.2}"),
            (None, Some(why)) => format!("n/a ({why})"),
            (None, None) => "n/a".into(),
        };
        format!("forward signal: c* = {}, ξ_c = {} predicted, xi_c_measured = {measured} (trainable to ≈ 6ξ_c layers)", f(self.c_star), f(self.xi_c))
    }

    /// The predicted `log10_q` and `c` of layer l (1-based), NaN where there is none.
    pub fn signal_predicted(&self, l: usize) -> (f64, f64) {
        let at = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| v.get(l - 1).copied()).unwrap_or(f64::NAN);
        (at(&self.log10_q_predicted), at(&self.c_predicted))
    }
}
