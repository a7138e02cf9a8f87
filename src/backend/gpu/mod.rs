//! The wgpu compute backend: the statistics of docs/MATH.md in f32 WGSL kernels on any Vulkan,
//! Metal or DX12 adapter, cross-checked against the f64 CPU reference ([`crate::check`]).
//!
//! Device choice follows wgpu's conventions: `WGPU_BACKEND` restricts the APIs searched,
//! `WGPU_ADAPTER_NAME` (or [`GpuOptions::adapter`]) picks an adapter by a case-insensitive
//! substring of its name. Software adapters (Mesa's lavapipe) are used only when asked for.

mod buffers;
mod context;
mod norms;
pub mod params;
mod probe;
mod recorder;
mod spectrum;
pub mod train;

pub use context::{Context, Kernel, MatmulPath, MAX_NETS, PARAM_SLOT};
pub use params::{Family, MatmulParams, ParamBlock, PointwiseParams, ReduceParams, SpectralParams, WeightsParams};
pub use recorder::{DeviceTimes, Profile};
pub use norms::GPU_SPECTRAL_NORM_RTOL;
pub use probe::batch_mismatch;

use crate::error::{Error, Result};
use crate::model::Problem;
use crate::stats::Report;

/// How to choose the adapter.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter's name; `WGPU_ADAPTER_NAME` when `None`.
    pub adapter: Option<String>,
    /// Accept a software adapter (DeviceType::Cpu, e.g. lavapipe) when no hardware one exists.
    pub allow_software: bool,
}

/// One adapter as `gradscope devices` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterRow {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub is_software: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    /// The layer-product kernels a context on this adapter would use ([`MatmulPath::describe`]).
    pub matmul: String,
    /// `wgpu::Features::TIMESTAMP_QUERY`: `--profile` can give device time per kernel family.
    pub timestamp_query: bool,
}

/// `--profile`: set before the backend is opened, as `GRADSCOPE_PROFILE=1` would be.
static PROFILE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every [`GpuBackend`] opened from now on print its profile ([`Profile::line`]) after
/// each probe or sweep batch, as `GRADSCOPE_PROFILE=1` does (the command line's `--profile`).
pub fn set_profile(on: bool) {
    PROFILE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `--profile` was given, or `GRADSCOPE_PROFILE` is set to anything but empty or 0.
pub fn profile_requested() -> bool {
    PROFILE.load(std::sync::atomic::Ordering::Relaxed) || std::env::var("GRADSCOPE_PROFILE").is_ok_and(|v| !matches!(v.trim(), "" | "0"))
}

fn instance() -> (wgpu::Instance, wgpu::Backends) {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = desc.backends;
    (wgpu::Instance::new(desc), backends)
}

fn adapters() -> Vec<wgpu::Adapter> {
    let (inst, backends) = instance();
    pollster::block_on(inst.enumerate_adapters(backends))
}

fn row(a: &wgpu::Adapter) -> AdapterRow {
    let i = a.get_info();
    let l = a.limits();
    AdapterRow {
        name: i.name.clone(),
        backend: format!("{:?}", i.backend),
        device_type: format!("{:?}", i.device_type),
        driver: i.driver.clone(),
        driver_info: i.driver_info.clone(),
        is_software: i.device_type == wgpu::DeviceType::Cpu,
        max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
        max_buffer_size: l.max_buffer_size,
        max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
        max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
        matmul: match (MatmulPath::choose(i.device_type), context::tiling_for(&l)) {
            (Ok(path), Some(t)) => path.describe(t),
            (Err(e), _) => e.to_string(),
            (_, None) => "none (workgroup limits too small)".into(),
        },
        timestamp_query: a.features().contains(wgpu::Features::TIMESTAMP_QUERY),
    }
}

/// Every adapter wgpu can see (respecting `WGPU_BACKEND`), for `gradscope devices`.
pub fn list_adapters() -> Vec<AdapterRow> {
    adapters().iter().map(row).collect()
}

/// True when some adapter is real hardware (not a software rasteriser).
pub fn hardware_adapter_available() -> bool {
    adapters().iter().any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The GPU backend: a device with every pipeline built.
pub struct GpuBackend {
    ctx: Context,
    /// Device bytes the probe may spend keeping every layer's activations; beyond it, it
    /// keeps √L checkpoints and recomputes segments (memory B·N·√L).
    pub keep_budget: u64,
    /// Spectral norms of generated (Philox-drawn) weights by Lanczos on the device
    /// (shaders/spectral.wgsl, to [`GPU_SPECTRAL_NORM_RTOL`]) when true; by the CPU
    /// backend's f64 Lanczos on the host's cores otherwise. Orthogonal and stored weights
    /// are always normed on the host. Default: on the device for hardware adapters; on the
    /// host for software ones (on lavapipe the host's f64 Lanczos is several times faster);
    /// the environment variable `GRADSCOPE_GPU_NORMS=device|host` overrides it.
    pub device_norms: bool,
    /// The cache of log2 ‖G‖₂ per (seed, layer, shape), shared across the probes of one
    /// backend (e.g. a sweep's groups), and the host's Lanczos.
    norms: crate::backend::norms::NormCache,
    /// `GRADSCOPE_PROFILE=1` or `--profile` ([`set_profile`]): print [`Profile::line`] to
    /// stderr after every probe, with device times per kernel family where the adapter has
    /// timestamp queries.
    pub print_profile: bool,
}

impl GpuBackend {
    /// Opens the adapter `opts` asks for (or the best hardware one).
    ///
    /// # Errors
    /// [`Error::Device`] with a one-line reason: no adapter, no adapter matching the name,
    /// only a software adapter without `allow_software`, or the device failing to open.
    pub fn new(opts: &GpuOptions) -> Result<GpuBackend> {
        let all = adapters();
        if all.is_empty() {
            return Err(Error::Device(
                "no GPU adapter found (no Vulkan, Metal or DX12 driver; on Linux without a GPU, Mesa's lavapipe provides one: apt-get install mesa-vulkan-drivers)".into(),
            ));
        }
        let wanted = opts.adapter.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok()).filter(|s| !s.trim().is_empty());
        let chosen = match &wanted {
            Some(name) => {
                let needle = name.to_lowercase();
                all.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&needle)).ok_or_else(|| {
                    let names: Vec<String> = adapters().iter().map(|a| a.get_info().name).collect();
                    Error::Device(format!("no GPU adapter matches '{name}' (available: {})", names.join("; ")))
                })?
            }
            None => {
                let mut all = all;
                all.sort_by_key(|a| rank(a.get_info().device_type));
                let best = all.into_iter().next().unwrap();
                if best.get_info().device_type == wgpu::DeviceType::Cpu && !opts.allow_software {
                    return Err(Error::Device(format!(
                        "only a software GPU adapter is available ('{}'), far slower than the CPU backend; use --backend cpu, or allow it explicitly",
                        best.get_info().name
                    )));
                }
                best
            }
        };
        let device_norms = match std::env::var("GRADSCOPE_GPU_NORMS").as_deref() {
            Err(_) | Ok("") => chosen.get_info().device_type != wgpu::DeviceType::Cpu,
            Ok("device") => true,
            Ok("host") => false,
            Ok(other) => {
                return Err(Error::InvalidArgument { flag: "GRADSCOPE_GPU_NORMS".into(), message: format!("'{other}' is neither 'device' nor 'host'") });
            }
        };
        let print_profile = profile_requested();
        let ctx = Context::with_profiling(&chosen, print_profile)?;
        Ok(GpuBackend { ctx, keep_budget: buffers::KEEP_BUDGET, device_norms, norms: Default::default(), print_profile })
    }

    /// The adapter's name with its API, e.g. "NVIDIA H100 (Vulkan, f32)".
    pub fn device_name(&self) -> String {
        format!("{} ({:?}, f32)", self.ctx.info.name, self.ctx.info.backend)
    }

    /// True on a software adapter (DeviceType::Cpu, e.g. lavapipe).
    pub fn is_software(&self) -> bool {
        self.ctx.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Switches the kernels of the layer products (tests and benchmarks; the default is
    /// [`MatmulPath::default_for`] the adapter, or `GRADSCOPE_MATMUL`).
    pub fn set_matmul(&mut self, path: MatmulPath) {
        self.ctx.matmul = path;
    }

    /// The device context (for tests and benchmarks that drive kernels directly).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Every per-layer statistic of docs/MATH.md for `p`, computed on the GPU; the report's
    /// backend is "gpu".
    ///
    /// # Errors
    /// [`Error::Device`] when the job cannot fit the device (said before any work starts,
    /// with what would fit) or the device fails mid-run (with the kernel and layers).
    pub fn probe(&self, p: &Problem) -> Result<Report> {
        self.profiled("probe", p.net.depth(), || probe::probe(&self.ctx, p, self.device_name(), self.opts()))
    }

    /// What the device was asked to do since the backend was opened (submissions, waits,
    /// dispatches, bytes read back): the structural counts of the submission model.
    pub fn profile(&self) -> Profile {
        self.ctx.profile()
    }

    /// Runs `f`, printing the device's counts for it when [`GpuBackend::print_profile`].
    fn profiled<T>(&self, what: &str, layers: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let before = self.ctx.profile();
        let out = f();
        if self.print_profile {
            eprintln!("gradscope: {}", self.ctx.profile().since(&before).line(what, layers));
        }
        out
    }

    /// The statistics of the networks of depth `depths[k]` that are prefixes of `p.net`
    /// (same seed, so the same first layers), from one forward pass to the deepest depth and
    /// one backward pass in which the δ's of every depth ≥ l are stacked as extra rows; the
    /// contract of [`crate::backend::CpuBackend::probe_depths`] (same errors, one report per
    /// distinct depth in ascending order), and each report equals [`GpuBackend::probe`] of
    /// that depth ([`GpuBackend::probe`] is the one-depth case).
    ///
    /// # Errors
    /// A depth outside 1..=L, a linear output layer with more than one depth, unequal output
    /// widths, a job that cannot fit the device, or a device failure.
    pub fn probe_depths(&self, p: &Problem, depths: &[usize]) -> Result<Vec<Report>> {
        let top = depths.iter().copied().max().unwrap_or(0);
        self.profiled("probe of several depths", top, || probe::probe_depths(&self.ctx, p, depths, self.device_name(), self.opts()))
    }

    /// [`GpuBackend::probe_depths`] for several networks at once, one list of reports per
    /// network in order. The networks with generated (non-orthogonal) weights share every
    /// dispatch, up to [`MAX_NETS`] at a time (workgroup_id.z = network), when they have equal
    /// widths, batch, cost and output layer ([`batch_mismatch`]); activation, init, σ_w, σ_b,
    /// seed, inputs and targets may differ. The others run one at a time. Each network's
    /// reports equal its own [`GpuBackend::probe_depths`] bit for bit.
    ///
    /// # Errors
    /// As [`GpuBackend::probe_depths`].
    pub fn probe_depths_many(&self, ps: &[&Problem], depths: &[usize]) -> Result<Vec<Vec<Report>>> {
        let top = depths.iter().copied().max().unwrap_or(0);
        self.profiled(&format!("{} networks", ps.len()), top * ps.len(), || self.probe_depths_many_unprofiled(ps, depths))
    }

    fn probe_depths_many_unprofiled(&self, ps: &[&Problem], depths: &[usize]) -> Result<Vec<Vec<Report>>> {
        let drawn: Vec<usize> = (0..ps.len()).filter(|&i| ps[i].net.weights_are_streamable()).collect();
        let together: Vec<&Problem> = drawn.iter().map(|&i| ps[i]).collect();
        let mut out: Vec<Option<Vec<Report>>> = vec![None; ps.len()];
        if together.len() > 1 && batch_mismatch(&together).is_none() {
            let reports = probe::probe_depths_many(&self.ctx, &together, depths, self.device_name(), self.opts())?;
            for (&i, r) in drawn.iter().zip(reports) {
                out[i] = Some(r);
            }
        }
        for (i, slot) in out.iter_mut().enumerate() {
            if slot.is_none() {
                *slot = Some(probe::probe_depths(&self.ctx, ps[i], depths, self.device_name(), self.opts())?);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn opts(&self) -> probe::Opts<'_> {
        probe::Opts { keep_budget: self.keep_budget, norms: &self.norms, device_norms: self.device_norms }
    }

    /// The Jacobian's singular spectrum with the forward pass and the layer products on the
    /// device in f32 and the QR, T and SVD on the host in f64: the contract of
    /// [`crate::spectrum::measure`], with where the time went.
    ///
    /// # Errors
    /// As [`crate::spectrum::measure`]; a layer too wide for one buffer binding; a forward
    /// pass that leaves f32's range; a device failure.
    pub fn spectrum(&self, p: &Problem, examples: usize, chain: crate::spectrum::Chain, depths: &[usize], det_check: bool) -> Result<(Vec<crate::spectrum::DepthSpectrum>, crate::spectrum::SpectrumSplit)> {
        let top = depths.last().copied().unwrap_or(0);
        self.profiled("spectrum", top, || spectrum::spectrum(&self.ctx, p, examples, chain, depths, det_check))
    }

    /// log2 ‖W^l‖₂ for l = 1..=L (index 0 unused) of `p`'s network as a probe finds them:
    /// the device's Lanczos for generated weights when [`GpuBackend::device_norms`] is set
    /// (else, and for orthogonal or stored weights, the host's f64 Lanczos), through the cache.
    ///
    /// # Errors
    /// [`Error::Device`] when the device fails.
    pub fn log2_weight_norms(&self, p: &Problem) -> Result<Vec<f64>> {
        probe::log2_weight_norms(&self.ctx, p, self.opts())
    }

    /// Device bytes a probe of `p` at `depths` allocates (one pass of as many depths as one
    /// stacked buffer holds).
    ///
    /// # Errors
    /// Invalid depths, or a job that cannot fit the device at all.
    pub fn memory_needed(&self, p: &Problem, depths: &[usize]) -> Result<u64> {
        probe::memory_needed(&self.ctx, p, depths, self.keep_budget)
    }

    /// Philox4x32-10 words for the given counters under `seed`, computed by the shader (the
    /// bit-identity test against `crate::rng`).
    pub fn philox_words(&self, counters: &[[u32; 4]], seed: u64) -> Result<Vec<[u32; 4]>> {
        probe::philox_words(&self.ctx, counters, seed)
    }
}

impl crate::backend::Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn device_name(&self) -> String {
        GpuBackend::device_name(self)
    }

    fn probe(&self, p: &Problem) -> Result<Report> {
        GpuBackend::probe(self, p)
    }

    fn probe_depths(&self, p: &Problem, depths: &[usize]) -> Result<Vec<Report>> {
        GpuBackend::probe_depths(self, p, depths)
    }

    fn probe_depths_many(&self, ps: &[&Problem], depths: &[usize]) -> Result<Vec<Vec<Report>>> {
        GpuBackend::probe_depths_many(self, ps, depths)
    }

    fn batches_networks(&self) -> bool {
        true
    }

    fn memory_needed(&self, p: &Problem, depths: &[usize]) -> Result<u64> {
        GpuBackend::memory_needed(self, p, depths)
    }
}
