//! The spectral norms ‖W^l‖₂ on the host, through a cache both engines share.
//!
//! Gaussian-family weights are W = std·G with G the stream's standard-normal matrix, and
//! their norm is *defined* as log2 std + log2 ‖G‖₂ with ‖G‖₂ cached per (seed, layer,
//! shape): the value is the same whichever configuration normed G first (a resumed or
//! sharded sweep equals an uninterrupted one bit for bit), and a sweep over σ_w² and
//! activations runs one Lanczos per layer, not one per configuration. The GPU's Lanczos
//! (`backend::gpu`) fills the same cache.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::{Array1, Array2};

use crate::linalg::spectral_norm_on;
use crate::model::{Init, InitKind, Network, Params, Problem};
use crate::rng::Stream;

/// Entries the cache holds at most (about 0.5 GB of keys); beyond, norms are recomputed.
const MAX_ENTRIES: usize = 10_000_000;

/// log2 ‖G‖₂ of the standard-normal matrices G already normed, keyed by (seed, layer,
/// n_out, n_in); clones share one cache.
#[derive(Debug, Clone, Default)]
pub struct NormCache {
    map: Arc<Mutex<HashMap<(u64, usize, usize, usize), f64>>>,
}

impl NormCache {
    /// log2 ‖G‖₂ of the stream's standard-normal matrix for (seed, layer, shape), if normed.
    pub fn cached_unit_norm(&self, seed: u64, l: usize, n_out: usize, n_in: usize) -> Option<f64> {
        self.map.lock().ok().and_then(|c| c.get(&(seed, l, n_out, n_in)).copied())
    }

    /// Records log2 ‖G‖₂ of the stream's standard-normal matrix for (seed, layer, shape).
    pub fn cache_unit_norm(&self, seed: u64, l: usize, n_out: usize, n_in: usize, v: f64) {
        if let Ok(mut c) = self.map.lock() {
            if c.len() < MAX_ENTRIES {
                c.insert((seed, l, n_out, n_in), v);
            }
        }
    }

    /// Draws the stream's standard-normal matrix G for (seed, layer, shape), norms it and
    /// caches log2 ‖G‖₂; returns both.
    fn norm_unit_matrix(&self, seed: u64, l: usize, n_out: usize, n_in: usize, threads: usize) -> (Array2<f64>, f64) {
        let unit_init = Init { kind: InitKind::Gaussian, sigma_w2: Some(n_in as f64), sigma_b2: 0.0 };
        let g = unit_init.weights(&Stream::new(seed), l, n_out, n_in);
        let v = spectral_norm_on(g.view(), threads).log2();
        self.cache_unit_norm(seed, l, n_out, n_in, v);
        (g, v)
    }

    /// log2 ‖W^l‖₂ of `net`'s layer l, whose weights are `w`.
    pub fn log2_weight_norm(&self, net: &Network, l: usize, w: &Array2<f64>) -> f64 {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.log2_norm_on(net, l, Some(w), threads)
    }

    /// log2 ‖W^l‖₂ with the Lanczos on at most `threads` threads (the same bits for any
    /// count): through the cache for gaussian-family weights, else from `w`, or from W^l
    /// drawn here when `w` is None.
    fn log2_norm_on(&self, net: &Network, l: usize, w: Option<&Array2<f64>>, threads: usize) -> f64 {
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let unit = match &net.params {
            Params::Generated { init, seed } => init.normal_std(n_in, n_out).filter(|s| *s > 0.0).map(|s| (s, *seed)),
            _ => None,
        };
        let Some((std, seed)) = unit else {
            return match w {
                Some(w) => spectral_norm_on(w.view(), threads).log2(),
                None => spectral_norm_on(net.layer(l).0.view(), threads).log2(),
            };
        };
        let g = self.cached_unit_norm(seed, l, n_out, n_in).unwrap_or_else(|| self.norm_unit_matrix(seed, l, n_out, n_in, threads).1);
        g + std.log2()
    }

    /// Whether [`NormCache::beside`] should norm `net`'s layers: not for orthogonal weights,
    /// whose draw (a QR per layer) costs more than it would save to draw them twice.
    pub fn can_norm_beside(net: &Network) -> bool {
        !matches!(&net.params, Params::Generated { init, .. } if init.kind == InitKind::Orthogonal)
    }

    /// Runs `products` on the calling thread while `workers` threads find log2 ‖W^l‖₂ for
    /// l = 1..=L of `net` (index 0 unused), each layer on one thread, drawing its own copy
    /// of W (or G); once `products` returns, the caller norms the layers still left.
    ///
    /// The CPU engine's forward and backward products need no norm, so the Lanczos (as
    /// costly as the products at width 1024) runs beside them instead of before them, and
    /// without the per-pass hand-offs of a norm split over threads. A layer's value does not
    /// depend on which thread normed it or how many there were ([`spectral_norm_on`]).
    pub fn beside<R>(&self, net: &Network, workers: usize, products: impl FnOnce() -> R) -> (Vec<f64>, R) {
        let big_l = net.depth();
        let next = AtomicUsize::new(1);
        let take = || {
            let mut mine = Vec::new();
            loop {
                let l = next.fetch_add(1, Ordering::Relaxed);
                if l > big_l {
                    return mine;
                }
                mine.push((l, self.log2_norm_on(net, l, None, 1)));
            }
        };
        let mut out = vec![0.0; big_l + 1];
        let r = std::thread::scope(|sc| {
            // Named, so that a profile (`perf report --sort comm`) shows the norms apart.
            // Each worker holds its core (crate::gemm) until it runs out of layers: the products leave it alone.
            let spawn = |_| std::thread::Builder::new().name("gradscope-norms".into()).spawn_scoped(sc, { let held = crate::gemm::hold(1); || { let _held = held; take() } }).expect("spawn a norm thread");
            let hs: Vec<_> = (0..workers).map(spawn).collect();
            let r = products();
            let mut parts = take();
            for h in hs {
                // A worker's panic is a bug: re-raise it rather than leave its layers at 0.
                parts.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            for (l, v) in parts {
                out[l] = v;
            }
            r
        });
        (out, r)
    }

    /// `(W^l, b^l, log2 ‖W^l‖₂)`. On a cache miss for gaussian-family weights the unit
    /// matrix G is drawn once, normed, and scaled into W = std·G (the very operations of
    /// `Init::weights`, so W is bit-identical), saving a second draw.
    pub fn layer_with_norm<'n>(&self, net: &'n Network, l: usize) -> (Cow<'n, Array2<f64>>, Cow<'n, Array1<f64>>, f64) {
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        if let Params::Generated { init, seed } = &net.params {
            if let Some(std) = init.normal_std(n_in, n_out).filter(|s| *s > 0.0) {
                if self.cached_unit_norm(*seed, l, n_out, n_in).is_none() {
                    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                    let (mut g, v) = self.norm_unit_matrix(*seed, l, n_out, n_in, threads);
                    if std != 1.0 {
                        g.mapv_inplace(|x| x * std);
                    }
                    return (Cow::Owned(g), Cow::Owned(init.biases(&Stream::new(*seed), l, n_out)), v + std.log2());
                }
            }
        }
        let (w, b) = net.layer(l);
        let v = self.log2_weight_norm(net, l, &w);
        (w, b, v)
    }

    /// log2 ‖W^l‖₂ for l = 1..=L of `p` (index 0 unused): `known[l]` where another source
    /// (the GPU's Lanczos) gave it, else by the f64 Lanczos through the cache, spread over
    /// the host's cores. Stops early, leaving zeros, once `cancel` is set.
    ///
    /// One thread per layer while there are layers for every core (a norm split over threads
    /// hands each pass around; layers in parallel need no hand-off); the cores left over
    /// split each norm. Each layer draws only what its norm needs (G for gaussian weights).
    pub fn host_norms(&self, p: &Problem, known: &[Option<f64>], cancel: &AtomicBool) -> Vec<f64> {
        let big_l = p.net.depth();
        let next = AtomicUsize::new(1);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = cores.min(big_l).max(1);
        let per_norm = (cores / threads).max(1);
        let mut out = vec![0.0; big_l + 1];
        let parts: Vec<Vec<(usize, f64)>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let held = crate::gemm::hold(1);
                    sc.spawn(|| {
                        let _held = held;
                        let mut mine = Vec::new();
                        loop {
                            let l = next.fetch_add(1, Ordering::Relaxed);
                            if l > big_l || cancel.load(Ordering::Relaxed) {
                                break;
                            }
                            if let Some(v) = known[l] {
                                mine.push((l, v));
                                continue;
                            }
                            mine.push((l, self.log2_norm_on(&p.net, l, None, per_norm)));
                        }
                        mine
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        for (l, v) in parts.into_iter().flatten() {
            out[l] = v;
        }
        out
    }
}
