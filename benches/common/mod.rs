//! Shared by the benchmarks: the problems they time, the useful-flop count, a log of
//! criterion's samples (so each bench can print one table of rates and fractions of the
//! limit), and table printing.
#![allow(dead_code)] // each bench uses a different part

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use gradscope::model::{Activation, Cost, Init, InitKind, Network, Params, Problem, StoredParams};
use gradscope::rng::{Purpose, Stream};
use ndarray::Array2;

/// Samples per benchmark: criterion's minimum. Each sample runs the routine at least once,
/// and the heavy cases take seconds per run.
pub const SAMPLES: usize = 10;

/// Criterion set up for routines of milliseconds to seconds.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args()
}

/// (benchmark id, seconds per iteration) of every sample criterion took, warm-up included.
static LOG: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// A flat-sampling group (every sample the same iteration count: 10 runs of a 3-second
/// routine, not criterion's default 55).
pub fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g
}

/// Benchmarks `f` under `group/id`, logging each sample's time per iteration. `f` must
/// finish its work (GPU routines wait for the device) before it returns.
pub fn bench(g: &mut BenchmarkGroup<WallTime>, group: &str, id: &str, mut f: impl FnMut()) {
    let key = format!("{group}/{id}");
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            let d = t.elapsed();
            LOG.lock().unwrap().push((key.clone(), d.as_secs_f64() / iters as f64));
            d
        })
    });
}

/// The median time per iteration (seconds) over the last [`SAMPLES`] samples of `group/id`
/// (the measurement; warm-up samples come first), or None when it did not run (filtered).
pub fn seconds(group: &str, id: &str) -> Option<f64> {
    let key = format!("{group}/{id}");
    let log = LOG.lock().unwrap();
    let mut v: Vec<f64> = log.iter().filter(|(k, _)| *k == key).map(|(_, s)| *s).collect();
    if v.is_empty() {
        return None;
    }
    let v = v.split_off(v.len().saturating_sub(SAMPLES));
    let mut v = v;
    v.sort_by(f64::total_cmp);
    Some(if v.len() % 2 == 1 { v[v.len() / 2] } else { 0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2]) })
}

/// A gaussian-init (σ_w² = 1, σ_b² = 0) network of `depth` layers of width `n`, quadratic
/// cost, N(0,1) inputs from the seed's stream, zero targets: what `gradscope probe --width
/// n --depth L --batch B -a ACT` runs.
pub fn problem(n: usize, depth: usize, batch: usize, act: Activation, seed: u64) -> Problem {
    let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
    let net = Network::new(vec![n; depth + 1], act, false, Cost::Quadratic, Params::Generated { init, seed }).unwrap();
    let s = Stream::new(seed);
    let mut x = Array2::<f64>::zeros((batch, n));
    for (i, mut r) in x.rows_mut().into_iter().enumerate() {
        s.fill_normal(Purpose::Input, 0, i as u32, r.as_slice_mut().unwrap());
    }
    Problem::new(net, x, Array2::zeros((batch, n))).unwrap()
}

/// The same problem with its weights drawn once and held (`Params::Stored`): a probe of it
/// draws nothing.
pub fn stored(p: &Problem) -> Problem {
    let (w, b): (Vec<_>, Vec<_>) = (1..=p.net.depth())
        .map(|l| {
            let (w, b) = p.net.layer(l);
            (w.into_owned(), b.into_owned())
        })
        .unzip();
    let mut q = p.clone();
    q.net.params = Params::Stored(Arc::new(StoredParams { w, b, source: "bench".into() }));
    q
}

/// Useful flops of one probe, the work a hand-written backprop of the same statistics must
/// do: per layer l the forward product 2·B·n_l·n_{l-1}, the backward product δ^l W^l
/// 2·B·n_l·n_{l-1} (l ≥ 2; layer 1 needs none) and the two B×B Gram matrices of the batch
/// gradient norm, 2·B²·n_{l-1} + 2·B²·n_l. Elementwise work, weight drawing and the
/// spectral norms are not counted.
pub fn useful_flops(widths: &[usize], batch: usize) -> f64 {
    let b = batch as f64;
    (1..widths.len())
        .map(|l| {
            let (o, i) = (widths[l] as f64, widths[l - 1] as f64);
            let bwd = if l >= 2 { 2.0 * b * o * i } else { 0.0 };
            2.0 * b * o * i + bwd + 2.0 * b * b * (i + o)
        })
        .sum()
}

/// The flops of the two layer products alone (forward B×n·n×n and backward), the shapes
/// the limit is measured on.
pub fn gemm_flops(n: usize, batch: usize) -> f64 {
    4.0 * batch as f64 * (n * n) as f64
}

/// Formats a value or a dash.
pub fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.prec$}"))
}

/// The load average, for the table's header (measurements on a busy machine say so).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_else(|_| "?".into())
}

/// The CPU model and thread count.
pub fn cpu_name() -> String {
    gradscope::backend::CpuBackend::device_name()
}
