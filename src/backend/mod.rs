//! Backends: the f64 CPU reference (always compiled) and the wgpu GPU engine.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod shaders;

pub use cpu::CpuBackend;

#[cfg(not(feature = "gpu"))]
use crate::error::Error;
use crate::error::Result;
use crate::model::Problem;
use crate::stats::Report;

/// `--backend`: which engine computes the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// A hardware GPU if there is one, otherwise the CPU backend (never a software GPU:
    /// Mesa's lavapipe runs WGSL ~30× slower than the CPU backend runs f64).
    Auto,
    /// The f64 CPU reference backend.
    Cpu,
    /// The wgpu (f32) GPU backend; a software adapter is accepted when asked for by name.
    Gpu,
}

/// The engine a run uses, chosen once.
pub enum Engine {
    Cpu(CpuBackend),
    #[cfg(feature = "gpu")]
    Gpu(Box<gpu::GpuBackend>),
}

impl Engine {
    /// Chooses the engine and says why. `adapter` (or `WGPU_ADAPTER_NAME`) picks a GPU
    /// adapter by a substring of its name.
    ///
    /// # Errors
    /// `--backend gpu` in a build without GPU support, no adapter, or no adapter matching
    /// the name.
    pub fn select(choice: BackendChoice, adapter: Option<String>) -> Result<(Engine, String)> {
        match choice {
            BackendChoice::Cpu => Ok((Engine::Cpu(CpuBackend::default()), "--backend cpu".into())),
            #[cfg(feature = "gpu")]
            BackendChoice::Gpu => {
                let g = gpu::GpuBackend::new(&gpu::GpuOptions { adapter, allow_software: true })?;
                Ok((Engine::Gpu(Box::new(g)), "--backend gpu".into()))
            }
            #[cfg(not(feature = "gpu"))]
            BackendChoice::Gpu => {
                let _ = adapter;
                Err(Error::Device("--backend gpu: this gradscope was built without GPU support (cargo feature \"gpu\")".into()))
            }
            BackendChoice::Auto => Self::auto(adapter),
        }
    }

    #[cfg(feature = "gpu")]
    fn auto(adapter: Option<String>) -> Result<(Engine, String)> {
        let rows = gpu::list_adapters();
        let named = adapter.is_some() || std::env::var("WGPU_ADAPTER_NAME").is_ok_and(|s| !s.trim().is_empty());
        if named || rows.iter().any(|r| !r.is_software) {
            let g = gpu::GpuBackend::new(&gpu::GpuOptions { adapter, allow_software: named })?;
            if !g.is_software() {
                return Ok((Engine::Gpu(Box::new(g)), "auto: a hardware GPU is present".into()));
            }
            return Ok((Engine::Gpu(Box::new(g)), "auto: the adapter named was chosen".into()));
        }
        let why = match rows.first() {
            None => "auto: no GPU adapter found".to_string(),
            Some(r) => format!("auto: only a software GPU adapter ('{}'), slower than the CPU backend", r.name),
        };
        Ok((Engine::Cpu(CpuBackend::default()), why))
    }

    #[cfg(not(feature = "gpu"))]
    fn auto(_adapter: Option<String>) -> Result<(Engine, String)> {
        Ok((Engine::Cpu(CpuBackend::default()), "auto: built without GPU support".into()))
    }

    /// "cpu" or "gpu".
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Cpu(_) => "cpu",
            #[cfg(feature = "gpu")]
            Engine::Gpu(_) => "gpu",
        }
    }

    /// Every per-layer statistic of docs/MATH.md for `p`.
    pub fn probe(&self, p: &Problem) -> Result<Report> {
        match self {
            Engine::Cpu(c) => c.probe(p),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.probe(p),
        }
    }

    /// The reports of the prefixes of `p.net` of each depth in `depths` (ascending,
    /// deduplicated), from one forward and one stacked backward pass: see
    /// [`CpuBackend::probe_depths`] and `GpuBackend::probe_depths`.
    pub fn probe_depths(&self, p: &Problem, depths: &[usize]) -> Result<Vec<Report>> {
        match self {
            Engine::Cpu(c) => c.probe_depths(p, depths),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.probe_depths(p, depths),
        }
    }

    /// True when [`Engine::probe_depths_many`] runs networks side by side (the GPU).
    pub fn batches_networks(&self) -> bool {
        !matches!(self, Engine::Cpu(_))
    }

    /// [`Engine::probe_depths`] of several networks, one list of reports per network: on the
    /// GPU, networks of equal shape share every dispatch
    /// ([`gpu::GpuBackend::probe_depths_many`]); on the CPU, one after the other.
    pub fn probe_depths_many(&self, ps: &[&Problem], depths: &[usize]) -> Result<Vec<Vec<Report>>> {
        match self {
            Engine::Cpu(c) => ps.iter().map(|p| c.probe_depths(p, depths)).collect(),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.probe_depths_many(ps, depths),
        }
    }

    /// The device the results come from, as the reports name it.
    pub fn device_name(&self) -> String {
        match self {
            Engine::Cpu(_) => CpuBackend::device_name(),
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => g.device_name(),
        }
    }
}

/// The sorted, distinct depths of a multi-depth probe of `net`, checked: each in 1..=L, no
/// linear output layer with several depths, the same output width at every depth (shared
/// by both engines' `probe_depths`, so they refuse alike).
pub(crate) fn validate_depths(net: &crate::model::Network, depths: &[usize]) -> Result<Vec<usize>> {
    let big_l = net.depth();
    let mut ds: Vec<usize> = depths.to_vec();
    ds.sort_unstable();
    ds.dedup();
    if ds.is_empty() || ds[0] == 0 || *ds.last().unwrap() > big_l {
        return Err(crate::Error::arg("--depths", format!("depths must lie in 1..={big_l}")));
    }
    if net.linear_output && ds != [big_l] {
        return Err(crate::Error::arg("--linear-output", "a depth sweep shares hidden layers, which have no linear output"));
    }
    let n_top = *net.widths.last().unwrap();
    if ds.iter().any(|&d| net.widths[d] != n_top) {
        return Err(crate::Error::arg("--depths", "every swept depth needs the same output width"));
    }
    Ok(ds)
}
