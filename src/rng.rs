//! Philox4x32-10, the counter-based generator shared bit for bit with `shaders/philox.wgsl`.
//!
//! Every random number gradscope draws is addressed by a counter
//! `[col / 4, row, layer, purpose]` under the key `seed`, so any weight can be drawn on its
//! own, in any order, on the CPU or in a shader, and the weights of layer `l` do not depend
//! on the depth of the network (a network of depth L is the prefix of a deeper one).
//!
//! One Philox call yields four 32-bit words, which serve four consecutive columns: lane
//! `col % 4` takes word `col % 4` for uniforms and signs, and for normals the pair
//! `(2⌊lane/2⌋, 2⌊lane/2⌋+1)` through Box–Muller (cosine for even lanes, sine for odd).
//!
//! Box–Muller calls no libm: its ln and a sin/cos pair sharing one exact range reduction are
//! written out (fdlibm's polynomials) in branch-free IEEE arithmetic without fused
//! multiply–adds, so the row fill vectorises and gives the same bits on every CPU. Each is
//! within 1 ulp of glibc's on all 2^24 inputs Box–Muller can give it; a normal is
//! within 4 ulp of the libm formula gradscope used before (kept, hidden from the docs, as
//! `libm_reference` for the tests and benches).
//!
//! Reference: J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random numbers:
//! as easy as 1, 2, 3", SC'11.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// What a random number is for: the fourth counter word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    /// Weight `W^l_{ij}`: counter `[j/4, i, l, 0]`.
    Weight = 0,
    /// Bias `b^l_i`: counter `[i/4, 0, l, 1]`.
    Bias = 1,
    /// Input `x_{b,j}` of example b: counter `[j/4, b, 0, 2]`.
    Input = 2,
    /// Target `y_{b,j}`: counter `[j/4, b, 0, 3]`.
    Target = 3,
}

/// One Philox4x32-10 block.
///
/// ```
/// // The known answer of Random123 (counter 0, key 0).
/// assert_eq!(gradscope::rng::philox4x32_10([0; 4], [0; 2]),
///            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
/// ```
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox_rounds(ctr, key)
}

#[inline(always)]
fn philox_rounds(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (ctr[0] as u64);
        let p1 = (M1 as u64) * (ctr[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}

const TWO_M24: f64 = 1.0 / 16_777_216.0;

/// A uniform in (0, 1] from the top 24 bits; exact in f32 and f64 alike.
#[inline]
pub fn open_unit(word: u32) -> f64 {
    ((word >> 8) + 1) as f64 * TWO_M24
}

/// A uniform in [0, 1) from the top 24 bits; exact in f32 and f64 alike.
#[inline]
pub fn unit(word: u32) -> f64 {
    (word >> 8) as f64 * TWO_M24
}

/// The counter-addressed random stream of one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    key: [u32; 2],
}

impl Stream {
    /// The stream of `seed` (key = the seed's low and high 32 bits).
    pub fn new(seed: u64) -> Self {
        Stream {
            key: [seed as u32, (seed >> 32) as u32],
        }
    }

    /// The four words serving columns `4·(col/4) .. 4·(col/4)+3` of `row`.
    #[inline]
    pub fn block(&self, purpose: Purpose, layer: u32, row: u32, col: u32) -> [u32; 4] {
        philox4x32_10([col >> 2, row, layer, purpose as u32], self.key)
    }

    /// A standard normal for (purpose, layer, row, col), by Box–Muller on 24-bit uniforms.
    ///
    /// ```text
    /// u1 = (w[2p] >> 8 + 1)·2^-24 ∈ (0, 1],  u2 = (w[2p+1] >> 8)·2^-24,  p = (col % 4) / 2
    /// z  = √(−2 ln u1) · (cos 2πu2 if col even, sin 2πu2 if odd)
    /// ```
    /// The tails are cut at √(2·24 ln 2) ≈ 5.77σ: P(|z| > 4) is 0.03% short of the normal's,
    /// P(|z| > 5) 2% short, which no statistic here can notice.
    pub fn normal(&self, purpose: Purpose, layer: u32, row: u32, col: u32) -> f64 {
        let w = self.block(purpose, layer, row, col);
        normal_from_block(&w, col & 3)
    }

    /// A uniform in [0, 1) for (purpose, layer, row, col): word `col % 4` of the block.
    pub fn uniform(&self, purpose: Purpose, layer: u32, row: u32, col: u32) -> f64 {
        unit(self.block(purpose, layer, row, col)[(col & 3) as usize])
    }

    /// Fills `out[c] = normal(purpose, layer, row, c)`, bit for bit.
    ///
    /// Eight blocks (32 normals; 16 blocks on AVX-512) at a time in fixed-size lanes with no
    /// branches and no libm calls, so the compiler vectorises Philox and Box–Muller alike; on
    /// x86-64 the widest of AVX-512, AVX2 and the SSE2 baseline that the CPU has is chosen at
    /// run time. The arithmetic is the same IEEE operations in every case (no fused
    /// multiply–add), so the values do not depend on the CPU.
    pub fn fill_normal(&self, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        self.fill_normal_on(Simd::best(), purpose, layer, row, out);
    }

    /// [`Stream::fill_normal`] on a chosen instruction set (one the CPU lacks falls back to
    /// the baseline), so tests can hold every path to the same bits.
    #[doc(hidden)]
    pub fn fill_normal_on(&self, simd: Simd, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        fill_on::<true>(simd, [0, row, layer, purpose as u32], self.key, out);
    }

    /// Fills `out[c] = uniform(purpose, layer, row, c)`, vectorised as [`Stream::fill_normal`].
    pub fn fill_uniform(&self, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        self.fill_uniform_on(Simd::best(), purpose, layer, row, out);
    }

    /// [`Stream::fill_uniform`] on a chosen instruction set, as [`Stream::fill_normal_on`].
    #[doc(hidden)]
    pub fn fill_uniform_on(&self, simd: Simd, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        fill_on::<false>(simd, [0, row, layer, purpose as u32], self.key, out);
    }
}

/// The row fill of normals (`NORMAL`) or uniforms on `simd`, or the widest narrower level
/// the CPU has.
fn fill_on<const NORMAL: bool>(simd: Simd, ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
    match simd.available() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` returned the level only after detecting its features.
        Simd::Avx512 => unsafe { x86::fill_avx512::<NORMAL>(ctr, key, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Simd::Avx2 => unsafe { x86::fill_avx2::<NORMAL>(ctr, key, out) },
        _ => for_each_batch::<8, NORMAL>(ctr, key, out),
    }
}

/// The instruction sets the row fill is compiled for.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// What every CPU of the target has (SSE2 on x86-64).
    Baseline,
    Avx2,
    Avx512,
}

impl Simd {
    /// Every level, widest last.
    pub const ALL: [Simd; 3] = [Simd::Baseline, Simd::Avx2, Simd::Avx512];

    /// The widest level this CPU has.
    pub fn best() -> Simd {
        Simd::Avx512.available()
    }

    /// `self` if this CPU has it, otherwise the widest narrower level it has.
    pub fn available(self) -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if self == Simd::Avx512
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl")
            {
                return Simd::Avx512;
            }
            if self != Simd::Baseline && is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        Simd::Baseline
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The row fill compiled for wider vectors; the body is the same inlined code.

    #[target_feature(enable = "avx2")]
    pub(super) fn fill_avx2<const NORMAL: bool>(ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
        super::for_each_batch::<8, NORMAL>(ctr, key, out)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    pub(super) fn fill_avx512<const NORMAL: bool>(ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
        super::for_each_batch::<16, NORMAL>(ctr, key, out)
    }
}

/// Philox4x32-10 on `L` blocks at once, counters `ctr0[i], ctr[1], ctr[2], ctr[3]`. The loop
/// over blocks is outermost, so once the ten rounds are unrolled it is one straight loop the
/// vectoriser takes whole on every instruction set (the 32×32→64 multiplies become
/// `pmuludq`); rounds outermost left it to the SLP vectoriser, which kept some builds scalar.
#[inline(always)]
fn philox_lanes<const L: usize>(ctr0: [u32; L], ctr: [u32; 4], key: [u32; 2]) -> [[u32; L]; 4] {
    let mut x = [[0; L]; 4];
    for i in 0..L {
        let w = philox_rounds([ctr0[i], ctr[1], ctr[2], ctr[3]], key);
        for k in 0..4 {
            x[k][i] = w[k];
        }
    }
    x
}

/// Fills a row by runs of `L` blocks: Philox words `w[k][i]` (word k of block i), then
/// normals or uniforms into the 4 entries each block serves; the last, partial run goes
/// through a scratch batch so the lanes are always full. A const flag, not a closure: a
/// closure would not inline into the `target_feature` callers, nor be compiled for their
/// vectors.
#[inline(always)]
fn for_each_batch<const L: usize, const NORMAL: bool>(ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
    let (blocks, rest) = out.as_chunks_mut::<4>();
    let mut runs = blocks.chunks_exact_mut(L);
    let mut first = ctr[0];
    for run in &mut runs {
        let run: &mut [[f64; 4]; L] = run.try_into().expect("chunks of L blocks");
        fill_batch::<L, NORMAL>(&philox_lanes::<L>(lanes_from(first), ctr, key), run);
        first = first.wrapping_add(L as u32);
    }
    let partial = runs.into_remainder();
    if !partial.is_empty() || !rest.is_empty() {
        let mut scratch = [[0.0; 4]; L];
        fill_batch::<L, NORMAL>(&philox_lanes::<L>(lanes_from(first), ctr, key), &mut scratch);
        let n = partial.len();
        partial.copy_from_slice(&scratch[..n]);
        rest.copy_from_slice(&scratch[n][..rest.len()]);
    }
}

/// Counters `first, first+1, …` of a run's blocks.
#[inline(always)]
fn lanes_from<const L: usize>(first: u32) -> [u32; L] {
    std::array::from_fn(|i| first.wrapping_add(i as u32))
}

#[inline(always)]
fn fill_batch<const L: usize, const NORMAL: bool>(w: &[[u32; L]; 4], batch: &mut [[f64; 4]; L]) {
    if NORMAL {
        // Pair (w0, w1) of every block, then (w2, w3): one flat loop of 2L lanes, which
        // the loop vectoriser takes on every instruction set (nested loops of L it leaves
        // scalar on SSE2).
        let (a, b) = ([w[0], w[2]], [w[1], w[3]]);
        let (a, b) = (a.as_flattened(), b.as_flattened());
        let (mut zc, mut zs) = ([[0.0; L]; 2], [[0.0; L]; 2]);
        let (c, s) = (zc.as_flattened_mut(), zs.as_flattened_mut());
        for p in 0..2 * L {
            (c[p], s[p]) = box_muller(a[p], b[p]);
        }
        for i in 0..L {
            batch[i] = [zc[0][i], zs[0][i], zc[1][i], zs[1][i]];
        }
    } else {
        for i in 0..L {
            batch[i] = [unit(w[0][i]), unit(w[1][i]), unit(w[2][i]), unit(w[3][i])];
        }
    }
}

/// Box–Muller on two words: `(r cos θ, r sin θ)` with `r = √(−2 ln u1)` and
/// `θ = 2π·u2` rounded to f64 as `2.0 * PI * u2` rounds it.
#[inline(always)]
fn box_muller(a: u32, b: u32) -> (f64, f64) {
    let u1 = (((a >> 8) + 1) as i32) as f64 * TWO_M24;
    let r = (-2.0 * ln_normal(u1)).sqrt();
    let (s, c) = sincos_turn(b >> 8);
    (r * c, r * s)
}

const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LG: [f64; 7] = [
    f64::from_bits(0x3fe5_5555_5555_5593),
    f64::from_bits(0x3fd9_9999_9997_fa04),
    f64::from_bits(0x3fd2_4924_9422_9359),
    f64::from_bits(0x3fcc_71c5_1d8e_78af),
    f64::from_bits(0x3fc7_4664_96cb_03de),
    f64::from_bits(0x3fc3_9a09_d078_c69f),
    f64::from_bits(0x3fc2_f112_df3e_5244),
];

/// ln x for a positive normal finite x, within 1 ulp: fdlibm's `e_log.c` (Sun
/// Microsystems, 1993) without its special-case branches, which no Box–Muller input
/// (2^-24 ≤ u1 ≤ 1) takes. x = 2^k (1+f) with 1+f in [√2/2, √2), s = f/(2+f), and
/// ln(1+f) = f − hf² + s(hf² + R(s²)) with R a degree-14 minimax polynomial.
#[inline(always)]
fn ln_normal(x: f64) -> f64 {
    let bits = x.to_bits();
    // Shift the exponent boundary from 1 to √2/2 in the high word, then read k off it.
    let hx = ((bits >> 32) as u32).wrapping_add(0x3ff0_0000 - 0x3fe6_a09e);
    let k = (hx >> 20) as i32 - 0x3ff;
    let hx = (hx & 0x000f_ffff) + 0x3fe6_a09e;
    let f = f64::from_bits(((hx as u64) << 32) | (bits & 0xffff_ffff)) - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG[1] + w * (LG[3] + w * LG[5]));
    let t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
    let dk = k as f64;
    s * (hfsq + (t2 + t1)) + dk * LN2_LO - hfsq + f + dk * LN2_HI
}

/// 2π as today's Box–Muller forms it (`2.0 * PI`), split so that its products with a
/// 24-bit integer are exact: 29 high bits and the 24 below them.
const TAU: f64 = 2.0 * std::f64::consts::PI;
const TAU_HI: f64 = f64::from_bits(TAU.to_bits() & !0xff_ffff);
const TAU_LO: f64 = TAU - TAU_HI;
/// (TAU − 2π)/4 = π/2 as f64 minus π/2, i.e. −cos(π/2 as f64) (the digits are π's).
const TAU_ERR_4: f64 = -6.123_233_995_736_766e-17;

/// `(sin θ, cos θ)` for θ = fl(TAU · j·2^-24), j < 2^24, within 1 ulp each.
///
/// θ is the angle today's `2.0 * PI * unit(b)` rounds to, so the result stays within an
/// ulp or two of libm's `sin_cos` of it. The range reduction is exact and shared by both:
/// j = q·2^22 + m names the quadrant q and the offset m·TAU·2^-24 in it; offsets past the
/// octant are folded to t = 2^22 − m so the kernel argument is at most π/4. What separates
/// θ from that exact grid, the rounding ρ of TAU·j (found exactly by Fast2Sum on the split
/// product) and TAU's own error, rides along as the tail of a double-double argument.
/// Kernels: fdlibm's `k_sin.c`/`k_cos.c` (Sun Microsystems, 1993), < 1 ulp on [−π/4, π/4].
#[inline(always)]
fn sincos_turn(j: u32) -> (f64, f64) {
    let jf = j as i32 as f64;
    let (h, l) = (TAU_HI * jf, TAU_LO * jf);
    let rho = ((h + l) - h - l) * TWO_M24;
    let (q, m) = (j >> 22, j & 0x3f_ffff);
    let upper = m > 0x20_0000;
    let t = if upper { 0x40_0000 - m } else { m };
    // θ = n·π/2 ± x: the quadrant boundary the argument is measured from.
    let n = q + upper as u32;
    let tail = rho + (n as i32) as f64 * TAU_ERR_4;
    let tail = if upper { -tail } else { tail };
    let tf = (t as i32) as f64;
    let xh = TAU_HI * tf * TWO_M24;
    let xl = TAU_LO * tf * TWO_M24 + tail;
    let x = xh + xl;
    let y = xl - (x - xh);
    let (s, c) = (k_sin(x, y), k_cos(x, y));
    let s = if upper { -s } else { s };
    let (s, c) = if n & 1 != 0 { (c, s) } else { (s, c) };
    let s = if n & 2 != 0 { -s } else { s };
    let c = if (n + 1) & 2 != 0 { -c } else { c };
    (s, c)
}

const S: [f64; 6] = [
    f64::from_bits(0xbfc5_5555_5555_5549),
    f64::from_bits(0x3f81_1111_1110_f8a6),
    f64::from_bits(0xbf2a_01a0_19c1_61d5),
    f64::from_bits(0x3ec7_1de3_57b1_fe7d),
    f64::from_bits(0xbe5a_e5e6_8a2b_9ceb),
    f64::from_bits(0x3de5_d93a_5acf_d57c),
];
const C: [f64; 6] = [
    f64::from_bits(0x3fa5_5555_5555_554c),
    f64::from_bits(0xbf56_c16c_16c1_5177),
    f64::from_bits(0x3efa_01a0_19cb_1590),
    f64::from_bits(0xbe92_7e4f_809c_52ad),
    f64::from_bits(0x3e21_ee9e_bdb4_b1c4),
    f64::from_bits(0xbda8_fae9_be88_38d4),
];

/// sin(x + y) for |x| ≤ π/4, |y| ≤ ulp(x)/2.
#[inline(always)]
fn k_sin(x: f64, y: f64) -> f64 {
    let z = x * x;
    let w = z * z;
    let r = S[1] + z * (S[2] + z * S[3]) + z * w * (S[4] + z * S[5]);
    let v = z * x;
    x - ((z * (0.5 * y - v * r) - y) - v * S[0])
}

/// cos(x + y) for |x| ≤ π/4, |y| ≤ ulp(x)/2.
#[inline(always)]
fn k_cos(x: f64, y: f64) -> f64 {
    let z = x * x;
    let w = z * z;
    let r = z * (C[0] + z * (C[1] + z * C[2])) + w * w * (C[3] + z * (C[4] + z * C[5]));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    w + (((1.0 - w) - hz) + (z * r - x * y))
}

#[inline]
fn normal_from_block(w: &[u32; 4], lane: u32) -> f64 {
    let p = (lane >> 1) as usize;
    let (c, s) = box_muller(w[2 * p], w[2 * p + 1]);
    if lane & 1 == 0 { c } else { s }
}

/// Box–Muller as gradscope drew it before the vectorised fill: libm's `ln` and `sin_cos`.
/// Kept as the reference the fast draw is held to (tests) and timed against (benches).
#[doc(hidden)]
pub mod libm_reference {
    use super::{Purpose, Stream, open_unit, unit};

    /// `(r cos θ, r sin θ)` of the words `(a, b)` through the platform's libm.
    pub fn box_muller(a: u32, b: u32) -> (f64, f64) {
        let r = (-2.0 * open_unit(a).ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * unit(b);
        let (s, c) = theta.sin_cos();
        (r * c, r * s)
    }

    /// Distance in ulps along the ordered line of doubles (+0 and −0 are 0 apart; a sign
    /// change near 0 counts the ulps across it): how far the fast draw is from this one.
    pub fn ulps(a: f64, b: f64) -> u64 {
        let key = |x: f64| {
            let bits = x.to_bits() as i64;
            if bits < 0 { i64::MIN - bits } else { bits }
        };
        key(a).abs_diff(key(b))
    }

    /// The scalar row fill as it was: one Philox call and two libm Box–Mullers per block.
    pub fn fill_normal(stream: &Stream, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        for (q, chunk) in out.chunks_mut(4).enumerate() {
            let w = stream.block(purpose, layer, row, (q as u32) << 2);
            for pair in 0..chunk.len().div_ceil(2) {
                let (c, s) = box_muller(w[2 * pair], w[2 * pair + 1]);
                chunk[2 * pair] = c;
                if 2 * pair + 1 < chunk.len() {
                    chunk[2 * pair + 1] = s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::libm_reference::ulps;
    use super::*;

    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn fill_matches_single_draws() {
        let s = Stream::new(0x1234_5678_9abc);
        let mut row = vec![0.0; 11];
        s.fill_normal(Purpose::Weight, 3, 7, &mut row);
        for (c, v) in row.iter().enumerate() {
            assert_eq!(*v, s.normal(Purpose::Weight, 3, 7, c as u32));
        }
        s.fill_uniform(Purpose::Target, 0, 2, &mut row);
        for (c, v) in row.iter().enumerate() {
            assert_eq!(*v, s.uniform(Purpose::Target, 0, 2, c as u32));
        }
    }

    /// Every angle Box–Muller can draw (all 2^24 of them): sin and cos within 1 ulp of
    /// libm's `sin_cos` of the same rounded θ on glibc 2.36, ≥ 90% bit for bit the same.
    /// The bound asserted is 2 ulp, which holds against any libm that is itself within
    /// 1 ulp, as ours is.
    #[test]
    fn sincos_turn_matches_libm_on_every_angle() {
        let (mut worst, mut same) = (0, 0u32);
        for j in 0..1u32 << 24 {
            let theta = TAU * (j as f64 * TWO_M24);
            let (s0, c0) = theta.sin_cos();
            let (s1, c1) = sincos_turn(j);
            let d = ulps(s0, s1).max(ulps(c0, c1));
            worst = worst.max(d);
            same += (s0 == s1 && c0 == c1) as u32;
            assert!(d <= 2, "j = {j}: libm ({s0:e}, {c0:e}), ours ({s1:e}, {c1:e})");
        }
        eprintln!("sincos_turn: max {worst} ulp, {same} of 2^24 bit-identical");
        assert!(same > (1 << 24) / 10 * 9, "{same} of 2^24 bit-identical");
    }

    /// Every u1 Box–Muller can draw (k·2^-24, k = 1..2^24): ln within 1 ulp of libm's on
    /// glibc 2.36, ≥ 90% bit for bit the same (asserted: 2 ulp, as above).
    #[test]
    fn ln_matches_libm_on_every_uniform() {
        let (mut worst, mut same) = (0, 0u32);
        for k in 1..=1u32 << 24 {
            let u = k as f64 * TWO_M24;
            let (a, b) = (u.ln(), ln_normal(u));
            worst = worst.max(ulps(a, b));
            same += (a == b) as u32;
            assert!(ulps(a, b) <= 2, "u = {u:e}: libm {a:e}, ours {b:e}");
        }
        eprintln!("ln_normal: max {worst} ulp, {same} of 2^24 bit-identical");
        assert!(same > (1 << 24) / 10 * 9, "{same} of 2^24 bit-identical");
    }

    #[test]
    fn tau_error_constant_is_cos_of_half_pi() {
        assert_eq!(TAU_HI + TAU_LO, TAU);
        assert_eq!(TAU_HI.to_bits() & 0xff_ffff, 0);
        assert_eq!(-TAU_ERR_4, std::f64::consts::FRAC_PI_2.cos());
    }

    #[test]
    fn normals_have_unit_moments() {
        let s = Stream::new(42);
        let mut row = vec![0.0; 200_000];
        s.fill_normal(Purpose::Weight, 1, 0, &mut row);
        let n = row.len() as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        // Standard errors: 1/√n ≈ 0.0022 for the mean, √(2/n) ≈ 0.0032 for the variance.
        assert!(mean.abs() < 0.012, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "var {var}");
    }
}
