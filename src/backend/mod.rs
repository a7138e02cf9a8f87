//! Backends: the f64 CPU reference (always compiled) and the wgpu GPU engine, the
//! [`Backend`] trait both implement, and what they share: the depth plan ([`plan`]), the
//! host-side assembly of the statistics (`assemble`) and the spectral-norm cache ([`norms`]).

pub(crate) mod assemble;
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod norms;
pub mod plan;
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

    /// The engine as the trait both implement.
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Engine::Cpu(c) => c,
            #[cfg(feature = "gpu")]
            Engine::Gpu(g) => &**g,
        }
    }

    /// "cpu" or "gpu".
    pub fn name(&self) -> &'static str {
        self.backend().name()
    }

    /// Every per-layer statistic of docs/MATH.md for `p`.
    pub fn probe(&self, p: &Problem) -> Result<Report> {
        self.backend().probe(p)
    }

    /// The reports of the prefixes of `p.net` of each depth in `depths` (ascending,
    /// deduplicated), from one forward and one stacked backward pass
    /// ([`Backend::probe_depths`]).
    pub fn probe_depths(&self, p: &Problem, depths: &[usize]) -> Result<Vec<Report>> {
        self.backend().probe_depths(p, depths)
    }

    /// True when [`Engine::probe_depths_many`] runs networks side by side (the GPU).
    pub fn batches_networks(&self) -> bool {
        self.backend().batches_networks()
    }

    /// [`Engine::probe_depths`] of several networks, one list of reports per network: on the
    /// GPU, networks of equal shape share every dispatch; on the CPU, one after the other.
    pub fn probe_depths_many(&self, ps: &[&Problem], depths: &[usize]) -> Result<Vec<Vec<Report>>> {
        self.backend().probe_depths_many(ps, depths)
    }

    /// The device the results come from, as the reports name it.
    pub fn device_name(&self) -> String {
        self.backend().device_name()
    }
}

/// What every engine offers: the statistics of several depths and networks, the memory a
/// probe needs, and the device the numbers come from. Both engines measure per-layer sums
/// on their device and share the plan and the assembly, so their reports differ only by
/// what the devices compute (f64 against f32).
pub trait Backend {
    /// "cpu" or "gpu", as the reports' `backend` says.
    fn name(&self) -> &'static str;

    /// The device the results come from, as the reports name it.
    fn device_name(&self) -> String;

    /// The reports of the prefixes of `p.net` of each depth in `depths` (sorted and
    /// deduplicated), from one forward and one stacked backward pass.
    ///
    /// # Errors
    /// A depth outside 1..=L, a linear output layer with several depths, unequal output
    /// widths, a job that does not fit the memory or the device, or a device failure.
    fn probe_depths(&self, p: &Problem, depths: &[usize]) -> Result<Vec<Report>>;

    /// Every per-layer statistic of docs/MATH.md for `p`: the one-depth case.
    ///
    /// # Errors
    /// As [`Backend::probe_depths`].
    fn probe(&self, p: &Problem) -> Result<Report> {
        let mut v = self.probe_depths(p, &[p.net.depth()])?;
        v.pop().ok_or_else(|| crate::Error::Internal("one depth, one report".into()))
    }

    /// [`Backend::probe_depths`] of several networks, one list of reports per network.
    ///
    /// # Errors
    /// As [`Backend::probe_depths`].
    fn probe_depths_many(&self, ps: &[&Problem], depths: &[usize]) -> Result<Vec<Vec<Report>>> {
        ps.iter().map(|p| self.probe_depths(p, depths)).collect()
    }

    /// True when [`Backend::probe_depths_many`] runs networks side by side.
    fn batches_networks(&self) -> bool {
        false
    }

    /// Bytes a probe of `p` at `depths` holds at its peak (host memory on the CPU, device
    /// memory on the GPU).
    ///
    /// # Errors
    /// Invalid depths, or (GPU) a job that cannot fit the device at all.
    fn memory_needed(&self, p: &Problem, depths: &[usize]) -> Result<u64>;
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device_name(&self) -> String {
        CpuBackend::device_name()
    }

    fn probe_depths(&self, p: &Problem, depths: &[usize]) -> Result<Vec<Report>> {
        CpuBackend::probe_depths(self, p, depths)
    }

    fn memory_needed(&self, p: &Problem, depths: &[usize]) -> Result<u64> {
        let ds = plan::validate_depths(&p.net, depths)?;
        Ok(self.bytes_for_depths(p, &ds))
    }
}
