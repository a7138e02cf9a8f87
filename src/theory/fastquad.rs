//! Gaussian expectations of tanh integrands, evaluated a whole rule at a time with a
//! vectorised tanh and exp: the pair expectation `E[tanh(r₁u₁) tanh(r₂u₂)]` of
//! `c_predicted`, and `E[tanh(√q z)²]`, `E[tanh′(√q z)²]` of the length map and χ. The same
//! panels, nodes, weights and order of summation as [`GaussianQuadrature::expect_pair`] and
//! [`GaussianQuadrature::expect_scaled`], so only the last bits of each tanh and exp differ
//! from libm's (a few ulps; see the tests).
//!
//! Why: a sweep of tanh networks to depth 2,000 spent ~60% of its time in `c_predicted`
//! (one libm `tanh` and `exp` per inner node, about 25,000 per pair and layer) and ~15% in
//! the one-dimensional maps, chains of scalar calls that the compiler cannot vectorise.

use super::quadrature::{Feature, GaussLegendre, GaussianQuadrature, Z_MAX};
use crate::rng::Simd;

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Lanes of one vector pass (AVX-512 holds 8 f64; narrower CPUs split it).
const LANES: usize = 8;

/// What the vector pass evaluates at each argument x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Integrand {
    /// tanh x.
    Tanh,
    /// tanh² x.
    TanhSq,
    /// tanh′(x)², tanh′ formed as `Activation::dsigma` forms it: 4e/(1+e)², e = exp(−2|x|).
    DTanhSq,
}

/// `E[tanh(r₁u₁) tanh(r₂u₂)]` for a centred gaussian pair with Var u₁ = Var u₂ = q and
/// correlation c, by the composite rule of `rule` (the nodes of
/// [`GaussianQuadrature::new`] of the same order). None where `expect_pair` takes a special
/// path (q = 0, |c| = 1): the caller then uses it.
pub fn expect_tanh_pair(rule: &GaussLegendre, q: f64, c: f64, r1: f64, r2: f64) -> Option<f64> {
    let c = c.clamp(-1.0, 1.0);
    let sr = (1.0 - c * c).max(0.0).sqrt();
    if q == 0.0 || sr < 1e-300 || !q.is_finite() {
        return None;
    }
    let simd = simd();
    let s = q.sqrt();
    // As in `expect_pair` with no kinks: the outer ladder around 0 and the point 0.
    let outer = GaussianQuadrature::breakpoints(&[Feature { centre: 0.0, scale: 1.0 / s }], &[0.0]);
    let inner_scale = 1.0 / (s * sr);
    let mut buf = Buffers::default();
    // Where the inner feature's ladder lies wholly outside ±Z_MAX the inner panels are the
    // fixed ladder alone, the same for every such z₁: its nodes and densities (libm's exp,
    // as `expect_on` forms them) are computed once.
    let ladder = GaussianQuadrature::breakpoints(&[], &[]);
    let mut fixed = Buffers::default();
    nodes(rule, &ladder, &mut fixed.z);
    fixed.e.extend(fixed.z.iter().map(|&z| (-0.5 * z * z).exp()));
    // The integrand is even in z₁ (tanh is odd, and the inner rule at −z₁ is the mirror
    // image of the one at z₁: same nodes negated, same weights), and the outer panels are
    // symmetric, so each mirrored pair of outer nodes needs one inner integral. The outer
    // sum keeps `expect_on`'s order; only the inner sums of z₁ < 0 change their order.
    let mut z1s = Vec::new();
    nodes(rule, &outer, &mut z1s);
    let n1 = z1s.len();
    let symmetric = outer.iter().zip(outer.iter().rev()).all(|(a, b)| *a == -*b);
    let mut fs = vec![0.0; n1];
    for k in (0..n1).rev() {
        let mirror = n1 - 1 - k;
        if symmetric && mirror > k {
            fs[k] = fs[mirror];
            continue;
        }
        let z1 = z1s[k];
        let t1 = (r1 * (s * z1)).tanh();
        let centre = -c * z1 / sr;
        let arg = |z2: f64| r2 * (s * (c * z1 + sr * z2));
        fs[k] = if ladder_outside(centre, inner_scale) {
            fixed.arg.clear();
            fixed.arg.extend(fixed.z.iter().map(|&z| arg(z)));
            pad(&mut fixed.arg);
            fixed.t.resize(fixed.arg.len(), 0.0);
            integrand(simd, Integrand::Tanh, &fixed.arg, &mut fixed.t);
            sum_panels(rule, &ladder, t1, &fixed.t, &fixed.e)
        } else {
            let inner = GaussianQuadrature::breakpoints(&[Feature { centre, scale: inner_scale }], &[]);
            nodes(rule, &inner, &mut buf.z);
            buf.arg.clear();
            buf.arg.extend(buf.z.iter().map(|&z| arg(z)));
            evaluate(simd, Integrand::Tanh, &mut buf);
            sum_panels(rule, &inner, t1, &buf.t, &buf.e)
        };
    }
    let order = rule.nodes.len();
    let mut total = 0.0;
    for (p, w) in outer.windows(2).enumerate() {
        let h = 0.5 * (w[1] - w[0]);
        let mut acc = 0.0;
        for (j, wt) in rule.weights.iter().enumerate() {
            let (z1, f) = (z1s[p * order + j], fs[p * order + j]);
            acc += wt * (f * FRAC_1_SQRT_2PI * (-0.5 * z1 * z1).exp());
        }
        total += h * acc;
    }
    Some(total)
}

/// `E[tanh(√q z)²]` (`mean_sq_sigma`) or, with `derivative`, `E[tanh′(√q z)²]`
/// (`mean_sq_dsigma`), by [`GaussianQuadrature::expect_scaled`]'s panels on `rule`. None at
/// q = 0 or a q that is not finite (the caller's own path).
pub fn expect_tanh_sq(rule: &GaussLegendre, q: f64, derivative: bool) -> Option<f64> {
    if q == 0.0 || !q.is_finite() {
        return None;
    }
    let s = q.sqrt();
    let breaks = GaussianQuadrature::breakpoints(&[Feature { centre: 0.0, scale: 1.0 / s }], &[]);
    let mut buf = Buffers::default();
    nodes(rule, &breaks, &mut buf.z);
    buf.arg.extend(buf.z.iter().map(|&z| s * z));
    evaluate(simd(), if derivative { Integrand::DTanhSq } else { Integrand::TanhSq }, &mut buf);
    Some(sum_panels(rule, &breaks, 1.0, &buf.t, &buf.e))
}

/// True when `breakpoints` would drop every point of the feature (centre, scale): all of
/// them beyond ±Z_MAX, or the feature not finite.
fn ladder_outside(centre: f64, scale: f64) -> bool {
    if !(centre.is_finite() && scale.is_finite() && scale > 0.0) {
        return true;
    }
    if centre.abs() <= Z_MAX {
        return false;
    }
    let mut s = scale / 8.0;
    for _ in 0..10 {
        if (centre + s).abs() <= Z_MAX || (centre - s).abs() <= Z_MAX {
            return false;
        }
        s *= 2.0;
    }
    true
}

#[derive(Default)]
struct Buffers {
    z: Vec<f64>,
    arg: Vec<f64>,
    t: Vec<f64>,
    e: Vec<f64>,
}

/// The nodes of every panel of `breaks`, panel after panel, as `GaussLegendre::integrate`
/// forms them.
fn nodes(rule: &GaussLegendre, breaks: &[f64], z: &mut Vec<f64>) {
    z.clear();
    for w in breaks.windows(2) {
        let (h, m) = (0.5 * (w[1] - w[0]), 0.5 * (w[1] + w[0]));
        z.extend(rule.nodes.iter().map(|x| m + h * x));
    }
}

fn pad(v: &mut Vec<f64>) {
    v.resize(v.len().div_ceil(LANES) * LANES, 0.0);
}

/// The integrand at `buf.arg` into `buf.t` and the density at `buf.z` into `buf.e`.
fn evaluate(simd: Simd, kind: Integrand, buf: &mut Buffers) {
    pad(&mut buf.z);
    pad(&mut buf.arg);
    let n = buf.z.len();
    buf.t.resize(n, 0.0);
    buf.e.resize(n, 0.0);
    integrand(simd, kind, &buf.arg, &mut buf.t);
    density(simd, &buf.z, &mut buf.e);
}

/// `Σ_panels h Σ_j w_j ((t₁ f_j) · φ_j)` in `expect_on`'s order (`f·(1/√2π)·exp(−z²/2)`
/// per node, then the panel's weighted sum, then h times it); t₁ = 1 multiplies exactly.
fn sum_panels(rule: &GaussLegendre, breaks: &[f64], t1: f64, f: &[f64], e: &[f64]) -> f64 {
    let order = rule.nodes.len();
    let mut total = 0.0;
    for (p, w) in breaks.windows(2).enumerate() {
        let h = 0.5 * (w[1] - w[0]);
        let (f, e) = (&f[p * order..(p + 1) * order], &e[p * order..(p + 1) * order]);
        let mut acc = 0.0;
        for ((wt, f), e) in rule.weights.iter().zip(f).zip(e) {
            acc += wt * (t1 * f * FRAC_1_SQRT_2PI * e);
        }
        total += h * acc;
    }
    total
}

fn simd() -> Simd {
    static BEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *BEST.get_or_init(Simd::best)
}

/// `out = f(arg)`, slices of one length, a multiple of [`LANES`].
fn integrand(simd: Simd, kind: Integrand, arg: &[f64], out: &mut [f64]) {
    match kind {
        Integrand::Tanh => map::<0>(simd, arg, out),
        Integrand::TanhSq => map::<1>(simd, arg, out),
        Integrand::DTanhSq => map::<2>(simd, arg, out),
    }
}

/// `e = exp(−z²/2)`, slices of one length, a multiple of [`LANES`].
fn density(simd: Simd, z: &[f64], e: &mut [f64]) {
    map::<3>(simd, z, e)
}

/// [`map_lanes`] compiled for the widest level `simd` names.
fn map<const K: u8>(simd: Simd, x: &[f64], out: &mut [f64]) {
    match simd {
        // SAFETY: `Simd::best` (or `available`) returned this level, so the CPU has its
        // instructions.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::map_avx512::<K>(x, out) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::map_avx2::<K>(x, out) },
        _ => map_lanes::<K>(x, out),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The same inlined body compiled for wider vectors (no FMA: Rust never fuses a
    //! multiply and an add on its own, so every level gives the same bits).

    #[target_feature(enable = "avx2")]
    pub(super) fn map_avx2<const K: u8>(x: &[f64], out: &mut [f64]) {
        super::map_lanes::<K>(x, out)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    pub(super) fn map_avx512<const K: u8>(x: &[f64], out: &mut [f64]) {
        super::map_lanes::<K>(x, out)
    }
}

/// `out[i] = f_K(x[i])`: K = 0 tanh, 1 tanh², 2 tanh′², 3 the density's exp(−x²/2).
#[inline(always)]
fn map_lanes<const K: u8>(x: &[f64], out: &mut [f64]) {
    for (x, out) in x.chunks_exact(LANES).zip(out.chunks_exact_mut(LANES)) {
        for i in 0..LANES {
            let v = x[i];
            out[i] = match K {
                0 => tanh_branchless(v),
                1 => {
                    let t = tanh_branchless(v);
                    t * t
                }
                2 => {
                    let e = exp_nonpositive(-2.0 * v.abs());
                    let d = 4.0 * e / ((1.0 + e) * (1.0 + e));
                    d * d
                }
                _ => exp_nonpositive(-0.5 * v * v),
            };
        }
    }
}

/// 1.5·2⁵²: adding and subtracting it rounds a |y| < 2⁵¹ to the nearest integer.
const ROUND: f64 = 6_755_399_441_055_744.0;
const INV_LN2: f64 = std::f64::consts::LOG2_E;
/// ln 2 split so that k·LN2_HI is exact for |k| < 2¹¹ (fdlibm's split).
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-01;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;

/// `(2^k, r)` with y = k ln 2 + r, |r| ≤ ln2/2 (+ rounding), for y ∈ [−1000, 0].
#[inline(always)]
fn reduce(y: f64) -> (f64, f64) {
    let kd = (y * INV_LN2 + ROUND) - ROUND;
    let r = (y - kd * LN2_HI) - kd * LN2_LO;
    // kd + 2⁵² + 1023 holds 1023 + k in its low mantissa bits; shifted into the exponent
    // field that is 2^k (k ≥ −1022 here).
    let bits = (kd + (4_503_599_627_370_496.0 + 1023.0)).to_bits() << 52;
    (f64::from_bits(bits), r)
}

/// `expm1(r)` for |r| ≤ 0.35 by its Taylor series to r¹³ (remainder < 1.2e-17 relative).
#[inline(always)]
fn expm1_reduced(r: f64) -> f64 {
    const C: [f64; 12] = [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let mut p = C[11];
    for c in C[..11].iter().rev() {
        p = c + r * p;
    }
    r + r * (r * p)
}

/// `e^y` for y ∈ [−700, 0] (the density's −z²/2, |z| ≤ 12): within a few ulps of libm.
#[inline(always)]
pub(crate) fn exp_nonpositive(y: f64) -> f64 {
    let y = if y < -700.0 { -700.0 } else { y };
    let (two_k, r) = reduce(y);
    two_k + two_k * expm1_reduced(r)
}

/// `tanh(x)` as fdlibm forms it for |x| < 1, −t/(t+2) with t = expm1(−2|x|), over the whole
/// line (|x| ≥ 22 gives ±1, as libm does), without branches: within a few ulps of libm.
#[inline(always)]
pub(crate) fn tanh_branchless(x: f64) -> f64 {
    let a = x.abs();
    // NaN > 22 is false: a NaN stays NaN.
    let a = if a > 22.0 { 22.0 } else { a };
    let (two_k, r) = reduce(-2.0 * a);
    // expm1(k ln2 + r) = 2^k expm1(r) + (2^k − 1); 2^k − 1 is exact for k ≥ −53.
    let t = two_k * expm1_reduced(r) + (two_k - 1.0);
    (-t / (t + 2.0)).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::libm_reference::ulps;

    #[test]
    fn tanh_and_exp_are_within_a_few_ulps_of_libm() {
        let mut worst = (0u64, 0u64);
        let mut x = 1e-300_f64;
        while x < 40.0 {
            for v in [x, -x] {
                worst.0 = worst.0.max(ulps(tanh_branchless(v), v.tanh()));
            }
            x *= 1.000_37;
        }
        let mut y = 0.0_f64;
        while y > -700.0 {
            worst.1 = worst.1.max(ulps(exp_nonpositive(y), y.exp()));
            y -= 0.000_731;
        }
        assert!(worst.0 <= 3 && worst.1 <= 3, "ulps: tanh {}, exp {}", worst.0, worst.1);
        assert_eq!(tanh_branchless(0.0).to_bits(), 0.0_f64.to_bits());
        assert_eq!(tanh_branchless(-0.0).to_bits(), (-0.0_f64).to_bits());
        assert_eq!(tanh_branchless(1e300), 1.0);
        assert_eq!(tanh_branchless(f64::NEG_INFINITY), -1.0);
        assert!(tanh_branchless(f64::NAN).is_nan());
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let n = 8 * 97;
        let arg: Vec<f64> = (0..n).map(|i| (i as f64 - 400.0) * 0.037).collect();
        let kinds = [Integrand::Tanh, Integrand::TanhSq, Integrand::DTanhSq];
        let run = |s: Simd| {
            let mut outs: Vec<Vec<f64>> = kinds
                .iter()
                .map(|&k| {
                    let mut t = vec![0.0; n];
                    integrand(s.available(), k, &arg, &mut t);
                    t
                })
                .collect();
            let mut e = vec![0.0; n];
            density(s.available(), &arg, &mut e);
            outs.push(e);
            outs
        };
        let base = run(Simd::Baseline);
        for s in Simd::ALL {
            assert_eq!(run(s), base, "{s:?}");
        }
        // And each is its scalar formula, to a few ulps of libm.
        for (i, &x) in arg.iter().enumerate() {
            let d = crate::model::Activation::Tanh.dsigma(x);
            for (got, want) in [(base[0][i], x.tanh()), (base[1][i], x.tanh().powi(2)), (base[2][i], d * d), (base[3][i], (-0.5 * x * x).exp())] {
                assert!(ulps(got, want) <= 8, "x = {x}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn the_one_dimensional_maps_match_the_scalar_rule() {
        let quad = GaussianQuadrature::shared();
        let act = crate::model::Activation::Tanh;
        for q in [1e-9, 1e-3, 0.05, 0.7, 1.0, 3.0, 250.0, 1e6] {
            let fast = expect_tanh_sq(quad.legendre(), q, false).unwrap();
            let want = quad.expect_scaled(q, &[], |x| act.sigma(x).powi(2));
            assert!((fast - want).abs() <= 1e-15 * want, "E tanh², q {q}: {fast} vs {want}");
            let fast = expect_tanh_sq(quad.legendre(), q, true).unwrap();
            let want = quad.expect_scaled(q, &[], |x| act.dsigma(x).powi(2));
            assert!((fast - want).abs() <= 1e-15 * want, "E tanh′², q {q}: {fast} vs {want}");
        }
        assert_eq!(expect_tanh_sq(quad.legendre(), 0.0, false), None);
    }

    #[test]
    fn the_fixed_ladder_test_agrees_with_breakpoints() {
        let ladder = GaussianQuadrature::breakpoints(&[], &[]);
        for &(centre, scale) in &[(0.0, 1.0), (13.0, 0.5), (-13.0, 90.0), (40.0, 300.0), (-50.0, 1e4), (1e3, 1e-3), (f64::INFINITY, 1.0), (20.0, 30.0)] {
            let with = GaussianQuadrature::breakpoints(&[Feature { centre, scale }], &[]);
            assert_eq!(ladder_outside(centre, scale), with == ladder, "centre {centre}, scale {scale}");
        }
    }

    #[test]
    fn the_pair_rule_matches_the_scalar_rule() {
        let order = super::super::signal::PAIR_ORDER;
        let rule = GaussLegendre::new(order);
        let scalar = GaussianQuadrature::new(order);
        for &(q, c, r1, r2) in &[(1.0, 0.3, 1.0, 1.0), (0.02, 0.999, 1.1, 0.9), (7.0, -0.6, 0.8, 1.25), (1e-4, 0.999_999, 1.0, 1.0), (40.0, 0.0, 1.0, 1.0)] {
            let fast = expect_tanh_pair(&rule, q, c, r1, r2).unwrap();
            let want = scalar.expect_pair(q, c, &[], |a, b| (r1 * a).tanh() * (r2 * b).tanh());
            // On the scale of the Cauchy–Schwarz bound √(E[tanh²(r₁u)] E[tanh²(r₂u)]): at
            // c = 0 the value itself is a rounding residue of 0.
            let sq = |r: f64| scalar.expect_scaled(q, &[], |u| (r * u).tanh().powi(2));
            let scale = (sq(r1) * sq(r2)).sqrt();
            assert!((fast - want).abs() <= 1e-15 * scale, "q {q} c {c}: {fast} vs {want}");
        }
        assert_eq!(expect_tanh_pair(&rule, 0.0, 0.5, 1.0, 1.0), None);
        assert_eq!(expect_tanh_pair(&rule, 1.0, 1.0, 1.0, 1.0), None);
    }
}
