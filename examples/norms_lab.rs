//! Lab: steps, time and accuracy of today's Lanczos vs block.
use gradscope::linalg::{spectral_norm, spectral_norm_block};
use gradscope::model::{Init, InitKind};
use gradscope::rng::Stream;
use std::time::Instant;

fn svd_top(w: &ndarray::Array2<f64>) -> f64 {
    let (r, c) = w.dim();
    let m = nalgebra::DMatrix::from_fn(r, c, |i, j| w[(i, j)]);
    m.singular_values().max()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let seeds: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(3);
    let ps: Vec<usize> = args.get(3).map(|s| s.split(',').map(|t| t.parse().unwrap()).collect()).unwrap_or(vec![1, 2, 4, 8, 16]);
    let svd = args.get(4).is_some();
    let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
    for seed in 0..seeds {
        let w = init.weights(&Stream::new(seed), 1, n, n);
        let t = Instant::now();
        let s = spectral_norm(w.view());
        let dt = t.elapsed().as_secs_f64() * 1e3;
        let truth = if svd { svd_top(&w) } else { s };
        println!("n {n} seed {seed}: old {s:.17e} {dt:.2} ms rel {:e}", (s - truth) / truth);
        for &p in &ps {
            let t = Instant::now();
            let (b, passes) = spectral_norm_block(w.view(), p, std::env::var("EPS").map_or(2e-11, |s| s.parse().unwrap()));
            let dt = t.elapsed().as_secs_f64() * 1e3;
            println!("   p {p:2}: {b:.17e} {dt:7.2} ms passes {passes:3} rel {:e}", (b - truth) / truth);
        }
    }
}
