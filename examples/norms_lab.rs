//! Lab: one pass, old vs new kernel.
use gradscope::model::{Init, InitKind};
use gradscope::rng::Stream;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let init = Init::new(InitKind::Gaussian, Some(1.0), None).unwrap();
    let w = init.weights(&Stream::new(0), 1, n, n);
    let v = ndarray::Array1::<f64>::from_shape_fn(n, |i| (i as f64).sin());
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..20 {
            let mut z = ndarray::Array1::<f64>::zeros(n);
            for r in w.rows() { z.scaled_add(r.dot(&v), &r); }
            std::hint::black_box(z);
        }
        let old = t.elapsed().as_secs_f64() * 1e3 / 20.0;
        let t = Instant::now();
        for _ in 0..20 {
            let mut z = vec![0.0; n];
            gradscope::linalg::gram_rows(w.as_slice().unwrap(), n, v.as_slice().unwrap(), &mut z);
            std::hint::black_box(z);
        }
        let new = t.elapsed().as_secs_f64() * 1e3 / 20.0;
        println!("n {n}: pass old {old:.3} ms new {new:.3} ms");
    }
}
