//! Device setup, separate from the work: one [`Context`] owns the device, the queue, every
//! pipeline and the error sink, built once; per-probe code only writes buffers, encodes,
//! submits and reads back.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::params::{MatmulParams, ParamBlock, PointwiseParams, ReduceParams, SpectralParams, WeightsParams};
use super::params::Family;
use super::recorder::{DeviceTimes, Profile};
use crate::backend::shaders::{self, Tiling};
use crate::error::{Error, Result};

/// Bytes of one dispatch's parameter slot: the dynamic offset must be a multiple of
/// `min_storage_buffer_offset_alignment`, which is at most 256 on every adapter.
///
/// The block is bound as a read-only *storage* buffer, not a uniform: Mesa's lavapipe
/// constant-folds uniform values that steer loops into the shader and recompiles it
/// whenever they change, i.e. on every layer (~2.5 ms a dispatch).
pub const PARAM_SLOT: u64 = 256;
/// Parameter slots per submission (one per dispatch and network).
pub const PARAM_SLOTS: usize = 16384;
/// Networks one dispatch may cover (workgroup_id.z), so a layer's dispatches always fit in
/// the slots left by `Recorder::full`.
pub const MAX_NETS: usize = 64;
/// The longest wait for one submission before the device is declared hung.
pub const WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);
/// WebGPU's cap on workgroups per dispatch dimension (adapters may allow more; we never ask).
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;
/// Multiply-adds in the first submission: about 0.5 s on a 2 GFLOP/s software adapter (and
/// far less on any real GPU); later submissions aim at [`SUBMIT_TARGET`].
pub const FIRST_WORK_PER_SUBMIT: f64 = 5e8;
/// The wall time a work-bound submission aims at, and the band it may fall in before the
/// work per submission is rescaled: long enough that the wait and readback are a small
/// part of it on any adapter, far under the OS watchdog (Windows TDR: 2 s).
pub const SUBMIT_TARGET: std::time::Duration = std::time::Duration::from_millis(50);
pub(super) const SUBMIT_BAND_MS: (f64, f64) = (20.0, 100.0);


pub const FLAG_SCALED: u32 = 1;
pub const FLAG_BIAS: u32 = 2;
pub const FLAG_DSIG: u32 = 4;
pub const FLAG_REC_NEXT: u32 = 8;
pub const FLAG_JOIN: u32 = 16;
pub const FLAG_TANGENT: u32 = 32;

/// Which kernels of shaders/matmul.wgsl run the layer products.
///
/// Both compute the same sums in f32, in different orders (agreement to ~1e-6 relative).
/// [`Context::new`] picks [`MatmulPath::default_for`] the adapter, unless
/// `GRADSCOPE_MATMUL=tiled|blocked` says otherwise; tests and benches may switch later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPath {
    /// `forward_tiled` / `backward_tiled`: operand tiles staged in workgroup memory, sized by
    /// the context's [`Tiling`] (from the adapter's limits).
    Tiled,
    /// `forward` / `backward`: a 4 × 4 register block per invocation, 64 × 16 outputs per
    /// workgroup, no workgroup memory or barriers.
    RegisterBlocked,
}

impl MatmulPath {
    /// Register-blocked on software adapters (`DeviceType::Cpu`, Mesa's lavapipe), tiled on
    /// every other.
    ///
    /// Why: on lavapipe workgroup memory is ordinary CPU memory that the CPU caches already
    /// hold the register-blocked kernel's repeated rows in, so staging tiles is extra copying,
    /// and each `workgroupBarrier` splits the shader into separately run pieces. Measured on
    /// the 2-core Xeon with lavapipe (LLVM 15), forward + backward pair (4·B·n² flops), both
    /// paths alternated in one process, medians of 4–9 rounds over three runs, with other
    /// jobs on the machine (load average 3–5), in GFLOP/s:
    /// ```text
    /// n × n weights, batch B    register-blocked    tiled 64×64×16
    /// 256 × 256, B = 64              4.8 – 6.0          2.7 – 3.3
    /// 1024 × 1024, B = 64            3.5 – 4.6          2.6 – 2.9
    /// ```
    /// Other tilings were no faster there (64×64×32, i.e. half the barriers: 2.9; 32×32×16:
    /// 2.5; 16×64×16: 2.3–2.5). `cargo bench --bench gpu` prints both paths on every shape.
    /// On a GPU the tiles divide global-memory traffic by the tile widths (64), which is what
    /// lets the products approach the FMA peak; that choice is not yet measured on hardware.
    pub fn default_for(device_type: wgpu::DeviceType) -> MatmulPath {
        if device_type == wgpu::DeviceType::Cpu { MatmulPath::RegisterBlocked } else { MatmulPath::Tiled }
    }

    /// The path for an adapter of `device_type`: `GRADSCOPE_MATMUL` if set, else
    /// [`MatmulPath::default_for`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a `GRADSCOPE_MATMUL` other than `tiled` or `blocked`.
    pub fn choose(device_type: wgpu::DeviceType) -> Result<MatmulPath> {
        Ok(MatmulPath::from_env()?.unwrap_or(MatmulPath::default_for(device_type)))
    }

    /// The path in words with its per-workgroup output block, e.g. "tiled 64×64×16"
    /// (rows × columns × inner per step) or "register-blocked".
    pub fn describe(self, tiling: Tiling) -> String {
        match self {
            MatmulPath::Tiled => format!("tiled {}×{}×{}", tiling.tile_m(), tiling.tile_n(), tiling.tile_k),
            MatmulPath::RegisterBlocked => "register-blocked".into(),
        }
    }

    /// `GRADSCOPE_MATMUL=tiled|blocked` (unset or empty: `None`).
    fn from_env() -> Result<Option<MatmulPath>> {
        match std::env::var("GRADSCOPE_MATMUL").unwrap_or_default().trim() {
            "" => Ok(None),
            "tiled" => Ok(Some(MatmulPath::Tiled)),
            "blocked" => Ok(Some(MatmulPath::RegisterBlocked)),
            other => Err(Error::arg("GRADSCOPE_MATMUL", format!("'{other}' is neither 'tiled' nor 'blocked'"))),
        }
    }
}

/// The largest [`Tiling`] within the adapter's workgroup limits (invocations, x and y sizes,
/// workgroup storage).
pub fn tiling_for(l: &wgpu::Limits) -> Option<Tiling> {
    Tiling::largest_within(
        l.max_compute_invocations_per_workgroup,
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_storage_size,
    )
}

/// How a binding is used: read-only storage or read-write storage (binding 0 is always the
/// parameter block).
#[derive(Clone, Copy)]
pub(super) enum Access {
    Read,
    ReadWrite,
}

/// One compute kernel of the family whose parameter block is `P`: its pipeline and
/// bind-group layout (binding numbers in order).
pub struct Kernel<P> {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub bindings: Vec<u32>,
    family: PhantomData<fn(P)>,
}

/// Everything a probe needs from the device, built once.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub params: wgpu::Buffer,
    pub draw_weights: Kernel<WeightsParams>,
    pub philox_words: Kernel<WeightsParams>,
    pub mm_forward: Kernel<MatmulParams>,
    pub mm_backward: Kernel<MatmulParams>,
    pub mm_forward_tiled: Kernel<MatmulParams>,
    pub mm_backward_tiled: Kernel<MatmulParams>,
    /// The path the probe's layer products take, and the tiled kernels' sizes.
    pub matmul: MatmulPath,
    pub tiling: Tiling,
    pub forward_post: Kernel<PointwiseParams>,
    pub backward_post: Kernel<PointwiseParams>,
    pub batch_mean: Kernel<ReduceParams>,
    pub gram: Kernel<ReduceParams>,
    /// The Lanczos kernels of shaders/spectral.wgsl.
    pub lz_rows: Kernel<SpectralParams>,
    pub lz_cols: Kernel<SpectralParams>,
    pub lz_dots: Kernel<SpectralParams>,
    pub lz_axpy: Kernel<SpectralParams>,
    pub lz_norm: Kernel<SpectralParams>,
    pub lz_next: Kernel<SpectralParams>,
    /// Uncaptured validation errors and device loss, in the order they arrived.
    errors: Arc<Mutex<Vec<String>>>,
    /// The counts of [`Profile`] and the work per submission learned so far.
    profile: Mutex<Profile>,
    /// The two MAP_READ buffers readbacks go through (one mapped by the host while the
    /// device copies into the other), grown as needed.
    staging: Mutex<[Option<wgpu::Buffer>; 2]>,
}

impl Context {
    /// Opens `adapter` with every limit it offers and builds all pipelines (no timestamp
    /// queries: [`Context::with_profiling`]).
    ///
    /// # Errors
    /// [`Error::Device`] when the device cannot be created or a shader fails to compile;
    /// [`Error::InvalidArgument`] for a `GRADSCOPE_MATMUL` other than `tiled` or `blocked`.
    pub fn new(adapter: &wgpu::Adapter) -> Result<Context> {
        Context::with_profiling(adapter, false)
    }

    /// [`Context::new`], and when `profile` is set and the adapter has
    /// `wgpu::Features::TIMESTAMP_QUERY`, with that feature, so that every recorder times its
    /// passes per kernel family ([`Profile::device_seconds`]). Only then: timestamps split the
    /// work into one pass per run of one family's dispatches, and may cost.
    ///
    /// # Errors
    /// As [`Context::new`].
    pub fn with_profiling(adapter: &wgpu::Adapter, profile: bool) -> Result<Context> {
        let info = adapter.get_info();
        let has_timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let device_times = match (profile, has_timestamps) {
            (false, _) => DeviceTimes::NotRequested,
            (true, false) => DeviceTimes::Unsupported,
            (true, true) => DeviceTimes::Measured,
        };
        let required_features = if device_times == DeviceTimes::Measured { wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() };
        // `required_limits` is exact: ask for what the adapter has, so jobs may use it all.
        let limits = adapter.limits();
        let matmul = MatmulPath::choose(info.device_type)?;
        let tiling = tiling_for(&limits).ok_or_else(|| Error::Device(format!("'{}' offers too little compute (workgroup limits) for any matmul tile", info.name)))?;
        let (device, queue, errors) = open_device(adapter, &info, &limits, required_features)?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let modules: Modules = shaders::modules()
            .into_iter()
            // The training kernels are built by the trainer, when a run asks for them.
            .filter(|m| m.label != Family::Train.label())
            .map(|m| (m.label, device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(m.label), source: wgpu::ShaderSource::Wgsl(m.source.into()) })))
            .collect();
        use Access::{Read as R, ReadWrite as W};
        let opts = wgpu::PipelineCompilationOptions::default();
        // Every tile entry is written before it is read: no zero-fill of workgroup memory.
        let tiled = wgpu::PipelineCompilationOptions { constants: &tiling.constants(), zero_initialize_workgroup_memory: false };
        // Each kernel's module is its parameter block's family: the types keep them paired.
        fn kernel<P: ParamBlock>(device: &wgpu::Device, modules: &Modules, name: &'static str, b: &[(u32, Access)], o: &wgpu::PipelineCompilationOptions) -> Kernel<P> {
            make_kernel(device, &modules[P::FAMILY.label()], name, b, o)
        }
        let k = |name, b: &[(u32, Access)]| kernel::<WeightsParams>(&device, &modules, name, b, &opts);
        let (draw_weights, philox_words) = (k("draw_weights", &[(1, W)]), k("philox_words", &[(2, R), (3, W)]));
        let fwd = [(1, R), (2, R), (3, R), (4, R), (5, W)];
        let bwd = [(1, R), (2, R), (5, W)];
        let k = |name, b: &[(u32, Access)], o: &wgpu::PipelineCompilationOptions| kernel::<MatmulParams>(&device, &modules, name, b, o);
        let (mm_forward, mm_backward) = (k("forward", &fwd, &opts), k("backward", &bwd, &opts));
        let (mm_forward_tiled, mm_backward_tiled) = (k("forward_tiled", &fwd, &tiled), k("backward_tiled", &bwd, &tiled));
        let k = |name, b: &[(u32, Access)]| kernel::<PointwiseParams>(&device, &modules, name, b, &opts);
        let forward_post = k("forward_post", &[(1, R), (2, W), (3, W), (4, R), (5, W), (6, W)]);
        let backward_post = k("backward_post", &[(1, R), (7, R), (8, W), (9, W), (6, W), (10, R), (11, R)]);
        let k = |name, b: &[(u32, Access)]| kernel::<ReduceParams>(&device, &modules, name, b, &opts);
        let (batch_mean, gram) = (k("batch_mean", &[(1, R), (3, W)]), k("gram", &[(1, R), (2, R), (3, W), (4, R)]));
        let lz = [(1, R), (2, W), (3, W), (4, W), (5, W), (6, W)];
        let [lz_rows, lz_cols, lz_dots, lz_axpy, lz_norm, lz_next] =
            ["lz_rows", "lz_cols", "lz_dots", "lz_axpy", "lz_norm", "lz_next"].map(|name| kernel::<SpectralParams>(&device, &modules, name, &lz, &opts));
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!("building the GPU kernels on '{}' failed: {e}", info.name)));
        }
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: PARAM_SLOT * PARAM_SLOTS as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Context {
            device,
            queue,
            info,
            limits,
            params,
            draw_weights,
            philox_words,
            mm_forward,
            mm_backward,
            mm_forward_tiled,
            mm_backward_tiled,
            matmul,
            tiling,
            forward_post,
            backward_post,
            batch_mean,
            gram,
            lz_rows,
            lz_cols,
            lz_dots,
            lz_axpy,
            lz_norm,
            lz_next,
            errors,
            profile: Mutex::new(Profile { work_per_submit: FIRST_WORK_PER_SUBMIT, device_times, ..Default::default() }),
            staging: Mutex::new([None, None]),
        })
    }

    /// What the device was asked to do since the context was built.
    pub fn profile(&self) -> Profile {
        *self.profile.lock().unwrap()
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut Profile)) {
        f(&mut self.profile.lock().unwrap());
    }

    /// Whether recorders on this context time their passes.
    pub fn device_times(&self) -> DeviceTimes {
        self.profile.lock().unwrap().device_times
    }

    /// Adds the device time of each timed pass (`stamps`: its start and end ticks, in pass
    /// order) to its family's total. A pass whose end precedes its start (timestamps are not
    /// guaranteed monotonic across passes on every driver) counts as zero.
    pub(super) fn add_device_times(&self, passes: &[Family], stamps: &[u64]) {
        let ns_per_tick = self.queue.get_timestamp_period() as f64;
        self.count(|p| {
            for (fam, t) in passes.iter().zip(stamps.chunks_exact(2)) {
                p.device_seconds[fam.index()] += 1e-9 * ns_per_tick * t[1].saturating_sub(t[0]) as f64;
                p.timed_passes += 1;
            }
        });
    }

    /// Staging buffer `slot` (0 or 1), at least `size` bytes (grown to a power of two).
    pub(super) fn staging(&self, slot: usize, size: u64) -> wgpu::Buffer {
        let mut all = self.staging.lock().unwrap();
        let st = &mut all[slot];
        if let Some(b) = st.as_ref().filter(|b| b.size() >= size) {
            return b.clone();
        }
        let b = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: size.next_power_of_two().max(1 << 16),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        *st = Some(b.clone());
        b
    }

    /// Rescales the work per submission after one took `secs` for `work` multiply-adds
    /// (work-bound submissions only): back into the band around [`SUBMIT_TARGET`].
    pub(super) fn learn(&self, work: f64, secs: f64) {
        self.count(|p| {
            p.submit_seconds += secs;
            p.last_submit_seconds = secs;
            let ms = 1e3 * secs;
            if work >= 0.5 * p.work_per_submit && ms > 0.0 && !(SUBMIT_BAND_MS.0..=SUBMIT_BAND_MS.1).contains(&ms) {
                let factor = (1e3 * SUBMIT_TARGET.as_secs_f64() / ms).clamp(0.25, 4.0);
                p.work_per_submit = (p.work_per_submit * factor).clamp(1e6, 1e13);
            }
        });
    }

    /// Output rows (examples) × columns one workgroup of `path` computes.
    pub fn matmul_block(&self, path: MatmulPath) -> (u32, u32) {
        match path {
            MatmulPath::Tiled => (self.tiling.tile_m(), self.tiling.tile_n()),
            MatmulPath::RegisterBlocked => (16, 64),
        }
    }

    /// The forward product's kernel on `path` and its grid for z = a Wᵀ + b, `batch` × `n_out`.
    pub fn mm_forward_on(&self, path: MatmulPath, n_out: usize, batch: usize) -> (&Kernel<MatmulParams>, (u32, u32, u32)) {
        let (m, n) = self.matmul_block(path);
        let k = if path == MatmulPath::Tiled { &self.mm_forward_tiled } else { &self.mm_forward };
        (k, (n_out.div_ceil(n as usize) as u32, batch.div_ceil(m as usize) as u32, 1))
    }

    /// The backward product's kernel on `path` and its grid for g = δ W, `rows` × round4(`n_in`).
    pub fn mm_backward_on(&self, path: MatmulPath, n_in: usize, rows: usize) -> (&Kernel<MatmulParams>, (u32, u32, u32)) {
        let (m, n) = self.matmul_block(path);
        let k = if path == MatmulPath::Tiled { &self.mm_backward_tiled } else { &self.mm_backward };
        (k, ((n_in.div_ceil(4) * 4).div_ceil(n as usize) as u32, rows.div_ceil(m as usize) as u32, 1))
    }

    /// The chosen path in words ([`MatmulPath::describe`]).
    pub fn matmul_label(&self) -> String {
        self.matmul.describe(self.tiling)
    }

    /// Fails with the first uncaptured device error, naming `what` was running.
    pub fn check(&self, what: &dyn Fn() -> String) -> Result<()> {
        let mut errs = self.errors.lock().unwrap();
        if errs.is_empty() {
            return Ok(());
        }
        let first = errs[0].lines().next().unwrap_or("").to_string();
        let n = errs.len();
        errs.clear();
        Err(Error::Device(format!(
            "GPU error on '{}' during {}: {first}{}",
            self.info.name,
            what(),
            if n > 1 { format!(" (and {} more)", n - 1) } else { String::new() }
        )))
    }

    /// Waits for all submitted work (never forever: one submission is bounded to well under
    /// a second of work, so `WAIT_LIMIT` means a hung device), then reports device errors.
    pub fn wait(&self, what: &dyn Fn() -> String) -> Result<()> {
        self.wait_for(None, what)
    }

    /// [`Context::wait`] for one submission (and those before it) only.
    pub fn wait_for(&self, index: Option<wgpu::SubmissionIndex>, what: &dyn Fn() -> String) -> Result<()> {
        self.count(|p| p.waits += 1);
        let poll = wgpu::PollType::Wait { submission_index: index, timeout: Some(WAIT_LIMIT) };
        if let Err(e) = self.device.poll(poll) {
            self.check(what)?;
            return Err(Error::Device(format!("GPU '{}' failed during {}: {e}", self.info.name, what())));
        }
        self.check(what)
    }

    /// A zero-initialised storage buffer of `bytes` (rounded up to 16), checked against the
    /// device's limits, with out-of-memory turned into an error.
    pub fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(16).div_ceil(16) * 16;
        if size > self.limits.max_buffer_size || size > self.limits.max_storage_buffer_binding_size {
            return Err(Error::Device(format!(
                "buffer '{label}' would need {} MiB, more than the {} MiB one binding may hold on '{}'",
                size >> 20,
                self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size) >> 20,
                self.info.name
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!("out of GPU memory allocating '{label}' ({} MiB): {e}", size >> 20)));
        }
        Ok(buf)
    }

    /// A storage buffer holding `data`.
    pub fn storage_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        })
    }
}

/// The device and queue of `adapter` with `limits` and `features`, its uncaptured errors and
/// loss sent to the returned sink (wgpu's default handler would panic).
fn open_device(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo, limits: &wgpu::Limits, features: wgpu::Features) -> Result<(wgpu::Device, wgpu::Queue, Arc<Mutex<Vec<String>>>)> {
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("gradscope"),
        required_features: features,
        required_limits: limits.clone(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .map_err(|e| Error::Device(format!("cannot open GPU '{}': {e}", info.name)))?;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        sink.lock().unwrap().push(e.to_string());
    }));
    let sink = errors.clone();
    device.set_device_lost_callback(move |reason, msg| {
        sink.lock().unwrap().push(format!("device lost ({reason:?}): {msg}"));
    });
    Ok((device, queue, errors))
}

type Modules = std::collections::HashMap<&'static str, wgpu::ShaderModule>;

pub(super) fn make_kernel<P>(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    name: &'static str,
    bindings: &[(u32, Access)],
    options: &wgpu::PipelineCompilationOptions,
) -> Kernel<P> {
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: true },
            has_dynamic_offset: true,
            min_binding_size: wgpu::BufferSize::new(PARAM_SLOT),
        },
        count: None,
    }];
    for &(binding, access) in bindings {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: matches!(access, Access::Read) },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(name), entries: &entries });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: Some(&pl),
        module,
        entry_point: Some(name),
        compilation_options: options.clone(),
        cache: None,
    });
    Kernel { name, pipeline, layout, bindings: bindings.iter().map(|b| b.0).collect(), family: PhantomData }
}

