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
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::{Array1, Array2};

use crate::linalg::spectral_norm_on;
use crate::model::init::{fill_normal_and_scaled, scale_normal_into};
use crate::model::{Init, InitKind, Network, Params, Problem};
use crate::rng::Stream;

/// Entries the cache holds at most (about 0.5 GB of keys); beyond, norms are recomputed.
const MAX_ENTRIES: usize = 10_000_000;

/// log2 ‖G‖₂ of the standard-normal matrices G already normed, keyed by (seed, layer,
/// n_out, n_in); clones share one cache.
#[derive(Debug, Clone, Default)]
pub struct NormCache {
    map: Arc<Mutex<HashMap<(u64, usize, usize, usize), f64>>>,
    /// How [`NormCache::beside`] orders its two sides; a test hook ([`BesideOrder`]).
    order: BesideOrder,
    /// Unit matrices G taken from the other side in [`NormCache::beside`] (forward, norms),
    /// over every call on this cache and its clones.
    handoffs: Arc<[AtomicUsize; 2]>,
}

/// How [`NormCache::beside`] runs the norms against the products. Anything but the default
/// is for tests: it forces one side to reach every layer first, so the hand-off of drawn
/// matrices ([`DrawShare`]) is exercised both ways by construction, not by timing.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BesideOrder {
    /// Both at once (the product's only order).
    #[default]
    Concurrent,
    /// Every norm is found before the products start.
    NormsFirst,
    /// The products run to the end before any norm.
    ProductsFirst,
}

/// The two sides of [`NormCache::beside`] that both need layer l's unit matrix G.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Forward = 0,
    Norms = 1,
}

impl Side {
    fn bit(self) -> u8 {
        1 << self as u8
    }
    fn other(self) -> Side {
        match self {
            Side::Forward => Side::Norms,
            Side::Norms => Side::Forward,
        }
    }
}

/// Matrices one side of [`DrawShare`] may hold for the other at once (drawn or being
/// drawn): 4 × 8 MiB at width 1024. A side that runs further ahead draws for itself.
pub const SHARE_CAP: usize = 4;

/// Per layer, beside the two sides' arrival bits: a norm thread has claimed it.
const CLAIMED: u8 = 4;

/// What a side arriving at layer l does ([`DrawShare::arrive`]).
enum Arrival {
    /// The other side drew G: use it.
    Take(Arc<Array2<f64>>),
    /// Draw for yourself; with `publish`, hand G to [`DrawShare::publish`] once drawn.
    Draw { publish: bool },
}

/// A drawn G waiting for the other side, or a slot reserved while it is drawn (None).
struct Slot {
    by: Side,
    g: Option<Arc<Array2<f64>>>,
}

struct ShareState {
    /// Per layer: which sides have passed it, and whether a norm thread claimed it.
    seen: Vec<u8>,
    /// At most [`SHARE_CAP`] entries, each removed when the second side passes its layer.
    slots: BTreeMap<usize, Slot>,
    /// Layers below this are all claimed by norm threads.
    cursor: usize,
    /// Unit matrices the norm threads are done with, for the forward's next G: a G drawn
    /// into one needs no zeroed allocation first (at most [`POOL_CAP`]).
    pool: Vec<Array2<f64>>,
}

/// Spent matrices [`DrawShare`] keeps for reuse.
const POOL_CAP: usize = 2;

/// One draw of each layer's unit matrix G for both sides of [`NormCache::beside`]: the
/// norm threads (‖W‖₂ = std·‖G‖₂) and the forward pass (W = std·G, formed with the very
/// operation of `Init::weights`, so the same bits).
///
/// Whichever side reaches layer l first draws G and, while fewer than [`SHARE_CAP`]
/// matrices are held, leaves it for the other; the second takes it, or draws for itself
/// when nothing was left (or G is still being drawn: no side ever waits for the other).
/// A slot is gone once both sides have passed its layer. Norm threads take a layer whose
/// G the forward left before the next in line, so a forward that runs ahead hands over a
/// matrix per layer the norms finish meanwhile, not only the first few.
pub struct DrawShare<'n> {
    net: &'n Network,
    cache: NormCache,
    state: Mutex<ShareState>,
}

impl<'n> DrawShare<'n> {
    fn new(net: &'n Network, cache: NormCache) -> Self {
        let state = ShareState { seen: vec![0; net.depth() + 1], slots: BTreeMap::new(), cursor: 1, pool: Vec::new() };
        DrawShare { net, cache, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShareState> {
        // The state is consistent after every statement, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next layer a norm thread should norm: one whose G the forward left, else the
    /// lowest not yet claimed; None once every layer is claimed.
    fn next_norm_layer(&self) -> Option<usize> {
        let mut st = self.lock();
        let left = st.slots.iter().find(|(l, s)| s.by == Side::Forward && s.g.is_some() && st.seen[**l] & CLAIMED == 0).map(|(l, _)| *l);
        let l = match left {
            Some(l) => l,
            None => {
                while st.cursor < st.seen.len() && st.seen[st.cursor] & CLAIMED != 0 {
                    st.cursor += 1;
                }
                if st.cursor >= st.seen.len() {
                    return None;
                }
                st.cursor
            }
        };
        st.seen[l] |= CLAIMED;
        Some(l)
    }

    /// Side `me` reaches layer l needing G; `offer` says whether G would help the other
    /// side (a G drawn now is left for it if there is room).
    fn arrive(&self, me: Side, l: usize, offer: bool) -> Arrival {
        let mut st = self.lock();
        st.seen[l] |= me.bit();
        if st.seen[l] & me.other().bit() != 0 {
            // Second here: take what was left. A slot still being drawn is given up (its
            // drawer will find it gone), and so is this side's wait.
            return match st.slots.remove(&l).and_then(|s| s.g) {
                Some(g) => {
                    self.cache.handoffs[me as usize].fetch_add(1, Ordering::Relaxed);
                    Arrival::Take(g)
                }
                None => Arrival::Draw { publish: false },
            };
        }
        let publish = offer && st.slots.len() < SHARE_CAP;
        if publish {
            st.slots.insert(l, Slot { by: me, g: None });
        }
        Arrival::Draw { publish }
    }

    /// Leaves the G that side `me` drew at layer l for the other side, unless the other
    /// came by while it was drawn (and drew its own).
    fn publish(&self, l: usize, g: &Arc<Array2<f64>>) {
        if let Some(slot) = self.lock().slots.get_mut(&l) {
            slot.g = Some(Arc::clone(g));
        }
    }

    /// Side `me` passes layer l without needing G; frees what the other side left there.
    fn pass(&self, me: Side, l: usize) {
        let mut st = self.lock();
        st.seen[l] |= me.bit();
        if st.seen[l] & me.other().bit() != 0 {
            st.slots.remove(&l);
        }
    }

    /// Keeps a G no side needs any more for the forward's next draw, while there is room.
    fn recycle(&self, g: Arc<Array2<f64>>) {
        if let Ok(g) = Arc::try_unwrap(g) {
            let mut st = self.lock();
            if st.pool.len() < POOL_CAP {
                st.pool.push(g);
            }
        }
    }

    /// A matrix of this shape to draw into: a spent one, else a new one.
    fn fresh(&self, dim: (usize, usize)) -> Array2<f64> {
        let spent = self.lock().pool.pop();
        spent.filter(|g| g.dim() == dim).unwrap_or_else(|| Array2::zeros(dim))
    }

    /// Matrices held for the other side now (drawn or being drawn).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().slots.len()
    }

    /// (std, seed) of layer l's weights W = std·G where they are gaussian-family generated.
    fn unit(&self, l: usize) -> Option<(f64, u64)> {
        unit_std(self.net, l)
    }

    /// `(W^l, b^l)` for the forward pass, W bit-identical to `net.layer(l)`'s: from the G
    /// the norm side left, or drawn here (and left for the norm side when it will need
    /// it). `spare` is a W no longer used, whose storage a W formed from G reuses.
    pub fn forward_layer(&self, l: usize, spare: &mut Option<Array2<f64>>) -> (Cow<'n, Array2<f64>>, Cow<'n, Array1<f64>>) {
        let net = self.net;
        let Some((std, seed)) = self.unit(l) else {
            self.pass(Side::Forward, l);
            return net.layer(l);
        };
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let offer = self.cache.cached_unit_norm(seed, l, n_out, n_in).is_none();
        let mut reuse = || spare.take().filter(|w| w.dim() == (n_out, n_in)).unwrap_or_else(|| Array2::zeros((n_out, n_in)));
        let g = match self.arrive(Side::Forward, l, offer) {
            Arrival::Take(g) => g,
            Arrival::Draw { publish: false } => return net.layer(l),
            Arrival::Draw { publish: true } => {
                let (mut g, mut w) = (self.fresh((n_out, n_in)), reuse());
                fill_normal_and_scaled(&mut g, &mut w, &Stream::new(seed), l, std);
                self.publish(l, &Arc::new(g));
                return (Cow::Owned(w), self.biases(l));
            }
        };
        let w = match Arc::try_unwrap(g) {
            // The norm thread is done with it: scale in place.
            Ok(mut g) => {
                g.mapv_inplace(|x| x * std);
                g
            }
            Err(g) => {
                let mut w = reuse();
                scale_normal_into(&mut w, &g, std);
                w
            }
        };
        (Cow::Owned(w), self.biases(l))
    }

    /// b^l of the network's generated parameters.
    fn biases(&self, l: usize) -> Cow<'n, Array1<f64>> {
        match &self.net.params {
            Params::Generated { init, seed } => Cow::Owned(init.biases(&Stream::new(*seed), l, self.net.widths[l])),
            Params::Stored(_) => self.net.layer(l).1,
        }
    }

    /// The forward pass passes layer l without its weights (above an overflow).
    pub fn forward_skips(&self, l: usize) {
        self.pass(Side::Forward, l);
    }
}

/// (std, seed) of `net`'s layer l where its weights are W = std·G with G the stream's
/// standard-normal matrix (gaussian-family generated weights, std > 0).
fn unit_std(net: &Network, l: usize) -> Option<(f64, u64)> {
    match &net.params {
        Params::Generated { init, seed } => init.normal_std(net.widths[l - 1], net.widths[l]).filter(|s| *s > 0.0).map(|s| (s, *seed)),
        _ => None,
    }
}

/// The stream's standard-normal matrix G for (seed, layer, shape).
fn unit_matrix(seed: u64, l: usize, n_out: usize, n_in: usize) -> Array2<f64> {
    let unit_init = Init { kind: InitKind::Gaussian, sigma_w2: Some(n_in as f64), sigma_b2: 0.0 };
    unit_init.weights(&Stream::new(seed), l, n_out, n_in)
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
        let g = unit_matrix(seed, l, n_out, n_in);
        let v = spectral_norm_on(g.view(), threads).log2();
        self.cache_unit_norm(seed, l, n_out, n_in, v);
        (g, v)
    }

    /// log2 ‖W^l‖₂ of `net`'s layer l, whose weights are `w`.
    pub fn log2_weight_norm(&self, net: &Network, l: usize, w: &Array2<f64>) -> f64 {
        let threads = crate::gemm::cores();
        self.log2_norm_on(net, l, Some(w), threads)
    }

    /// log2 ‖W^l‖₂ with the Lanczos on at most `threads` threads (the same bits for any
    /// count): through the cache for gaussian-family weights, else from `w`, or from W^l
    /// drawn here when `w` is None.
    fn log2_norm_on(&self, net: &Network, l: usize, w: Option<&Array2<f64>>, threads: usize) -> f64 {
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let Some((std, seed)) = unit_std(net, l) else {
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
    /// l = 1..=L of `net` (index 0 unused), each layer on one thread; once `products`
    /// returns, the caller norms the layers still left. `products` is handed the
    /// [`DrawShare`] through which its forward pass and the norm threads draw each layer's
    /// unit matrix G once ([`DrawShare::forward_layer`]).
    ///
    /// The CPU engine's forward and backward products need no norm, so the Lanczos (as
    /// costly as the products at width 1024) runs beside them instead of before them, and
    /// without the per-pass hand-offs of a norm split over threads. A layer's value does not
    /// depend on which thread normed it, how many there were, or who drew G
    /// ([`spectral_norm_on`]).
    pub fn beside<R>(&self, net: &Network, workers: usize, products: impl FnOnce(&DrawShare) -> R) -> (Vec<f64>, R) {
        let share = DrawShare::new(net, self.clone());
        let take = || {
            let mut mine = Vec::new();
            while let Some(l) = share.next_norm_layer() {
                mine.push((l, self.norm_shared(&share, l)));
            }
            mine
        };
        let mut out = vec![0.0; net.depth() + 1];
        let r = std::thread::scope(|sc| {
            // Named, so that a profile (`perf report --sort comm`) shows the norms apart.
            // Each worker holds its core (crate::gemm) until it runs out of layers, so the
            // products leave that core alone meanwhile.
            let spawn = |_| {
                let held = crate::gemm::hold(1);
                let work = || {
                    let _held = held;
                    take()
                };
                std::thread::Builder::new().name("gradscope-norms".into()).spawn_scoped(sc, work).expect("spawn a norm thread")
            };
            // A worker's panic is a bug: re-raise it rather than leave its layers at 0.
            let join = |h: std::thread::ScopedJoinHandle<'_, Vec<(usize, f64)>>| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            let mut parts = Vec::new();
            let r = match self.order {
                BesideOrder::Concurrent => {
                    let hs: Vec<_> = (0..workers).map(spawn).collect();
                    let r = products(&share);
                    parts.extend(take());
                    hs.into_iter().for_each(|h| parts.extend(join(h)));
                    r
                }
                BesideOrder::NormsFirst => {
                    let hs: Vec<_> = (0..workers).map(spawn).collect();
                    parts.extend(take());
                    hs.into_iter().for_each(|h| parts.extend(join(h)));
                    products(&share)
                }
                BesideOrder::ProductsFirst => {
                    let r = products(&share);
                    parts.extend(take());
                    r
                }
            };
            for (l, v) in parts {
                out[l] = v;
            }
            r
        });
        (out, r)
    }

    /// log2 ‖W^l‖₂ on one thread for [`NormCache::beside`]: as [`NormCache::log2_norm_on`],
    /// with G taken from (or left for) the forward pass through `share`.
    fn norm_shared(&self, share: &DrawShare, l: usize) -> f64 {
        let net = share.net;
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        let Some((std, seed)) = share.unit(l).filter(|&(_, seed)| self.cached_unit_norm(seed, l, n_out, n_in).is_none()) else {
            share.pass(Side::Norms, l);
            return self.log2_norm_on(net, l, None, 1);
        };
        let g = match share.arrive(Side::Norms, l, true) {
            Arrival::Take(g) => g,
            Arrival::Draw { publish } => {
                let g = Arc::new(unit_matrix(seed, l, n_out, n_in));
                if publish {
                    share.publish(l, &g);
                }
                g
            }
        };
        let v = spectral_norm_on(g.view(), 1).log2();
        share.recycle(g);
        self.cache_unit_norm(seed, l, n_out, n_in, v);
        v + std.log2()
    }

    /// Sets how [`NormCache::beside`] orders its two sides (tests only: see [`BesideOrder`]).
    #[doc(hidden)]
    pub fn with_order(mut self, order: BesideOrder) -> Self {
        self.order = order;
        self
    }

    /// Unit matrices G each side took from the other in [`NormCache::beside`] so far:
    /// (by the forward pass, by the norm threads).
    #[doc(hidden)]
    pub fn handoffs(&self) -> (usize, usize) {
        (self.handoffs[0].load(Ordering::Relaxed), self.handoffs[1].load(Ordering::Relaxed))
    }

    /// `(W^l, b^l, log2 ‖W^l‖₂)`. On a cache miss for gaussian-family weights the unit
    /// matrix G is drawn once, normed, and scaled into W = std·G (the very operations of
    /// `Init::weights`, so W is bit-identical), saving a second draw.
    pub fn layer_with_norm<'n>(&self, net: &'n Network, l: usize) -> (Cow<'n, Array2<f64>>, Cow<'n, Array1<f64>>, f64) {
        let (n_out, n_in) = (net.widths[l], net.widths[l - 1]);
        if let Params::Generated { init, seed } = &net.params {
            if let Some(std) = init.normal_std(n_in, n_out).filter(|s| *s > 0.0) {
                if self.cached_unit_norm(*seed, l, n_out, n_in).is_none() {
                    let threads = crate::gemm::cores();
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
        let cores = crate::gemm::cores();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Cost};

    fn net(widths: &[usize], init: Init) -> Network {
        Network::new(widths.to_vec(), Activation::Tanh, false, Cost::Quadratic, Params::Generated { init, seed: 7 }).unwrap()
    }

    /// The forward side at layer l: W and b must be `net.layer(l)`'s bits.
    fn forward(share: &DrawShare, l: usize, spare: &mut Option<Array2<f64>>) {
        let (w, b) = share.forward_layer(l, spare);
        let (w0, b0) = share.net.layer(l);
        assert!(w.iter().zip(w0.iter()).all(|(a, b)| a.to_bits() == b.to_bits()) && w.dim() == w0.dim(), "W^{l}");
        assert_eq!(b, b0, "b^{l}");
        assert!(share.held() <= SHARE_CAP, "at most {SHARE_CAP} held, {} at layer {l}", share.held());
        if let Cow::Owned(w) = w {
            *spare = Some(w);
        }
    }

    /// The norm side's next layer, checked against a norm found alone; None when done.
    fn norm(cache: &NormCache, share: &DrawShare) -> Option<usize> {
        let l = share.next_norm_layer()?;
        let alone = NormCache::default().log2_norm_on(share.net, l, None, 1);
        assert_eq!(cache.norm_shared(share, l).to_bits(), alone.to_bits(), "log2 ‖W^{l}‖₂");
        assert!(share.held() <= SHARE_CAP);
        Some(l)
    }

    /// A forward three layers ahead for every layer the norms finish keeps handing over:
    /// the norms take the G the forward left before the next layer in line, so more than
    /// SHARE_CAP are handed over though never more than SHARE_CAP are held, and nothing is
    /// held once both sides are done.
    #[test]
    fn a_forward_far_ahead_keeps_handing_over() {
        let net = net(&[50, 60, 60, 40, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60], Init::new(InitKind::He, None, None).unwrap());
        let cache = NormCache::default();
        let share = DrawShare::new(&net, cache.clone());
        let (mut spare, mut order) = (None, Vec::new());
        for l in 1..=net.depth() {
            forward(&share, l, &mut spare);
            if l % 3 == 0 {
                order.extend(norm(&cache, &share));
            }
        }
        while let Some(l) = norm(&cache, &share) {
            order.push(l);
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=net.depth()).collect::<Vec<_>>(), "each layer normed once");
        assert_ne!(order, sorted, "the norms took the forward's G out of turn");
        assert_eq!(cache.handoffs().0, 0);
        assert!(cache.handoffs().1 > SHARE_CAP, "handed over: {:?}", cache.handoffs());
        assert_eq!(share.held(), 0, "nothing held once both sides passed");
        let spent = share.lock().pool.len();
        assert!((1..=POOL_CAP).contains(&spent), "the norms return spent G for the forward's next draw: {spent}");
    }

    /// The side that comes second while the first is still drawing draws for itself (it
    /// never waits) and the first then keeps its G; a side that passes a layer without
    /// needing G frees what the other left there.
    #[test]
    fn no_side_waits_and_nothing_stays_held() {
        let net = net(&[20; 5], Init::new(InitKind::Gaussian, Some(1.5), None).unwrap());
        let share = DrawShare::new(&net, NormCache::default());
        assert!(matches!(share.arrive(Side::Forward, 1, true), Arrival::Draw { publish: true }));
        assert_eq!(share.held(), 1, "a slot reserved while G is drawn");
        assert!(matches!(share.arrive(Side::Norms, 1, true), Arrival::Draw { publish: false }));
        assert_eq!(share.held(), 0, "the second side gave the reservation up");
        share.publish(1, &Arc::new(unit_matrix(7, 1, 20, 20)));
        assert_eq!(share.held(), 0, "nobody is left to take it");
        assert!(matches!(share.arrive(Side::Norms, 2, true), Arrival::Draw { publish: true }));
        share.publish(2, &Arc::new(unit_matrix(7, 2, 20, 20)));
        assert_eq!(share.held(), 1);
        share.forward_skips(2);
        assert_eq!(share.held(), 0, "a forward above an overflow frees the norms' G");
        // A side that finds the other's G takes it.
        assert!(matches!(share.arrive(Side::Forward, 3, true), Arrival::Draw { publish: true }));
        share.publish(3, &Arc::new(unit_matrix(7, 3, 20, 20)));
        assert!(matches!(share.arrive(Side::Norms, 3, true), Arrival::Take(_)));
        assert_eq!(share.held(), 0);
    }
}
