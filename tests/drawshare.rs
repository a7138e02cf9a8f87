//! One draw per layer for the CPU probe's norm threads and forward pass: the unit matrix G
//! handed from either side to the other changes no bit of any report.

mod common;

use common::*;
use gradscope::backend::cpu::CpuBackend;
use gradscope::backend::norms::{BesideOrder, NormCache, SHARE_CAP};
use gradscope::model::{Activation, Cost, Init, InitKind, Problem, TargetSpec};

/// The reports of `p` at `depths`, bit for bit, and the hand-offs (forward, norms) they took.
fn run(p: &Problem, depths: &[usize], workers: usize, budget: u64, order: BesideOrder) -> (String, (usize, usize)) {
    // A fresh cache each time, so every norm is found (and every G drawn) in this run.
    let be = CpuBackend { cache_budget: budget, norm_workers: Some(workers), norms: NormCache::default().with_order(order) };
    let r = be.probe_depths(p, depths).unwrap();
    (format!("{:?}", r.iter().map(|r| (&r.layers, r.overflow_layer, r.log10_cost.to_bits())).collect::<Vec<_>>()), be.norms.handoffs())
}

/// A norm side far ahead (every norm found before the products start) hands the forward
/// pass the first SHARE_CAP layers' G, a forward far ahead hands the norms as many, and
/// either way, or both at once, the reports are those of the inline norms bit for bit:
/// gaussian weights (std ≠ 1 and std = 1), xavier-normal across changing widths, with and
/// without checkpointing, one or three norm threads.
#[test]
fn hand_off_both_ways_changes_no_bit() {
    let widths = [40, 64, 48, 64, 40, 64, 64, 64, 64, 64, 64];
    let depth = widths.len() - 1;
    let xavier = Init::new(InitKind::XavierNormal, None, Some(0.05)).unwrap();
    let cases = [
        ("tanh, σ_w² = 1.7", problem(&widths, Activation::Tanh, Cost::Quadratic, gaussian(1.7, 0.1), 4, 41, TargetSpec::Gaussian)),
        // σ_w² = n_in on square layers: std = 1, where the draw multiplies by nothing.
        ("relu, std = 1", problem(&[64; 9], Activation::Relu, Cost::Quadratic, gaussian(64.0, 0.0), 3, 42, TargetSpec::Gaussian)),
        ("xavier-normal", problem(&widths, Activation::Tanh, Cost::Quadratic, xavier, 4, 43, TargetSpec::Gaussian)),
    ];
    for (what, p) in &cases {
        let depths = [p.net.depth() / 2, p.net.depth()];
        let (inline, none) = run(p, &depths, 0, u64::MAX, BesideOrder::Concurrent);
        assert_eq!(none, (0, 0), "{what}: inline norms share nothing");
        for (workers, budget) in [(1, u64::MAX), (3, 0), (1, 0)] {
            let (norms_first, h) = run(p, &depths, workers, budget, BesideOrder::NormsFirst);
            assert_eq!(norms_first, inline, "{what}: norms first, {workers} threads, budget {budget}");
            assert_eq!(h, (SHARE_CAP, 0), "{what}: the forward takes the G of the first layers the norms left");
            let (products_first, h) = run(p, &depths, workers, budget, BesideOrder::ProductsFirst);
            assert_eq!(products_first, inline, "{what}: products first, {workers} threads, budget {budget}");
            assert_eq!(h, (0, SHARE_CAP), "{what}: the norms take the G of the first layers the forward left");
            let (both, _) = run(p, &depths, workers, budget, BesideOrder::Concurrent);
            assert_eq!(both, inline, "{what}: both at once, {workers} threads, budget {budget}");
        }
    }
    assert!(depth > SHARE_CAP, "more layers than can be held, so some are drawn twice");
}

/// Weights that are not std·G (xavier-uniform) are drawn by each side as before: nothing
/// is handed over and the reports are unchanged.
#[test]
fn uniform_weights_are_not_shared() {
    let init = Init::new(InitKind::XavierUniform, None, None).unwrap();
    let p = problem(&[32; 9], Activation::Tanh, Cost::Quadratic, init, 3, 44, TargetSpec::Gaussian);
    let (inline, _) = run(&p, &[8], 0, u64::MAX, BesideOrder::Concurrent);
    for order in [BesideOrder::NormsFirst, BesideOrder::ProductsFirst] {
        let (r, h) = run(&p, &[8], 1, 0, order);
        assert_eq!(r, inline, "{order:?}");
        assert_eq!(h, (0, 0), "{order:?}: uniform weights are drawn by each side");
    }
}
