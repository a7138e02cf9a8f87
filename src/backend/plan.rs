//! The depth plan both engines follow: which depths a multi-depth probe serves, the prefix
//! it runs, the checkpoint interval K and its segments, which depths are active or join at a
//! layer of the stacked backward pass, and the CPU's memory plan and estimate.
//!
//! Checkpointing keeps a^l only every K layers and recomputes one segment of K layers at a
//! time in the backward pass. The GPU takes K ≈ √L, so memory grows like B·N·√L, never
//! L·B·N. The CPU ([`CpuPlan`]) spends its budget first on the top layers' activations,
//! which are then never recomputed, and takes K from what is left.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::model::{Network, Problem};

/// The sorted, distinct depths of a multi-depth probe of `net`, checked: each in 1..=L, no
/// linear output layer with several depths, the same output width at every depth (both
/// engines call it, so they refuse alike).
///
/// # Errors
/// [`Error::InvalidArgument`] naming `--depths` or `--linear-output`.
pub(crate) fn validate_depths(net: &Network, depths: &[usize]) -> Result<Vec<usize>> {
    let big_l = net.depth();
    let mut ds: Vec<usize> = depths.to_vec();
    ds.sort_unstable();
    ds.dedup();
    if ds.is_empty() || ds[0] == 0 || *ds.last().unwrap() > big_l {
        return Err(Error::arg("--depths", format!("depths must lie in 1..={big_l}")));
    }
    if net.linear_output && ds != [big_l] {
        return Err(Error::arg("--linear-output", "a depth sweep shares hidden layers, which have no linear output"));
    }
    let n_top = *net.widths.last().unwrap();
    if ds.iter().any(|&d| net.widths[d] != n_top) {
        return Err(Error::arg("--depths", "every swept depth needs the same output width"));
    }
    Ok(ds)
}

/// `p` cut to its first `top` layers (the deepest depth asked for): nothing above it is
/// computed.
pub(crate) fn prefix(p: &Problem, top: usize) -> Cow<'_, Problem> {
    if top == p.net.depth() {
        return Cow::Borrowed(p);
    }
    let mut q = p.clone();
    q.net.widths.truncate(top + 1);
    Cow::Owned(q)
}

/// The checkpoint interval K for `l` layers: every layer kept (K = L) when keeping them all
/// takes at most `budget` bytes, else ⌈√L⌉.
pub(crate) fn checkpoint_interval(l: usize, all_kept_bytes: u128, budget: u128) -> usize {
    let k = if all_kept_bytes <= budget { l } else { (l as f64).sqrt().ceil() as usize };
    k.max(1)
}

/// The segments of `l` layers at interval `k`, bottom first: segment g holds layers
/// s+1..=top with s = g·K, recomputed from checkpoint g (a^s).
pub(crate) fn segments(l: usize, k: usize) -> impl DoubleEndedIterator<Item = (usize, usize)> + ExactSizeIterator {
    (0..l.div_ceil(k)).map(move |g| (g * k, ((g + 1) * k).min(l)))
}

/// At layer l of the stacked backward pass: how many depths joined above l (they stack
/// deepest first), and the index in `ds` of the depth whose output layer l is, if any.
pub(crate) fn active_at(ds: &[usize], l: usize) -> (usize, Option<usize>) {
    (ds.len() - ds.partition_point(|&d| d <= l), ds.binary_search(&l).ok())
}

/// The CPU engine's plan for a network of these widths. The top `top` layers keep their
/// activations from the forward pass and are never recomputed; the `L − top` below them are
/// checkpointed every `k` layers and recomputed one segment at a time in the backward pass.
/// `keep_w`: a recomputed segment keeps the weights it drew for the backward pass; `top_w`:
/// the top segment keeps them from the forward pass (generated weights are redrawn from
/// their Philox counters otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPlan {
    pub top: usize,
    pub k: usize,
    pub keep_w: bool,
    pub top_w: bool,
}

/// What a plan weighs, per layer, in bytes (every layer sized as the widest, so the plan's
/// bytes are an upper bound) and in work.
struct LayerCosts {
    /// â^{l−1} and σ′(z^l) of one layer.
    act: u128,
    /// One checkpoint â^s.
    ckpt: u128,
    /// One weight matrix.
    w: u128,
    /// Recomputing one layer: its draw, its product and σ (flop-equivalents).
    recompute: u128,
    /// Drawing one layer's weights.
    draw: u128,
}

/// Flop-equivalents per drawn normal: the draw of an n×n matrix cost about 0.65 of a
/// B = 64 product in session 10's profile (≈ 80 flops an element); counted low, so that a
/// faster draw does not make the plan keep weights that do not pay.
const DRAW_FLOPS: u128 = 32;
/// Flop-equivalents per element of σ and σ′ (libm tanh and exp).
const SIGMA_FLOPS: u128 = 40;

impl LayerCosts {
    fn new(widths: &[usize], batch: usize) -> LayerCosts {
        let b = batch as u128;
        let n = *widths.iter().max().unwrap() as u128;
        let w_elems = (1..widths.len()).map(|i| (widths[i] * widths[i - 1]) as u128).max().unwrap_or(0);
        LayerCosts { act: 2 * b * n * 8, ckpt: b * n * 8, w: w_elems * 8, recompute: 2 * b * w_elems + DRAW_FLOPS * w_elems + SIGMA_FLOPS * b * n, draw: DRAW_FLOPS * w_elems }
    }
}

impl CpuPlan {
    /// The plan that adds the least work within `budget` bytes of stored activations,
    /// checkpoints and cached weights: every layer kept when they all fit; otherwise the top
    /// segment as large as fits beside the checkpoints below it (each layer is then
    /// recomputed at most once, and only those below the top segment), with the interval
    /// and the weights the recomputed segments keep chosen by the work they save. Where no
    /// plan fits, checkpoints every ⌈√L⌉ layers (the least memory).
    pub fn new(widths: &[usize], batch: usize, generated: bool, budget: u64) -> CpuPlan {
        let l = widths.len() - 1;
        let c = LayerCosts::new(widths, batch);
        let m = budget as u128;
        if l as u128 * c.act <= m {
            let top_w = generated && l as u128 * (c.act + c.w) <= m;
            return CpuPlan { top: l, k: l.max(1), keep_w: false, top_w };
        }
        // Checkpoints below a top segment of t layers at interval k.
        let ckpts = |t: usize, k: usize| (l - t).div_ceil(k) as u128 * c.ckpt;
        let mut best: Option<(u128, u128, CpuPlan)> = None;
        let k_max = (m / c.act.max(1)).min(l as u128) as usize;
        for keep_w in [false, true] {
            if keep_w && !generated {
                continue;
            }
            for k in 1..=k_max {
                // The largest t with t·act + checkpoints ≤ m (the forward pass's peak): the
                // left side grows with t, as a layer outweighs the checkpoint it saves.
                let (mut lo, mut hi) = (0usize, l - 1);
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if mid as u128 * c.act + ckpts(mid, k) <= m {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                let t = lo;
                let seg = (l - t).min(k) as u128 * (c.act + if keep_w { c.w } else { 0 });
                if t == 0 || t as u128 * c.act + ckpts(t, k) > m || ckpts(t, k) + seg > m {
                    continue;
                }
                let plan = CpuPlan { top: t, k, keep_w, top_w: false };
                let (work, bytes) = (plan.work(l, &c), plan.held(l, &c));
                if best.as_ref().is_none_or(|&(bw, bb, _)| (work, bytes) < (bw, bb)) {
                    best = Some((work, bytes, plan));
                }
            }
        }
        best.map(|(_, _, p)| p).unwrap_or_else(|| {
            let k = checkpoint_interval(l, u128::MAX, 0);
            CpuPlan { top: l - (l - 1) / k * k, k, keep_w: false, top_w: false }
        })
    }

    /// The segments of the `l` layers, bottom first: the recomputed ones (s, top) of k
    /// layers each, from checkpoint a^s, then the top segment, kept from the forward pass.
    pub fn segments(&self, l: usize) -> impl DoubleEndedIterator<Item = (usize, usize)> + ExactSizeIterator {
        let below = l - self.top;
        let k = self.k;
        (0..below.div_ceil(k) + 1).map(move |g| if g * k < below { (g * k, ((g + 1) * k).min(below)) } else { (below, l) })
    }

    /// The work the plan adds to the forward and backward passes' own: the recomputed
    /// layers, and the weights drawn again for the backward pass.
    fn work(&self, l: usize, c: &LayerCosts) -> u128 {
        let below = (l - self.top) as u128;
        below * (c.recompute + if self.keep_w { 0 } else { c.draw }) + if self.top_w { 0 } else { self.top as u128 * c.draw }
    }

    /// Bytes of stored activations, checkpoints and cached weights at the plan's peak: the
    /// checkpoints beside the larger of the top segment (forward pass) and one recomputed
    /// segment (backward pass; the top segment is freed by then).
    fn held(&self, l: usize, c: &LayerCosts) -> u128 {
        let below = l - self.top;
        let checkpoints = below.div_ceil(self.k) as u128 * c.ckpt;
        let top = self.top as u128 * (c.act + if self.top_w { c.w } else { 0 });
        let seg = below.min(self.k) as u128 * (c.act + if self.keep_w { c.w } else { 0 });
        checkpoints + top.max(seg)
    }

    /// Bytes the CPU probe holds at its peak (checkpoints, a segment, weights, data) for
    /// these widths and batch; saturates instead of overflowing.
    pub fn bytes(&self, widths: &[usize], batch: usize, generated: bool) -> u64 {
        let l = (widths.len() - 1) as u128;
        let b = batch as u128;
        let n = *widths.iter().max().unwrap() as u128;
        let c = LayerCosts::new(widths, batch);
        let stored: u128 = if generated { 0 } else { (1..widths.len()).map(|i| (widths[i] * widths[i - 1] + widths[i]) as u128 * 8).sum() };
        let per_example = l * b * 8 * 2;
        let total = self.held(widths.len() - 1, &c) + per_example + 4 * c.w + 10 * b * n * 8 + stored;
        total.min(u64::MAX as u128) as u64
    }

    /// Bytes of the stacked output errors of `depths` depths (beside [`CpuPlan::bytes`]).
    pub fn stacked_bytes(depths: usize, batch: usize, n_top: usize) -> u64 {
        (depths as u128 * batch as u128 * n_top as u128 * 8 * 2).min(u64::MAX as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_every_layer_once_bottom_first() {
        for (l, k) in [(1, 1), (10, 3), (10, 10), (100, 10), (7, 2)] {
            let segs: Vec<_> = segments(l, k).collect();
            let layers: Vec<usize> = segs.iter().flat_map(|&(s, top)| s + 1..=top).collect();
            assert_eq!(layers, (1..=l).collect::<Vec<_>>(), "l {l} k {k}");
            assert!(segs.iter().all(|&(s, top)| s % k == 0 && top - s <= k));
        }
    }

    #[test]
    fn active_depths_join_at_their_own_top_layer() {
        let ds = [3, 7, 12];
        assert_eq!(active_at(&ds, 12), (0, Some(2)));
        assert_eq!(active_at(&ds, 9), (1, None));
        assert_eq!(active_at(&ds, 7), (1, Some(1)));
        assert_eq!(active_at(&ds, 1), (3, None));
    }

    /// Every CPU plan holds at most its budget wherever any plan fits, adds no more work as
    /// the budget grows, and its segments cover every layer once, the top one last.
    #[test]
    fn cpu_plans_fit_their_budget_and_add_less_work_as_it_grows() {
        for (widths, batch) in [(vec![1024; 1001], 64), (vec![1024; 3001], 64), (vec![64; 301], 5), (vec![7, 30, 12, 30, 30, 3], 2)] {
            let l = widths.len() - 1;
            let c = LayerCosts::new(&widths, batch);
            let floor = CpuPlan::new(&widths, batch, true, 0);
            let mut last_work = u128::MAX;
            let all = l as u128 * (c.act + c.w);
            for step in 0..=200u128 {
                let budget = (all * step / 160) as u64;
                let pl = CpuPlan::new(&widths, batch, true, budget);
                let held = pl.held(l, &c);
                assert!(held <= budget as u128 || pl == floor, "{widths:?} budget {budget}: {pl:?} holds {held}");
                if pl != floor {
                    assert!(pl.work(l, &c) <= last_work, "{widths:?} budget {budget}: {pl:?} adds work");
                    last_work = pl.work(l, &c);
                }
                let segs: Vec<_> = pl.segments(l).collect();
                let layers: Vec<usize> = segs.iter().flat_map(|&(s, top)| s + 1..=top).collect();
                assert_eq!(layers, (1..=l).collect::<Vec<_>>(), "{pl:?}");
                assert_eq!(*segs.last().unwrap(), (l - pl.top, l));
                assert!(segs[..segs.len() - 1].iter().all(|&(s, top)| s % pl.k == 0 && top - s <= pl.k));
                assert_eq!(pl.bytes(&widths, batch, true) >= held as u64, true);
            }
            assert_eq!(CpuPlan::new(&widths, batch, true, all as u64), CpuPlan { top: l, k: l, keep_w: false, top_w: true });
        }
    }

    /// The cold probe's shape: 1 GiB of activations against 512 MiB. The top segment takes
    /// about half the layers, the recomputed segments keep their weights, and nothing is
    /// recomputed twice; with no budget the plan is today's ⌈√L⌉ checkpoints.
    #[test]
    fn cpu_plan_of_the_cold_probe_recomputes_half_its_layers() {
        let widths = vec![1024; 1001];
        let pl = CpuPlan::new(&widths, 64, true, 512 << 20);
        assert!(pl.top >= 450 && pl.keep_w && !pl.top_w, "{pl:?}");
        let floor = CpuPlan::new(&widths, 64, true, 0);
        assert_eq!(floor.segments(1000).collect::<Vec<_>>(), segments(1000, 32).collect::<Vec<_>>());
        let stored = CpuPlan::new(&widths, 64, false, 512 << 20);
        assert!(!stored.keep_w && stored.top >= pl.top, "{stored:?}");
        // 512 layers' activations fit: with k ≈ √(L/2) the checkpoints and one segment fit
        // up to L ≈ 512²/2 (the README's 131,000 layers), and nothing fits past it.
        let c = LayerCosts::new(&widths, 64);
        for (l, fits) in [(130_000, true), (132_000, false)] {
            let pl = CpuPlan::new(&vec![1024; l + 1], 64, true, 512 << 20);
            assert_eq!(pl.held(l, &c) <= 512 << 20, fits, "depth {l}: {pl:?}");
        }
    }

    #[test]
    fn checkpoints_only_past_the_budget() {
        assert_eq!(checkpoint_interval(100, 10, 10), 100);
        assert_eq!(checkpoint_interval(100, 11, 10), 10);
        assert_eq!(checkpoint_interval(101, 11, 10), 11);
    }
}
