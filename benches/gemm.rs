//! One matrix product on one thread against the same product split over 2 (`gemm::split`),
//! around the split threshold `gemm::SPLIT_MIN_MADDS`: wall and CPU time per call.
//!
//! `cargo bench --bench gemm`. Per shape m × k × n, the best of 5 rounds of a loop of calls
//! (~10^8 multiply-adds a round). CPU time is the process's (user + sys, all threads), which
//! time spent waiting for a core does not inflate: on a shared machine it stays near the
//! quiet figure when wall time does not. A split costs a thread start and each thread's
//! packing of the smaller operand; it pays in wall time only where a core is free.

use std::time::Instant;

use gradscope::gemm;
use ndarray::Array2;
use ndarray::linalg::general_mat_mul;

/// The process's CPU time so far (user + sys, all threads), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is handed.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() {
    println!("split threshold 2^{:.0} multiply-adds; load {}", (gemm::SPLIT_MIN_MADDS as f64).log2(), std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
    println!("{:>16} {:>6} | {:>10} {:>10} | {:>10} {:>10}", "m×k×n", "log2", "wall 1 µs", "wall 2 µs", "cpu 1 µs", "cpu 2 µs");
    let shapes = [(64, 64, 64), (64, 128, 128), (32, 256, 256), (64, 256, 256), (1000, 64, 30), (64, 512, 512), (128, 512, 512), (64, 1024, 1024), (512, 512, 512)];
    for (m, k, n) in shapes {
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) as f64).sin());
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) as f64).cos());
        let mut c = Array2::zeros((m, n));
        let reps = (100_000_000 / (m * k * n)).max(3);
        // [wall one, wall split, cpu one, cpu split], seconds per call
        let mut best = [f64::MAX; 4];
        for _ in 0..5 {
            let (t, c0) = (Instant::now(), cpu_seconds());
            for _ in 0..reps {
                general_mat_mul(1.0, &a, &b, 0.0, &mut c);
            }
            best[0] = best[0].min(t.elapsed().as_secs_f64() / reps as f64);
            best[2] = best[2].min((cpu_seconds() - c0) / reps as f64);
            let (t, c0) = (Instant::now(), cpu_seconds());
            for _ in 0..reps {
                gemm::split(1.0, &a, &b, 0.0, c.view_mut(), 2, m >= n);
            }
            best[1] = best[1].min(t.elapsed().as_secs_f64() / reps as f64);
            best[3] = best[3].min((cpu_seconds() - c0) / reps as f64);
        }
        let us = best.map(|s| s * 1e6);
        println!("{:>16} {:>6.1} | {:>10.0} {:>10.0} | {:>10.0} {:>10.0}", format!("{m}×{k}×{n}"), ((m * k * n) as f64).log2(), us[0], us[1], us[2], us[3]);
    }
}
