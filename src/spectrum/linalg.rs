//! The two factorisations the spectrum rests on: a Householder QR laid out by rows, and a
//! one-sided Jacobi SVD of a matrix whose rows carry their own power-of-two exponents.

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2, s};

use crate::backend::assemble::{pow2, renormalise_rows};
use crate::gemm;
use crate::error::{Error, Result};

/// ‖x‖₂ without under- or overflow: the entries are scaled by their largest magnitude first
/// (as LAPACK's `dnrm2` does), so columns whose entries sit near 1e-160 keep their norm.
fn norm2(x: ArrayView1<f64>) -> f64 {
    let m = x.iter().fold(0.0_f64, |a, v| a.max(v.abs()));
    if m == 0.0 || !m.is_finite() {
        return m;
    }
    if (1e-100..1e100).contains(&m) {
        return x.dot(&x).sqrt();
    }
    let inv = 1.0 / m;
    m * x.iter().map(|v| (v * inv) * (v * inv)).sum::<f64>().sqrt()
}

/// `y ← y − c·v` on contiguous slices (the inner loop of both Householder passes).
#[inline]
fn axpy(y: &mut [f64], c: f64, v: &[f64]) {
    y.iter_mut().zip(v).for_each(|(y, v)| *y -= c * v);
}

/// The QR factorisation M = Q R of an n × k matrix M handed in *transposed*, as `xt` (k × n,
/// row i = column i of M), with Q formed: `(qt, r)`, Qᵀ (m × n, m = min(n, k), orthonormal
/// rows) and R (m × k, upper trapezoidal). The spectrum keeps Q as its reflectors
/// ([`compact_qr_t`]); this is the reference its tests hold them to.
#[cfg(test)]
pub(crate) fn householder_qr_t(xt: Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    let (q, r) = compact_qr_t(xt);
    (q.qt(), r)
}

/// Householder reflectors j ∈ `js` of the row-stored matrix `buf` (rows of length n): row j
/// becomes v_j from position j on (leading 1 included), τ_j and β_j (the new diagonal of R)
/// are recorded, and each H_j is applied to rows j+1..`rows_end`.
fn reflect_rows(buf: &mut [f64], n: usize, js: std::ops::Range<usize>, rows_end: usize, tau: &mut [f64], beta: &mut [f64]) {
    for j in js {
        let (head, tail) = buf.split_at_mut((j + 1) * n);
        let x = &mut head[j * n + j..];
        let alpha = x[0];
        let nrm = norm2(ArrayView1::from(&*x));
        if nrm == 0.0 {
            continue; // H_j = I: the column is already zero on and below the diagonal.
        }
        let b = if alpha >= 0.0 { -nrm } else { nrm };
        beta[j] = b;
        tau[j] = (b - alpha) / b;
        let inv = 1.0 / (alpha - b);
        x[1..].iter_mut().for_each(|v| *v *= inv);
        x[0] = 1.0;
        for row in tail.chunks_exact_mut(n).take(rows_end.saturating_sub(j + 1)) {
            let y = &mut row[j..];
            let c = tau[j] * dot(x, y);
            if c != 0.0 {
                axpy(y, c, x);
            }
        }
    }
}

/// R (m × k) from the factored rows: β_j on the diagonal, row i's entry j above it.
fn upper_factor(buf: &[f64], n: usize, k: usize, tau: &[f64], beta: &[f64]) -> Array2<f64> {
    let m = tau.len();
    let mut r = Array2::<f64>::zeros((m, k));
    for j in 0..m {
        r[[j, j]] = if tau[j] == 0.0 { buf[j * n + j] } else { beta[j] };
        for i in j + 1..k {
            r[[j, i]] = buf[i * n + j];
        }
    }
    r
}

/// Reflectors per panel of the blocked QR.
const PANEL: usize = 32;

/// One panel of reflectors in compact WY form: `P = I − Vᵀ T V` acting on coordinates
/// `j0..` (V is nb × (n − j0), row a = v_{j0+a} with zeros before its diagonal).
#[derive(Clone)]
struct Panel {
    j0: usize,
    v: Array2<f64>,
    t: Array2<f64>,
}

/// The Q of a Householder QR kept as its reflectors, `Q = P_0 ⋯ P_{B−1} E` (n × m), and
/// never formed unless asked: applying Qᵀ to an n × p matrix costs what the product with an
/// explicit Q costs (2nmp), so forming Q (another 4/3 n³ for a square frame) is saved.
#[derive(Clone)]
pub(crate) struct Reflectors {
    n: usize,
    m: usize,
    panels: Vec<Panel>,
}

impl Reflectors {
    /// The length n of each column of Q.
    pub(crate) fn rows(&self) -> usize {
        self.n
    }

    /// `Qᵀ Y` (m × p) for Y (n × p): `P_{B−1}ᵀ ⋯ P_0ᵀ Y`, first m rows.
    pub(crate) fn apply_qt(&self, mut y: Array2<f64>) -> Array2<f64> {
        assert_eq!(y.nrows(), self.n, "Qᵀ Y needs Y with n rows");
        for p in &self.panels {
            let mut ys = y.slice_mut(s![p.j0.., ..]);
            let w1 = gemm::dot(&p.v, &ys);
            let w2 = gemm::dot(&p.t.t(), &w1);
            gemm::mat_mul(-1.0, &p.v.t(), &w2, 1.0, &mut ys);
        }
        if self.m == self.n { y } else { y.slice_move(s![..self.m, ..]) }
    }

    /// Qᵀ (m × n) formed (for the tests): `Eᵀ P_{B−1}ᵀ ⋯ P_0ᵀ`, panels from the last, on the rows of the
    /// identity; rows c < j0 of panel b are still e_c there and unaffected.
    #[cfg(test)]
    pub(crate) fn qt(&self) -> Array2<f64> {
        let mut qt = Array2::<f64>::eye(self.n).slice_move(s![..self.m, ..]).to_owned();
        for p in self.panels.iter().rev() {
            let mut qs = qt.slice_mut(s![p.j0.., p.j0..]);
            let w1 = qs.dot(&p.v.t());
            let w2 = w1.dot(&p.t.t());
            gemm::mat_mul(-1.0, &w2, &p.v, 1.0, &mut qs);
        }
        qt
    }
}

/// The QR factorisation M = Q R of an n × k matrix M handed in *transposed*, as `xt` (k × n,
/// row i = column i of M), so every Householder step works on contiguous rows; Q is kept as
/// its reflectors, R (m × k, m = min(n, k)) is upper trapezoidal. The signs of diag(R) are
/// whatever the reflectors give (β = −sign(α)‖x‖, LAPACK's choice); singular values do not
/// depend on them.
///
/// Blocked as LAPACK's `dgeqrf` is: each panel of [`PANEL`] reflectors is factored one
/// column at a time, then applied to the rest of the matrix as `I − Vᵀ T V`, with T from the
/// compact WY recurrence (Schreiber & Van Loan 1989), so nearly all the work is matrix
/// products. Golub & Van Loan, *Matrix Computations* (4th ed.), Algorithms 5.1.1, 5.2.1 and
/// §5.2.3.
pub(crate) fn compact_qr_t(xt: Array2<f64>) -> (Reflectors, Array2<f64>) {
    let (k, n) = xt.dim();
    let m = n.min(k);
    let mut x = xt.as_standard_layout().into_owned();
    let mut tau = vec![0.0; m];
    let mut beta = vec![0.0; m];
    let mut panels: Vec<Panel> = Vec::new();
    let mut j0 = 0;
    while j0 < m {
        let nb = PANEL.min(m - j0);
        // 1. The panel, one reflector at a time, applied within the panel only.
        reflect_rows(x.as_slice_mut().expect("standard layout"), n, j0..j0 + nb, j0 + nb, &mut tau, &mut beta);
        // 2. V and T: P = H_{j0} ⋯ H_{j0+nb−1} = I − Vᵀ T V.
        let mut v = Array2::<f64>::zeros((nb, n - j0));
        for a in 0..nb {
            let j = j0 + a;
            if tau[j] != 0.0 {
                v.slice_mut(s![a, a..]).assign(&x.slice(s![j, j..]));
            }
        }
        let mut t = Array2::<f64>::zeros((nb, nb));
        for a in 0..nb {
            let ta = tau[j0 + a];
            t[[a, a]] = ta;
            if a > 0 && ta != 0.0 {
                // T[0..a, a] = −τ_a T[0..a, 0..a] (V[0..a] v_aᵀ)
                let w = v.slice(s![..a, ..]).dot(&v.row(a));
                let col = t.slice(s![..a, ..a]).dot(&w);
                for i in 0..a {
                    t[[i, a]] = -ta * col[i];
                }
            }
        }
        // 3. The trailing rows (columns of M to the right): X ← X − ((X Vᵀ) T) V.
        let rest = j0 + nb;
        if rest < k {
            let mut xtr = x.slice_mut(s![rest.., j0..]);
            let w1 = gemm::dot(&xtr, &v.t());
            let w2 = gemm::dot(&w1, &t);
            gemm::mat_mul(-1.0, &w2, &v, 1.0, &mut xtr);
        }
        panels.push(Panel { j0, v, t });
        j0 += nb;
    }
    let r = upper_factor(x.as_slice().expect("standard layout"), n, k, &tau, &beta);
    (Reflectors { n, m, panels }, r)
}

/// Below this inner dimension the structured products fall back to one plain product.
const TRI_BASE: usize = 64;

/// Small blocks: `C += A·B` as one plain product, and None. Otherwise the split of an upper
/// trapezoidal A (m × k): h = k/2 columns on the left, of which rows ..min(m, h) are live.
fn split_or_multiply(a: ArrayView2<f64>, b: ArrayView2<f64>, c: &mut ArrayViewMut2<f64>) -> Option<(usize, usize)> {
    let (m, k) = a.dim();
    if k <= TRI_BASE || m == 0 {
        gemm::mat_mul(1.0, &a, &b, 1.0, c);
        return None;
    }
    Some((k / 2, m.min(k / 2)))
}

/// `C += A·B` for A (m × k) and B (k × p) both upper trapezoidal (zero below the diagonal),
/// m ≤ k ≤ p, by recursive 2 × 2 blocking: n³/3 flops for square n instead of 2n³
/// (the accumulated factor is T ← R T every layer, so this is a quarter of the work).
pub(crate) fn upper_times_upper(a: ArrayView2<f64>, b: ArrayView2<f64>, c: &mut ArrayViewMut2<f64>) {
    let Some((h, m1)) = split_or_multiply(a, b, c) else { return };
    upper_times_upper(a.slice(s![..m1, ..h]), b.slice(s![..h, ..h]), &mut c.slice_mut(s![..m1, ..h]));
    upper_times_full(a.slice(s![..m1, ..h]), b.slice(s![..h, h..]), &mut c.slice_mut(s![..m1, h..]));
    full_times_upper(a.slice(s![..m1, h..]), b.slice(s![h.., h..]), &mut c.slice_mut(s![..m1, h..]));
    if a.nrows() > h {
        upper_times_upper(a.slice(s![h.., h..]), b.slice(s![h.., h..]), &mut c.slice_mut(s![h.., h..]));
    }
}

/// `C += A·B`, A (m × k, m ≤ k) upper trapezoidal, B full.
fn upper_times_full(a: ArrayView2<f64>, b: ArrayView2<f64>, c: &mut ArrayViewMut2<f64>) {
    let Some((h, m1)) = split_or_multiply(a, b, c) else { return };
    upper_times_full(a.slice(s![..m1, ..h]), b.slice(s![..h, ..]), &mut c.slice_mut(s![..m1, ..]));
    gemm::mat_mul(1.0, &a.slice(s![..m1, h..]), &b.slice(s![h.., ..]), 1.0, &mut c.slice_mut(s![..m1, ..]));
    if a.nrows() > h {
        upper_times_full(a.slice(s![h.., h..]), b.slice(s![h.., ..]), &mut c.slice_mut(s![h.., ..]));
    }
}

/// `C += A·B`, A full, B (k × p, k ≤ p) upper trapezoidal.
fn full_times_upper(a: ArrayView2<f64>, b: ArrayView2<f64>, c: &mut ArrayViewMut2<f64>) {
    let k = b.nrows();
    if k <= TRI_BASE || a.nrows() == 0 {
        gemm::mat_mul(1.0, &a, &b, 1.0, c);
        return;
    }
    let h = k / 2;
    full_times_upper(a.slice(s![.., ..h]), b.slice(s![..h, ..h]), &mut c.slice_mut(s![.., ..h]));
    gemm::mat_mul(1.0, &a.slice(s![.., ..h]), &b.slice(s![..h, h..]), 1.0, &mut c.slice_mut(s![.., h..]));
    full_times_upper(a.slice(s![.., h..]), b.slice(s![h.., h..]), &mut c.slice_mut(s![.., h..]));
}

/// Singular values of the k × n matrix `diag(2^e) · a`, as log2 values in descending order
/// (−∞ for an exact zero), by one-sided Jacobi on its rows (Hestenes 1958; Demmel & Veselić
/// 1992, whose analysis gives relative accuracy O(ε κ(C)) for a row-scaled matrix D·C with
/// C well conditioned, however far apart the scales in D are).
///
/// Each row keeps its exponent: a rotation of rows p and q with exponents e_a ≥ e_b is
/// computed from the mantissas and ρ = 2^{e_b − e_a} alone, so rows 10^3000 apart rotate
/// exactly as rows of similar size do. With ζ′ = (ρ²‖b‖² − ‖a‖²) / (2 a·b),
/// τ = sign(ζ′) / (|ζ′| + √(ρ² + ζ′²)) and c = 1/√(1 + ρ²τ²) (t = ρτ is the classical
/// tangent, Golub & Van Loan Algorithm 8.6.2):
///
/// ```text
/// a ← c (a − ρ² τ b)   at exponent e_a
/// b ← c (b + τ a)      at exponent e_b
/// ```
///
/// # Errors
/// [`Error::Numerical`] if the rows are not orthogonal after 80 sweeps (not seen in practice).
pub(crate) fn graded_jacobi_log2_sv(a: &Array2<f64>, e: &[i64]) -> Result<Vec<f64>> {
    let mut a = a.as_standard_layout().into_owned();
    let mut e = e.to_vec();
    renormalise_rows(&mut a, &mut e);
    let (k, n) = a.dim();
    let buf = a.as_slice_mut().expect("standard layout");
    // Converged when every pair satisfies |a·b| ≤ TOL ‖a‖‖b‖.
    const TOL: f64 = 2.0 * f64::EPSILON;
    let mut sq: Vec<f64> = buf.chunks_exact(n.max(1)).take(k).map(|r| dot(r, r)).collect();
    let mut converged = k < 2;
    for _sweep in 0..80 {
        if converged {
            break;
        }
        let mut rotated = false;
        for p in 0..k {
            for q in p + 1..k {
                if sq[p] == 0.0 || sq[q] == 0.0 {
                    continue;
                }
                let (lo, hi) = buf.split_at_mut(q * n);
                let (rp, rq) = (&mut lo[p * n..(p + 1) * n], &mut hi[..n]);
                let g = dot(rp, rq);
                if g.abs() <= TOL * (sq[p] * sq[q]).sqrt() {
                    continue;
                }
                rotated = true;
                let swap = e[p] < e[q];
                let (ra, rb, ia, ib) = if swap { (rq, rp, q, p) } else { (rp, rq, p, q) };
                let d = e[ib] - e[ia];
                let rho = pow2(d.max(-1100));
                let rho2 = pow2((2 * d).max(-1100));
                let zeta = (rho2 * sq[ib] - sq[ia]) / (2.0 * g);
                let tau = zeta.signum() / (zeta.abs() + (rho2 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + rho * rho * tau * tau).sqrt();
                let ct = c * tau;
                let cr = c * rho2 * tau;
                for (x, y) in ra.iter_mut().zip(rb.iter_mut()) {
                    let (xa, yb) = (*x, *y);
                    *x = c * xa - cr * yb;
                    *y = c * yb + ct * xa;
                }
                for (row, i) in [(ra, ia), (rb, ib)] {
                    let s2 = dot(row, row);
                    // Back to a norm near 1 by a power of two (exact) when it drifts.
                    if !(0.25..=4.0).contains(&s2) && s2 > 0.0 {
                        let k2 = (0.5 * s2.log2()).round() as i64;
                        let f = pow2(-k2);
                        row.iter_mut().for_each(|v| *v *= f);
                        e[i] += k2;
                        sq[i] = dot(row, row);
                    } else {
                        sq[i] = s2;
                    }
                }
            }
        }
        converged = !rotated;
    }
    if !converged {
        return Err(Error::Numerical("the Jacobi SVD of the accumulated factor did not converge in 80 sweeps".into()));
    }
    let mut out: Vec<f64> = sq.iter().zip(&e).map(|(&s, &ei)| if s > 0.0 { ei as f64 + 0.5 * s.log2() } else { f64::NEG_INFINITY }).collect();
    out.sort_by(|x, y| y.total_cmp(x));
    Ok(out)
}

/// x·y with four accumulators, so the loop vectorises.
#[inline]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (cx, cy) = (x.chunks_exact(4), y.chunks_exact(4));
    let tail: f64 = cx.remainder().iter().zip(cy.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in cx.zip(cy) {
        for i in 0..4 {
            acc[i] += a[i] * b[i];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Uniform on [−0.5, 0.5), from a 64-bit LCG (Knuth's MMIX constants).
    pub(crate) fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn householder_reconstructs_and_is_orthonormal() {
        let mut s = 7;
        for &(n, k) in &[(6, 6), (9, 4), (4, 9), (1, 3), (5, 1), (150, 150), (200, 70), (70, 200), (97, 131)] {
            let xt = Array2::from_shape_fn((k, n), |_| lcg(&mut s));
            let (qt, r) = householder_qr_t(xt.clone());
            let m = n.min(k);
            assert_eq!(qt.dim(), (m, n));
            assert_eq!(r.dim(), (m, k));
            // M = Q R, i.e. Mᵀ = Rᵀ Qᵀ.
            let back = r.t().dot(&qt);
            assert!((&back - &xt).iter().all(|d| d.abs() < 1e-13), "{n}x{k}");
            let g = qt.dot(&qt.t());
            assert!((&g - &Array2::<f64>::eye(m)).iter().all(|d| d.abs() < 1e-13), "{n}x{k}");
            for j in 0..m {
                for i in 0..j {
                    assert_eq!(r[[j, i]], 0.0);
                }
            }
        }
    }

    #[test]
    fn reflectors_apply_the_formed_q() {
        let mut s = 11;
        for &(n, k, p) in &[(150, 150, 40), (200, 70, 90), (70, 200, 33), (5, 5, 3)] {
            let xt = Array2::from_shape_fn((k, n), |_| lcg(&mut s));
            let y = Array2::from_shape_fn((n, p), |_| lcg(&mut s));
            let (q, _) = compact_qr_t(xt.clone());
            let want = householder_qr_t(xt).0.dot(&y);
            let got = q.apply_qt(y);
            assert_eq!(got.dim(), want.dim());
            assert!((&got - &want).iter().all(|d| d.abs() < 1e-13), "{n}x{k}x{p}");
        }
    }

    #[test]
    fn structured_product_equals_the_plain_one() {
        let mut s = 5;
        for &(m, k, p) in &[(200, 200, 200), (130, 170, 210), (70, 300, 300), (65, 65, 65), (10, 20, 30)] {
            let up = |r: usize, c: usize, s: &mut u64| Array2::from_shape_fn((r, c), |(i, j)| if j >= i { lcg(s) } else { 0.0 });
            let (a, b) = (up(m, k, &mut s), up(k, p, &mut s));
            let mut c = Array2::<f64>::zeros((m, p));
            upper_times_upper(a.view(), b.view(), &mut c.view_mut());
            let want = a.dot(&b);
            assert!((&c - &want).iter().all(|d| d.abs() < 1e-12), "{m}x{k}x{p}");
        }
    }

    #[test]
    fn jacobi_matches_known_singular_values_across_3000_decades() {
        // diag(2^e)·U with U orthogonal-ish rows: the singular values are the row scales
        // times O(1) factors that the unscaled SVD of a small case fixes exactly.
        let mut s = 3;
        let a = Array2::from_shape_fn((4, 4), |_| lcg(&mut s));
        let plain = nalgebra::DMatrix::from_fn(4, 4, |i, j| a[[i, j]]).singular_values();
        let mut want: Vec<f64> = plain.iter().map(|v| v.log2()).collect();
        want.sort_by(|x, y| y.total_cmp(x));
        // Same matrix, every row shifted by the same huge exponent: values shift exactly.
        let got = graded_jacobi_log2_sv(&a, &[-9000; 4]).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - (w - 9000.0)).abs() < 1e-12, "{g} vs {}", w - 9000.0);
        }
        // Rows 2^-5000 apart: the small row's value is its component orthogonal to the big
        // one, which Gram–Schmidt gives in closed form.
        let a2 = ndarray::arr2(&[[1.0, 0.5], [0.25, 1.0]]);
        let got = graded_jacobi_log2_sv(&a2, &[0, -5000]).unwrap();
        let big = (1.0f64 + 0.25).sqrt().log2();
        let perp = ((0.25f64 * 0.5 - 1.0).abs() / 1.25f64.sqrt()).log2() - 5000.0;
        assert!((got[0] - big).abs() < 1e-14);
        assert!((got[1] - perp).abs() < 1e-12, "{} vs {perp}", got[1]);
    }
}
