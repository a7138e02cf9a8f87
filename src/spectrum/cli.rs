//! `gradscope spectrum`: its flags, their validation, and the run.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::output::{ExampleOut, SpectrumFormat, SpectrumOutput, table};
use super::device::{self, SpectrumTolerance, measure_gpu};
use super::{Chain, measure, predict};
use crate::backend::BackendChoice;
use crate::cli::NetworkArgs;
use crate::error::{Error, Result};
use crate::export;

/// The singular values of the input–output Jacobian J_x = ∂a^L/∂a^0 (or ∂z^L/∂z^l with
/// --from-layer), per example, exact in the log domain at any depth.
#[derive(Debug, Args)]
pub struct SpectrumArgs {
    #[command(flatten)]
    pub net: NetworkArgs,
    /// How many examples of the batch (the first K) to take the Jacobian at.
    #[arg(long, value_name = "K", default_value_t = 3, help_heading = "Spectrum")]
    pub examples: usize,
    /// ∂z^L/∂z^l instead of J_x, for 1 ≤ l < L.
    #[arg(long, value_name = "l", help_heading = "Spectrum")]
    pub from_layer: Option<usize>,
    /// Report only the top k and bottom k singular values (all are computed: the bottom
    /// ones need every direction).
    #[arg(long, value_name = "k", help_heading = "Spectrum")]
    pub top: Option<usize>,
    /// Also check Σ_i log10 s_i against Σ_l (log10 |det W^l| + Σ_i log10 |σ′(z^l_i)|), which
    /// holds exactly for square layers (one LU per layer; exit code 1 beyond 1e-9 relative,
    /// 1e-6 with --backend gpu).
    #[arg(long, help_heading = "Spectrum")]
    pub det_check: bool,
    /// cpu (the f64 reference), or gpu: the layer products (the O(n²k) part) in f32 on the
    /// device; the forward pass, the QR after each layer and the final SVD on the host in
    /// f64. auto (the default) is the CPU here: the host's QR is a large part of the work
    /// either way.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, hide_possible_values = true, help_heading = "Output")]
    pub backend: BackendChoice,
    /// GPU adapter to use: a case-insensitive substring of its name (see `gradscope
    /// devices`); with --backend auto, naming one runs on it.
    #[arg(long, value_name = "NAME", help_heading = "Output")]
    pub adapter: Option<String>,
    /// With --backend gpu: also run the f64 CPU engine and compare every log10 s_i within
    /// the stated tolerance (exit code 1 on a failure).
    #[arg(long, help_heading = "Output")]
    pub check: bool,
    /// Write log10_singular_values per example to FILE.json, FILE.csv (long format) or
    /// FILE.npy (K × m float64, −inf for exact zeros).
    #[arg(long, short = 'o', value_name = "FILE", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Also draw a histogram of log10 s (all examples) to FILE.svg or FILE.png.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub plot: Option<PathBuf>,
}

/// Runs `gradscope spectrum`.
///
/// # Errors
/// Bad flags (exit code 2), a failed `--det-check` ([`Error::CheckFailed`], exit code 1).
pub fn run_spectrum(a: SpectrumArgs) -> Result<()> {
    // auto is the CPU here (README, "The spectrum on the GPU"), unless an adapter is named.
    let on_gpu = a.backend == BackendChoice::Gpu || (a.backend == BackendChoice::Auto && a.adapter.is_some());
    if a.check && !on_gpu {
        return Err(Error::arg("--check", "compares the GPU spectrum with the CPU reference; add --backend gpu"));
    }
    if a.backend == BackendChoice::Cpu && a.adapter.is_some() {
        return Err(Error::arg("--adapter", "names a GPU adapter, but --backend cpu was asked for"));
    }
    let (mut cfg, stored) = a.net.request().validate()?;
    let big_l = cfg.widths.len() - 1;
    let chain = match a.from_layer {
        None => Chain::InputOutput,
        Some(l) if l >= 1 && l < big_l => Chain::FromLayer(l),
        Some(l) => return Err(Error::arg("--from-layer", format!("must be in 1..={} (the network has L = {big_l} layers; --from-layer l takes ∂z^L/∂z^l), got {l}", big_l - 1))),
    };
    let count = cfg.widths[big_l].min(cfg.widths[chain.start()]);
    if let Some(k) = a.top {
        if k == 0 || k > count {
            return Err(Error::arg("--top", format!("must be in 1..={count} (the Jacobian has min(n_L, n_{}) = {count} singular values), got {k}", chain.start())));
        }
    }
    let format = match &a.out {
        Some(p) => {
            let f = SpectrumFormat::from_path(p)?;
            export::check_writable(p, "--out")?;
            Some(f)
        }
        None => None,
    };
    if let Some(p) = &a.plot {
        crate::plot::Format::from_path(p)?;
        export::check_writable(p, "--plot")?;
    }
    if a.examples == 0 {
        return Err(Error::arg("--examples", "must be ≥ 1"));
    }
    if a.examples > cfg.batch && !matches!(cfg.input_spec, crate::model::InputSpec::File(_)) {
        cfg.batch = a.examples;
    }
    let t0 = Instant::now();
    let problem = cfg.problem(stored)?;
    let (spectra, gpu) = if on_gpu {
        let g = measure_gpu(a.adapter.clone(), &problem, a.examples, chain, &[big_l], a.det_check)?;
        (g.spectra, Some((g.device, g.split)))
    } else {
        (measure(&problem, a.examples, chain, &[big_l], a.det_check)?, None)
    };
    let seconds = t0.elapsed().as_secs_f64();
    let engine = match &gpu {
        Some((device, split)) => format!(
            "backend gpu ({device}), {seconds:.2} s: device {:.2} s (layer products, f32, with their transfers), host {:.2} s (forward pass, QR and SVD, f64)",
            split.device_seconds, split.host_seconds
        ),
        None => format!("backend cpu (f64), {seconds:.2} s"),
    };
    let d = &spectra[0];
    let chain_name = match chain {
        Chain::InputOutput => "J_x = ∂a^L/∂a^0".to_string(),
        Chain::FromLayer(l) => format!("∂z^L/∂z^{l}"),
    };
    println!(
        "gradscope spectrum: {chain_name}, {}, widths {}, init {}, {} example(s), seed {}; {engine}; values are 10^log10",
        cfg.activation,
        short_widths(&cfg.widths),
        cfg.init,
        d.examples.len(),
        cfg.seed
    );
    let pred = predict::predict(&problem, chain, big_l);
    print!("{}", table(d, &pred));
    let mut check_failed = None;
    if a.check {
        let t1 = Instant::now();
        let cpu = measure(&problem, a.examples, chain, &[big_l], false)?;
        let tol = SpectrumTolerance::f32_vs_f64();
        let c = device::compare(d, &cpu[0], big_l - chain.start(), &tol);
        println!(
            "check against the f64 CPU engine ({:.2} s): |Δlog10 s_i| ≤ {:e} + {:e}·layers decades (README, \"The spectrum on the GPU\")\n{}",
            t1.elapsed().as_secs_f64(),
            tol.base,
            tol.per_layer,
            c.summary(10)
        );
        if !c.passed() {
            check_failed = Some(format!("{} singular value(s) differ from the CPU engine's beyond the tolerance", c.mismatches.len()));
        }
    }
    // The identity holds to rounding in f64; the GPU's f32 products earn more.
    let det_tol = if gpu.is_some() { device::GPU_DET_RTOL } else { 1e-9 };
    let mut det_failed = None;
    if let Some(want) = &d.log10_abs_det {
        for (e, w) in d.examples.iter().zip(want) {
            let got: f64 = e.log10_singular_values.iter().sum();
            // Both −∞ (an exact zero singular value, e.g. a dead relu unit): the identity holds.
            let rel = if got == *w { 0.0 } else { ((got - w) / w.abs().max(1.0)).abs() };
            println!("det check, example {}: Σ log10 s_i = {got:.9}, Σ_l (log10|det W^l| + Σ log10|σ′|) = {w:.9}, relative difference {rel:.1e}", e.example);
            if !(rel <= det_tol) {
                det_failed = Some(e.example);
            }
        }
    }
    if let (Some(path), Some(f)) = (&a.out, format) {
        let out = SpectrumOutput {
            config: &cfg,
            chain: match chain {
                Chain::InputOutput => "input-output".into(),
                Chain::FromLayer(l) => format!("from-layer {l}"),
            },
            depth: big_l,
            backend: if gpu.is_some() { "gpu" } else { "cpu" },
            version: env!("CARGO_PKG_VERSION"),
            seconds,
            top: a.top,
            examples: d.examples.iter().map(|e| ExampleOut::new(e, a.top)).collect(),
            prediction: pred.as_ref().ok().cloned(),
            prediction_unavailable: pred.as_ref().err().cloned(),
        };
        export::write_atomic(path, &f.render(&out)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &a.plot {
        let title = format!("{chain_name}: {}, widths {}, init {}, seed {}", cfg.activation, short_widths(&cfg.widths), cfg.init, cfg.seed);
        super::plot::histogram(d, pred.as_ref().ok(), &title, path)?;
        println!("wrote {}", path.display());
    }
    if let Some(x) = det_failed {
        return Err(Error::CheckFailed(format!("the determinant identity fails beyond {det_tol:e} relative for example {x}")));
    }
    if let Some(m) = check_failed {
        return Err(Error::CheckFailed(m));
    }
    Ok(())
}

fn short_widths(w: &[usize]) -> String {
    if w.iter().all(|&n| n == w[0]) {
        format!("{} × depth {}", w[0], w.len() - 1)
    } else if w.len() <= 8 {
        w.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
    } else {
        format!("{},{},…,{} ({} layers)", w[0], w[1], w[w.len() - 1], w.len() - 1)
    }
}
