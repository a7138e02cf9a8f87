//! Command-line definitions (clap) and their conversion into the library's validated configs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::probe::NetworkRequest;

/// gradscope: exact per-layer gradient norms of deep fully-connected networks, beside the
/// rigorous bound and mean-field theory.
#[derive(Debug, Parser)]
#[command(name = "gradscope", version, about, long_about = None, propagate_version = true, after_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The environment variables gradscope reads, for `gradscope --help`.
const ENVIRONMENT: &str = "\
Environment (GPU backend):
  WGPU_BACKEND=vulkan|metal|dx12      narrow the adapter search, as in every wgpu program
  WGPU_ADAPTER_NAME=NAME              pick an adapter by a substring of its name (as --adapter)
  GRADSCOPE_GPU_NORMS=device|host     spectral norms by Lanczos on the GPU (default on hardware)
                                      or by the f64 CPU Lanczos (default on software adapters)
  GRADSCOPE_MATMUL=tiled|blocked      layer products workgroup-tiled (default on hardware) or
                                      register-blocked (default on software adapters)
  GRADSCOPE_NETS_PER_DISPATCH=N       sweep configurations of one width per GPU dispatch, 1-64
                                      (default 16)
  GRADSCOPE_PROFILE=1                 as --profile: print, per GPU probe or sweep batch, the
                                      submissions, blocking waits, dispatches, bytes read back
                                      per layer and device time per kernel family

Environment (CPU backend):
  MATMUL_NUM_THREADS=N                threads of one matrix product at most (default: the cores
                                      the spectral-norm threads leave free)";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure every per-layer statistic of docs/MATH.md for one network and batch.
    Probe(ProbeArgs),
    /// Sweep depths × activations × inits × σ_w² × σ_b² × widths × seeds into a folder
    /// (resumable: run the same command again to continue).
    Sweep(SweepArgs),
    /// Join the folders of a sharded sweep (`sweep --shard K/N`) into one.
    Merge(MergeArgs),
    /// Draw a sweep folder's figures into DIR/plots, as SVG and PNG: the first-layer
    /// gradient against depth, the (σ_w², depth) heatmaps and each configuration's profile.
    Plot(PlotArgs),
    /// List every GPU adapter wgpu can see, with the limits that matter here.
    Devices(DevicesArgs),
    /// Mean-field theory: q*, χ₁, c*, depth scales and the critical σ_w² (docs/THEORY.md).
    Theory(crate::theory::TheoryArgs),
    /// Reproduce a published result beside theory and measurement.
    Reproduce(crate::theory::ReproduceArgs),
    /// Train by SGD (f64, CPU) and record every per-layer statistic, the update size, cost and
    /// accuracy along the way into a resumable folder (docs/MATH.md, "Training").
    Train(crate::train::cli::TrainArgs),
    /// The singular values of the input–output Jacobian per example, exact at any depth
    /// (QR-accumulated product; the free-probability prediction beside them).
    Spectrum(crate::spectrum::SpectrumArgs),
}

pub use crate::backend::BackendChoice;

/// The network, its parameters and its data (shared by probe and sweep).
#[derive(Debug, Args, Clone)]
pub struct NetworkArgs {
    /// Width n_l of every layer (with --depth); --input-width/--output-width override n_0, n_L.
    #[arg(long, value_name = "N", help_heading = "Network")]
    pub width: Option<usize>,
    /// Number of weight layers L.
    #[arg(long, value_name = "L", help_heading = "Network")]
    pub depth: Option<usize>,
    /// n_0 (default: --width).
    #[arg(long, value_name = "N", help_heading = "Network")]
    pub input_width: Option<usize>,
    /// n_L (default: --width).
    #[arg(long, value_name = "N", help_heading = "Network")]
    pub output_width: Option<usize>,
    /// Every width n_0,n_1,…,n_L, e.g. 784,30,30,30,10 (instead of --width/--depth).
    #[arg(long, value_name = "LIST", value_delimiter = ',', help_heading = "Network")]
    pub widths: Option<Vec<usize>>,
    /// sigmoid, tanh, relu, leaky-relu[:α], linear, erf, hard-tanh, softplus, silu, gelu, elu, selu.
    #[arg(long, short = 'a', default_value = "sigmoid", help_heading = "Network")]
    pub activation: String,
    /// Use the identity on the output layer instead of σ.
    #[arg(long, help_heading = "Network")]
    pub linear_output: bool,
    /// quadratic or cross-entropy (needs a sigmoid output).
    #[arg(long, default_value = "quadratic", help_heading = "Network")]
    pub cost: String,
    /// gaussian, lecun, he, xavier-normal, xavier-uniform, orthogonal, nielsen.
    #[arg(long, default_value = "gaussian", help_heading = "Initialisation")]
    pub init: String,
    /// σ_w (weights ~ N(0, σ_w²/n_{l-1})); gaussian and orthogonal only. Default σ_w² = 1.
    #[arg(long, value_name = "S", allow_negative_numbers = true, help_heading = "Initialisation")]
    pub sigma_w: Option<f64>,
    /// σ_w², instead of --sigma-w.
    #[arg(long, value_name = "V", allow_negative_numbers = true, help_heading = "Initialisation")]
    pub sigma_w2: Option<f64>,
    /// σ_b (biases ~ N(0, σ_b²)). Default 0 (nielsen: 1).
    #[arg(long, value_name = "S", allow_negative_numbers = true, help_heading = "Initialisation")]
    pub sigma_b: Option<f64>,
    /// σ_b², instead of --sigma-b.
    #[arg(long, value_name = "V", allow_negative_numbers = true, help_heading = "Initialisation")]
    pub sigma_b2: Option<f64>,
    /// A .safetensors or .npz of your network, f64, f32, f16 or bf16; the widths come from
    /// the file. A PyTorch state_dict: each 2-D P.weight (n_l × n_{l-1}, nn.Linear layout) with
    /// its P.bias (zero if absent) is a layer, in the natural order of the keys (layers.2
    /// before layers.10); or a .npz with w1..wL and b1..bL.
    #[arg(long, value_name = "FILE", help_heading = "Initialisation")]
    pub weights: Option<PathBuf>,
    /// Which layers of a --weights state_dict to use: comma-separated regexes, each matching
    /// key prefixes up to a '.' (encoder.layers selects encoder.layers.0…), in the network's
    /// order; the file's other tensors are then listed and ignored (without --layers, they are
    /// refused).
    #[arg(long, value_name = "REGEX,…", help_heading = "Initialisation")]
    pub layers: Option<String>,
    /// gaussian, sign (±1), or a B × n_0 .npy file.
    #[arg(long, default_value = "gaussian", help_heading = "Data")]
    pub inputs: String,
    /// zeros, gaussian, uniform, or a B × n_L .npy file.
    #[arg(long, default_value = "zeros", help_heading = "Data")]
    pub targets: String,
    /// Examples per batch B (ignored when --inputs is a file).
    #[arg(long, short = 'b', default_value_t = 16, help_heading = "Data")]
    pub batch: usize,
    /// Seed of the Philox stream that draws weights, biases, inputs and targets.
    #[arg(long, default_value_t = 0, help_heading = "Data")]
    pub seed: u64,
}

impl NetworkArgs {
    pub fn request(&self) -> NetworkRequest {
        NetworkRequest {
            width: self.width,
            depth: self.depth,
            input_width: self.input_width,
            output_width: self.output_width,
            widths: self.widths.clone(),
            activation: self.activation.clone(),
            linear_output: self.linear_output,
            cost: self.cost.clone(),
            init: self.init.clone(),
            sigma_w: self.sigma_w,
            sigma_w2: self.sigma_w2,
            sigma_b: self.sigma_b,
            sigma_b2: self.sigma_b2,
            inputs: self.inputs.clone(),
            targets: self.targets.clone(),
            batch: self.batch,
            seed: self.seed,
            weights: self.weights.clone(),
            layers: self.layers.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub net: NetworkArgs,
    /// Engine: auto (hardware GPU if any, else CPU), cpu (f64 reference) or gpu (f32, wgpu).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, help_heading = "Output")]
    pub backend: BackendChoice,
    /// GPU adapter to use: a case-insensitive substring of its name (see `gradscope
    /// devices`; WGPU_ADAPTER_NAME works too; WGPU_BACKEND=vulkan|metal|dx12 narrows the search).
    #[arg(long, value_name = "NAME", help_heading = "Output")]
    pub adapter: Option<String>,
    /// Also run the f64 CPU reference on the same network and print, per layer and field,
    /// the GPU's discrepancy and a pass/fail verdict against the stated tolerance (exit
    /// code 1 on a failure).
    #[arg(long, help_heading = "Output")]
    pub check: bool,
    /// Print, after the GPU probe, what the device was asked to do: submissions, blocking
    /// waits, dispatches and bytes read back per layer, and the device time per kernel family
    /// (matmul, pointwise, reduce, weights, spectral) where the adapter supports timestamp
    /// queries. The same as GRADSCOPE_PROFILE=1.
    #[arg(long, help_heading = "Output")]
    pub profile: bool,
    /// Write every per-layer field to FILE.json or FILE.csv, including the forward signal
    /// log10_q, c and their predictions (measured on the CPU engine only).
    #[arg(long, short = 'o', value_name = "FILE", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Also write the network's weights and biases to FILE.npz (w1..wL, b1..bL, float64;
    /// the layout --weights reads), e.g. to hand them to another tool.
    #[arg(long, value_name = "FILE.npz", help_heading = "Output")]
    pub save_weights: Option<PathBuf>,
    /// Also plot the per-layer profile (grad_b_rms, grad_b_mean, bound, bound_tight against
    /// the layer) to FILE.svg or FILE.png.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub plot: Option<PathBuf>,
    /// Also print the anatomy of the bound per layer: γ‖W^r‖₂ against the measured ratio
    /// ‖δ^l‖/‖δ^(l+1)‖, the slack in decades, the Pascanu–Mikolov–Bengio verdict and the
    /// random-matrix value of ‖W‖₂ (with --out .json, also written as "anatomy").
    #[arg(long, help_heading = "Output")]
    pub anatomy: bool,
    /// Print every layer instead of a sample of about 40 rows.
    #[arg(long, help_heading = "Output")]
    pub all_layers: bool,
}

/// `gradscope sweep`: every list flag takes comma-separated values; `--config FILE.toml`
/// takes the same names as keys (flags given on the command line win).
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// A TOML file with any of the keys below, e.g. `activations = ["tanh", "relu"]`,
    /// `sigma-w2 = [1.0, 2.0]`, `depths = "log:1..5000:200"`.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Depths: a list `1,2,5,10`, a range `1..100` or `1..100:5`, or a log grid `log:1..10000:200`.
    #[arg(long)]
    pub depths: Option<String>,
    /// Activations, e.g. `sigmoid,tanh,relu` (default tanh).
    #[arg(long, value_delimiter = ',')]
    pub activations: Option<Vec<String>>,
    /// Inits (default gaussian); lecun, he, xavier-* and nielsen fix σ_w² themselves.
    #[arg(long, value_delimiter = ',')]
    pub inits: Option<Vec<String>>,
    /// σ_w² grid for gaussian and orthogonal inits (default 1).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub sigma_w2: Option<Vec<f64>>,
    /// σ_w grid, instead of --sigma-w2.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub sigma_w: Option<Vec<f64>>,
    /// σ_b² grid (default 0).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub sigma_b2: Option<Vec<f64>>,
    /// σ_b grid, instead of --sigma-b2.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub sigma_b: Option<Vec<f64>>,
    /// Widths to sweep; each network has that width on every layer.
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<usize>>,
    /// Examples per batch (default 16).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seeds (default 0).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// quadratic or cross-entropy (default quadratic).
    #[arg(long)]
    pub cost: Option<String>,
    /// Inputs: gaussian or sign (default gaussian).
    #[arg(long)]
    pub inputs: Option<String>,
    /// Targets: zeros, gaussian or uniform (default zeros).
    #[arg(long)]
    pub targets: Option<String>,
    /// cpu (default), gpu or auto.
    #[arg(long)]
    pub backend: Option<String>,
    /// GPU adapter: a case-insensitive substring of its name (`gradscope devices`), e.g. one
    /// shard per GPU; WGPU_ADAPTER_NAME works too.
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Output folder (created; an existing one must hold the same sweep, which resumes).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Run only shard K of N (configurations whose index ≡ K−1 mod N), e.g. for a Slurm
    /// job array; join the folders with `gradscope merge`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also the singular values of J_x = ∂a^L/∂a^0 at every depth, over the first K
    /// examples (K = 1 if omitted): spectrum_log10_top, _median, _bottom_nonzero and
    /// spectrum_var_over_mean2 in summary.csv (one QR pass per configuration serves every
    /// depth; always on the CPU in f64).
    #[arg(long, value_name = "K", num_args = 0..=1, default_missing_value = "1")]
    pub spectrum: Option<usize>,
    /// Print, after each batch of configurations on the GPU, what the device was asked to do
    /// and the device time per kernel family where the adapter supports timestamp queries
    /// (as `probe --profile` and GRADSCOPE_PROFILE=1).
    #[arg(long)]
    pub profile: bool,
}

impl SweepArgs {
    pub fn file(&self) -> crate::sweep::SweepFile {
        crate::sweep::SweepFile {
            activations: self.activations.clone(),
            inits: self.inits.clone(),
            sigma_w: self.sigma_w.clone(),
            sigma_w2: self.sigma_w2.clone(),
            sigma_b: self.sigma_b.clone(),
            sigma_b2: self.sigma_b2.clone(),
            widths: self.widths.clone(),
            batch: self.batch,
            seeds: self.seeds.clone(),
            cost: self.cost.clone(),
            backend: self.backend.clone(),
            out: self.out.clone(),
            depths: self.depths.clone(),
            inputs: self.inputs.clone(),
            targets: self.targets.clone(),
            spectrum: self.spectrum,
        }
    }
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The folder to create (or complete) with every shard's results.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// The shard folders.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

/// `gradscope plot DIR`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The sweep folder (the one holding summary.csv).
    pub dir: PathBuf,
    /// The size of one figure (of one panel, where a figure has several), in pixels.
    #[arg(long, value_name = "WxH", default_value = "1000x640")]
    pub size: String,
    /// The formats to write.
    #[arg(long, value_name = "svg,png", value_delimiter = ',', default_value = "svg,png")]
    pub format: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
