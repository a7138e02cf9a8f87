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
/// From m = 128 on, the passes are bandwidth-bound and most of them run in f32 on an f32
/// copy of W: Lanczos to ~1e-7, whose Ritz vector starts the f64 Lanczos, which then needs
/// 4–6 passes to meet the rule above and confirm it (its gap capped by the f32 run's, see
/// `ritz_test_gap`). The f32 phase only picks the start vector: the value is the f64
/// run's, held to the same tolerance. The stopping test is O(k) a step (Sturm bisection on
/// T), so it runs after every step.
///
/// Reference: Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1–10.3.
///
/// ```
/// use ndarray::array;
/// let w = array![[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]];
/// assert!((gradscope::linalg::spectral_norm(w.view()) - 4.0).abs() < 1e-12);
/// ```
pub fn spectral_norm(w: ArrayView2<f64>) -> f64 {
    spectral_norm_on(w, crate::gemm::cores())
}

/// [`spectral_norm`] on at most `threads` threads (the caller's among them): the same bits
/// for every `threads ≥ 1`. For a caller that keeps the other cores busy with its own work.
pub fn spectral_norm_on(w: ArrayView2<f64>, threads: usize) -> f64 {
    spectral_norm_counted(w, threads, true).0
}

/// [`spectral_norm_on`] with the passes over W it made, `[f64, f32]`; `f32_phase` false
/// runs the f64 Lanczos alone from the fixed start (the method before the f32 phase), for
/// the benchmark and the tests.
#[doc(hidden)]
pub fn spectral_norm_counted(w: ArrayView2<f64>, threads: usize, f32_phase: bool) -> (f64, [usize; 2]) {
    let (n_out, n_in) = w.dim();
    let mut passes = [0, 0];
    if w.is_empty() {
        return (0.0, passes);
    }
    // WWᵀ of a wide W is the WᵀW of its transpose: one copy, against the ~50 passes the
    // method makes, buys the one-pass fused kernel for both shapes.
    let tall = if n_in <= n_out { w.as_standard_layout() } else { CowArray::from(w.t().as_standard_layout().into_owned()) };
    let (rows, m) = tall.dim();
    let flat = tall.as_slice().expect("standard layout");
    let gram = Gram::new(flat, rows, m, f32_phase);
    let threads = threads.clamp(1, gram.groups.len());
    let eps = 2.0 * SPECTRAL_NORM_RTOL / 10.0;
    if threads <= 1 {
        let norm = lanczos_top(m, eps, gram.w32.is_some(), |v, low| {
            passes[usize::from(low)] += 1;
            gram.sum(v, &low.then(|| to_f32(v)).unwrap_or_default(), |_| None)
        });
        return (norm / gram.scale, passes);
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
        v32: Vec<f32>,
        next: AtomicUsize,
    }
    let n_groups = gram.groups.len();
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, usize, Vec<f64>)>();
        let mut to_workers = Vec::new();
        for _ in 1..threads {
            let (tx, rx) = mpsc::channel::<Arc<Pass>>();
            to_workers.push(tx);
            let (done_tx, gram) = (done_tx.clone(), &gram);
            s.spawn(move || {
                for pass in rx {
                    loop {
                        let g = pass.next.fetch_add(1, Ordering::Relaxed);
                        if g >= n_groups || done_tx.send((pass.id, g, gram.part(g, &pass.v, &pass.v32))).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        let (mut id, mut per_group) = (0, Duration::ZERO);
        let norm = lanczos_top(m, eps, gram.w32.is_some(), |v, low| {
            passes[usize::from(low)] += 1;
            id += 1;
            let pass = Arc::new(Pass { id, v: v.to_vec(), v32: low.then(|| to_f32(v)).unwrap_or_default(), next: AtomicUsize::new(0) });
            for tx in &to_workers {
                tx.send(pass.clone()).expect("norm worker alive");
            }
            let mut parts: Vec<Option<Vec<f64>>> = vec![None; n_groups];
            let (start, mut own) = (Instant::now(), 0);
            loop {
                let g = pass.next.fetch_add(1, Ordering::Relaxed);
                if g >= n_groups {
                    break;
                }
                parts[g] = Some(gram.part(g, v, &pass.v32));
                own += 1;
            }
            if own > 0 {
                per_group = start.elapsed() / own;
            }
            // A missing group gets as long as one group takes here, then is done here.
            for g in 0..n_groups {
                let deadline = Instant::now() + per_group;
                while parts[g].is_none() {
                    match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok((pid, h, z)) if pid == id => parts[h] = Some(z),
                        Ok(_) => {}
                        Err(_) => parts[g] = Some(gram.part(g, v, &pass.v32)),
                    }
                }
            }
            gram.sum(v, &pass.v32, |g| parts[g].take())
        });
        (norm / gram.scale, passes)
    })
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The operator A = WᵀW of a tall row-major W (rows × m), in row groups, and an f32 copy
/// of W (scaled by a power of two into f32's range) for the early passes where it pays.
struct Gram<'a> {
    w: std::borrow::Cow<'a, [f64]>,
    w32: Option<Vec<f32>>,
    m: usize,
    groups: Vec<std::ops::Range<usize>>,
    /// The power of two W was multiplied by (1 for W in [`F64_RANGE`]): ‖W‖₂ = ‖sW‖₂ / s.
    scale: f64,
}

/// The smallest Gram width m at which the norm starts with f32 passes: below it the norm
/// takes few passes over a cache-resident W, and the f64 restart costs what f32 saves.
const F32_MIN_WIDTH: usize = 128;

/// The range of W's largest |entry| in which its products stay clear of overflow and
/// underflow (entries of WᵀW v reach max²·rows): [2⁻²⁴⁰, 2²⁴⁰] in f64, [2⁻³², 2³²] in f32
/// (max² · 2³⁰ rows < 2¹²⁷). Outside, W is copied scaled by a power of two: exact, but for
/// entries that go subnormal, 2⁻⁷⁸⁰ below the largest, far under the rounding of ‖W‖₂.
const F64_RANGE: (f64, f64) = (pow2(-240), pow2(240));
const F32_RANGE: (f64, f64) = (pow2(-32), pow2(32));

const fn pow2(e: i64) -> f64 {
    f64::from_bits(((1023 + e) as u64) << 52)
}

impl<'a> Gram<'a> {
    fn new(w: &'a [f64], rows: usize, m: usize, f32_phase: bool) -> Self {
        let f32_phase = f32_phase && m >= F32_MIN_WIDTH;
        let (mut w32, big) = if f32_phase { f32_copy(w) } else { (None, max_abs(w)) };
        let mut gram = Gram { w: w.into(), w32: None, m, groups: row_groups(rows, m), scale: 1.0 };
        if big.is_finite() && big > 0.0 && !(F64_RANGE.0..=F64_RANGE.1).contains(&big) {
            gram.scale = pow2_below(big).recip();
            gram.w = gram.w.iter().map(|x| x * gram.scale).collect::<Vec<_>>().into();
            w32 = if f32_phase { f32_copy(&gram.w).0 } else { None };
        }
        gram.w32 = w32;
        gram
    }

    /// Group g's `Σ_rows (r·v) r`: in f64 when `v32` is empty, else in f32 on the f32 copy
    /// (then widened, so that the groups add in f64 alike for any thread count).
    fn part(&self, g: usize, v: &[f64], v32: &[f32]) -> Vec<f64> {
        let (r, m) = (&self.groups[g], self.m);
        match (&self.w32, v32.is_empty()) {
            (Some(w32), false) => {
                let mut z = vec![0.0_f32; m];
                gram_rows_f32(&w32[r.start * m..r.end * m], m, v32, &mut z);
                z.into_iter().map(f64::from).collect()
            }
            _ => {
                let mut z = vec![0.0; m];
                gram_rows(&self.w[r.start * m..r.end * m], m, v, &mut z);
                z
            }
        }
    }

    /// Σ over groups, in group order, of each group's part: `done(g)` hands in a group
    /// computed elsewhere, None computes it here.
    fn sum(&self, v: &[f64], v32: &[f32], mut done: impl FnMut(usize) -> Option<Vec<f64>>) -> Array1<f64> {
        let mut z = vec![0.0; self.m];
        for g in 0..self.groups.len() {
            let part = done(g).unwrap_or_else(|| self.part(g, v, v32));
            if g == 0 {
                z = part;
            } else {
                z.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
        }
        Array1::from(z)
    }
}

/// W in f32, scaled by a power of two (exact) when its largest entry lies outside
/// [`F32_RANGE`]: the f32 passes only find a start vector, on which a scale has no
/// effect. None when W has a non-finite entry or is zero (the f64 passes alone then give
/// NaN or 0). Also W's largest |entry| (NaN if it has a NaN), found in the same sweep.
fn f32_copy(w: &[f64]) -> (Option<Vec<f32>>, f64) {
    // Eight running maxima, not one: the sweep vectorises (it costs about one pass).
    let (mut lanes, mut nan) = ([0.0_f64; 8], false);
    let mut out = vec![0.0_f32; w.len()];
    for (c, o) in w.chunks(8).zip(out.chunks_mut(8)) {
        for i in 0..c.len() {
            let a = c[i].abs();
            lanes[i] = if a > lanes[i] { a } else { lanes[i] };
            nan |= a.is_nan();
            o[i] = c[i] as f32;
        }
    }
    let big = lanes.iter().fold(0.0_f64, |m, &x| m.max(x));
    if nan {
        return (None, f64::NAN);
    }
    if !big.is_finite() || big == 0.0 {
        return (None, big);
    }
    if !(F32_RANGE.0..=F32_RANGE.1).contains(&big) {
        let scale = pow2_below(big).recip();
        out.iter_mut().zip(w).for_each(|(o, &x)| *o = (x * scale) as f32);
    }
    (Some(out), big)
}

/// The largest |entry| of w; NaN if w has a NaN.
fn max_abs(w: &[f64]) -> f64 {
    w.iter().fold(0.0_f64, |big, x| if x.is_nan() || big.is_nan() { f64::NAN } else { big.max(x.abs()) })
}

/// The largest power of two ≤ x (x finite, > 0).
fn pow2_below(x: f64) -> f64 {
    2f64.powi(x.log2().floor() as i32)
}

/// Row ranges of a `rows × m` matrix, by its shape alone: one range below ~2¹⁷ entries (a
/// pass takes tens of µs there, less than handing it to a thread), else up to 8.
fn row_groups(rows: usize, m: usize) -> Vec<std::ops::Range<usize>> {
    let g = (rows * m >> 17).clamp(1, 8).min(rows);
    let per = rows.div_ceil(g);
    (0..rows).step_by(per).map(|r| r..(r + per).min(rows)).collect()
}

/// The f32 phase's stopping rule: relative residual r/θ below F32_RTOL, or r²/(gap·θ)
/// below F32_QTOL, or β_k ≤ F32_INVARIANT·θ. The f32 products carry relative errors of ~1e-7, so the Ritz
/// vector gets no closer to the top eigenvector than that over the relative gap, and a
/// Krylov space invariant in f64 (an orthogonal W) shows β_k at that level, not at
/// f64::EPSILON. The f64 phase makes the value exact whatever the f32 phase left; these
/// only balance f32 passes against f64 ones (`cargo test --release --lib passes_by_phase --
/// --ignored --nocapture`).
const F32_RTOL: f64 = 1e-7;
const F32_QTOL: f64 = 1e-12;
const F32_INVARIANT: f64 = 1e-5;

/// The f64 phase stops at the second step that meets the rule, not the first: a Ritz value
/// approaches λ_max from below, so stopping at the first leaves every norm low by a few
/// ulps on average (−1.7e-15 decades), which `log10_bound`'s sum over layers accumulates
/// (1.8e-12 decades at depth 1,000). One more pass cuts that to −5e-16.
const CONFIRM: usize = 2;

/// The Lanczos iteration on an m × m symmetric positive semi-definite operator given as
/// `apply(v, low)`: √λ_max, to relative `eps` on λ_max by [`ritz_test`]. With `two_phase`,
/// Lanczos first runs on the f32 passes (`low` true) to a loose tolerance, and the f64
/// Lanczos restarts from that Ritz vector, which has far fewer steps left to make.
fn lanczos_top(m: usize, eps: f64, two_phase: bool, mut apply: impl FnMut(&[f64], bool) -> Array1<f64>) -> f64 {
    let mut start = lanczos_start(m);
    let mut gap_rel = f64::INFINITY;
    if two_phase {
        if let Some((y, g)) = lanczos_f32(m, |v| apply(v, true)).ritz_vector() {
            start = y;
            gap_rel = g;
        }
    }
    let mut met = 0;
    let run = lanczos(m, start, gap_rel, 2, |v| apply(v, false), |alpha, beta, bk, gap_rel| {
        let (theta, done) = ritz_test_gap(alpha, beta, bk, eps, gap_rel);
        met += usize::from(done);
        // A Krylov space invariant to the tolerance (β_k ≤ eps·θ, an orthogonal W) has no
        // next vector to confirm with.
        (theta, met >= CONFIRM || (done && bk <= eps * theta))
    });
    run.theta.max(0.0).sqrt()
}

/// The f32 phase: Lanczos from the fixed start on the f32 products, to the loose rule above.
fn lanczos_f32(m: usize, apply: impl FnMut(&[f64]) -> Array1<f64>) -> Run {
    // One Gram–Schmidt sweep a step: its ε·κ loss of orthogonality is far below the f32
    // products' 1e-7, and the sweep is a tenth of a step's work at width 1024.
    lanczos(m, lanczos_start(m), f64::INFINITY, 1, apply, |alpha, beta, bk, _| {
        let (theta, th2, s_last) = top_ritz(alpha, beta);
        let r = bk * s_last.abs();
        let gap = (theta - th2).max(0.0);
        let done = theta <= 0.0
            || r <= F32_RTOL * theta
            || (gap.is_finite() && gap > r && r * r <= F32_QTOL * gap * theta)
            || bk <= F32_INVARIANT * theta;
        (theta, done)
    })
}

/// A Lanczos run: the basis, T's α and β, the last β_k and the top Ritz value.
struct Run {
    basis: Vec<Array1<f64>>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    theta: f64,
}

impl Run {
    /// The unit Ritz vector of θ and T's relative gap (θ − θ₂)/θ, if finite and positive.
    fn ritz_vector(&self) -> Option<(Array1<f64>, f64)> {
        if !(self.theta > 0.0) || !self.theta.is_finite() {
            return None;
        }
        let t = Tridiagonal::new(&self.alpha, &self.beta[..self.alpha.len() - 1]);
        let (lo, hi) = t.top(1e-12);
        let (s, th2) = (t.top_vector(hi), t.second(lo, hi));
        let mut y = Array1::<f64>::zeros(self.basis[0].len());
        for (q, c) in self.basis.iter().zip(&s) {
            y.scaled_add(*c, q);
        }
        let norm = y.dot(&y).sqrt();
        if !(norm > 0.0) || !norm.is_finite() {
            return None;
        }
        Some((y / norm, ((self.theta - th2) / self.theta).max(0.0)))
    }
}

/// Lanczos from the unit `q`: steps until `test(α, β, β_k, gap_rel)` says done (it gives θ
/// and done), the Krylov space is invariant, or m steps.
fn lanczos(m: usize, mut q: Array1<f64>, gap_rel: f64, sweeps: usize, mut apply: impl FnMut(&[f64]) -> Array1<f64>, mut test: impl FnMut(&[f64], &[f64], f64, f64) -> (f64, bool)) -> Run {
    let mut run = Run { basis: Vec::with_capacity(m.min(400)), alpha: Vec::new(), beta: Vec::new(), theta: 0.0 };
    for k in 0..m {
        let mut v = apply(q.as_slice().expect("contiguous"));
        let a = q.dot(&v);
        run.alpha.push(a);
        run.basis.push(q.clone());
        for _ in 0..sweeps {
            gram_schmidt(&run.basis, &mut v);
        }
        let bk = v.dot(&v).sqrt();
        // The test costs O(k) a step (Sturm bisection on T), so it runs every step: no
        // pass is made past convergence. After the first, an operator with one eigenvalue
        // (an orthogonal W) is done, its β₁ only the rounding of the product.
        let last = k + 1 == m || bk <= f64::EPSILON * run.alpha.iter().fold(0.0_f64, |a, b| a.max(b.abs()));
        let (th, done) = test(&run.alpha, &run.beta, bk, gap_rel);
        run.theta = th;
        if last && !done && th > 0.0 {
            // The test's θ is a 1e-9 bracket until it passes: to rounding here as well.
            let t = Tridiagonal::new(&run.alpha, &run.beta);
            let (lo, hi) = t.top(1e-9);
            run.theta = t.refine(lo, hi);
        }
        run.beta.push(bk);
        if th <= 0.0 || done || last {
            break;
        }
        q = v / bk;
    }
    run
}

/// Removes from `v` its components along the orthonormal `basis`, by modified Gram–Schmidt
/// run twice ("twice is enough": one sweep leaves errors of order ε·κ, the second brings
/// them to ε), so a Lanczos basis stays orthogonal to working precision.
pub fn reorthogonalise(basis: &[Array1<f64>], v: &mut Array1<f64>) {
    gram_schmidt(basis, v);
    gram_schmidt(basis, v);
}

/// One modified Gram–Schmidt sweep of `v` against the orthonormal `basis`.
fn gram_schmidt(basis: &[Array1<f64>], v: &mut Array1<f64>) {
    for b in basis {
        let c = b.dot(v);
        v.scaled_add(-c, b);
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
    gram_rows_impl(w, m, v, z, dot2_lanes::<f64, LANES>);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gram_rows_avx2(w: &[f64], m: usize, v: &[f64], z: &mut [f64]) {
    gram_rows_impl(w, m, v, z, |x0, x1, y| dot2_lanes_avx2(x0, x1, y));
}

/// Lanes per dot: 16 independent sums, enough to hide the add latency on two rows.
const LANES: usize = 16;

type Lanes = [f64; LANES];

/// The element of a Gram pass: f64, or f32 for the early passes. Generic code monomorphises
/// to the same operations in the same order for each.
trait Elem: Copy + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + std::ops::AddAssign {}
impl Elem for f64 {}
impl Elem for f32 {}

#[inline(always)]
fn gram_rows_impl<T: Elem, const L: usize>(w: &[T], m: usize, v: &[T], z: &mut [T], dot2: impl Fn(&[T], &[T], &[T]) -> ([T; L], [T; L])) {
    let (v, z) = (&v[..m], &mut z[..m]);
    let full = m - m % L;
    let dots = |r0: &[T], r1: &[T]| {
        let (a0, a1) = dot2(&r0[..full], &r1[..full], &v[..full]);
        (lane_sum(&a0) + tail_dot(&r0[full..], &v[full..]), lane_sum(&a1) + tail_dot(&r1[full..], &v[full..]))
    };
    let mut pairs = w.chunks_exact(2 * m);
    for pair in &mut pairs {
        let (r0, r1) = pair.split_at(m);
        let (c0, c1) = dots(r0, r1);
        for ((zi, &x0), &x1) in z.iter_mut().zip(r0).zip(r1) {
            *zi = (*zi + c0 * x0) + c1 * x1;
        }
    }
    for r in pairs.remainder().chunks_exact(m) {
        let (c, _) = dots(r, r);
        for (zi, &x) in z.iter_mut().zip(r) {
            *zi += c * x;
        }
    }
}

/// The lane sums of two dots with y over whole chunks: lane i sums x[i + L·j]·y[i + L·j]
/// over j, each a multiply then an add (two roundings, never fused).
fn dot2_lanes<T: Elem, const L: usize>(x0: &[T], x1: &[T], y: &[T]) -> ([T; L], [T; L]) {
    let (mut a0, mut a1) = ([T::default(); L], [T::default(); L]);
    for ((x0, x1), y) in x0.chunks_exact(L).zip(x1.chunks_exact(L)).zip(y.chunks_exact(L)) {
        for i in 0..L {
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
fn lane_sum<T: Elem, const L: usize>(a: &[T; L]) -> T {
    let mut h = *a;
    let mut n = L;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            h[i] += h[i + n];
        }
    }
    h[0]
}

#[inline(always)]
fn tail_dot<T: Elem>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::default(), |s, (&x, &y)| s + x * y)
}

/// [`gram_rows`] in f32 on an f32 copy of W: half the bytes per pass and twice the lanes.
/// As there, plain multiplies and adds in a fixed order (32 lanes per dot, summed
/// pairwise, then the tail; no fused multiply-add), so the AVX-512, AVX2 and portable
/// paths give the same bits.
fn gram_rows_f32(w: &[f32], m: usize, v: &[f32], z: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { gram_rows_f32_avx512(w, m, v, z) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { gram_rows_f32_avx2(w, m, v, z) };
            return;
        }
    }
    gram_rows_impl(w, m, v, z, dot2_lanes::<f32, LANES32>);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gram_rows_f32_avx512(w: &[f32], m: usize, v: &[f32], z: &mut [f32]) {
    gram_rows_impl(w, m, v, z, |x0, x1, y| dot2_lanes_f32_avx512(x0, x1, y));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gram_rows_f32_avx2(w: &[f32], m: usize, v: &[f32], z: &mut [f32]) {
    gram_rows_impl(w, m, v, z, |x0, x1, y| dot2_lanes_f32_avx2(x0, x1, y));
}

/// Lanes per f32 dot: two AVX-512 or four AVX2 registers per row.
const LANES32: usize = 32;

type Lanes32 = [f32; LANES32];

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot2_lanes_f32_avx2(x0: &[f32], x1: &[f32], y: &[f32]) -> (Lanes32, Lanes32) {
    use std::arch::x86_64::*;
    let n = y.len().min(x0.len()).min(x1.len()) / LANES32 * LANES32;
    let (mut a0, mut a1) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
    let mut o = 0;
    while o < n {
        for k in 0..4 {
            // SAFETY: o + 8k + 8 ≤ n ≤ each slice's length.
            unsafe {
                let yv = _mm256_loadu_ps(y.as_ptr().add(o + 8 * k));
                a0[k] = _mm256_add_ps(a0[k], _mm256_mul_ps(_mm256_loadu_ps(x0.as_ptr().add(o + 8 * k)), yv));
                a1[k] = _mm256_add_ps(a1[k], _mm256_mul_ps(_mm256_loadu_ps(x1.as_ptr().add(o + 8 * k)), yv));
            }
        }
        o += LANES32;
    }
    let (mut l0, mut l1) = ([0.0; LANES32], [0.0; LANES32]);
    for k in 0..4 {
        // SAFETY: 8k + 8 ≤ LANES32.
        unsafe {
            _mm256_storeu_ps(l0.as_mut_ptr().add(8 * k), a0[k]);
            _mm256_storeu_ps(l1.as_mut_ptr().add(8 * k), a1[k]);
        }
    }
    (l0, l1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot2_lanes_f32_avx512(x0: &[f32], x1: &[f32], y: &[f32]) -> (Lanes32, Lanes32) {
    use std::arch::x86_64::*;
    let n = y.len().min(x0.len()).min(x1.len()) / LANES32 * LANES32;
    let (mut a0, mut a1) = ([_mm512_setzero_ps(); 2], [_mm512_setzero_ps(); 2]);
    let mut o = 0;
    while o < n {
        for k in 0..2 {
            // SAFETY: o + 16k + 16 ≤ n ≤ each slice's length.
            unsafe {
                let yv = _mm512_loadu_ps(y.as_ptr().add(o + 16 * k));
                a0[k] = _mm512_add_ps(a0[k], _mm512_mul_ps(_mm512_loadu_ps(x0.as_ptr().add(o + 16 * k)), yv));
                a1[k] = _mm512_add_ps(a1[k], _mm512_mul_ps(_mm512_loadu_ps(x1.as_ptr().add(o + 16 * k)), yv));
            }
        }
        o += LANES32;
    }
    let (mut l0, mut l1) = ([0.0; LANES32], [0.0; LANES32]);
    for k in 0..2 {
        // SAFETY: 16k + 16 ≤ LANES32.
        unsafe {
            _mm512_storeu_ps(l0.as_mut_ptr().add(16 * k), a0[k]);
            _mm512_storeu_ps(l1.as_mut_ptr().add(16 * k), a1[k]);
        }
    }
    (l0, l1)
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
    ritz_test_gap(alpha, beta, bk, eps, f64::INFINITY)
}

/// [`ritz_test`] with the gap taken as at most `gap_rel·θ`. A Lanczos run restarted from a
/// good Ritz vector sees λ₂ late (θ₂ ≤ λ₂ always, and its Krylov space is mostly the start
/// vector's small error), so θ − θ₂ may overstate the gap there; the earlier run's gap,
/// measured from a random start over many steps, caps it.
///
/// θ is found to 1e-9 for the test (which needs r, the gap and θ to a few digits) and to
/// the last bits only once the test passes: the value returned then is λ_max(T) to
/// rounding, else a close upper bracket of it.
fn ritz_test_gap(alpha: &[f64], beta: &[f64], bk: f64, eps: f64, gap_rel: f64) -> (f64, bool) {
    let t = Tridiagonal::new(alpha, beta);
    let (lo, hi) = t.top(1e-9);
    if hi <= 0.0 {
        return (hi.max(0.0), true);
    }
    let th2 = t.second(lo, hi);
    let r = bk * t.top_vector(hi).last().copied().unwrap_or(1.0).abs();
    let gap = (lo - th2).max(0.0).min(gap_rel * lo);
    let converged = r <= eps * lo || (gap.is_finite() && gap > r && r * r <= eps * gap * lo) || bk <= f64::EPSILON * lo;
    if converged { (t.refine(lo, hi), true) } else { (hi, false) }
}

/// Largest and second-largest eigenvalue of the tridiagonal T (α diagonal, β off-diagonal)
/// and the last component of the top eigenvector, for the f32 phase's looser test.
fn top_ritz(alpha: &[f64], beta: &[f64]) -> (f64, f64, f64) {
    let t = Tridiagonal::new(alpha, beta);
    let (lo, hi) = t.top(1e-9);
    (hi, t.second(lo, hi), t.top_vector(hi).last().copied().unwrap_or(1.0))
}

/// The Lanczos tridiagonal T_k (α: k values, β: the k − 1 couplings, all > 0), whose top
/// eigenvalue and eigenvector the stopping test needs each step: by Sturm bisection and one
/// recurrence, O(k) a sweep, where a dense eigensolver costs O(k³).
///
/// Reference: Demmel, *Applied Numerical Linear Algebra*, §5.3.4 (bisection, the LAPACK
/// `dstebz` pivot guard); Parlett, *The Symmetric Eigenvalue Problem*, §7.
struct Tridiagonal<'a> {
    alpha: &'a [f64],
    beta: &'a [f64],
    /// The smallest pivot magnitude allowed (a pivot nearer 0 is taken as −pivmin).
    pivmin: f64,
    /// Gershgorin brackets of the whole spectrum, padded by a few ulps.
    lo: f64,
    hi: f64,
}

impl<'a> Tridiagonal<'a> {
    fn new(alpha: &'a [f64], beta: &'a [f64]) -> Self {
        let k = alpha.len();
        let b = |i: usize| if i < k - 1 { beta[i].abs() } else { 0.0 };
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for i in 0..k {
            let radius = b(i) + if i > 0 { b(i - 1) } else { 0.0 };
            lo = lo.min(alpha[i] - radius);
            hi = hi.max(alpha[i] + radius);
        }
        let pivmin = f64::MIN_POSITIVE * beta[..k - 1].iter().fold(1.0_f64, |m, b| m.max(b * b));
        let pad = 4.0 * f64::EPSILON * lo.abs().max(hi.abs()) + pivmin;
        Tridiagonal { alpha, beta, pivmin, lo: lo - pad, hi: hi + pad }
    }

    /// How many eigenvalues of T exceed x: the negative pivots of xI − T (Sylvester).
    fn count_above(&self, x: f64) -> usize {
        let mut d = 1.0;
        let mut count = 0;
        for (i, a) in self.alpha.iter().enumerate() {
            let b2 = if i > 0 { self.beta[i - 1] * self.beta[i - 1] } else { 0.0 };
            d = (x - a) - b2 / d;
            if d.abs() <= self.pivmin {
                d = -self.pivmin;
            }
            count += usize::from(d < 0.0);
        }
        count
    }

    /// Narrows [lo, hi] (count_above(lo) ≥ j > count_above(hi)) around the j-th largest
    /// eigenvalue until `enough(lo, hi)` or no float lies between.
    fn bisect(&self, j: usize, mut lo: f64, mut hi: f64, enough: impl Fn(f64, f64) -> bool) -> (f64, f64) {
        while !enough(lo, hi) {
            let mid = lo + (hi - lo) / 2.0;
            if mid <= lo || mid >= hi {
                break;
            }
            if self.count_above(mid) >= j {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (lo, hi)
    }

    /// A bracket [lo, hi] of λ_max(T) of relative width `rel`.
    fn top(&self, rel: f64) -> (f64, f64) {
        if self.alpha.len() == 1 {
            return (self.alpha[0], self.alpha[0]);
        }
        self.bisect(1, self.lo, self.hi, |lo, hi| hi - lo <= rel * lo.abs().max(hi.abs()))
    }

    /// λ_max(T) to rounding, from a bracket of it.
    fn refine(&self, lo: f64, hi: f64) -> f64 {
        if lo == hi {
            return lo;
        }
        let (lo, hi) = self.bisect(1, lo, hi, |lo, hi| hi - lo <= 2.0 * f64::EPSILON * lo.abs().max(hi.abs()));
        lo + (hi - lo) / 2.0
    }

    /// The second-largest eigenvalue, given λ_max's bracket: to a thousandth of the gap,
    /// from above (a smaller gap, the safe side for the stopping rule); −∞ for k = 1.
    fn second(&self, top_lo: f64, top_hi: f64) -> f64 {
        if self.alpha.len() == 1 {
            return f64::NEG_INFINITY;
        }
        let tiny = 4.0 * f64::EPSILON * top_hi.abs();
        self.bisect(2, self.lo, top_hi, |lo, hi| hi - lo <= (1e-3 * (top_lo - hi)).max(tiny)).1
    }

    /// The unit eigenvector of T for θ ≥ λ_max(T), a close upper bracket: by the twisted
    /// factorisation of θI − T (Parlett & Dhillon's MRRR). The pivots from the top,
    /// p_i = θ − α_i − β²_{i−1}/p_{i−1}, and from the bottom, q_i = θ − α_i − β_i²/q_{i+1},
    /// are positive (the leading and trailing blocks' eigenvalues lie below λ_max, by Cauchy
    /// interlacing); x_r = 1 at the twist r where γ_r = p_r + q_r − (θ − α_r) is least, then
    /// x_i = β_i x_{i+1}/p_i above it and x_i = β_{i−1} x_{i−1}/q_i below, each a product of
    /// positive ratios, accurate wherever the vector's weight lies (a vector localised away
    /// from one end defeats a one-sided recurrence).
    fn top_vector(&self, theta: f64) -> Vec<f64> {
        let (a, b, k) = (self.alpha, self.beta, self.alpha.len());
        let guard = |d: f64| d.max(self.pivmin);
        let mut p = vec![0.0; k];
        let mut q = vec![0.0; k];
        p[0] = guard(theta - a[0]);
        for i in 1..k {
            p[i] = guard((theta - a[i]) - b[i - 1] * b[i - 1] / p[i - 1]);
        }
        q[k - 1] = guard(theta - a[k - 1]);
        for i in (0..k - 1).rev() {
            q[i] = guard((theta - a[i]) - b[i] * b[i] / q[i + 1]);
        }
        let twist = (0..k).min_by(|&i, &j| (p[i] + q[i] - (theta - a[i])).abs().total_cmp(&(p[j] + q[j] - (theta - a[j])).abs())).unwrap_or(0);
        let mut x = vec![0.0; k];
        x[twist] = 1.0;
        for i in (0..twist).rev() {
            x[i] = b[i] * x[i + 1] / p[i];
            if x[i] > 1e150 {
                x[i..].iter_mut().for_each(|v| *v *= 1e-150);
            }
        }
        for i in twist + 1..k {
            x[i] = b[i - 1] * x[i - 1] / q[i];
            if x[i] > 1e150 {
                x[..=i].iter_mut().for_each(|v| *v *= 1e-150);
            }
        }
        let big = x.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let norm = big * x.iter().map(|v| (v / big) * (v / big)).sum::<f64>().sqrt();
        x.iter_mut().for_each(|v| *v /= norm);
        x
    }
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
        let gram = Gram::new(q.as_slice().unwrap(), 300, 300, true);
        assert!(gram.w32.is_some(), "the case must start in f32");
        let mut passes = [0, 0];
        let got = lanczos_top(300, 2.0 * SPECTRAL_NORM_RTOL / 10.0, true, |v, low| {
            passes[usize::from(low)] += 1;
            gram.sum(v, &low.then(|| to_f32(v)).unwrap_or_default(), |_| None)
        });
        assert!((got - 1.0).abs() < 1e-13, "{got}");
        assert_eq!(passes, [1, 1], "f64 and f32 passes over W");
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
            gram_rows_impl(w, m, v, &mut portable, dot2_lanes::<f64, LANES>);
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

    /// The relative error of ‖W‖₂ against the SVD, and the passes `[f64, f32]`.
    fn svd_error(w: &Array2<f64>, want: f64) -> (f64, [usize; 2]) {
        let (got, passes) = spectral_norm_counted(w.view(), 1, true);
        ((got - want).abs() / want, passes)
    }

    #[test]
    fn f32_phase_keeps_the_svd_accuracy() {
        // Unit Gaussians at the widths the probe norms (the f32 phase runs from width 128),
        // several seeds each; the f32 phase must run and the f64 phase must finish.
        for (n, seeds) in [(100, 3), (256, 3), (512, 2), (1024, 1)] {
            for seed in 0..seeds {
                let w = gaussian(n, n, 200 + seed);
                let (rel, passes) = svd_error(&w, svd_top(&w));
                assert!(rel <= 1e-13, "{n}x{n} seed {seed}: rel {rel:e}");
                assert_eq!(passes[1] > 0, n >= F32_MIN_WIDTH, "{n}: f32 passes {passes:?}");
                // The restart leaves the f64 phase a handful of passes, not a run of its own.
                assert!(passes[0] > 0 && (n < F32_MIN_WIDTH || passes[0] <= 12), "{n}: passes {passes:?}");
            }
        }
    }

    #[test]
    fn f32_phase_alone_is_not_enough() {
        // The f32 run's own top Ritz value is ~1e-7 off (its products round to f32): the
        // f64 phase is what makes the norm exact, and this fails if it were skipped.
        let w = gaussian(300, 300, 210);
        let want = svd_top(&w);
        let gram = Gram::new(w.as_slice().unwrap(), 300, 300, true);
        let run = lanczos_f32(300, |v| gram.sum(v, &to_f32(v), |_| None));
        let alone = (run.theta.sqrt() - want).abs() / want;
        assert!(alone > 1e-10 && alone < 1e-5, "f32 alone: rel {alone:e}");
        let (rel, _) = svd_error(&w, want);
        assert!(rel <= 1e-13, "both phases: rel {rel:e}");
    }

    #[test]
    fn f32_phase_on_structured_and_scaled_matrices() {
        let check = |w: &Array2<f64>, want: f64, what: &str| {
            let (rel, passes) = svd_error(w, want);
            assert!(rel <= 1e-13, "{what} {:?}: rel {rel:e}, passes {passes:?}", w.dim());
            passes
        };
        // Orthogonal (all σ = 1): one pass in each precision, whatever the f32 noise.
        let q = crate::model::init::haar_orthogonal(&gaussian(256, 256, 211));
        assert_eq!(check(&q, 1.0, "orthogonal"), [1, 1]);
        // Rank 5 of 300, and all σ equal to 3 but for σ₂ = 3(1 − 1e-4).
        let (a, b) = (gaussian(300, 5, 212), gaussian(5, 280, 213));
        let low = a.dot(&b);
        check(&low, svd_top(&low), "rank 5");
        let q = crate::model::init::haar_orthogonal(&gaussian(200, 200, 214));
        let d = Array1::from_shape_fn(200, |i| if i == 1 { 3.0 * (1.0 - 1e-4) } else { 3.0 });
        check(&(&q * &d).dot(&q.t()), 3.0, "σ₂ = σ₁(1 − 1e-4)");
        // Scaled far out of f32's range and out of f64's for WᵀW: exact powers of two and
        // powers of ten (W·10^±200 is rounded, but only in the 16th digit).
        let g = gaussian(300, 260, 215);
        let want = svd_top(&g);
        for s in [1e-200, 1e200, 2f64.powi(-700), 2f64.powi(700), 1e-30, 1e30] {
            check(&g.mapv(|x| x * s), want * s, &format!("scaled by {s:e}"));
        }
        // One row or column (‖W‖₂ = ‖w‖₂), wide enough for the f32 phase in the 1 × n case.
        for (r, c) in [(1, 700), (700, 1)] {
            let w = gaussian(r, c, 216);
            check(&w, w.iter().map(|x| x * x).sum::<f64>().sqrt(), "vector");
        }
    }

    #[test]
    fn f32_kernel_paths_match_plain_loops_bit_for_bit() {
        for (rows, m) in [(1, 1), (3, 33), (5, 32), (8, 65), (7, 100), (4, 300)] {
            let w = gaussian(rows, m, 60).mapv(|x| x as f32);
            let v = gaussian(1, m, 61).mapv(|x| x as f32);
            let (w, v) = (w.as_slice().unwrap(), v.as_slice().unwrap());
            let mut plain = vec![0.5_f32; m];
            for r in w.chunks(m) {
                let mut lanes = [0.0_f32; LANES32];
                let full = m - m % LANES32;
                for j in 0..full {
                    lanes[j % LANES32] += r[j] * v[j];
                }
                let c = lane_sum(&lanes) + r[full..].iter().zip(&v[full..]).fold(0.0_f32, |s, (x, y)| s + x * y);
                for (z, x) in plain.iter_mut().zip(r) {
                    *z += c * x;
                }
            }
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let mut got = vec![0.5_f32; m];
            gram_rows_impl(w, m, v, &mut got, dot2_lanes::<f32, LANES32>);
            assert_eq!(bits(&got), bits(&plain), "{rows}x{m}: portable");
            let mut got = vec![0.5_f32; m];
            gram_rows_f32(w, m, v, &mut got);
            assert_eq!(bits(&got), bits(&plain), "{rows}x{m}: dispatched");
            #[cfg(target_arch = "x86_64")]
            for (feature, kernel) in [("avx2", gram_rows_f32_avx2 as unsafe fn(&[f32], usize, &[f32], &mut [f32])), ("avx512f", gram_rows_f32_avx512)] {
                if std::arch::is_x86_feature_detected!("avx2") && (feature == "avx2" || std::arch::is_x86_feature_detected!("avx512f")) {
                    let mut got = vec![0.5_f32; m];
                    // SAFETY: the CPU has the feature, checked just above.
                    unsafe { kernel(w, m, v, &mut got) };
                    assert_eq!(bits(&got), bits(&plain), "{rows}x{m}: {feature}");
                }
            }
        }
    }

    #[test]
    fn tridiagonal_bisection_matches_a_dense_eigensolver() {
        // Random positive α, β (and β spanning 1e-12..1 in one case, as a converging Lanczos
        // run makes them): λ_max to a few ulps, λ₂ to a thousandth of the gap from above,
        // and the top eigenvector (its last component is the stopping test's s_k).
        for (case, k) in [(0, 1), (1, 2), (2, 7), (3, 40), (4, 90), (5, 60)] {
            let s = Stream::new(300 + case);
            let u = |i: usize, j: u32| s.normal(Purpose::Weight, j, i as u32, 0).abs();
            let alpha: Vec<f64> = (0..k).map(|i| 1.0 + u(i, 0)).collect();
            let beta: Vec<f64> = (0..k.saturating_sub(1)).map(|i| if case == 5 { 10f64.powf(-12.0 * (i as f64) / 60.0) } else { 0.1 + u(i, 1) }).collect();
            let t = nalgebra::DMatrix::<f64>::from_fn(k, k, |i, j| match (i, j) {
                _ if i == j => alpha[i],
                _ if i + 1 == j => beta[i],
                _ if j + 1 == i => beta[j],
                _ => 0.0,
            });
            let eig = t.symmetric_eigen();
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
            let (top, vec) = (eig.eigenvalues[order[0]], eig.eigenvectors.column(order[0]));
            let tri = Tridiagonal::new(&alpha, &beta);
            let (lo, hi) = tri.top(1e-9);
            assert!(lo <= top * (1.0 + 1e-15) && top <= hi * (1.0 + 1e-15) && hi - lo <= 1e-9 * hi, "{k}: bracket [{lo}, {hi}] of {top}");
            let got = tri.refine(lo, hi);
            // Both are backward stable: each is within a small multiple of ε‖T‖ of λ_max.
            assert!((got - top).abs() <= 32.0 * f64::EPSILON * top, "{k}: λ_max {got} vs {top}");
            if k > 1 {
                let second = eig.eigenvalues[order[1]];
                let th2 = tri.second(lo, hi);
                assert!(th2 >= second - 1e-14 * top && th2 - second <= 1e-3 * (top - second) + 1e-14 * top, "{k}: λ₂ {th2} vs {second}");
            }
            let x = tri.top_vector(hi);
            let sign = vec[k - 1].signum();
            for i in 0..k {
                assert!((x[i] - sign * vec[i]).abs() <= 1e-8, "{k}: x[{i}] {} vs {}", x[i], sign * vec[i]);
            }
        }
    }

    #[test]
    #[ignore]
    fn passes_by_phase() {
        // Diagnostic, not a check: `cargo test --release --lib passes_by_phase -- --ignored --nocapture`
        // prints passes and errors against the SVD for the f64-only and the two-phase runs.
        let ns = [256, 1024, 2048];
        for n in ns {
            for seed in 0..3u32 {
                let w = gaussian(n, n, 100 + seed);
                let want = svd_top(&w);
                let gram = Gram::new(w.as_slice().unwrap(), n, n, true);
                let eps = 2.0 * SPECTRAL_NORM_RTOL / 10.0;
                let mut p1 = 0;
                let one = lanczos_top(n, eps, false, |v, _| { p1 += 1; gram.sum(v, &[], |_| None) });
                let mut p2 = [0, 0];
                let two = lanczos_top(n, eps, true, |v, low| { p2[usize::from(low)] += 1; gram.sum(v, &low.then(|| to_f32(v)).unwrap_or_default(), |_| None) });
                println!("n {n} seed {seed}: one {p1} passes rel {:.1e} | two f32 {} f64 {} rel {:.1e} | cost {:.1}", (one - want).abs() / want, p2[1], p2[0], (two - want).abs() / want, p2[0] as f64 + 0.5 * p2[1] as f64);
            }
        }
    }
}
