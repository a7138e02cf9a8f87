//! The pair expectation `E[tanh(r₁u₁) tanh(r₂u₂)]` of `c_predicted`, evaluated one inner
//! rule at a time with a vectorised tanh and exp: the same panels, nodes, weights and order
//! of summation as [`GaussianQuadrature::expect_pair`], so only the last bits of each tanh
//! and exp differ from libm's (a few ulps; see the tests).
//!
//! Why: a sweep of tanh networks to depth 2,000 spent ~60% of its time here, one libm
//! `tanh` and one `exp` per inner node (about 25,000 per pair and layer, for 6 pairs and
//! every layer), a chain of scalar calls that the compiler cannot vectorise.

use super::quadrature::{Feature, GaussLegendre, GaussianQuadrature};
use crate::rng::Simd;

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Lanes of one vector pass (AVX-512 holds 8 f64; narrower CPUs split it).
const LANES: usize = 8;

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
    let order = rule.nodes.len();
    let mut buf = Buffers::default();
    let mut total = 0.0;
    for w in outer.windows(2) {
        let (h, m) = (0.5 * (w[1] - w[0]), 0.5 * (w[1] + w[0]));
        let mut acc = 0.0;
        for (x, wt) in rule.nodes.iter().zip(&rule.weights) {
            let z1 = m + h * x;
            let t1 = (r1 * (s * z1)).tanh();
            let centre = -c * z1 / sr;
            let inner = GaussianQuadrature::breakpoints(&[Feature { centre, scale: inner_scale }], &[]);
            let f = inner_integral(simd, rule, order, &inner, &mut buf, |z2| r2 * (s * (c * z1 + sr * z2)), t1);
            acc += wt * (f * FRAC_1_SQRT_2PI * (-0.5 * z1 * z1).exp());
        }
        total += h * acc;
    }
    Some(total)
}

#[derive(Default)]
struct Buffers {
    z: Vec<f64>,
    arg: Vec<f64>,
    t: Vec<f64>,
    e: Vec<f64>,
}

/// `Σ_panels h Σ_j w_j ((t₁ tanh(arg(z_j))) · φ(z_j))`: the nodes and arguments first, then
/// tanh and the density over all of them in vector passes, then the sums in `expect_on`'s
/// order.
fn inner_integral(simd: Simd, rule: &GaussLegendre, order: usize, breaks: &[f64], buf: &mut Buffers, arg: impl Fn(f64) -> f64, t1: f64) -> f64 {
    let panels = breaks.len().saturating_sub(1);
    let n = panels * order;
    let padded = n.div_ceil(LANES) * LANES;
    buf.z.clear();
    for w in breaks.windows(2) {
        let (h, m) = (0.5 * (w[1] - w[0]), 0.5 * (w[1] + w[0]));
        buf.z.extend(rule.nodes.iter().map(|x| m + h * x));
    }
    buf.arg.clear();
    buf.arg.extend(buf.z.iter().map(|&z| arg(z)));
    buf.z.resize(padded, 0.0);
    buf.arg.resize(padded, 0.0);
    buf.t.resize(padded, 0.0);
    buf.e.resize(padded, 0.0);
    tanh_and_density(simd, &buf.arg, &buf.z, &mut buf.t, &mut buf.e);
    let mut total = 0.0;
    for (p, w) in breaks.windows(2).enumerate() {
        let h = 0.5 * (w[1] - w[0]);
        let mut acc = 0.0;
        for (j, wt) in rule.weights.iter().enumerate() {
            let k = p * order + j;
            acc += wt * (t1 * buf.t[k] * FRAC_1_SQRT_2PI * buf.e[k]);
        }
        total += h * acc;
    }
    total
}

fn simd() -> Simd {
    static BEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *BEST.get_or_init(Simd::best)
}

/// `t = tanh(arg)`, `e = exp(−z²/2)`, all slices of one length, a multiple of [`LANES`].
fn tanh_and_density(simd: Simd, arg: &[f64], z: &[f64], t: &mut [f64], e: &mut [f64]) {
    match simd {
        // SAFETY: `Simd::best` returned this level, so the CPU has its instructions.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::tanh_and_density_avx512(arg, z, t, e) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::tanh_and_density_avx2(arg, z, t, e) },
        _ => tanh_and_density_lanes(arg, z, t, e),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The same inlined body compiled for wider vectors (no FMA: Rust never fuses a
    //! multiply and an add on its own, so every level gives the same bits).

    #[target_feature(enable = "avx2")]
    pub(super) fn tanh_and_density_avx2(arg: &[f64], z: &[f64], t: &mut [f64], e: &mut [f64]) {
        super::tanh_and_density_lanes(arg, z, t, e)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    pub(super) fn tanh_and_density_avx512(arg: &[f64], z: &[f64], t: &mut [f64], e: &mut [f64]) {
        super::tanh_and_density_lanes(arg, z, t, e)
    }
}

#[inline(always)]
fn tanh_and_density_lanes(arg: &[f64], z: &[f64], t: &mut [f64], e: &mut [f64]) {
    for (((a, z), t), e) in arg.chunks_exact(LANES).zip(z.chunks_exact(LANES)).zip(t.chunks_exact_mut(LANES)).zip(e.chunks_exact_mut(LANES)) {
        for i in 0..LANES {
            t[i] = tanh_branchless(a[i]);
            e[i] = exp_nonpositive(-0.5 * z[i] * z[i]);
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
        let z: Vec<f64> = (0..n).map(|i| (i as f64 - 400.0) * 0.031).collect();
        let run = |s: Simd| {
            let (mut t, mut e) = (vec![0.0; n], vec![0.0; n]);
            tanh_and_density(s.available(), &arg, &z, &mut t, &mut e);
            (t, e)
        };
        let base = run(Simd::Baseline);
        for s in Simd::ALL {
            assert_eq!(run(s), base, "{s:?}");
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
