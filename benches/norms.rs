//! Spectral norms ‖W‖₂ (`linalg::spectral_norm`): milliseconds and passes over W per norm of
//! a unit Gaussian n × n matrix, beside the f64-only Lanczos this crate used before the f32
//! phase (session 10's method, still in the library behind `spectral_norm_counted(.., false)`),
//! timed in the same run, interleaved, so that load hits both alike.
//!
//! `cargo bench --bench norms` (widths 256, 512, 1024, 2048);
//! `GRADSCOPE_BENCH_WIDTHS=256,1024 cargo bench --bench norms` for a subset;
//! `GRADSCOPE_BENCH_ROUNDS=N` rounds per width (default 7).
//!
//! Per width and round: `f64 only` (one thread), `f32+f64·1` (`spectral_norm_on(w, 1)`)
//! and `f32+f64` (`spectral_norm`, all cores). The table gives the passes (f64 only; f32 +
//! f64), the minimum, median and maximum over rounds, the speed-up of the minima, and
//! |new − old|/old of the values.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use gradscope::linalg::{spectral_norm, spectral_norm_counted};
use gradscope::model::{Init, InitKind};
use gradscope::rng::Stream;

fn main() {
    let widths: Vec<usize> = std::env::var("GRADSCOPE_BENCH_WIDTHS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 512, 1024, 2048]);
    let rounds: usize = std::env::var("GRADSCOPE_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
    println!("‖W‖₂ of unit Gaussian n×n, {}; {rounds} rounds; ms per norm: min / median / max", common::cpu_name());
    println!(
        "{:>5} | {:>6} | {:>9} | {:>24} | {:>24} | {:>24} | {:>7} {:>7} | {:>9}",
        "n", "passes", "f32+f64", "f64 only·1 thread", "f32+f64·1 thread", "f32+f64", "×1thr", "×all", "rel diff"
    );
    for &n in &widths {
        let w = init.weights(&Stream::new(0), 1, n, n);
        let (mut t_old, mut t_one, mut t_all) = (Vec::new(), Vec::new(), Vec::new());
        let (mut old, mut new) = ((0.0, [0, 0]), (0.0, [0, 0]));
        for _ in 0..rounds {
            let t = Instant::now();
            old = std::hint::black_box(spectral_norm_counted(w.view(), 1, false));
            t_old.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            new = std::hint::black_box(spectral_norm_counted(w.view(), 1, true));
            t_one.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let all = std::hint::black_box(spectral_norm(w.view()));
            t_all.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(new.0.to_bits(), all.to_bits(), "the thread count changed the bits");
        }
        let stats = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2], v[v.len() - 1])
        };
        let (a, b, c) = (stats(&mut t_old), stats(&mut t_one), stats(&mut t_all));
        let cell = |s: (f64, f64, f64)| format!("{:7.2} / {:7.2} / {:7.2}", s.0, s.1, s.2);
        println!(
            "{n:>5} | {:>6} | {:>4}+{:<4} | {} | {} | {} | {:>7.2} {:>7.2} | {:>9.1e}",
            old.1[0],
            new.1[1],
            new.1[0],
            cell(a),
            cell(b),
            cell(c),
            a.0 / b.0,
            a.0 / c.0,
            ((new.0 - old.0) / old.0).abs()
        );
    }
    println!("load average at the end: {}", common::loadavg());
}
