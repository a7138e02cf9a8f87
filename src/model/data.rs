//! Inputs x and targets y: drawn from the seed's stream, or loaded from `.npy` files.

use std::path::PathBuf;

use ndarray::Array2;

use super::files;
use crate::error::{Error, Result};
use crate::rng::{Purpose, Stream};

/// `--inputs`: where the B × n_0 inputs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSpec {
    /// `x_bj ~ N(0, 1)`.
    Gaussian,
    /// `x_bj = ±1` with equal probability (so ‖x‖² = n_0 exactly).
    Sign,
    /// A B × n_0 array in a `.npy` file (float32 or float64).
    File(PathBuf),
}

/// `--targets`: where the B × n_L targets come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    Zeros,
    /// `y_bj ~ N(0, 1)`.
    Gaussian,
    /// `y_bj ~ U[0, 1)`.
    Uniform,
    File(PathBuf),
}

fn is_file_spec(s: &str) -> bool {
    s.ends_with(".npy") || s.contains('/') || s.contains('\\')
}

impl std::str::FromStr for InputSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gaussian" | "normal" => Ok(InputSpec::Gaussian),
            "sign" | "rademacher" => Ok(InputSpec::Sign),
            _ if is_file_spec(s) => Ok(InputSpec::File(PathBuf::from(s))),
            _ => Err(Error::arg("--inputs", format!("'{s}' is neither gaussian, sign nor a .npy file"))),
        }
    }
}

impl std::str::FromStr for TargetSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zeros" | "zero" => Ok(TargetSpec::Zeros),
            "gaussian" | "normal" => Ok(TargetSpec::Gaussian),
            "uniform" => Ok(TargetSpec::Uniform),
            _ if is_file_spec(s) => Ok(TargetSpec::File(PathBuf::from(s))),
            _ => Err(Error::arg("--targets", format!("'{s}' is neither zeros, gaussian, uniform nor a .npy file"))),
        }
    }
}

impl std::fmt::Display for InputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputSpec::Gaussian => f.write_str("gaussian"),
            InputSpec::Sign => f.write_str("sign"),
            InputSpec::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::Zeros => f.write_str("zeros"),
            TargetSpec::Gaussian => f.write_str("gaussian"),
            TargetSpec::Uniform => f.write_str("uniform"),
            TargetSpec::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl InputSpec {
    /// The B × n_0 inputs (B and n_0 are checked against a file's shape by the caller).
    pub fn materialise(&self, seed: u64, batch: usize, n0: usize) -> Result<Array2<f64>> {
        let s = Stream::new(seed);
        let mut x = Array2::<f64>::zeros((batch, n0));
        match self {
            InputSpec::Gaussian => fill_rows(&mut x, |b, r| s.fill_normal(Purpose::Input, 0, b, r)),
            InputSpec::Sign => fill_rows(&mut x, |b, r| {
                s.fill_uniform(Purpose::Input, 0, b, r);
                r.iter_mut().for_each(|v| *v = if *v < 0.5 { -1.0 } else { 1.0 });
            }),
            InputSpec::File(p) => return files::read_matrix(p, "inputs"),
        }
        Ok(x)
    }
}

impl TargetSpec {
    /// The B × n_L targets.
    pub fn materialise(&self, seed: u64, batch: usize, nl: usize) -> Result<Array2<f64>> {
        let s = Stream::new(seed);
        let mut y = Array2::<f64>::zeros((batch, nl));
        match self {
            TargetSpec::Zeros => {}
            TargetSpec::Gaussian => fill_rows(&mut y, |b, r| s.fill_normal(Purpose::Target, 0, b, r)),
            TargetSpec::Uniform => fill_rows(&mut y, |b, r| s.fill_uniform(Purpose::Target, 0, b, r)),
            TargetSpec::File(p) => return files::read_matrix(p, "targets"),
        }
        Ok(y)
    }
}

fn fill_rows(m: &mut Array2<f64>, mut f: impl FnMut(u32, &mut [f64])) {
    for (b, mut row) in m.rows_mut().into_iter().enumerate() {
        f(b as u32, row.as_slice_mut().expect("standard layout"));
    }
}
