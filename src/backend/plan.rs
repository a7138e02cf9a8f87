//! The depth plan both engines follow: which depths a multi-depth probe serves, the prefix
//! it runs, the checkpoint interval K and its segments, which depths are active or join at a
//! layer of the stacked backward pass, and the CPU's memory estimate.
//!
//! Checkpointing keeps a^l only every K ≈ √L layers and recomputes one segment of K layers
//! at a time in the backward pass, so memory grows like B·N·√L, never L·B·N.

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

/// The CPU engine's plan for a network of these widths: the checkpoint interval K and
/// whether a segment's weights are kept while it is processed (generated weights are
/// redrawn from their Philox counters otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPlan {
    pub k: usize,
    pub keep_w: bool,
}

impl CpuPlan {
    /// The plan within `budget` bytes of stored activations and cached weights.
    pub fn new(widths: &[usize], batch: usize, generated: bool, budget: u64) -> CpuPlan {
        let l = widths.len() - 1;
        let b = batch as u128;
        let act_bytes: u128 = (1..=l).map(|i| b * (widths[i] + widths[i - 1]) as u128 * 8).sum();
        let k = checkpoint_interval(l, act_bytes, budget as u128);
        let max_w: u128 = (1..=l).map(|i| (widths[i] * widths[i - 1]) as u128 * 8).max().unwrap_or(0);
        let keep_w = generated && max_w * k as u128 <= budget as u128;
        CpuPlan { k, keep_w }
    }

    /// Bytes the CPU probe holds at its peak (checkpoints, a segment, weights, data) for
    /// these widths and batch; saturates instead of overflowing.
    pub fn bytes(&self, widths: &[usize], batch: usize, generated: bool) -> u64 {
        let CpuPlan { k, keep_w } = *self;
        let l = (widths.len() - 1) as u128;
        let b = batch as u128;
        let n = *widths.iter().max().unwrap() as u128;
        let max_w = (1..widths.len()).map(|i| (widths[i] * widths[i - 1]) as u128 * 8).max().unwrap_or(0);
        let stored: u128 = if generated { 0 } else { (1..widths.len()).map(|i| (widths[i] * widths[i - 1] + widths[i]) as u128 * 8).sum() };
        let checkpoints = l.div_ceil(k as u128) * b * n * 8;
        let segment = k as u128 * b * 2 * n * 8 + if keep_w { k as u128 * max_w } else { 0 };
        let per_example = l * b * 8 * 2;
        let total = checkpoints + segment + per_example + 4 * max_w + 10 * b * n * 8 + stored;
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

    #[test]
    fn checkpoints_only_past_the_budget() {
        assert_eq!(checkpoint_interval(100, 10, 10), 100);
        assert_eq!(checkpoint_interval(100, 11, 10), 10);
        assert_eq!(checkpoint_interval(101, 11, 10), 11);
    }
}
