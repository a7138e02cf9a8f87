//! Spectral norms ‖W‖₂ (`linalg::spectral_norm`): milliseconds per norm of a unit Gaussian
//! n × n matrix, beside the single-vector Lanczos this crate used before (kept below,
//! verbatim in method: ndarray row dots and axpys, Ritz test every fourth step, relative
//! tolerance 1e-10), timed in the same run, interleaved, so that load hits both alike.
//!
//! `cargo bench --bench norms` (widths 256, 1024, 2048);
//! `GRADSCOPE_BENCH_WIDTHS=256,1024 cargo bench --bench norms` for a subset;
//! `GRADSCOPE_BENCH_ROUNDS=N` rounds per width (default 7).
//!
//! Per width and round: `before` (the old method), `after·1` (`spectral_norm_on(w, 1)`)
//! and `after` (`spectral_norm`, all cores). The table gives the minimum, median and maximum
//! over rounds, the speed-up of the minima, and |after − before|/before of the values.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use gradscope::linalg::{reorthogonalise, spectral_norm, spectral_norm_on};
use gradscope::model::{Init, InitKind};
use gradscope::rng::{Purpose, Stream};
use ndarray::{Array1, ArrayView2};

fn main() {
    let widths: Vec<usize> = std::env::var("GRADSCOPE_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 1024, 2048]);
    let rounds: usize = std::env::var("GRADSCOPE_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
    println!("‖W‖₂ of unit Gaussian n×n, {}; {rounds} rounds; ms per norm: min / median / max", common::cpu_name());
    println!("{:>5} | {:>24} | {:>24} | {:>24} | {:>7} {:>7} | {:>9}", "n", "before", "after·1 thread", "after", "×1thr", "×all", "rel diff");
    for &n in &widths {
        let w = init.weights(&Stream::new(0), 1, n, n);
        let (mut t_old, mut t_one, mut t_all) = (Vec::new(), Vec::new(), Vec::new());
        let (mut v_old, mut v_new) = (0.0, 0.0);
        for _ in 0..rounds {
            let t = Instant::now();
            v_old = std::hint::black_box(before(w.view()));
            t_old.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let v1 = std::hint::black_box(spectral_norm_on(w.view(), 1));
            t_one.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            v_new = std::hint::black_box(spectral_norm(w.view()));
            t_all.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(v1.to_bits(), v_new.to_bits(), "the thread count changed the bits");
        }
        let stats = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2], v[v.len() - 1])
        };
        let (a, b, c) = (stats(&mut t_old), stats(&mut t_one), stats(&mut t_all));
        let cell = |s: (f64, f64, f64)| format!("{:7.2} / {:7.2} / {:7.2}", s.0, s.1, s.2);
        println!(
            "{n:>5} | {} | {} | {} | {:>7.2} {:>7.2} | {:>9.1e}",
            cell(a),
            cell(b),
            cell(c),
            a.0 / b.0,
            a.0 / c.0,
            ((v_new - v_old) / v_old).abs()
        );
    }
    println!("load average at the end: {}", common::loadavg());
}

/// The method before: single-vector Lanczos on WᵀW, one fused row dot + axpy sweep per step
/// (ndarray's `dot` and `scaled_add`), full reorthogonalisation twice, the Ritz test every
/// fourth step at ε = 2·1e-10/10.
fn before(w: ArrayView2<f64>) -> f64 {
    let (n_out, n_in) = w.dim();
    assert!(n_in <= n_out, "the bench times square matrices");
    let m = n_in;
    let apply = |v: &Array1<f64>| -> Array1<f64> {
        let mut z = Array1::<f64>::zeros(n_in);
        for r in w.rows() {
            z.scaled_add(r.dot(v), &r);
        }
        z
    };
    let eps = 2.0 * 1e-10 / 10.0;
    let mut q = Array1::<f64>::zeros(m);
    Stream::new(0x5bec_7a1e).fill_normal(Purpose::Weight, 0, 0, q.as_slice_mut().unwrap());
    q /= q.dot(&q).sqrt();
    let mut basis: Vec<Array1<f64>> = Vec::new();
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    let mut theta = 0.0_f64;
    for k in 0..m {
        let mut v = apply(&q);
        alpha.push(q.dot(&v));
        basis.push(q.clone());
        reorthogonalise(&basis, &mut v);
        let bk = v.dot(&v).sqrt();
        let last = k + 1 == m || bk <= f64::EPSILON * alpha.iter().fold(0.0_f64, |a, b: &f64| a.max(b.abs()));
        if !last && k % 4 != 3 {
            beta.push(bk);
            q = v / bk;
            continue;
        }
        let kk = alpha.len();
        let t = nalgebra::DMatrix::<f64>::from_fn(kk, kk, |i, j| {
            if i == j {
                alpha[i]
            } else if i + 1 == j {
                beta[i]
            } else if j + 1 == i {
                beta[j]
            } else {
                0.0
            }
        });
        let eig = t.symmetric_eigen();
        let mut order: Vec<usize> = (0..kk).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        theta = eig.eigenvalues[order[0]];
        let th2 = if kk > 1 { eig.eigenvalues[order[1]] } else { f64::NEG_INFINITY };
        let r = bk * eig.eigenvectors[(kk - 1, order[0])].abs();
        let gap = (theta - th2).max(0.0);
        let done = r <= eps * theta || (gap.is_finite() && gap > r && r * r <= eps * gap * theta) || bk <= f64::EPSILON * theta;
        if theta <= 0.0 || done || last {
            break;
        }
        beta.push(bk);
        q = v / bk;
    }
    theta.max(0.0).sqrt()
}
