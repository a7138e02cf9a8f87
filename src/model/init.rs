//! Initialisations (docs/MATH.md, "Initialisation"): how `W^l` and `b^l` are drawn.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array1, Array2};

use crate::error::{Error, Result};
use crate::rng::{Purpose, Stream};

/// The named initialisation schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InitKind {
    /// `W_ij ~ N(0, σ_w²/n_{l-1})`, `b_i ~ N(0, σ_b²)`.
    Gaussian,
    /// σ_w² = 1.
    Lecun,
    /// σ_w² = 2 (He et al. 2015).
    He,
    /// `Var W_ij = 2/(n_{l-1} + n_l)` (Glorot & Bengio 2010).
    XavierNormal,
    /// `W_ij ~ U(−a, a)`, `a = √(6/(n_{l-1} + n_l))`.
    XavierUniform,
    /// `σ_w · Q`, Q Haar-random (semi-)orthogonal (Saxe et al. 2014).
    Orthogonal,
    /// `N(0, 1/n_{l-1})` weights, `N(0, 1)` biases: Nielsen's `network2.py` default.
    Nielsen,
}

pub const INIT_NAMES: &[&str] = &[
    "gaussian",
    "lecun",
    "he",
    "xavier-normal",
    "xavier-uniform",
    "orthogonal",
    "nielsen",
];

impl fmt::Display for InitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitKind::Gaussian => "gaussian",
            InitKind::Lecun => "lecun",
            InitKind::He => "he",
            InitKind::XavierNormal => "xavier-normal",
            InitKind::XavierUniform => "xavier-uniform",
            InitKind::Orthogonal => "orthogonal",
            InitKind::Nielsen => "nielsen",
        })
    }
}

impl FromStr for InitKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "gaussian" | "normal" => InitKind::Gaussian,
            "lecun" => InitKind::Lecun,
            "he" | "kaiming" => InitKind::He,
            "xavier-normal" | "xavier" | "glorot" | "glorot-normal" => InitKind::XavierNormal,
            "xavier-uniform" | "glorot-uniform" => InitKind::XavierUniform,
            "orthogonal" => InitKind::Orthogonal,
            "nielsen" => InitKind::Nielsen,
            _ => {
                return Err(Error::arg(
                    "--init",
                    format!("unknown init '{s}' (expected one of: {})", INIT_NAMES.join(", ")),
                ));
            }
        })
    }
}

/// A resolved initialisation: the scheme with its σ_w² and σ_b².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Init {
    pub kind: InitKind,
    /// σ_w² for gaussian and orthogonal; implied by the scheme otherwise (None for xavier,
    /// whose variance depends on both widths).
    pub sigma_w2: Option<f64>,
    /// σ_b² of the biases.
    pub sigma_b2: f64,
}

impl Init {
    /// Resolves a scheme with the user's optional σ_w² and σ_b², refusing combinations the
    /// scheme fixes itself (e.g. `--init he --sigma-w2 1`).
    ///
    /// Defaults: gaussian and orthogonal take σ_w² = 1; every scheme but nielsen takes
    /// σ_b² = 0 unless given; nielsen fixes σ_b² = 1.
    ///
    /// # Errors
    /// A negative or non-finite variance, or a σ_w² the scheme fixes.
    pub fn new(kind: InitKind, sigma_w2: Option<f64>, sigma_b2: Option<f64>) -> Result<Init> {
        if let Some(v) = sigma_w2 {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::arg("--sigma-w2", format!("must be finite and ≥ 0, got {v}")));
            }
        }
        if let Some(v) = sigma_b2 {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::arg("--sigma-b2", format!("must be finite and ≥ 0, got {v}")));
            }
        }
        let fixed = |w: Option<f64>| -> Result<Option<f64>> {
            if sigma_w2.is_some() {
                Err(Error::arg(
                    "--sigma-w2",
                    format!("--init {kind} fixes the weight variance; use --init gaussian to choose σ_w²"),
                ))
            } else {
                Ok(w)
            }
        };
        let (w, b) = match kind {
            InitKind::Gaussian | InitKind::Orthogonal => (Some(sigma_w2.unwrap_or(1.0)), sigma_b2.unwrap_or(0.0)),
            InitKind::Lecun => (fixed(Some(1.0))?, sigma_b2.unwrap_or(0.0)),
            InitKind::He => (fixed(Some(2.0))?, sigma_b2.unwrap_or(0.0)),
            InitKind::XavierNormal | InitKind::XavierUniform => (fixed(None)?, sigma_b2.unwrap_or(0.0)),
            InitKind::Nielsen => {
                if sigma_b2.is_some() {
                    return Err(Error::arg("--sigma-b2", "--init nielsen fixes σ_b² = 1; use --init gaussian"));
                }
                (fixed(Some(1.0))?, 1.0)
            }
        };
        Ok(Init { kind, sigma_w2: w, sigma_b2: b })
    }

    /// The effective σ_w² of a layer, `n_{l-1} · Var W_ij` (what mean-field theory uses).
    pub fn layer_sigma_w2(&self, n_in: usize, n_out: usize) -> f64 {
        match self.sigma_w2 {
            Some(v) => v,
            None => 2.0 * n_in as f64 / (n_in + n_out) as f64,
        }
    }

    /// For inits whose weights are `std · G` with G the standard-normal matrix of the
    /// stream (gaussian, lecun, he, xavier-normal, nielsen), that std; None otherwise.
    /// ‖W‖₂ = std·‖G‖₂, so one spectral norm serves every σ_w² of a seed.
    pub fn normal_std(&self, n_in: usize, n_out: usize) -> Option<f64> {
        match self.kind {
            InitKind::XavierUniform | InitKind::Orthogonal => None,
            _ => Some((self.layer_sigma_w2(n_in, n_out) / n_in as f64).sqrt()),
        }
    }

    /// Draws `W^l` (n_out × n_in) from the seed's stream; `layer` is l ≥ 1.
    pub fn weights(&self, stream: &Stream, layer: usize, n_out: usize, n_in: usize) -> Array2<f64> {
        let l = layer as u32;
        let mut w = Array2::<f64>::zeros((n_out, n_in));
        match self.kind {
            InitKind::XavierUniform => {
                let a = (6.0 / (n_in + n_out) as f64).sqrt();
                par_rows(&mut w, |i, r| {
                    stream.fill_uniform(Purpose::Weight, l, i as u32, r);
                    r.iter_mut().for_each(|v| *v = a * (2.0 * *v - 1.0));
                });
            }
            InitKind::Orthogonal => {
                fill_normal_rows(&mut w, stream, l, 1.0);
                let s = self.sigma_w2.unwrap_or(1.0).sqrt();
                w = haar_orthogonal(&w).mapv(|v| s * v);
            }
            _ => {
                let std = (self.layer_sigma_w2(n_in, n_out) / n_in as f64).sqrt();
                fill_normal_rows(&mut w, stream, l, std);
            }
        }
        w
    }

    /// Draws `b^l` (n_out) from the seed's stream.
    pub fn biases(&self, stream: &Stream, layer: usize, n_out: usize) -> Array1<f64> {
        let mut b = Array1::<f64>::zeros(n_out);
        if self.sigma_b2 > 0.0 {
            let s = b.as_slice_mut().expect("contiguous");
            stream.fill_normal(Purpose::Bias, layer as u32, 0, s);
            let std = self.sigma_b2.sqrt();
            s.iter_mut().for_each(|v| *v *= std);
        }
        b
    }
}

fn fill_normal_rows(w: &mut Array2<f64>, stream: &Stream, layer: u32, std: f64) {
    par_rows(w, |i, r| {
        stream.fill_normal(Purpose::Weight, layer, i as u32, r);
        if std != 1.0 {
            r.iter_mut().for_each(|v| *v *= std);
        }
    });
}

/// W = std·G from the stream's unit normal matrix G (what [`Init::weights`] draws for
/// gaussian-family inits with that std), into `out`'s storage: each entry is multiplied
/// once by std, the very operation `fill_normal_rows` applies to a freshly drawn row, so
/// the result is W bit for bit. For a caller that holds G already (`backend::norms`).
pub fn scale_normal_into(out: &mut Array2<f64>, g: &Array2<f64>, std: f64) {
    assert_eq!(out.dim(), g.dim(), "W and G of one shape");
    par_rows(out, |i, r| scale_row(r, g.row(i).as_slice().expect("standard layout"), std));
}

/// Draws the stream's unit normal matrix G into `g` and W = std·G into `w` together,
/// row by row: each row of W is formed while its row of G is in cache, with the multiply
/// of `fill_normal_rows`, so W is what [`Init::weights`] draws for that std, bit for bit.
/// For a caller that needs both (`backend::norms`: G for a norm, W for a product).
pub fn fill_normal_and_scaled(g: &mut Array2<f64>, w: &mut Array2<f64>, stream: &Stream, layer: usize, std: f64) {
    assert_eq!(w.dim(), g.dim(), "W and G of one shape");
    let chunk = row_chunk(g.dim());
    let blocks = g.axis_chunks_iter_mut(ndarray::Axis(0), chunk).zip(w.axis_chunks_iter_mut(ndarray::Axis(0), chunk));
    run_blocks(blocks, |c, (mut gb, mut wb)| {
        for (i, (mut gr, mut wr)) in gb.rows_mut().into_iter().zip(wb.rows_mut()).enumerate() {
            let gr = gr.as_slice_mut().expect("standard layout");
            stream.fill_normal(Purpose::Weight, layer as u32, (c * chunk + i) as u32, gr);
            scale_row(wr.as_slice_mut().expect("standard layout"), gr, std);
        }
    });
}

/// `dst = std·src` entry by entry: the one multiply by which every path forms W = std·G
/// (`fill_normal_rows` multiplies in place by the same std), so all give the same bits.
fn scale_row(dst: &mut [f64], src: &[f64], std: f64) {
    if std != 1.0 {
        dst.iter_mut().zip(src).for_each(|(v, &x)| *v = x * std);
    } else {
        dst.copy_from_slice(src);
    }
}

/// Calls `f(row index, row)` for every row, on the free cores ([`crate::gemm::free_cores`])
/// when the matrix is large. Each entry depends only on its own Philox counter, so the
/// result is the same on any number of threads.
fn par_rows(w: &mut Array2<f64>, f: impl Fn(usize, &mut [f64]) + Sync) {
    let chunk = row_chunk(w.dim());
    run_blocks(w.axis_chunks_iter_mut(ndarray::Axis(0), chunk), |c, mut block| {
        for (i, mut row) in block.rows_mut().into_iter().enumerate() {
            f(c * chunk + i, row.as_slice_mut().expect("standard layout"));
        }
    });
}

/// Rows per block for filling a `rows × cols` matrix on the free cores: all of them (one
/// block, on the calling thread) when the matrix is small or no other core is free.
fn row_chunk((rows, cols): (usize, usize)) -> usize {
    let threads = crate::gemm::free_cores();
    if threads < 2 || rows < 2 || rows * cols < 1 << 15 { rows.max(1) } else { rows.div_ceil(threads) }
}

/// Runs `f(block index, block)` for every block: the first on the calling thread, the
/// others on helper threads that hold their cores ([`crate::gemm::hold`]) meanwhile.
fn run_blocks<B: Send>(blocks: impl Iterator<Item = B>, f: impl Fn(usize, B) + Sync) {
    let mut blocks = blocks.enumerate().collect::<Vec<_>>().into_iter();
    let first = blocks.next();
    let _helpers = crate::gemm::hold(blocks.len());
    let f = &f;
    std::thread::scope(|s| {
        for (c, b) in blocks {
            s.spawn(move || f(c, b));
        }
        if let Some((c, b)) = first {
            f(c, b);
        }
    });
}

/// The Haar-random (semi-)orthogonal factor of a Gaussian matrix G (n × m): Q of G = QR with
/// the signs of diag(R) moved into Q (Mezzadri 2007), so the result is Haar-distributed;
/// rows orthonormal when n < m, columns when n ≥ m.
pub fn haar_orthogonal(g: &Array2<f64>) -> Array2<f64> {
    let (n, m) = g.dim();
    let tall = n >= m;
    // nalgebra is column-major: a row-major n×m buffer is the column-major m×n transpose.
    let gt = nalgebra::DMatrix::from_column_slice(m, n, g.as_standard_layout().as_slice().unwrap());
    let a = if tall { gt.transpose() } else { gt }; // a is tall: rows ≥ cols
    let qr = a.qr();
    let mut q = qr.q();
    let r = qr.r();
    for j in 0..q.ncols() {
        if r[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    let (qr_rows, qr_cols) = (q.nrows(), q.ncols());
    let q_rm = Array2::from_shape_fn((qr_rows, qr_cols), |(i, j)| q[(i, j)]);
    if tall { q_rm } else { q_rm.reversed_axes().as_standard_layout().to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_is_orthogonal_in_both_shapes() {
        let s = Stream::new(9);
        let init = Init::new(InitKind::Orthogonal, Some(1.0), None).unwrap();
        for (n_out, n_in) in [(7, 7), (9, 4), (3, 8)] {
            let w = init.weights(&s, 2, n_out, n_in);
            assert_eq!(w.dim(), (n_out, n_in));
            let gram = if n_out >= n_in { w.t().dot(&w) } else { w.dot(&w.t()) };
            let k = gram.nrows();
            for i in 0..k {
                for j in 0..k {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((gram[(i, j)] - want).abs() < 1e-12, "{n_out}x{n_in}: gram[{i},{j}]");
                }
            }
        }
    }

    /// std·G formed from a held G, or drawn beside it, is the W `Init::weights` draws, bit
    /// for bit (and G the unit draw), for a std
    /// that rounds (σ_w² = 1.7), one that is a power of two, and std = 1; on a matrix large
    /// enough to be scaled on several threads.
    #[test]
    fn scaled_unit_normals_are_the_drawn_weights() {
        let s = Stream::new(3);
        for (sw2, n_out, n_in) in [(1.7, 300, 200), (4.0 * 256.0, 40, 256), (50.0, 30, 50)] {
            let init = Init::new(InitKind::Gaussian, Some(sw2), None).unwrap();
            let unit = Init::new(InitKind::Gaussian, Some(n_in as f64), None).unwrap();
            let g = unit.weights(&s, 4, n_out, n_in);
            let mut w = Array2::zeros((n_out, n_in));
            scale_normal_into(&mut w, &g, init.normal_std(n_in, n_out).unwrap());
            let want = init.weights(&s, 4, n_out, n_in);
            assert!(w.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "σ_w² = {sw2}");
            let (mut g2, mut w2) = (Array2::zeros((n_out, n_in)), Array2::zeros((n_out, n_in)));
            fill_normal_and_scaled(&mut g2, &mut w2, &s, 4, init.normal_std(n_in, n_out).unwrap());
            assert!(g2 == g && w2.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "drawn together, σ_w² = {sw2}");
        }
    }

    #[test]
    fn gaussian_variance_and_scheme_checks() {
        let s = Stream::new(1);
        let init = Init::new(InitKind::Gaussian, Some(2.0), Some(0.5)).unwrap();
        let w = init.weights(&s, 1, 400, 300);
        let var = w.mapv(|v| v * v).mean().unwrap() * 300.0;
        assert!((var - 2.0).abs() < 0.03, "σ_w² estimate {var}");
        let b = init.biases(&s, 1, 4000);
        let vb = b.mapv(|v| v * v).mean().unwrap();
        assert!((vb - 0.5).abs() < 0.04, "σ_b² estimate {vb}");
        assert!(Init::new(InitKind::He, Some(1.0), None).is_err());
        assert!(Init::new(InitKind::Nielsen, None, Some(1.0)).is_err());
        assert!(Init::new(InitKind::Gaussian, Some(-1.0), None).is_err());
        assert!("glorious".parse::<InitKind>().is_err());
    }
}
