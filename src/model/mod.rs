//! The network model: widths, activation, cost, parameters (generated or loaded), data.

pub mod activation;
pub mod checkpoint;
pub mod data;
pub mod files;
pub mod init;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use ndarray::{Array1, Array2, ArrayView1};
use serde::Serialize;

pub use activation::Activation;
pub use data::{InputSpec, TargetSpec};
pub use init::{Init, InitKind};

use crate::error::{Error, Result};
use crate::rng::Stream;

/// The cost of one example (docs/MATH.md, "Costs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cost {
    /// `C_x = ½‖a^L − y‖²`, `δ^L = Σ′(z^L)(a^L − y)`.
    Quadratic,
    /// `C_x = −Σ_i [y_i ln a_i + (1−y_i) ln(1−a_i)]` on a sigmoid output, `δ^L = a^L − y`.
    CrossEntropy,
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cost::Quadratic => "quadratic",
            Cost::CrossEntropy => "cross-entropy",
        })
    }
}

impl FromStr for Cost {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "quadratic" | "mse" => Ok(Cost::Quadratic),
            "cross-entropy" | "crossentropy" | "xent" | "ce" => Ok(Cost::CrossEntropy),
            _ => Err(Error::arg(
                "--cost",
                format!("unknown cost '{s}' (expected quadratic or cross-entropy)"),
            )),
        }
    }
}

impl Cost {
    /// `C_x` for one example from its output pre-activation `z^L`, output `a^L` and target.
    ///
    /// Cross-entropy is evaluated from z through log-sigmoid, so a saturated output gives
    /// a large finite cost instead of `ln 0`.
    pub fn example_cost(&self, z: ArrayView1<f64>, a: ArrayView1<f64>, y: ArrayView1<f64>) -> f64 {
        match self {
            Cost::Quadratic => 0.5 * a.iter().zip(y).map(|(a, y)| (a - y) * (a - y)).sum::<f64>(),
            Cost::CrossEntropy => z
                .iter()
                .zip(y)
                .map(|(&z, &y)| -(y * log_sigmoid(z) + (1.0 - y) * log_sigmoid(-z)))
                .sum(),
        }
    }
}

fn log_sigmoid(z: f64) -> f64 {
    // ln σ(z) = −ln(1 + e^{−z}), stable on both sides.
    if z >= 0.0 { -(-z).exp().ln_1p() } else { z - z.exp().ln_1p() }
}

/// Where the parameters come from.
#[derive(Debug, Clone)]
pub enum Params {
    /// Drawn from the seed's Philox stream, layer by layer, never all held at once.
    Generated { init: Init, seed: u64 },
    /// Loaded from the user's `.npz` (`w1..wL`, `b1..bL`).
    Stored(Arc<StoredParams>),
}

/// Weights and biases held in memory: `w[l-1]` is `W^l` (n_l × n_{l-1}).
#[derive(Debug, Clone)]
pub struct StoredParams {
    pub w: Vec<Array2<f64>>,
    pub b: Vec<Array1<f64>>,
    /// The file they came from, for messages and outputs.
    pub source: String,
}

/// A fully-connected network: widths `n_0..n_L`, one activation, a cost and its parameters.
#[derive(Debug, Clone)]
pub struct Network {
    /// `n_0, n_1, …, n_L`.
    pub widths: Vec<usize>,
    pub activation: Activation,
    /// Use the identity on layer L instead of σ.
    pub linear_output: bool,
    pub cost: Cost,
    pub params: Params,
}

impl Network {
    /// Checks the combination and builds the network.
    ///
    /// # Errors
    /// Fewer than two widths, a zero width, cross-entropy without a sigmoid output, or stored
    /// parameters whose shapes do not chain.
    pub fn new(
        widths: Vec<usize>,
        activation: Activation,
        linear_output: bool,
        cost: Cost,
        params: Params,
    ) -> Result<Network> {
        if widths.len() < 2 {
            return Err(Error::arg("--depth", "the network needs at least one weight layer (depth ≥ 1)"));
        }
        if let Some(i) = widths.iter().position(|&n| n == 0) {
            return Err(Error::arg("--widths", format!("width n_{i} is 0; every width must be ≥ 1")));
        }
        if widths.len() - 1 > u32::MAX as usize / 2 || widths.iter().any(|&n| n > u32::MAX as usize / 2) {
            return Err(Error::arg("--widths", "sizes beyond 2^31 are not supported"));
        }
        if cost == Cost::CrossEntropy && (linear_output || activation != Activation::Sigmoid) {
            return Err(Error::arg(
                "--cost",
                format!(
                    "cross-entropy needs a sigmoid output layer, but the output is {}",
                    if linear_output { "linear".to_string() } else { activation.to_string() }
                ),
            ));
        }
        if let Params::Stored(p) = &params {
            if p.w.len() != widths.len() - 1 {
                return Err(Error::Internal("stored parameters do not match the widths".into()));
            }
        }
        Ok(Network { widths, activation, linear_output, cost, params })
    }

    /// L, the number of weight layers.
    pub fn depth(&self) -> usize {
        self.widths.len() - 1
    }

    /// The activation of layer l (1-based): σ, or the identity on a linear output layer.
    pub fn activation_at(&self, l: usize) -> Activation {
        if self.linear_output && l == self.depth() { Activation::Linear } else { self.activation }
    }

    /// `(W^l, b^l)` for l in 1..=L: generated afresh, or a copy-free view of stored ones.
    pub fn layer(&self, l: usize) -> (std::borrow::Cow<'_, Array2<f64>>, std::borrow::Cow<'_, Array1<f64>>) {
        use std::borrow::Cow;
        let (n_out, n_in) = (self.widths[l], self.widths[l - 1]);
        match &self.params {
            Params::Generated { init, seed } => {
                let s = Stream::new(*seed);
                (Cow::Owned(init.weights(&s, l, n_out, n_in)), Cow::Owned(init.biases(&s, l, n_out)))
            }
            Params::Stored(p) => (Cow::Borrowed(&p.w[l - 1]), Cow::Borrowed(&p.b[l - 1])),
        }
    }

    /// True when layer l's parameters are drawn in O(n_l·n_{l-1}) (everything but orthogonal
    /// and stored parameters), so a GPU kernel can draw them on the fly.
    pub fn weights_are_streamable(&self) -> bool {
        matches!(&self.params, Params::Generated { init, .. } if init.kind != InitKind::Orthogonal)
    }

    /// γ of layer r's activation.
    pub fn gamma_at(&self, r: usize) -> f64 {
        self.activation_at(r).gamma()
    }
}

/// A network with its batch: what a backend is handed.
#[derive(Debug, Clone)]
pub struct Problem {
    pub net: Network,
    /// B × n_0.
    pub inputs: Array2<f64>,
    /// B × n_L.
    pub targets: Array2<f64>,
}

impl Problem {
    /// B, the number of examples.
    pub fn batch(&self) -> usize {
        self.inputs.nrows()
    }

    /// Checks that the data fit the network.
    pub fn new(net: Network, inputs: Array2<f64>, targets: Array2<f64>) -> Result<Problem> {
        let (n0, nl) = (net.widths[0], *net.widths.last().unwrap());
        if inputs.ncols() != n0 {
            return Err(Error::arg("--inputs", format!("inputs have {} features, the network's input width is {n0}", inputs.ncols())));
        }
        if targets.ncols() != nl {
            return Err(Error::arg("--targets", format!("targets have {} columns, the network's output width is {nl}", targets.ncols())));
        }
        if inputs.nrows() != targets.nrows() {
            return Err(Error::arg("--targets", format!("{} targets for {} inputs", targets.nrows(), inputs.nrows())));
        }
        if inputs.nrows() == 0 {
            return Err(Error::arg("--batch", "the batch is empty"));
        }
        Ok(Problem { net, inputs, targets })
    }
}
