//! Training data: the built-in digits, MNIST IDX files, `.npy` arrays, or a synthetic teacher
//! network; and the order in which SGD visits the examples.

use std::path::Path;

use ndarray::{Array1, Array2, s};
use ndarray_npy::ReadNpyExt;

use crate::error::{Error, Result};
use crate::model::{Init, InputSpec, Network, Params};
use crate::rng::{Purpose, Stream};

/// The training set: inputs (n × n_0) and targets (n × n_L), with where they came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub x: Array2<f64>,
    pub y: Array2<f64>,
    /// A one-line description for the terminal and meta.json.
    pub source: String,
}

impl Dataset {
    /// n, the number of examples.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }

    /// Always false: every constructor refuses an empty set.
    pub fn is_empty(&self) -> bool {
        self.x.nrows() == 0
    }

    /// The first `count` examples (all of them when `count` is larger).
    pub fn first(mut self, count: usize) -> Dataset {
        if count < self.len() {
            self.x = self.x.slice(s![..count, ..]).to_owned();
            self.y = self.y.slice(s![..count, ..]).to_owned();
            self.source = format!("{} (first {count})", self.source);
        }
        self
    }
}

const DIGITS_IMAGES: &[u8] = include_bytes!("../../data/digits/digits_images.npy");
const DIGITS_LABELS: &[u8] = include_bytes!("../../data/digits/digits_labels.npy");

/// The 1,797 8×8 handwritten digits embedded in the binary (data/digits/README.md: UCI
/// "Optical Recognition of Handwritten Digits", CC BY 4.0): pixels ÷ 16 in [0, 1], one-hot
/// targets over 10 classes.
///
/// # Errors
/// None in practice (the files are part of the binary); an internal error if they are corrupt.
pub fn digits() -> Result<Dataset> {
    let bad = |e: ndarray_npy::ReadNpyError| Error::Internal(format!("built-in digits: {e}"));
    let im = Array2::<u8>::read_npy(DIGITS_IMAGES).map_err(bad)?;
    let lb = Array1::<u8>::read_npy(DIGITS_LABELS).map_err(bad)?;
    let x = im.mapv(|v| f64::from(v) / 16.0);
    let y = one_hot(lb.iter().map(|&l| l as usize), 10, Path::new("digits_labels.npy"))?;
    Ok(Dataset { x, y, source: "digits: 1797 8×8 handwritten digits (UCI, CC BY 4.0), pixels/16, one-hot labels".into() })
}

/// One-hot rows for labels in 0..classes.
fn one_hot(labels: impl Iterator<Item = usize>, classes: usize, path: &Path) -> Result<Array2<f64>> {
    let labels: Vec<usize> = labels.collect();
    let mut y = Array2::zeros((labels.len(), classes));
    for (i, &l) in labels.iter().enumerate() {
        if l >= classes {
            return Err(Error::file(path, format!("label {l} of example {i} is outside 0..{}", classes - 1)));
        }
        y[(i, l)] = 1.0;
    }
    Ok(y)
}

/// The first `count` examples of MNIST-format IDX files (uncompressed), as `reproduce
/// nielsen` reads them (only those are converted to f64).
///
/// # Errors
/// As [`crate::theory::reproduce::read_mnist_idx`]: a truncated file, a label outside 0..9…
pub fn idx(images: &Path, labels: &Path, count: usize) -> Result<Dataset> {
    let (x, y) = crate::theory::reproduce::read_mnist_idx(images, labels, count)?;
    let source = format!("{} with {} ({} examples, pixels/255, one-hot labels)", images.display(), labels.display(), x.nrows());
    Ok(Dataset { x, y, source })
}

/// n × n_0 inputs and n × n_L targets from `.npy` files.
///
/// # Errors
/// Unreadable files, non-finite values, or row counts that differ.
pub fn npy(inputs: &Path, targets: &Path) -> Result<Dataset> {
    let x = crate::model::files::read_matrix(inputs, "inputs")?;
    let y = crate::model::files::read_matrix(targets, "targets")?;
    if x.nrows() != y.nrows() {
        return Err(Error::arg("--targets", format!("{} rows of targets for {} rows of inputs", y.nrows(), x.nrows())));
    }
    Ok(Dataset { source: format!("{} and {} ({} examples)", inputs.display(), targets.display(), x.nrows()), x, y })
}

/// A synthetic regression task: `count` inputs drawn as `--inputs` says (gaussian or sign),
/// targets `a^L` of a random teacher network of `depth` layers with widths
/// n_0, n_1, …, n_1, n_L, the student's activation and output layer, and `init`, drawn from
/// a stream of its own so that the student (same seed) does not start at the teacher.
///
/// # Errors
/// A depth of 0.
pub fn teacher(student: &Network, depth: usize, init: Init, inputs: &InputSpec, count: usize, seed: u64) -> Result<Dataset> {
    if depth == 0 {
        return Err(Error::arg("--data", "teacher:DEPTH needs a depth ≥ 1"));
    }
    let w = &student.widths;
    let hidden = if w.len() > 2 { w[1] } else { w[0] };
    let mut widths = vec![w[0]];
    widths.extend(std::iter::repeat_n(hidden, depth - 1));
    widths.push(*w.last().unwrap());
    let tseed = seed ^ 0x0074_6561_6368_6572; // "teacher"
    let t = Network::new(widths, student.activation, student.linear_output, crate::model::Cost::Quadratic, Params::Generated { init, seed: tseed })?;
    let x = inputs.materialise(seed, count, w[0])?;
    let tw = super::sgd::Weights::of(&t);
    let f = super::sgd::forward(&t, &tw, x.view()).map_err(|d| Error::Numerical(format!("the teacher network's layer {} overflowed f64; lower its depth or σ_w²", d.layer)))?;
    let y = f.last().unwrap().1.clone();
    Ok(Dataset { x, y, source: format!("teacher: {count} {inputs} inputs, targets from a random {} network of depth {depth} (init {}, seed {tseed:#x})", student.activation, init.kind) })
}

/// The order SGD visits the examples in epoch `epoch` (0-based): 0..n, or a Fisher–Yates
/// shuffle driven by the Philox stream of `shuffle`, a function of (seed, epoch) alone, so a
/// resumed run takes the same batches as an uninterrupted one.
pub fn order(n: usize, epoch: u64, shuffle: Option<u64>) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if let Some(seed) = shuffle {
        let s = Stream::new(seed ^ 0x0053_4855_4646_4c45); // "SHUFFLE"
        for i in (1..n).rev() {
            let u = s.uniform(Purpose::Input, epoch as u32, i as u32, (epoch >> 32) as u32);
            let j = ((u * (i + 1) as f64) as usize).min(i);
            idx.swap(i, j);
        }
    }
    idx
}
