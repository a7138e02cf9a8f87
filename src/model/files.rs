//! Reading the user's arrays: `.npy` matrices and `.npz` weight files, float32 or float64,
//! as numpy and PyTorch write them; writing weights back in the same layout.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::{Array, Array1, Array2, Dimension, Ix1, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpyExt, ReadableElement};

use super::StoredParams;
use crate::error::{Error, Result};

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path).map(BufReader::new).map_err(|e| Error::file(path, format!("cannot open: {e}")))
}

/// Checks every entry is finite; the error names the array and the first bad index.
pub fn check_finite<D: Dimension>(a: &Array<f64, D>, path: &Path, array: &str) -> Result<()> {
    if let Some(pos) = a.iter().position(|v| !v.is_finite()) {
        // Unravel the logical (row-major) position into an index.
        let mut index = vec![0; a.ndim()];
        let mut rest = pos;
        for (d, &n) in a.shape().iter().enumerate().rev() {
            index[d] = rest % n;
            rest /= n;
        }
        let value = *a.iter().nth(pos).unwrap();
        return Err(Error::NonFinite { path: path.to_path_buf(), array: array.to_string(), index, value });
    }
    Ok(())
}

fn shape_error(path: &Path, array: &str, expected: &str, found: Vec<usize>) -> Error {
    Error::Shape { path: path.to_path_buf(), array: array.into(), expected: expected.into(), found }
}

/// Reads an array of f64 or f32 (widened exactly to f64) with dimension D.
fn read_any<D: Dimension, F>(path: &Path, mut read: F) -> Result<Array<f64, D>>
where
    F: FnMut(bool) -> std::result::Result<ArrayAny<D>, String>,
{
    match read(true) {
        Ok(a) => Ok(a.into_f64()),
        Err(e64) => match read(false) {
            Ok(a) => Ok(a.into_f64()),
            Err(_) => Err(Error::file(path, e64)),
        },
    }
}

enum ArrayAny<D: Dimension> {
    F64(Array<f64, D>),
    F32(Array<f32, D>),
}

impl<D: Dimension> ArrayAny<D> {
    fn into_f64(self) -> Array<f64, D> {
        match self {
            ArrayAny::F64(a) => a,
            ArrayAny::F32(a) => a.mapv(f64::from),
        }
    }
}

fn npy<T: ReadableElement, D: Dimension>(path: &Path) -> std::result::Result<Array<T, D>, String> {
    let r = open(path).map_err(|e| e.to_string())?;
    Array::<T, D>::read_npy(r).map_err(|e| format!("not a readable float32/float64 array of the expected rank ({e})"))
}

/// Reads a B × n matrix from a `.npy` file and checks it is non-empty and finite.
///
/// # Errors
/// Unreadable file, another dtype or rank, an empty array, NaN or ±Inf.
pub fn read_matrix(path: &Path, what: &str) -> Result<Array2<f64>> {
    if !path.exists() {
        return Err(Error::file(path, format!("{what} file does not exist")));
    }
    let a: Array2<f64> = read_any(path, |f64_first| {
        if f64_first { npy::<f64, Ix2>(path).map(ArrayAny::F64) } else { npy::<f32, Ix2>(path).map(ArrayAny::F32) }
    })?;
    if a.is_empty() {
        return Err(shape_error(path, what, "a non-empty 2-d array (batch × features)", a.shape().to_vec()));
    }
    check_finite(&a, path, what)?;
    Ok(a.as_standard_layout().to_owned())
}

/// Reads `w1..wL` and `b1..bL` from a `.npz` file (PyTorch `nn.Linear` layout: `wl` is
/// n_l × n_{l-1}), checks that the shapes chain and that every value is finite.
///
/// # Errors
/// A missing `w1`, a gap in the numbering, a missing bias, a shape that does not chain, a
/// non-finite value, or an unreadable file.
pub fn read_params(path: &Path) -> Result<StoredParams> {
    let mut z = NpzReader::new(open(path)?).map_err(|e| Error::file(path, format!("not a readable .npz file ({e})")))?;
    let names = z.names().map_err(|e| Error::file(path, format!("cannot list arrays ({e})")))?;
    let has = |n: &str| names.iter().any(|m| m == n || m == &format!("{n}.npy"));
    let key = |n: &str| if names.iter().any(|m| m == n) { n.to_string() } else { format!("{n}.npy") };
    let mut depth = 0;
    while has(&format!("w{}", depth + 1)) {
        depth += 1;
    }
    if depth == 0 {
        return Err(Error::file(path, format!("no array 'w1' (found: {}); expected w1..wL and b1..bL", names.join(", "))));
    }
    if let Some(extra) = names.iter().find(|n| {
        let n = n.trim_end_matches(".npy");
        (n.starts_with('w') || n.starts_with('b'))
            && n[1..].parse::<usize>().map(|k| k > depth).unwrap_or(false)
    }) {
        return Err(Error::file(path, format!("array '{extra}' but no 'w{}': the layers must be numbered 1..L without gaps", depth + 1)));
    }
    let mut w: Vec<Array2<f64>> = Vec::with_capacity(depth);
    let mut b = Vec::with_capacity(depth);
    for l in 1..=depth {
        let wn = format!("w{l}");
        let bn = format!("b{l}");
        if !has(&bn) {
            return Err(Error::file(path, format!("array '{wn}' has no bias '{bn}'")));
        }
        let wk = key(&wn);
        let bk = key(&bn);
        let wl: Array2<f64> = read_any(path, |f| {
            if f {
                z.by_name::<ndarray::OwnedRepr<f64>, Ix2>(&wk).map(ArrayAny::F64)
            } else {
                z.by_name::<ndarray::OwnedRepr<f32>, Ix2>(&wk).map(ArrayAny::F32)
            }
            .map_err(|e| format!("array '{wn}' is not a 2-d float32/float64 array ({e})"))
        })?;
        let bl: Array1<f64> = read_any(path, |f| {
            if f {
                z.by_name::<ndarray::OwnedRepr<f64>, Ix1>(&bk).map(ArrayAny::F64)
            } else {
                z.by_name::<ndarray::OwnedRepr<f32>, Ix1>(&bk).map(ArrayAny::F32)
            }
            .map_err(|e| format!("array '{bn}' is not a 1-d float32/float64 array ({e})"))
        })?;
        if wl.is_empty() {
            return Err(shape_error(path, &wn, "a non-empty n_l × n_{l-1} matrix", wl.shape().to_vec()));
        }
        if l > 1 {
            let prev = w[l - 2].nrows();
            if wl.ncols() != prev {
                return Err(shape_error(path, &wn, &format!("(n_{l}, {prev}) to follow w{} ({prev} rows)", l - 1), wl.shape().to_vec()));
            }
        }
        if bl.len() != wl.nrows() {
            return Err(shape_error(path, &bn, &format!("({},) to match w{l}", wl.nrows()), bl.shape().to_vec()));
        }
        check_finite(&wl, path, &wn)?;
        check_finite(&bl, path, &bn)?;
        w.push(wl.as_standard_layout().to_owned());
        b.push(bl);
    }
    Ok(StoredParams { w, b, source: path.display().to_string() })
}

/// Serialises `w1..wL`, `b1..bL` as a float64 `.npz` in the layout [`read_params`] reads
/// (write it with `export::write_atomic`).
pub fn params_npz(w: &[Array2<f64>], b: &[Array1<f64>]) -> Result<Vec<u8>> {
    let err = |e: ndarray_npy::WriteNpzError| Error::Internal(format!("writing .npz: {e}"));
    let mut npz = NpzWriter::new(std::io::Cursor::new(Vec::new()));
    for (l, (wl, bl)) in w.iter().zip(b).enumerate() {
        npz.add_array(format!("w{}", l + 1), wl).map_err(err)?;
        npz.add_array(format!("b{}", l + 1), bl).map_err(err)?;
    }
    Ok(npz.finish().map_err(err)?.into_inner())
}
