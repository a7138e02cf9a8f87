//! Command-line definitions (clap) and their conversion into the library's validated configs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::probe::NetworkRequest;

/// gradscope: exact per-layer gradient norms of deep fully-connected networks, beside the
/// rigorous bound and mean-field theory.
#[derive(Debug, Parser)]
#[command(name = "gradscope", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure every per-layer statistic of MATH.md for one network and batch.
    Probe(ProbeArgs),
}

/// Which engine computes the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// A hardware GPU if there is one, otherwise the CPU backend (never a software GPU).
    Auto,
    /// The f64 CPU reference backend.
    Cpu,
    /// The wgpu (f32) GPU backend.
    Gpu,
}

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
    /// A .npz with w1..wL (n_l × n_{l-1}, PyTorch nn.Linear layout) and b1..bL, float32 or
    /// float64; the widths then come from the file.
    #[arg(long, value_name = "FILE.npz", help_heading = "Initialisation")]
    pub weights: Option<PathBuf>,
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
    /// Write every per-layer field to FILE.json or FILE.csv.
    #[arg(long, short = 'o', value_name = "FILE", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Also write the network's weights and biases to FILE.npz (w1..wL, b1..bL, float64;
    /// the layout --weights reads), e.g. to hand them to another tool.
    #[arg(long, value_name = "FILE.npz", help_heading = "Output")]
    pub save_weights: Option<PathBuf>,
    /// Print every layer instead of a sample of about 40 rows.
    #[arg(long, help_heading = "Output")]
    pub all_layers: bool,
}
