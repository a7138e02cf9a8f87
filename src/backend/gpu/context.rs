//! Device setup, separate from the work: one [`Context`] owns the device, the queue, every
//! pipeline and the error sink, built once; per-probe code only writes buffers, encodes,
//! submits and reads back.

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

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
const SUBMIT_BAND_MS: (f64, f64) = (20.0, 100.0);

/// What the device was asked to do, counted since the context was built (for
/// `GRADSCOPE_PROFILE=1` and the tests of the submission model): these counts carry over
/// to any GPU, unlike timings on a software adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profile {
    /// `queue.submit` calls.
    pub submissions: u64,
    /// Blocking waits for the device (`device.poll(Wait)`).
    pub waits: u64,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Bind groups created (dispatches reuse them when kernel and buffers repeat).
    pub bind_groups: u64,
    /// Bytes copied back to the host.
    pub bytes_read: u64,
    /// Wall time from submit to the end of the wait, summed, and of the last submission.
    pub submit_seconds: f64,
    pub last_submit_seconds: f64,
    /// The work per submission (multiply-adds) the recorder aims at now.
    pub work_per_submit: f64,
}

impl Profile {
    /// The counts of `self` since `before` (the budget as it is now).
    pub fn since(&self, before: &Profile) -> Profile {
        Profile {
            submissions: self.submissions - before.submissions,
            waits: self.waits - before.waits,
            dispatches: self.dispatches - before.dispatches,
            bind_groups: self.bind_groups - before.bind_groups,
            bytes_read: self.bytes_read - before.bytes_read,
            submit_seconds: self.submit_seconds - before.submit_seconds,
            last_submit_seconds: self.last_submit_seconds,
            work_per_submit: self.work_per_submit,
        }
    }

    /// One line for `GRADSCOPE_PROFILE=1`, per layer of `layers` (forward layers of all
    /// networks probed).
    pub fn line(&self, what: &str, layers: usize) -> String {
        let per = |v: f64| v / layers.max(1) as f64;
        format!(
            "profile ({what}): {} submissions, {} blocking waits, {} dispatches ({:.1} per layer), {} bind groups created, {} bytes read back ({:.0} per layer), {:.3} s in submissions (last {:.1} ms), work per submission now {:.2e} multiply-adds; device time per kernel family: not measured (no timestamp queries)",
            self.submissions,
            self.waits,
            self.dispatches,
            per(self.dispatches as f64),
            self.bind_groups,
            self.bytes_read,
            per(self.bytes_read as f64),
            self.submit_seconds,
            1e3 * self.last_submit_seconds,
            self.work_per_submit
        )
    }
}

/// The per-dispatch parameter block, `struct Params` of shaders/common.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    pub n_in: u32,
    pub n_out: u32,
    pub s_in: u32,
    pub s_out: u32,
    pub layer: u32,
    pub kind: u32,
    pub flags: u32,
    pub alpha: f32,
    pub scale: f32,
    pub key_lo: u32,
    pub key_hi: u32,
    pub rec: u32,
    pub rec_next: u32,
    pub aux0: u32,
    pub aux1: u32,
    /// The stacked backward pass of a depth sweep (see shaders/common.wgsl).
    pub blocks: u32,
    pub brec: u32,
    pub bstride: u32,
    pub err: u32,
    pub err_e: u32,
    /// Where this network's data starts in buffers shared by the networks of a batched
    /// dispatch (see shaders/common.wgsl): per-example rows, stacked rows, weight vec4s.
    pub row0: u32,
    pub srow0: u32,
    pub w0: u32,
}

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
enum Access {
    Read,
    ReadWrite,
}

/// One compute kernel: its pipeline and bind-group layout (binding numbers in order).
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub bindings: Vec<u32>,
}

/// Everything a probe needs from the device, built once.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub params: wgpu::Buffer,
    pub draw_weights: Kernel,
    pub philox_words: Kernel,
    pub mm_forward: Kernel,
    pub mm_backward: Kernel,
    pub mm_forward_tiled: Kernel,
    pub mm_backward_tiled: Kernel,
    /// The path the probe's layer products take, and the tiled kernels' sizes.
    pub matmul: MatmulPath,
    pub tiling: Tiling,
    pub forward_post: Kernel,
    pub backward_post: Kernel,
    pub batch_mean: Kernel,
    pub gram: Kernel,
    /// The Lanczos kernels of shaders/spectral.wgsl.
    pub lz_rows: Kernel,
    pub lz_cols: Kernel,
    pub lz_dots: Kernel,
    pub lz_axpy: Kernel,
    pub lz_norm: Kernel,
    pub lz_next: Kernel,
    /// Uncaptured validation errors and device loss, in the order they arrived.
    errors: Arc<Mutex<Vec<String>>>,
    /// The counts of [`Profile`] and the work per submission learned so far.
    profile: Mutex<Profile>,
    /// The one MAP_READ buffer every readback goes through, grown as needed.
    staging: Mutex<Option<wgpu::Buffer>>,
}

impl Context {
    /// Opens `adapter` with every limit it offers and builds all pipelines.
    ///
    /// # Errors
    /// [`Error::Device`] when the device cannot be created or a shader fails to compile;
    /// [`Error::InvalidArgument`] for a `GRADSCOPE_MATMUL` other than `tiled` or `blocked`.
    pub fn new(adapter: &wgpu::Adapter) -> Result<Context> {
        let info = adapter.get_info();
        // `required_limits` is exact: ask for what the adapter has, so jobs may use it all.
        let limits = adapter.limits();
        let matmul = MatmulPath::choose(info.device_type)?;
        let tiling = tiling_for(&limits).ok_or_else(|| Error::Device(format!("'{}' offers too little compute (workgroup limits) for any matmul tile", info.name)))?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gradscope"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Device(format!("cannot open GPU '{}': {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        {
            let sink = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                sink.lock().unwrap().push(e.to_string());
            }));
            let sink = errors.clone();
            device.set_device_lost_callback(move |reason, msg| {
                sink.lock().unwrap().push(format!("device lost ({reason:?}): {msg}"));
            });
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut modules = std::collections::HashMap::new();
        for m in shaders::modules() {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(m.label),
                source: wgpu::ShaderSource::Wgsl(m.source.into()),
            });
            modules.insert(m.label, module);
        }
        use Access::{Read as R, ReadWrite as W};
        let kernel = |module: &str, name: &'static str, b: &[(u32, Access)]| {
            make_kernel(&device, &modules[module], name, b, &wgpu::PipelineCompilationOptions::default())
        };
        let draw_weights = kernel("weights", "draw_weights", &[(1, W)]);
        let philox_words = kernel("weights", "philox_words", &[(2, R), (3, W)]);
        let mm_forward = kernel("matmul", "forward", &[(1, R), (2, R), (3, R), (4, R), (5, W)]);
        let mm_backward = kernel("matmul", "backward", &[(1, R), (2, R), (5, W)]);
        // Every tile entry is written before it is read: no zero-fill of workgroup memory.
        let tiled = wgpu::PipelineCompilationOptions { constants: &tiling.constants(), zero_initialize_workgroup_memory: false };
        let mm_forward_tiled = make_kernel(&device, &modules["matmul"], "forward_tiled", &[(1, R), (2, R), (3, R), (4, R), (5, W)], &tiled);
        let mm_backward_tiled = make_kernel(&device, &modules["matmul"], "backward_tiled", &[(1, R), (2, R), (5, W)], &tiled);
        let forward_post = kernel("pointwise", "forward_post", &[(1, R), (2, W), (3, W), (4, R), (5, W), (6, W)]);
        let backward_post = kernel("pointwise", "backward_post", &[(1, R), (7, R), (8, W), (9, W), (6, W), (10, R), (11, R)]);
        let batch_mean = kernel("reduce", "batch_mean", &[(1, R), (3, W)]);
        let gram = kernel("reduce", "gram", &[(1, R), (2, R), (3, W), (4, R)]);
        let lz = [(1, R), (2, W), (3, W), (4, W), (5, W), (6, W)];
        let [lz_rows, lz_cols, lz_dots, lz_axpy, lz_norm, lz_next] =
            ["lz_rows", "lz_cols", "lz_dots", "lz_axpy", "lz_norm", "lz_next"].map(|name| kernel("spectral", name, &lz));
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
            profile: Mutex::new(Profile { work_per_submit: FIRST_WORK_PER_SUBMIT, ..Default::default() }),
            staging: Mutex::new(None),
        })
    }

    /// What the device was asked to do since the context was built.
    pub fn profile(&self) -> Profile {
        *self.profile.lock().unwrap()
    }

    fn count(&self, f: impl FnOnce(&mut Profile)) {
        f(&mut self.profile.lock().unwrap());
    }

    /// The staging buffer, at least `size` bytes (grown to a power of two).
    fn staging(&self, size: u64) -> wgpu::Buffer {
        let mut st = self.staging.lock().unwrap();
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
    fn learn(&self, work: f64, secs: f64) {
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
    pub fn mm_forward_on(&self, path: MatmulPath, n_out: usize, batch: usize) -> (&Kernel, (u32, u32, u32)) {
        let (m, n) = self.matmul_block(path);
        let k = if path == MatmulPath::Tiled { &self.mm_forward_tiled } else { &self.mm_forward };
        (k, (n_out.div_ceil(n as usize) as u32, batch.div_ceil(m as usize) as u32, 1))
    }

    /// The backward product's kernel on `path` and its grid for g = δ W, `rows` × round4(`n_in`).
    pub fn mm_backward_on(&self, path: MatmulPath, n_in: usize, rows: usize) -> (&Kernel, (u32, u32, u32)) {
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
        self.count(|p| p.waits += 1);
        let poll = wgpu::PollType::Wait { submission_index: None, timeout: Some(WAIT_LIMIT) };
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

    /// Copies `bytes` bytes of `buf` from `offset` back to the host (after all work so far):
    /// one submission, one wait.
    pub fn read(&self, buf: &wgpu::Buffer, offset: u64, bytes: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        Ok(Recorder::new(self).flush_read(&[(buf, offset, bytes)], what)?.pop().unwrap_or_default())
    }
}

fn make_kernel(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    name: &'static str,
    bindings: &[(u32, Access)],
    options: &wgpu::PipelineCompilationOptions,
) -> Kernel {
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
    Kernel { name, pipeline, layout, bindings: bindings.iter().map(|b| b.0).collect() }
}

/// Records dispatches into one compute pass, each with its own parameter slot, and submits
/// them as one bounded piece of work (so no submission can trip an OS GPU watchdog).
pub struct Recorder<'c> {
    ctx: &'c Context,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    params: Vec<Params>,
    /// Bind groups by (kernel, networks, buffers): a probe binds the same few buffer sets on
    /// every layer, so it creates each once.
    bind_groups: std::collections::HashMap<(usize, usize, Vec<wgpu::Buffer>), wgpu::BindGroup>,
    /// Work recorded since the last submit, in multiply-adds (a rough cost measure).
    pub work: f64,
    /// Layers touched since the last submit.
    pub layers: usize,
}

impl<'c> Recorder<'c> {
    pub fn new(ctx: &'c Context) -> Self {
        Recorder { ctx, encoder: None, pass: None, params: Vec::new(), bind_groups: Default::default(), work: 0.0, layers: 0 }
    }

    /// The work per submission (multiply-adds) aimed at now: [`FIRST_WORK_PER_SUBMIT`],
    /// then rescaled from measured submissions toward [`SUBMIT_TARGET`].
    pub fn work_budget(&self) -> f64 {
        self.ctx.profile.lock().unwrap().work_per_submit
    }

    /// True when the next layer should go into a fresh submission.
    pub fn full(&self, layer_budget: usize) -> bool {
        self.params.len() + 16 * MAX_NETS > PARAM_SLOTS || self.work >= self.work_budget() || self.layers >= layer_budget
    }

    /// Records one dispatch of `k` with `params` and `buffers` bound in `k.bindings` order.
    /// The grid's z dimension is the network index, so `groups.2` must be 1.
    pub fn dispatch(&mut self, k: &Kernel, params: Params, buffers: &[&wgpu::Buffer], groups: (u32, u32, u32)) {
        assert_eq!(groups.2, 1, "{}: workgroup_id.z is the network index; dispatch_nets runs several", k.name);
        self.dispatch_nets(k, &[params], buffers, (groups.0, groups.1));
    }

    /// Records one dispatch of `k` over `params.len()` networks (workgroup_id.z = network,
    /// each reading its own parameter slot) with `buffers` bound in `k.bindings` order.
    pub fn dispatch_nets(&mut self, k: &Kernel, params: &[Params], buffers: &[&wgpu::Buffer], groups: (u32, u32)) {
        debug_assert_eq!(buffers.len(), k.bindings.len(), "{}", k.name);
        debug_assert!(params.len() <= MAX_NETS);
        if groups.0 == 0 || groups.1 == 0 || params.is_empty() {
            return;
        }
        let slot = self.params.len() as u64;
        self.params.extend_from_slice(params);
        let key = (k as *const Kernel as usize, params.len(), buffers.iter().map(|b| (*b).clone()).collect::<Vec<_>>());
        if !self.bind_groups.contains_key(&key) {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.ctx.params,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAM_SLOT * params.len() as u64),
                }),
            }];
            for (&b, buf) in k.bindings.iter().zip(buffers) {
                entries.push(wgpu::BindGroupEntry { binding: b, resource: buf.as_entire_binding() });
            }
            let bg = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(k.name), layout: &k.layout, entries: &entries });
            self.ctx.count(|p| p.bind_groups += 1);
            self.bind_groups.insert(key.clone(), bg);
        }
        let bg = &self.bind_groups[&key];
        self.ctx.count(|p| p.dispatches += 1);
        if self.pass.is_none() {
            let dev = &self.ctx.device;
            let enc = self.encoder.get_or_insert_with(|| dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("gradscope") }));
            let pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("gradscope"), timestamp_writes: None }).forget_lifetime();
            self.pass = Some(pass);
        }
        let pass = self.pass.as_mut().unwrap();
        pass.set_pipeline(&k.pipeline);
        pass.set_bind_group(0, bg, &[(slot * PARAM_SLOT) as u32]);
        pass.dispatch_workgroups(groups.0, groups.1, params.len() as u32);
    }

    /// Records a copy of `bytes` bytes (multiples of 4, as the offsets) between buffers,
    /// ordered after every dispatch recorded so far and before every later one.
    pub fn copy(&mut self, src: &wgpu::Buffer, src_off: u64, dst: &wgpu::Buffer, dst_off: u64, bytes: u64) {
        drop(self.pass.take());
        let dev = &self.ctx.device;
        let enc = self.encoder.get_or_insert_with(|| dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("gradscope") }));
        enc.copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
    }

    /// Submits what was recorded with copies of the `reads` (buffer, offset, bytes; offsets
    /// multiples of 4) into the staging buffer at its end, all in one submission, waits once
    /// and returns the bytes of each read; device errors name `what`.
    pub fn flush_read(&mut self, reads: &[(&wgpu::Buffer, u64, u64)], what: &dyn Fn() -> String) -> Result<Vec<Vec<u8>>> {
        drop(self.pass.take());
        let sizes: Vec<u64> = reads.iter().map(|r| r.2.div_ceil(4) * 4).collect();
        let total: u64 = sizes.iter().sum();
        let staging = (total > 0).then(|| self.ctx.staging(total));
        if let Some(st) = &staging {
            let mut at = 0;
            for (&(buf, off, _), &size) in reads.iter().zip(&sizes) {
                if size > 0 {
                    self.copy(buf, off, st, at, size);
                }
                at += size;
            }
        }
        let Some(enc) = self.encoder.take() else {
            self.work = 0.0;
            self.layers = 0;
            return Ok(reads.iter().map(|_| Vec::new()).collect());
        };
        let mut bytes = vec![0u8; self.params.len() * PARAM_SLOT as usize];
        for (i, p) in self.params.iter().enumerate() {
            let o = i * PARAM_SLOT as usize;
            bytes[o..o + std::mem::size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(p));
        }
        if !bytes.is_empty() {
            self.ctx.queue.write_buffer(&self.ctx.params, 0, &bytes);
        }
        let t = std::time::Instant::now();
        self.ctx.queue.submit([enc.finish()]);
        self.ctx.count(|p| p.submissions += 1);
        self.params.clear();
        let rx = staging.as_ref().map(|st| {
            let (tx, rx) = std::sync::mpsc::channel();
            st.slice(..total).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            rx
        });
        self.ctx.wait(what)?;
        self.ctx.learn(self.work, t.elapsed().as_secs_f64());
        self.work = 0.0;
        self.layers = 0;
        let (Some(st), Some(rx)) = (staging, rx) else { return Ok(reads.iter().map(|_| Vec::new()).collect()) };
        let fail = |e: String| Error::Device(format!("reading back results after {} failed: {e}", what()));
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail("the mapping did not complete".into())),
        }
        let out = {
            let view = st.slice(..total).get_mapped_range().map_err(|e| fail(e.to_string()))?;
            let mut at = 0usize;
            reads
                .iter()
                .zip(&sizes)
                .map(|(r, &size)| {
                    let v = view[at..at + r.2 as usize].to_vec();
                    at += size as usize;
                    v
                })
                .collect()
        };
        st.unmap();
        self.ctx.count(|p| p.bytes_read += total);
        Ok(out)
    }
}

/// Workgroup counts for `n` items of `per_group` each, as a 2-D grid when one dimension of
/// at most [`MAX_WORKGROUPS_PER_DIM`] would not do (kernels rebuild the linear index).
pub fn grid(n: u64, per_group: u64) -> (u32, u32, u32) {
    let groups = n.div_ceil(per_group);
    if groups <= MAX_WORKGROUPS_PER_DIM as u64 {
        (groups as u32, 1, 1)
    } else {
        let y = groups.div_ceil(MAX_WORKGROUPS_PER_DIM as u64);
        (MAX_WORKGROUPS_PER_DIM, y as u32, 1)
    }
}
