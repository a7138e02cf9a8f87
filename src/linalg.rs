//! Spectral norms ‖W‖₂ by Lanczos with full reorthogonalisation, to a stated tolerance.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::rng::{Purpose, Stream};

/// The relative accuracy [`spectral_norm`] guarantees for ‖W‖₂ (from the a-posteriori bound
/// below); the tests hold it against an SVD.
pub const SPECTRAL_NORM_RTOL: f64 = 1e-10;

/// ‖W‖₂, the largest singular value, by the Lanczos method on the smaller Gram matrix
/// `A = WᵀW` (or `WWᵀ`).
///
/// ```text
/// A Q_k = Q_k T_k + β_k q_{k+1} e_kᵀ,  θ = λ_max(T_k),  r = β_k |s_k|  (T_k s = θ s)
/// stop when r²/(gap·θ) ≤ ε or r/θ ≤ ε,   ε = 2·SPECTRAL_NORM_RTOL / 10
/// ```
/// By the Kahan–Parlett–Jiang bound |λ − θ| ≤ r²/gap (gap = θ − θ₂), so θ^{1/2} is within
/// SPECTRAL_NORM_RTOL of ‖W‖₂. Every vector is reorthogonalised twice against the whole
/// basis ("twice is enough"), so no ghost copies of λ_max appear. Plain power iteration
/// converges like (σ₂/σ₁)^{2k}, painfully slowly for random matrices, whose top singular
/// values crowd together; Lanczos converges like a Chebyshev polynomial in the gap instead.
///
/// Reference: Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1–10.3.
///
/// ```
/// use ndarray::array;
/// let w = array![[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]];
/// assert!((gradscope::linalg::spectral_norm(w.view()) - 4.0).abs() < 1e-12);
/// ```
pub fn spectral_norm(w: ArrayView2<f64>) -> f64 {
    let (n_out, n_in) = w.dim();
    if w.is_empty() {
        return 0.0;
    }
    let use_wtw = n_in <= n_out;
    let m = n_in.min(n_out);
    // A v = Wᵀ(W v) (or W(Wᵀ v)) as row dots and row axpys: both walk W contiguously.
    let rows_dot = |v: &Array1<f64>| -> Array1<f64> { w.rows().into_iter().map(|r| r.dot(v)).collect() };
    let rows_axpy = |u: &Array1<f64>| -> Array1<f64> {
        let mut z = Array1::<f64>::zeros(n_in);
        for (r, &c) in w.rows().into_iter().zip(u) {
            z.scaled_add(c, &r);
        }
        z
    };
    // WᵀW v in one sweep over W: each row's dot and axpy while the row is in L1. The same
    // operations in the same order as rows_axpy(rows_dot(v)), so the same bits, at half the
    // memory traffic (W is MiBs at width ≥ 512, the matvec is bandwidth-bound).
    let wtw = |v: &Array1<f64>| -> Array1<f64> {
        let mut z = Array1::<f64>::zeros(n_in);
        for r in w.rows() {
            z.scaled_add(r.dot(v), &r);
        }
        z
    };
    let apply = |v: &Array1<f64>| -> Array1<f64> { if use_wtw { wtw(v) } else { rows_dot(&rows_axpy(v)) } };
    let eps = 2.0 * SPECTRAL_NORM_RTOL / 10.0;

    let mut q = lanczos_start(m);

    let mut basis: Vec<Array1<f64>> = Vec::with_capacity(m.min(400));
    let mut alpha: Vec<f64> = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut theta = 0.0_f64;
    for k in 0..m {
        let mut v = apply(&q);
        let a = q.dot(&v);
        alpha.push(a);
        basis.push(q.clone());
        for _ in 0..2 {
            for b in &basis {
                let c = b.dot(&v);
                v.scaled_add(-c, b);
            }
        }
        let bk = v.dot(&v).sqrt();
        // The Ritz values cost O(k³): look every fourth step (and at the end), which costs
        // at most three extra matrix-vector products.
        let last = k + 1 == m || bk <= f64::EPSILON * alpha.iter().fold(0.0_f64, |a, b| a.max(b.abs()));
        if !last && k % 4 != 3 {
            beta.push(bk);
            q = v / bk;
            continue;
        }
        let (th, done) = ritz_test(&alpha, &beta, bk, eps);
        theta = th;
        if theta <= 0.0 {
            return 0.0; // W = 0 on the Krylov space from a generic start: W = 0
        }
        if done || last {
            break;
        }
        beta.push(bk);
        q = v / bk;
    }
    theta.sqrt()
}

/// The Lanczos start vector of length m (a fixed Philox draw, unit norm): the same on every
/// backend, so the GPU's Lanczos walks the CPU's Krylov space.
pub(crate) fn lanczos_start(m: usize) -> Array1<f64> {
    let mut q = Array1::<f64>::zeros(m);
    Stream::new(0x5bec_7a1e).fill_normal(Purpose::Weight, 0, 0, q.as_slice_mut().unwrap());
    let norm = q.dot(&q).sqrt();
    q / norm
}

/// The stopping test after k Lanczos steps (α: k values, β: the k−1 couplings, `bk` = β_k):
/// the top Ritz value θ and whether it is within relative `eps` of λ_max
/// (r = β_k |s_k| ≤ eps·θ, or the Kahan–Parlett–Jiang bound r²/gap ≤ eps·θ), or the Krylov
/// space became invariant (β_k ≤ f64::EPSILON·θ), or the operator is zero (θ ≤ 0).
pub(crate) fn ritz_test(alpha: &[f64], beta: &[f64], bk: f64, eps: f64) -> (f64, bool) {
    let (theta, th2, s_last) = top_ritz(alpha, beta);
    if theta <= 0.0 {
        return (theta, true);
    }
    let r = bk * s_last.abs();
    let gap = (theta - th2).max(0.0);
    let converged = r <= eps * theta || (gap.is_finite() && gap > r && r * r <= eps * gap * theta);
    (theta, converged || bk <= f64::EPSILON * theta)
}

/// Largest and second-largest eigenvalue of the tridiagonal T (α diagonal, β off-diagonal)
/// and the last component of the top eigenvector.
fn top_ritz(alpha: &[f64], beta: &[f64]) -> (f64, f64, f64) {
    let k = alpha.len();
    let mut t = nalgebra::DMatrix::<f64>::zeros(k, k);
    for i in 0..k {
        t[(i, i)] = alpha[i];
        if i + 1 < k {
            t[(i, i + 1)] = beta[i];
            t[(i + 1, i)] = beta[i];
        }
    }
    let eig = t.symmetric_eigen();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let top = order[0];
    let second = if k > 1 { eig.eigenvalues[order[1]] } else { f64::NEG_INFINITY };
    (eig.eigenvalues[top], second, eig.eigenvectors[(k - 1, top)])
}

/// Block Lanczos prototype: (‖W‖₂, passes over W).
pub fn spectral_norm_block(w: ArrayView2<f64>, p: usize, eps: f64) -> (f64, usize) {
    let (n_out, n_in) = w.dim();
    if w.is_empty() {
        return (0.0, 0);
    }
    // The Gram matrix of the smaller side, as the Gram WᵀW of a tall matrix in row-major
    // layout (a wide W is transposed once: one pass, against the ~20 the method makes).
    let wt;
    let tall = if n_in <= n_out {
        w
    } else {
        wt = w.t().as_standard_layout().into_owned();
        wt.view()
    };
    let m = tall.ncols();
    let p = p.min(m);
    let mut basis: Vec<f64> = Vec::new(); // rows of length m, orthonormal
    let mut q = start_block(p, m);
    let mut diag: Vec<Array2<f64>> = Vec::new();
    let mut coupling: Vec<Array2<f64>> = Vec::new();
    let mut passes = 0;
    let mut theta;
    loop {
        let mut z = gram_pass(tall, q.view());
        passes += 1;
        let a = q.dot(&z.t());
        let a = (&a + &a.t()) * 0.5;
        let scale = a.diag().iter().fold(0.0_f64, |s, x| s.max(x.abs()));
        basis.extend(q.iter());
        let k = basis.len() / m;
        let qb = ArrayView2::from_shape((k, m), &basis).unwrap();
        for _ in 0..2 {
            let h = qb.dot(&z.t()); // k × p
            ndarray::linalg::general_mat_mul(-1.0, &h.t(), &qb, 1.0, &mut z);
        }
        diag.push(a);
        // QR of the residual block (rows): z = Bᵀ q_next, B upper triangular.
        let full = k + p > m;
        let mut b = Array2::<f64>::zeros((p, p));
        let tol = f64::EPSILON * scale.max(diag.iter().map(|d| d.diag().iter().fold(0.0_f64, |s, x| s.max(x.abs()))).fold(0.0, f64::max));
        for i in 0..p {
            for _ in 0..2 {
                for j in 0..i {
                    let c = z.row(j).dot(&z.row(i));
                    b[(j, i)] += c;
                    let (zj, mut zi) = z.multi_slice_mut((ndarray::s![j, ..], ndarray::s![i, ..]));
                    zi.scaled_add(-c, &zj);
                }
            }
            let nrm = z.row(i).dot(&z.row(i)).sqrt();
            if nrm > tol && !full {
                b[(i, i)] = nrm;
                z.row_mut(i).mapv_inplace(|x| x / nrm);
            } else {
                // Deflation: the residual direction is (numerically) inside the space; a fresh
                // random direction, uncoupled, keeps the block size.
                b.column_mut(i).fill(0.0);
                let mut r = Array1::<f64>::zeros(m);
                Stream::new(0x5bec_7a1e).fill_normal(Purpose::Weight, 1 + passes as u32, i as u32, r.as_slice_mut().unwrap());
                let qb = ArrayView2::from_shape((k, m), &basis).unwrap();
                for _ in 0..2 {
                    let h = qb.dot(&r);
                    r -= &qb.t().dot(&h);
                    for j in 0..i {
                        let c = z.row(j).dot(&r);
                        r.scaled_add(-c, &z.row(j));
                    }
                }
                let nr = r.dot(&r).sqrt();
                z.row_mut(i).assign(&(r / nr));
            }
        }
        coupling.push(b);
        // Ritz values of the block tridiagonal T.
        let nb = diag.len();
        let d = nb * p;
        let mut t = nalgebra::DMatrix::<f64>::zeros(d, d);
        for (j, a) in diag.iter().enumerate() {
            for r in 0..p {
                for c in 0..p {
                    t[(j * p + r, j * p + c)] = a[(r, c)];
                }
            }
            if j + 1 < nb {
                let bj = &coupling[j];
                for r in 0..p {
                    for c in 0..p {
                        // T[next r, this c] = B[r][c]
                        t[((j + 1) * p + r, j * p + c)] = bj[(r, c)];
                        t[(j * p + c, (j + 1) * p + r)] = bj[(r, c)];
                    }
                }
            }
        }
        let eig = t.symmetric_eigen();
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&x, &y| eig.eigenvalues[y].total_cmp(&eig.eigenvalues[x]));
        theta = eig.eigenvalues[order[0]];
        let th2 = if d > 1 { eig.eigenvalues[order[1]] } else { f64::NEG_INFINITY };
        if theta <= 0.0 {
            return (0.0, passes);
        }
        let bk = coupling.last().unwrap();
        let mut r2 = 0.0;
        for r in 0..p {
            let mut acc = 0.0;
            for c in 0..p {
                acc += bk[(r, c)] * eig.eigenvectors[((nb - 1) * p + c, order[0])];
            }
            r2 += acc * acc;
        }
        let r = r2.sqrt();
        let gap = (theta - th2).max(0.0);
        let converged = r <= eps * theta || (gap.is_finite() && gap > r && r * r <= eps * gap * theta);
        if converged || full {
            break;
        }
        q = z;
    }
    (theta.sqrt(), passes)
}

fn start_block(p: usize, m: usize) -> Array2<f64> {
    let mut q = Array2::<f64>::zeros((p, m));
    for (i, mut row) in q.rows_mut().into_iter().enumerate() {
        Stream::new(0x5bec_7a1e).fill_normal(Purpose::Weight, 0, i as u32, row.as_slice_mut().unwrap());
    }
    for i in 0..p {
        for _ in 0..2 {
            for j in 0..i {
                let c = q.row(j).dot(&q.row(i));
                let (qj, mut qi) = q.multi_slice_mut((ndarray::s![j, ..], ndarray::s![i, ..]));
                qi.scaled_add(-c, &qj);
            }
        }
        let n = q.row(i).dot(&q.row(i)).sqrt();
        q.row_mut(i).mapv_inplace(|x| x / n);
    }
    q
}

/// Zᵀ = Vᵀ WᵀW for a tall row-major W (rows × m) and p vectors as the rows of `vt`.
fn gram_pass(w: ArrayView2<f64>, vt: ArrayView2<f64>) -> Array2<f64> {
    let (rows, m) = w.dim();
    let p = vt.nrows();
    let panel = (65536 / m).clamp(8, 256);
    let n_panels = rows.div_ceil(panel);
    let groups = n_panels.min(8);
    let per = n_panels.div_ceil(groups);
    let threads = if rows * m * p >= 1 << 20 { std::thread::available_parallelism().map_or(1, |n| n.get()).min(groups) } else { 1 };
    let work = |g: usize| -> Array2<f64> {
        let mut z = Array2::<f64>::zeros((p, m));
        let mut c = Array2::<f64>::zeros((p, panel));
        for pi in g * per..((g + 1) * per).min(n_panels) {
            let r0 = pi * panel;
            let r1 = (r0 + panel).min(rows);
            let pw = w.slice(ndarray::s![r0..r1, ..]);
            let mut cv = c.slice_mut(ndarray::s![.., 0..r1 - r0]);
            ndarray::linalg::general_mat_mul(1.0, &vt, &pw.t(), 0.0, &mut cv);
            ndarray::linalg::general_mat_mul(1.0, &cv, &pw, 1.0, &mut z);
        }
        z
    };
    let parts: Vec<Array2<f64>> = if threads <= 1 {
        (0..groups).map(work).collect()
    } else {
        let mut out: Vec<Option<Array2<f64>>> = (0..groups).map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let work = &work;
                    s.spawn(move || (t..groups).step_by(threads).map(|g| (g, work(g))).collect::<Vec<_>>())
                })
                .collect();
            for h in handles {
                for (g, z) in h.join().unwrap() {
                    out[g] = Some(z);
                }
            }
        });
        out.into_iter().map(|z| z.unwrap()).collect()
    };
    let mut it = parts.into_iter();
    let mut z = it.next().unwrap();
    for part in it {
        z += &part;
    }
    z
}

/// Squared row norms of a B × n matrix: `‖row_b‖²`.
pub fn row_sq_norms(m: &Array2<f64>) -> Array1<f64> {
    m.map_axis(Axis(1), |r| r.dot(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svd_top(w: &Array2<f64>) -> f64 {
        let (r, c) = w.dim();
        let m = nalgebra::DMatrix::from_fn(r, c, |i, j| w[(i, j)]);
        m.singular_values().max()
    }

    #[test]
    fn matches_svd_to_stated_tolerance() {
        let s = Stream::new(77);
        for (n_out, n_in) in [(1, 1), (1, 9), (9, 1), (40, 40), (120, 37), (37, 120), (200, 200)] {
            let mut w = Array2::<f64>::zeros((n_out, n_in));
            for (i, mut row) in w.rows_mut().into_iter().enumerate() {
                s.fill_normal(Purpose::Weight, 3, i as u32, row.as_slice_mut().unwrap());
            }
            let got = spectral_norm(w.view());
            let want = svd_top(&w);
            let rel = (got - want).abs() / want;
            assert!(rel <= SPECTRAL_NORM_RTOL, "{n_out}x{n_in}: lanczos {got} svd {want} rel {rel:e}");
        }
    }

    #[test]
    fn exact_on_orthogonal_and_zero() {
        let q = crate::model::init::haar_orthogonal(&Array2::from_shape_fn((50, 50), |(i, j)| {
            Stream::new(5).normal(Purpose::Weight, 1, i as u32, j as u32)
        }));
        assert!((spectral_norm(q.view()) - 1.0).abs() < 1e-12);
        assert_eq!(spectral_norm(Array2::<f64>::zeros((4, 6)).view()), 0.0);
    }
}
