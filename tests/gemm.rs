//! Products split over threads (src/gemm.rs): the bits of one single-threaded call, and the
//! thread count following the cores that long-running work holds.

use std::sync::Mutex;

use gradscope::gemm;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ShapeBuilder};

/// The tests share the process-wide count of held cores: one at a time.
static HELD_COUNT: Mutex<()> = Mutex::new(());

/// Entries of mixed sign and magnitude (a few decades), so that rounding differs between
/// summation orders.
fn filled(rows: usize, cols: usize, seed: f64) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        let x = (i as f64 * 1.37 + j as f64 * 0.713 + seed).sin();
        x * 10f64.powf(3.0 * (j as f64 * 0.37 + seed).cos())
    })
}

/// The first differing entry of two equal-shaped matrices, bit for bit.
fn first_difference(want: &Array2<f64>, got: &Array2<f64>) -> Option<((usize, usize), f64, f64)> {
    assert_eq!(want.dim(), got.dim());
    want.indexed_iter().find(|&(ix, w)| w.to_bits() != got[ix].to_bits()).map(|(ix, &w)| (ix, w, got[ix]))
}

#[test]
fn split_products_match_one_call_bit_for_bit() {
    let _one = HELD_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    // (m, k, n): rows and columns off the 8-wide tiles, one row or column, k past the 256 of
    // one k-block (and not a multiple of it), k below a tile.
    let shapes = [(13, 257, 29), (1, 300, 17), (37, 600, 1), (100, 31, 70), (9, 5, 11), (64, 520, 130)];
    let scalars = [(1.0, 0.0), (-1.0, 1.0), (0.37, -2.5)];
    let mut splits = 0;
    for (m, k, n) in shapes {
        // Plain, and both operands as transposed views (a.t() of a k × m matrix, and so on).
        let (a, b) = (filled(m, k, 0.1), filled(k, n, 0.9));
        let (at, bt) = (a.t().as_standard_layout().into_owned(), b.t().as_standard_layout().into_owned());
        let operands: [(ArrayView2<f64>, ArrayView2<f64>); 3] = [(a.view(), b.view()), (at.t(), bt.t()), (a.view(), bt.t())];
        for (oi, (av, bv)) in operands.into_iter().enumerate() {
            for &(alpha, beta) in &scalars {
                let c0 = filled(m, n, 2.3);
                let mut want = c0.clone();
                general_mat_mul(alpha, &av, &bv, beta, &mut want);
                for threads in [2, 3, 5] {
                    for by_rows in [true, false] {
                        let mut got = c0.clone();
                        gemm::split(alpha, &av, &bv, beta, got.view_mut(), threads, by_rows);
                        let along = if by_rows { m } else { n };
                        splits += usize::from(along > 8);
                        if let Some((ix, w, g)) = first_difference(&want, &got) {
                            panic!("{m}×{k}×{n} operands {oi}, α {alpha} β {beta}, {threads} threads by {}: at {ix:?} one call gives {w:e}, the split {g:e}", if by_rows { "rows" } else { "columns" });
                        }
                    }
                }
            }
        }
    }
    assert!(splits > 100, "too few products were split into several blocks: {splits}");
}

#[test]
fn dot_matches_ndarray_in_bits_and_memory_order() {
    let _one = HELD_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    // Above the split threshold, so that on 2+ cores the product is split for real.
    let (m, k, n) = (200, 300, 90);
    assert!(m * k * n >= gemm::SPLIT_MIN_MADDS);
    let a = filled(m, k, 0.4);
    let b = filled(k, n, 1.7);
    let af = Array2::from_shape_vec((m, k).f(), a.t().iter().copied().collect()).unwrap();
    let bf = Array2::from_shape_vec((k, n).f(), b.t().iter().copied().collect()).unwrap();
    assert_eq!(af, a);
    for (x, y) in [(&a, &b), (&af, &bf), (&a, &bf), (&af, &b)] {
        let want = x.dot(y);
        let got = gemm::dot(x, y);
        assert_eq!(got.strides(), want.strides(), "the memory order of .dot");
        assert_eq!(first_difference(&want, &got), None);
    }
}

#[test]
fn products_use_only_the_cores_not_held() {
    let _one = HELD_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let cores = gemm::cores();
    let big = 1 << 30;
    assert_eq!(gemm::product_threads(gemm::SPLIT_MIN_MADDS - 1, 1000), 1, "a small product stays on the calling thread");
    assert_eq!(gemm::product_threads(big, 1), 1, "one tile is one thread");
    let cap = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse::<usize>().ok()).unwrap_or(usize::MAX).max(1);
    assert_eq!(gemm::product_threads(big, 1000), cores.min(cap));
    {
        let _norms = gemm::hold(1);
        assert_eq!(gemm::free_cores(), (cores - 1).max(1));
        assert_eq!(gemm::product_threads(big, 1000), (cores - 1).clamp(1, cap));
        let _more = gemm::hold(cores);
        assert_eq!(gemm::free_cores(), 1, "never fewer than the calling thread");
        assert_eq!(gemm::product_threads(big, 1000), 1);
    }
    assert_eq!(gemm::free_cores(), cores, "a dropped hold gives its cores back");
    assert_eq!(gemm::product_threads(big, 1000), cores.min(cap));
}

#[test]
fn norm_workers_hold_their_cores_while_they_run() {
    use gradscope::backend::norms::NormCache;
    use gradscope::model::{Activation, Cost, Init, InitKind, Network, Params};
    let _one = HELD_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let cores = gemm::cores();
    let init = Init::new(InitKind::Gaussian, Some(1.0), Some(0.0)).unwrap();
    // 40 Lanczos runs at width 200: far longer than the products below take to start.
    let net = Network::new(vec![200; 41], Activation::Tanh, false, Cost::Quadratic, Params::Generated { init, seed: 3 }).unwrap();
    let (norms, seen) = NormCache::default().beside(&net, 1, |_| gemm::free_cores());
    assert_eq!(seen, (cores - 1).max(1), "the products must see the norm worker's core as held");
    assert!(norms[1..].iter().all(|v| v.is_finite() && *v > 0.0), "every layer normed: {norms:?}");
    assert_eq!(gemm::free_cores(), cores, "the worker's core comes back when it is done");
}
