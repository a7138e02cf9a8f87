//! Matrix products split over the cores that long-running work leaves free.
//!
//! matrixmultiply's own threading splits every product over a fixed count of threads read
//! once per process, whatever else runs: beside the CPU probe's norm thread (one of two
//! cores busy) its second thread spins in `sched_yield`. Here each product instead asks how
//! many cores are free now — all of them less those [`hold`] reserves for long-running work
//! (the norm workers) — and splits its output over that many threads, each a
//! single-threaded matrixmultiply call. When the norm workers finish, the next product uses
//! every core again.
//!
//! Bits: each output entry is the same fused multiply-add chain over k (blocked in kc = 256
//! whatever the shape) in whichever block of rows or columns it falls, so a split gives the
//! bits of one call on any number of threads (pinned by `tests/gemm.rs`).
//!
//! `MATMUL_NUM_THREADS`, matrixmultiply's own variable, still caps the threads of a product
//! (`MATMUL_NUM_THREADS=1`: one thread), so one-threaded comparisons stay one-threaded.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayRef2, ArrayViewMut2, Axis, ShapeBuilder, s};

/// Cores held by long-running work (norm workers, and a product's own helper threads).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Below this many multiply-adds (m·k·n) a product stays on the calling thread. A helper
/// thread costs ~30 µs of CPU to start, and ~60 µs more at 2^21 (32 × 256 × 256, ~100 µs
/// on one thread), against nothing measurable at 2^22 (~230 µs): the split pays from here
/// (BENCHMARKS.md, "products on the free cores").
pub const SPLIT_MIN_MADDS: usize = 1 << 22;

/// Rows (or columns) of a split block are a multiple of this, matrixmultiply's widest
/// micro-kernel edge for f64, so no block ends in a partial tile that one call would not.
const TILE: usize = 8;

/// `n` cores reserved, while it lives, for long-running work on a thread of its own:
/// products started meanwhile leave them alone.
#[must_use = "the cores are released when the guard drops"]
#[derive(Debug)]
pub struct Held(usize);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Reserves `n` cores until the returned guard drops.
pub fn hold(n: usize) -> Held {
    HELD.fetch_add(n, Ordering::Relaxed);
    Held(n)
}

/// The cores of this machine (or of this process's CPU set and cgroup quota), read once:
/// on Linux the std call reads cgroup files, too slow to repeat for every product.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Cores not held by long-running work: at least 1 (the caller's own).
pub fn free_cores() -> usize {
    cores().saturating_sub(HELD.load(Ordering::Relaxed)).max(1)
}

/// The most threads one product may use: `MATMUL_NUM_THREADS` when set, else no cap.
fn thread_cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse::<usize>().ok()).map_or(usize::MAX, |n| n.max(1)))
}

/// Threads a product of `madds` multiply-adds (m·k·n) would use now, with `blocks` tiles to
/// share out: 1 below [`SPLIT_MIN_MADDS`], else the free cores (capped by
/// `MATMUL_NUM_THREADS`), no more than there are tiles.
pub fn product_threads(madds: usize, blocks: usize) -> usize {
    if madds < SPLIT_MIN_MADDS {
        return 1;
    }
    free_cores().min(thread_cap()).min(blocks).max(1)
}

/// `C ← α A B + β C`, as [`ndarray::linalg::general_mat_mul`] computes it (the same bits),
/// split over the free cores when large.
///
/// # Panics
/// When the shapes do not agree, as `general_mat_mul` does.
pub fn mat_mul(alpha: f64, a: &ArrayRef2<f64>, b: &ArrayRef2<f64>, beta: f64, c: &mut ArrayRef2<f64>) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && c.dim() == (m, n), "gemm: {m}×{k} times {k2}×{n} into {:?}", c.dim());
    // Each thread packs its block of the split operand and all of the other: split the
    // side whose operand is larger (rows of A when m ≥ n), so the one packed by every
    // thread is the smaller.
    let by_rows = m >= n;
    let threads = product_threads(m.saturating_mul(k).saturating_mul(n), if by_rows { m } else { n }.div_ceil(TILE));
    if threads < 2 {
        general_mat_mul(alpha, a, b, beta, c);
        return;
    }
    split(alpha, a, b, beta, c.view_mut(), threads, by_rows);
}

/// `C ← α A B + β C` on up to `threads` threads (the calling one among them), C's rows
/// (`by_rows`) or columns in one block per thread: what [`mat_mul`] does once it has chosen
/// to split, here for any shape (the tests force splits of small odd shapes with it).
pub fn split(alpha: f64, a: &ArrayRef2<f64>, b: &ArrayRef2<f64>, beta: f64, mut c: ArrayViewMut2<f64>, threads: usize, by_rows: bool) {
    let axis = if by_rows { Axis(0) } else { Axis(1) };
    let len = c.len_of(axis);
    let chunk = len.div_ceil(threads.max(1)).div_ceil(TILE).max(1) * TILE;
    let part = |i: usize, mut cb: ArrayViewMut2<f64>| {
        let r = i * chunk..i * chunk + cb.len_of(axis);
        if by_rows {
            general_mat_mul(alpha, &a.slice(s![r, ..]), b, beta, &mut cb);
        } else {
            general_mat_mul(alpha, a, &b.slice(s![.., r]), beta, &mut cb);
        }
    };
    let _helpers = hold(len.div_ceil(chunk).saturating_sub(1));
    std::thread::scope(|sc| {
        let part = &part;
        let mut blocks = c.axis_chunks_iter_mut(axis, chunk).enumerate();
        let first = blocks.next();
        for (i, cb) in blocks {
            sc.spawn(move || part(i, cb));
        }
        if let Some((i, cb)) = first {
            part(i, cb);
        }
    });
}

/// `A B`, as `a.dot(b)` returns it (the same bits and memory order), split over the free
/// cores when large.
pub fn dot(a: &ArrayRef2<f64>, b: &ArrayRef2<f64>) -> Array2<f64> {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2, "gemm: {m}×{k} times {k2}×{n}");
    // `.dot`'s choice: column-major only when both operands are.
    let column_major = a.strides()[0] == 1 && b.strides()[0] == 1;
    let mut c = Array2::zeros((m, n).set_f(column_major));
    mat_mul(1.0, a, b, 0.0, &mut c);
    c
}
