//! Drawing Gaussian weights: ns per normal and ms per 1024×1024 matrix, the vectorised
//! Philox + Box–Muller fill beside the scalar libm fill it replaced, in the same run.
//!
//! `cargo bench --bench draw`. Per case (criterion, 10 samples, median reported):
//! - `rows/libm`: the old fill (`rng::libm_reference`: one Philox block, libm `ln`,
//!   `sin_cos` per pair), 64 rows of 1024, one thread;
//! - `rows/{baseline,avx2,avx512}`: `Stream::fill_normal` forced to each instruction set
//!   the CPU has (baseline = SSE2 on x86-64, what a build runs on a CPU without AVX2);
//! - `matrix/libm` and `matrix/fast`: one 1024×1024 matrix, split by rows over all cores as
//!   `Init::weights` does; `matrix/init_weights` is `Init::weights` itself (the fast fill
//!   plus the σ_w/√n scaling).

#[path = "common/mod.rs"]
mod common;

use common::*;
use gradscope::model::{Init, InitKind};
use gradscope::rng::{Purpose, Simd, Stream, libm_reference};

const N: usize = 1024;
const ROWS: usize = 64;

/// Fills an N×N buffer row by row over all cores (the split `Init::weights` uses).
fn matrix(out: &mut [f64], fill: impl Fn(u32, &mut [f64]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = N.div_ceil(threads) * N;
    std::thread::scope(|s| {
        for (c, block) in out.chunks_mut(per).enumerate() {
            let fill = &fill;
            s.spawn(move || {
                for (i, row) in block.chunks_mut(N).enumerate() {
                    fill((c * per / N + i) as u32, row);
                }
            });
        }
    });
}

fn main() {
    let mut c = criterion();
    let s = Stream::new(7);
    let mut buf = vec![0.0; N * N];

    let mut g = group(&mut c, "rows");
    bench(&mut g, "rows", "libm", || {
        for (i, row) in buf.chunks_mut(N).take(ROWS).enumerate() {
            libm_reference::fill_normal(&s, Purpose::Weight, 1, i as u32, row);
        }
    });
    let mut levels = Vec::new();
    for simd in Simd::ALL {
        if simd.available() != simd {
            continue;
        }
        let id = format!("{simd:?}").to_lowercase();
        bench(&mut g, "rows", &id, || {
            for (i, row) in buf.chunks_mut(N).take(ROWS).enumerate() {
                s.fill_normal_on(simd, Purpose::Weight, 1, i as u32, row);
            }
        });
        levels.push(id);
    }
    g.finish();

    let mut g = group(&mut c, "matrix");
    bench(&mut g, "matrix", "libm", || {
        matrix(&mut buf, |i, row| libm_reference::fill_normal(&s, Purpose::Weight, 1, i, row))
    });
    bench(&mut g, "matrix", "fast", || matrix(&mut buf, |i, row| s.fill_normal(Purpose::Weight, 1, i, row)));
    let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
    bench(&mut g, "matrix", "init_weights", || {
        std::hint::black_box(init.weights(&s, 1, N, N));
    });
    g.finish();

    println!("\n{} · load {} · {} threads", cpu_name(), loadavg(), std::thread::available_parallelism().map_or(1, |n| n.get()));
    let per_normal = |id: &str| seconds("rows", id).map(|t| t * 1e9 / (ROWS * N) as f64);
    let libm = per_normal("libm");
    println!("{:<26} {:>10} {:>9}", "row fill (1 thread)", "ns/normal", "speed-up");
    for id in std::iter::once("libm".to_string()).chain(levels) {
        let t = per_normal(&id);
        let up = match (libm, t) {
            (Some(a), Some(b)) => format!("{:.1}×", a / b),
            _ => "-".into(),
        };
        println!("{:<26} {:>10} {:>9}", id, opt(t, 2), up);
    }
    println!("{:<26} {:>10}", "1024×1024 matrix", "ms");
    for id in ["libm", "fast", "init_weights"] {
        println!("{:<26} {:>10}", id, opt(seconds("matrix", id).map(|t| t * 1e3), 2));
    }
}
