//! Spectral norms ‖W‖₂ by Lanczos with full reorthogonalisation, to a stated tolerance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ndarray::{Array1, Array2, ArrayView2, Axis, CowArray};

use crate::rng::{Purpose, Stream};

/// The relative accuracy [`spectral_norm`] asks of ‖W‖₂ (from the a-posteriori bound
/// below); the tests hold it against an SVD.
pub const SPECTRAL_NORM_RTOL: f64 = 1e-12;

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
/// Each step is one pass over W (`A v = Σ_rows (r·v) r`, each row's dot and axpy while the
/// row is in L1), split into row groups fixed by the shape alone and summed in group order,
/// so the bits do not depend on how many threads ran the groups.
///
/// Reference: Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1–10.3.
///
/// ```
/// use ndarray::array;
/// let w = array![[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]];
/// assert!((gradscope::linalg::spectral_norm(w.view()) - 4.0).abs() < 1e-12);
/// ```
pub fn spectral_norm(w: ArrayView2<f64>) -> f64 {
    spectral_norm_on(w, std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// [`spectral_norm`] on at most `threads` threads (the caller's among them): the same bits
/// for every `threads ≥ 1`. For a caller that keeps the other cores busy with its own work.
pub fn spectral_norm_on(w: ArrayView2<f64>, threads: usize) -> f64 {
    let (n_out, n_in) = w.dim();
    if w.is_empty() {
        return 0.0;
    }
    // WWᵀ of a wide W is the WᵀW of its transpose: one copy, against the ~50 passes the
    // method makes, buys the one-pass fused kernel for both shapes.
    let tall = if n_in <= n_out { w.as_standard_layout() } else { CowArray::from(w.t().as_standard_layout().into_owned()) };
    let (rows, m) = tall.dim();
    let flat = tall.as_slice().expect("standard layout");
    let groups = row_groups(rows, m);
    let threads = threads.clamp(1, groups.len());
    let eps = 2.0 * SPECTRAL_NORM_RTOL / 10.0;
    if threads <= 1 {
        return lanczos_top(m, eps, |v| gram_sum(flat, m, &groups, v, |_| None));
    }
    // Workers live for the whole norm (one spawn per norm, not per pass). Each pass, every
    // thread, the caller included, takes the next group not yet taken. A group a worker
    // took but has not returned within one group's time after the caller ran out is
    // computed again by the caller (same bits whoever computes it), so a worker that the
    // OS has put aside, or that shares its core with other work, holds up a pass by one
    // group at most. Results carry the pass's number: a late one from an earlier pass is
    // dropped.
    struct Pass {
        id: usize,
        v: Vec<f64>,
        next: AtomicUsize,
    }
    let group = |g: usize, v: &[f64]| {
        let mut z = vec![0.0; m];
        gram_rows(&flat[groups[g].start * m..groups[g].end * m], m, v, &mut z);
        z
    };
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, usize, Vec<f64>)>();
        let mut to_workers = Vec::new();
        for _ in 1..threads {
            let (tx, rx) = mpsc::channel::<Arc<Pass>>();
            to_workers.push(tx);
            let (done_tx, group, n) = (done_tx.clone(), &group, groups.len());
            s.spawn(move || {
                for pass in rx {
                    loop {
                        let g = pass.next.fetch_add(1, Ordering::Relaxed);
                        if g >= n || done_tx.send((pass.id, g, group(g, &pass.v))).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        let (mut id, mut per_group) = (0, Duration::ZERO);
        lanczos_top(m, eps, |v| {
            id += 1;
            let pass = Arc::new(Pass { id, v: v.to_vec(), next: AtomicUsize::new(0) });
            for tx in &to_workers {
                tx.send(pass.clone()).expect("norm worker alive");
            }
            let mut parts: Vec<Option<Vec<f64>>> = vec![None; groups.len()];
            let (start, mut own) = (Instant::now(), 0);
            loop {
                let g = pass.next.fetch_add(1, Ordering::Relaxed);
                if g >= groups.len() {
                    break;
                }
                parts[g] = Some(group(g, v));
                own += 1;
            }
            if own > 0 {
                per_group = start.elapsed() / own;
            }
            // A missing group gets as long as one group takes here, then is done here.
            for g in 0..groups.len() {
                let deadline = Instant::now() + per_group;
                while parts[g].is_none() {
                    match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok((pid, h, z)) if pid == id => parts[h] = Some(z),
                        Ok(_) => {}
                        Err(_) => parts[g] = Some(group(g, v)),
                    }
                }
            }
            gram_sum(flat, m, &groups, v, |g| parts[g].take())
        })
    })
}

/// Row ranges of a `rows × m` matrix, by its shape alone: one range below ~2¹⁷ entries (a
/// pass takes tens of µs there, less than handing it to a thread), else up to 8.
fn row_groups(rows: usize, m: usize) -> Vec<std::ops::Range<usize>> {
    let g = (rows * m >> 17).clamp(1, 8).min(rows);
    let per = rows.div_ceil(g);
    (0..rows).step_by(per).map(|r| r..(r + per).min(rows)).collect()
}

/// Σ over groups, in group order, of each group's `Σ_rows (r·v) r`: `done(g)` hands in a
/// group computed elsewhere, None computes it here.
fn gram_sum(w: &[f64], m: usize, groups: &[std::ops::Range<usize>], v: &[f64], mut done: impl FnMut(usize) -> Option<Vec<f64>>) -> Array1<f64> {
    let mut z = vec![0.0; m];
    for (g, r) in groups.iter().enumerate() {
        let part = done(g).unwrap_or_else(|| {
            let mut p = vec![0.0; m];
            gram_rows(&w[r.start * m..r.end * m], m, v, &mut p);
            p
        });
        if g == 0 {
            z = part;
        } else {
            z.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
        }
    }
    Array1::from(z)
}

/// The Lanczos iteration on an m × m symmetric positive semi-definite operator given as
/// `apply`: √λ_max, to relative `eps` on λ_max by [`ritz_test`].
fn lanczos_top(m: usize, eps: f64, mut apply: impl FnMut(&[f64]) -> Array1<f64>) -> f64 {
    let mut q = lanczos_start(m);
    let mut basis: Vec<Array1<f64>> = Vec::with_capacity(m.min(400));
    let mut alpha: Vec<f64> = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut theta = 0.0_f64;
    for k in 0..m {
        let mut v = apply(q.as_slice().expect("contiguous"));
        let a = q.dot(&v);
        alpha.push(a);
        basis.push(q.clone());
        reorthogonalise(&basis, &mut v);
        let bk = v.dot(&v).sqrt();
        // The Ritz values cost O(k³): look every fourth step (and at the end), which costs
        // at most three extra passes; and after the first, where an operator with one
        // eigenvalue (an orthogonal W) is done, its β₁ only the rounding of the product.
        let last = k + 1 == m || bk <= f64::EPSILON * alpha.iter().fold(0.0_f64, |a, b| a.max(b.abs()));
        if !last && k % 4 != 3 && k != 0 {
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

/// Removes from `v` its components along the orthonormal `basis`, by modified Gram–Schmidt
/// run twice ("twice is enough": one sweep leaves errors of order ε·κ, the second brings
/// them to ε), so a Lanczos basis stays orthogonal to working precision.
pub fn reorthogonalise(basis: &[Array1<f64>], v: &mut Array1<f64>) {
    for _ in 0..2 {
        for b in basis {
            let c = b.dot(v);
            v.scaled_add(-c, b);
        }
    }
}

/// `z += Σ_rows (r·v) r` over the rows of a row-major block `w` (rows of length m): WᵀW v
/// restricted to those rows, in one sweep over them (each row's dot, then its axpy while
/// the row is in L1: W is MiBs at width ≥ 512 and the product is bandwidth-bound).
///
/// Two rows share each load of v and each load and store of z. The arithmetic is plain
/// IEEE multiplies and adds in a fixed order (16 lanes per dot, summed pairwise, then the
/// tail): no fused multiply-add, so the AVX2 build of the same code gives the same bits as
/// the baseline one, and pairing rows changes no bit.
pub(crate) fn gram_rows(w: &[f64], m: usize, v: &[f64], z: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { gram_rows_avx2(w, m, v, z) };
        return;
    }
    gram_rows_impl(w, m, v, z, dot2_lanes);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gram_rows_avx2(w: &[f64], m: usize, v: &[f64], z: &mut [f64]) {
    gram_rows_impl(w, m, v, z, |x0, x1, y| dot2_lanes_avx2(x0, x1, y));
}

/// Lanes per dot: 16 independent sums, enough to hide the add latency on two rows.
const LANES: usize = 16;

type Lanes = [f64; LANES];

#[inline(always)]
fn gram_rows_impl(w: &[f64], m: usize, v: &[f64], z: &mut [f64], dot2: impl Fn(&[f64], &[f64], &[f64]) -> (Lanes, Lanes)) {
    let (v, z) = (&v[..m], &mut z[..m]);
    let full = m - m % LANES;
    let dots = |r0: &[f64], r1: &[f64]| {
        let (a0, a1) = dot2(&r0[..full], &r1[..full], &v[..full]);
        (lane_sum(&a0) + tail_dot(&r0[full..], &v[full..]), lane_sum(&a1) + tail_dot(&r1[full..], &v[full..]))
    };
    let mut pairs = w.chunks_exact(2 * m);
    for pair in &mut pairs {
        let (r0, r1) = pair.split_at(m);
        let (c0, c1) = dots(r0, r1);
        for ((zi, x0), x1) in z.iter_mut().zip(r0).zip(r1) {
            *zi = (*zi + c0 * x0) + c1 * x1;
        }
    }
    for r in pairs.remainder().chunks_exact(m) {
        let (c, _) = dots(r, r);
        for (zi, x) in z.iter_mut().zip(r) {
            *zi += c * x;
        }
    }
}

/// The lane sums of two dots with y over whole chunks: lane i sums x[i + LANES·j]·y[i + LANES·j]
/// over j, each a multiply then an add (two roundings, never fused).
fn dot2_lanes(x0: &[f64], x1: &[f64], y: &[f64]) -> (Lanes, Lanes) {
    let (mut a0, mut a1) = ([0.0; LANES], [0.0; LANES]);
    for ((x0, x1), y) in x0.chunks_exact(LANES).zip(x1.chunks_exact(LANES)).zip(y.chunks_exact(LANES)) {
        for i in 0..LANES {
            a0[i] += x0[i] * y[i];
            a1[i] += x1[i] * y[i];
        }
    }
    (a0, a1)
}

/// [`dot2_lanes`] in AVX2 registers, lane for lane the same operations, so the same bits
/// (the compiler, left to itself, shuffles the two rows into half-width registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot2_lanes_avx2(x0: &[f64], x1: &[f64], y: &[f64]) -> (Lanes, Lanes) {
    use std::arch::x86_64::*;
    let n = y.len().min(x0.len()).min(x1.len()) / LANES * LANES;
    let (mut a0, mut a1) = ([_mm256_setzero_pd(); 4], [_mm256_setzero_pd(); 4]);
    let mut o = 0;
    while o < n {
        for k in 0..4 {
            // SAFETY: o + 4k + 4 ≤ n ≤ each slice's length.
            unsafe {
                let yv = _mm256_loadu_pd(y.as_ptr().add(o + 4 * k));
                a0[k] = _mm256_add_pd(a0[k], _mm256_mul_pd(_mm256_loadu_pd(x0.as_ptr().add(o + 4 * k)), yv));
                a1[k] = _mm256_add_pd(a1[k], _mm256_mul_pd(_mm256_loadu_pd(x1.as_ptr().add(o + 4 * k)), yv));
            }
        }
        o += LANES;
    }
    let (mut l0, mut l1) = ([0.0; LANES], [0.0; LANES]);
    for k in 0..4 {
        // SAFETY: 4k + 4 ≤ LANES.
        unsafe {
            _mm256_storeu_pd(l0.as_mut_ptr().add(4 * k), a0[k]);
            _mm256_storeu_pd(l1.as_mut_ptr().add(4 * k), a1[k]);
        }
    }
    (l0, l1)
}

#[inline(always)]
fn lane_sum(a: &Lanes) -> f64 {
    let mut h = *a;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            h[i] += h[i + n];
        }
    }
    h[0]
}

#[inline(always)]
fn tail_dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |s, (x, y)| s + x * y)
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

    fn gaussian(n_out: usize, n_in: usize, layer: u32) -> Array2<f64> {
        let s = Stream::new(77);
        let mut w = Array2::<f64>::zeros((n_out, n_in));
        for (i, mut row) in w.rows_mut().into_iter().enumerate() {
            s.fill_normal(Purpose::Weight, layer, i as u32, row.as_slice_mut().unwrap());
        }
        w
    }

    fn assert_svd(w: &Array2<f64>, what: &str) {
        let got = spectral_norm(w.view());
        let want = svd_top(w);
        let rel = (got - want).abs() / want;
        assert!(rel <= SPECTRAL_NORM_RTOL, "{what} {:?}: lanczos {got:e} svd {want:e} rel {rel:e}", w.dim());
    }

    #[test]
    fn matches_svd_to_stated_tolerance() {
        // Gaussian: the top singular values crowd (relative gap ~n^(-2/3)), the hard case
        // for the stopping rule; square, tall, wide, a vector, and a shape with several row
        // groups and odd lengths (the kernel's pairs and tails).
        for (k, (n_out, n_in)) in [(1, 1), (1, 9), (9, 1), (40, 40), (120, 37), (37, 120), (200, 200), (300, 301), (601, 257)].into_iter().enumerate() {
            assert_svd(&gaussian(n_out, n_in, 3 + k as u32), "gaussian");
        }
    }

    #[test]
    fn matches_svd_on_rank_deficient_and_near_degenerate() {
        // Rank 3 of 150 (most of the Krylov space is null) and a rank-one matrix.
        let (a, b) = (gaussian(150, 3, 20), gaussian(3, 130, 21));
        assert_svd(&a.dot(&b), "rank 3");
        let (u, v) = (gaussian(90, 1, 22), gaussian(1, 70, 23));
        assert_svd(&u.dot(&v), "rank 1");
        // Known singular values in a rotated basis (so the start vector sees no structure):
        // σ₁ = σ₂ exactly (the Krylov space sees one eigenvalue), and σ₂ = σ₁(1 − 1e-4), a
        // gap 70× narrower than a width-1024 Gaussian's.
        let q = crate::model::init::haar_orthogonal(&gaussian(160, 160, 24));
        for second in [3.0, 3.0 * (1.0 - 1e-4)] {
            let d = Array1::from_shape_fn(160, |i| match i {
                0 => 3.0,
                1 => second,
                _ => 2.0 + 1.0 / (i as f64),
            });
            let w = (&q * &d).dot(&q.t());
            let got = spectral_norm(w.view());
            assert!((got - 3.0).abs() <= 3.0 * SPECTRAL_NORM_RTOL, "σ₂ = {second}: {got:e}");
        }
    }

    #[test]
    fn exact_on_orthogonal_and_zero() {
        let q = crate::model::init::haar_orthogonal(&Array2::from_shape_fn((50, 50), |(i, j)| {
            Stream::new(5).normal(Purpose::Weight, 1, i as u32, j as u32)
        }));
        assert!((spectral_norm(q.view()) - 1.0).abs() < 1e-12);
        assert_eq!(spectral_norm(Array2::<f64>::zeros((4, 6)).view()), 0.0);
        assert_eq!(spectral_norm(Array2::<f64>::zeros((700, 300)).view()), 0.0);
        assert_eq!(spectral_norm(Array2::<f64>::zeros((0, 5)).view()), 0.0);
    }

    #[test]
    fn orthogonal_stops_after_one_step() {
        // All singular values equal: A = QᵀQ = I, so the Krylov space is invariant after the
        // first product and the method must stop there, at 1 to rounding.
        let q = crate::model::init::haar_orthogonal(&gaussian(300, 300, 30));
        let flat = q.as_slice().unwrap();
        let groups = row_groups(300, 300);
        let mut passes = 0;
        let got = lanczos_top(300, 2.0 * SPECTRAL_NORM_RTOL / 10.0, |v| {
            passes += 1;
            gram_sum(flat, 300, &groups, v, |_| None)
        });
        assert!((got - 1.0).abs() < 1e-13, "{got}");
        assert_eq!(passes, 1, "passes over W");
    }

    #[test]
    fn same_bits_on_any_thread_count_and_layout() {
        for (n_out, n_in) in [(1100, 300), (300, 1100), (1024, 256), (513, 513), (800, 800)] {
            let w = gaussian(n_out, n_in, 40);
            assert!(row_groups(n_out.max(n_in), n_out.min(n_in)).len() > 1, "the case must split");
            let one = spectral_norm_on(w.view(), 1).to_bits();
            for t in [2, 3, 8] {
                assert_eq!(spectral_norm_on(w.view(), t).to_bits(), one, "{n_out}x{n_in} on {t} threads");
            }
            // A transposed (column-major) view is the same matrix.
            let wt = w.t().as_standard_layout().into_owned();
            assert_eq!(spectral_norm(wt.t()).to_bits(), one, "{n_out}x{n_in} column-major");
        }
    }

    #[test]
    fn kernel_matches_plain_loops_bit_for_bit() {
        // The dispatched kernel (AVX2 where the CPU has it) against the portable one, and
        // both against the definition in plain loops with the same order of operations.
        for (rows, m) in [(1, 1), (3, 17), (5, 16), (8, 33), (7, 100)] {
            let w = gaussian(rows, m, 50);
            let v = gaussian(1, m, 51);
            let (w, v) = (w.as_slice().unwrap(), v.as_slice().unwrap());
            let mut fast = vec![0.5; m];
            gram_rows(w, m, v, &mut fast);
            let mut portable = vec![0.5; m];
            gram_rows_impl(w, m, v, &mut portable, dot2_lanes);
            let mut plain = vec![0.5; m];
            for r in w.chunks(m) {
                let mut lanes = [0.0; LANES];
                let full = m - m % LANES;
                for j in 0..full {
                    lanes[j % LANES] += r[j] * v[j];
                }
                let c = lane_sum(&lanes) + tail_dot(&r[full..], &v[full..]);
                for (z, x) in plain.iter_mut().zip(r) {
                    *z += c * x;
                }
            }
            let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&portable), "{rows}x{m}: dispatched vs portable");
            assert_eq!(bits(&fast), bits(&plain), "{rows}x{m}: dispatched vs plain loops");
        }
    }
}
