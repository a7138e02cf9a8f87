//! Drawing Gaussian weights: ns per normal and ms per 1024×1024 matrix, the vectorised
//! Philox + Box–Muller fill beside the scalar libm fill it replaced, in the same run.
//!
//! `cargo bench --bench draw`. Per case (criterion, 10 samples, median reported):
//! - `rows/libm`: the old fill (`rng::libm_reference`: one Philox block, libm `ln`,
//!   `sin_cos` per pair), 64 rows of 1024, one thread;
//! - `rows/{baseline,avx2,avx512}`: `Stream::fill_normal` forced to each instruction set
//!   the CPU has (baseline = SSE2 on x86-64, what a build runs on a CPU without AVX2);
//!   `avx2` and `avx512` are the hand-written kernels, and `rows/{avx2,avx512}_autovec` the
//!   compiler-vectorised fills they replaced (same bits), timed in the same run; `rows/uniform_avx512{,_autovec}`
//!   the same pair for `Stream::fill_uniform` (ns per uniform in the table);
//! - `matrix/libm`, `matrix/autovec` and `matrix/fast`: one 1024×1024 matrix, split by
//!   rows over all cores as `Init::weights` does (`autovec`: the compiler-vectorised fill
//!   on the widest level); `matrix/init_weights` is `Init::weights` itself (the fast fill
//!   plus the σ_w/√n scaling).
//!
//! Both tables also give CPU time (`CLOCK_THREAD_CPUTIME_ID` for a row fill, the process's
//! for a matrix, all threads summed; minimum of 7 repeats): on a machine other jobs share,
//! time spent waiting for a core does not count in it, so it stays near the quiet figure
//! when wall time does not.

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

/// CPU time of this thread, or of the whole process (every thread's summed).
#[derive(Clone, Copy)]
enum Cpu {
    Thread,
    Process,
}

/// Nanoseconds run on a CPU, where the platform has the clock.
fn cpu_ns(which: Cpu) -> Option<u64> {
    #[cfg(unix)]
    {
        let clock = match which {
            Cpu::Thread => libc::CLOCK_THREAD_CPUTIME_ID,
            Cpu::Process => libc::CLOCK_PROCESS_CPUTIME_ID,
        };
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        if unsafe { libc::clock_gettime(clock, &mut t) } == 0 {
            return Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
        }
    }
    None
}

/// The least CPU time per call of `f` over 7 repeats of 4 calls.
fn cpu_seconds(which: Cpu, mut f: impl FnMut()) -> Option<f64> {
    f();
    (0..7)
        .map(|_| {
            let t = cpu_ns(which)?;
            (0..4).for_each(|_| f());
            Some((cpu_ns(which)? - t) as f64 * 1e-9 / 4.0)
        })
        .try_fold(f64::INFINITY, |m, t| t.map(|t| m.min(t)))
}

fn main() {
    let mut c = criterion();
    let s = Stream::new(7);
    let mut buf = vec![0.0; N * N];

    let mut g = group(&mut c, "rows");
    let libm_rows = |buf: &mut [f64]| {
        for (i, row) in buf.chunks_mut(N).take(ROWS).enumerate() {
            libm_reference::fill_normal(&s, Purpose::Weight, 1, i as u32, row);
        }
    };
    bench(&mut g, "rows", "libm", || libm_rows(&mut buf));
    let mut cpu = vec![("libm".to_string(), cpu_seconds(Cpu::Thread, || libm_rows(&mut buf)))];
    for simd in Simd::ALL {
        if simd.available() != simd {
            continue;
        }
        let id = format!("{simd:?}").to_lowercase();
        let fast_rows = |buf: &mut [f64]| {
            for (i, row) in buf.chunks_mut(N).take(ROWS).enumerate() {
                s.fill_normal_on(simd, Purpose::Weight, 1, i as u32, row);
            }
        };
        bench(&mut g, "rows", &id, || fast_rows(&mut buf));
        cpu.push((id.clone(), cpu_seconds(Cpu::Thread, || fast_rows(&mut buf))));
        if simd != Simd::Baseline {
            let autovec_rows = |buf: &mut [f64]| {
                for (i, row) in buf.chunks_mut(N).take(ROWS).enumerate() {
                    s.fill_autovec_on(simd, true, Purpose::Weight, 1, i as u32, row);
                }
            };
            let id = format!("{id}_autovec");
            bench(&mut g, "rows", &id, || autovec_rows(&mut buf));
            cpu.push((id, cpu_seconds(Cpu::Thread, || autovec_rows(&mut buf))));
        }
        if simd == Simd::Avx512 {
            for (id, kernel) in [("uniform_avx512", true), ("uniform_avx512_autovec", false)] {
                let uniform_rows = |buf: &mut [f64]| {
                    for (i, row) in buf.chunks_mut(N).take(ROWS).enumerate() {
                        if kernel {
                            s.fill_uniform_on(simd, Purpose::Weight, 1, i as u32, row);
                        } else {
                            s.fill_autovec_on(simd, false, Purpose::Weight, 1, i as u32, row);
                        }
                    }
                };
                bench(&mut g, "rows", id, || uniform_rows(&mut buf));
                cpu.push((id.to_string(), cpu_seconds(Cpu::Thread, || uniform_rows(&mut buf))));
            }
        }
    }
    g.finish();

    let mut g = group(&mut c, "matrix");
    let libm_matrix = |buf: &mut [f64]| matrix(buf, |i, row| libm_reference::fill_normal(&s, Purpose::Weight, 1, i, row));
    let fast_matrix = |buf: &mut [f64]| matrix(buf, |i, row| s.fill_normal(Purpose::Weight, 1, i, row));
    let autovec_matrix =
        |buf: &mut [f64]| matrix(buf, |i, row| s.fill_autovec_on(Simd::best(), true, Purpose::Weight, 1, i, row));
    let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
    let init_weights = || {
        std::hint::black_box(init.weights(&s, 1, N, N));
    };
    bench(&mut g, "matrix", "libm", || libm_matrix(&mut buf));
    bench(&mut g, "matrix", "autovec", || autovec_matrix(&mut buf));
    bench(&mut g, "matrix", "fast", || fast_matrix(&mut buf));
    bench(&mut g, "matrix", "init_weights", init_weights);
    let matrix_cpu = [
        cpu_seconds(Cpu::Process, || libm_matrix(&mut buf)),
        cpu_seconds(Cpu::Process, || autovec_matrix(&mut buf)),
        cpu_seconds(Cpu::Process, || fast_matrix(&mut buf)),
        cpu_seconds(Cpu::Process, init_weights),
    ];
    g.finish();

    println!("\n{} · load {} · {} threads", cpu_name(), loadavg(), std::thread::available_parallelism().map_or(1, |n| n.get()));
    let ns = |t: Option<f64>| t.map(|t| t * 1e9 / (ROWS * N) as f64);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}×", a / b),
        _ => "–".into(),
    };
    let (libm_wall, libm_cpu) = (ns(seconds("rows", "libm")), ns(cpu[0].1));
    println!("{:<26} {:>15} {:>9} {:>14} {:>9}", "row fill (1 thread)", "ns/normal wall", "speed-up", "ns/normal CPU", "speed-up");
    for (id, c) in &cpu {
        let (w, c) = (ns(seconds("rows", id)), ns(*c));
        println!("{:<26} {:>15} {:>9} {:>14} {:>9}", id, opt(w, 2), ratio(libm_wall, w), opt(c, 2), ratio(libm_cpu, c));
    }
    println!("{:<26} {:>15} {:>9} {:>14} {:>9}", "1024×1024 matrix", "ms wall", "speed-up", "ms CPU", "speed-up");
    let ms = |t: Option<f64>| t.map(|t| t * 1e3);
    let libm = (seconds("matrix", "libm"), matrix_cpu[0]);
    for (id, c) in ["libm", "autovec", "fast", "init_weights"].into_iter().zip(matrix_cpu) {
        let w = seconds("matrix", id);
        println!("{:<26} {:>15} {:>9} {:>14} {:>9}", id, opt(ms(w), 2), ratio(libm.0, w), opt(ms(c), 2), ratio(libm.1, c));
    }
}
