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
    /// Eight blocks (32 normals) at a time in fixed-size lanes with no branches and no libm
    /// calls, so the compiler vectorises Philox and Box–Muller alike; on x86-64 the widest
    /// of AVX-512, AVX2 and the SSE2 baseline that the CPU has is chosen at run time, and
    /// AVX-512 and AVX2 run hand-written kernels (16 and 8 blocks at a time) instead. The
    /// arithmetic is the same IEEE operations in every case (no fused multiply–add), so the
    /// values do not depend on the CPU.
    pub fn fill_normal(&self, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        self.fill_normal_on(Simd::best(), purpose, layer, row, out);
    }

    /// [`Stream::fill_normal`] on a chosen instruction set (one the CPU lacks falls back to
    /// the baseline), so tests can hold every path to the same bits.
    #[doc(hidden)]
    pub fn fill_normal_on(&self, simd: Simd, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        fill_on::<true>(simd, [0, row, layer, purpose as u32], self.key, out);
    }

    /// [`Stream::fill_normal_on`] (`normal`) or [`Stream::fill_uniform_on`] through the
    /// compiler-vectorised fill on every level, as AVX-512 and AVX2 drew before their
    /// hand-written kernels: the tests hold the two to the same bits, the benches time one
    /// against the other.
    #[doc(hidden)]
    pub fn fill_autovec_on(&self, simd: Simd, normal: bool, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        let ctr = [0, row, layer, purpose as u32];
        if normal {
            fill_autovec::<true>(simd, ctr, self.key, out)
        } else {
            fill_autovec::<false>(simd, ctr, self.key, out)
        }
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
/// the CPU has: on AVX-512 and AVX2, the hand-written kernels.
fn fill_on<const NORMAL: bool>(simd: Simd, ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    match simd.available() {
        // SAFETY: `available` returned the level only after detecting its features.
        Simd::Avx512 => return unsafe { kernel::avx512::fill_on::<NORMAL>(ctr, key, out) },
        // SAFETY: as above.
        Simd::Avx2 => return unsafe { kernel::avx2::fill_on::<NORMAL>(ctr, key, out) },
        Simd::Baseline => {}
    }
    fill_autovec::<NORMAL>(simd, ctr, key, out)
}

/// The row fill the compiler vectorises from the portable code, on `simd` or the widest
/// narrower level the CPU has.
fn fill_autovec<const NORMAL: bool>(simd: Simd, ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
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

/// The row fills written out in intrinsics for AVX-512 and AVX2: the same IEEE operations
/// on the same values as `box_muller`, `unit` and `philox_rounds`, so the same bits,
/// arranged so that Zen 4 runs them about 1.2× (AVX-512) and 1.13× (AVX2) faster than the
/// compiler's vectorisation of the portable code (BENCHMARKS.md, "Issue 11 in session 11:
/// the draw").
///
/// What the compiler could not do itself without changing a bit, or did not do:
/// - several registers of pairs go through Box–Muller side by side, one operation on all
///   of them before the next: ln's division, its polynomial and the square root form one
///   long dependency chain per register, and with one register at a time the core's
///   schedulers fill with work waiting on it (this alone is most of the gain);
/// - Philox runs in 64-bit lanes and its words go to Box–Muller as they are, not packed to
///   32-bit lanes and widened again;
/// - integers become doubles by OR-ing them into the mantissa of 2^52 and subtracting
///   2^52 (exact), not by a conversion instruction;
/// - scalings by 2^-24 are folded into constants where the product they scale is exact
///   or its rounding commutes with the scaling (nothing here is subnormal): u1 is never
///   formed (ln reads the bits of 2^24·u1 and takes 24 off the exponent), and 2π's split
///   halves are stored pre-scaled;
/// - the quadrant's swap and sign changes are blends and sign-bit xors, and the outputs
///   are put in column order by permutes in registers.
#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{TAU_HI, TAU_LO, TWO_M24};

    /// 2^52: `from_bits(MAGIC | j) − 2^52` is the integer j < 2^52 as a double, exactly.
    const MAGIC: i64 = 0x4330_0000_0000_0000;
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    /// What `ln_normal` adds to the high word of u1's bits, less 24 in the exponent field,
    /// since the bits here are those of 2^24·u1.
    const HX_ADD: i64 = (((0x3ff0_0000u32 - 0x3fe6_a09e).wrapping_sub(24 << 20) as u64) << 32) as i64;
    /// 2π's halves times 2^-24 (exact: a power of two).
    const TAU_HI_S: f64 = TAU_HI * TWO_M24;
    const TAU_LO_S: f64 = TAU_LO * TWO_M24;

    /// Defines each `fn name(args) -> R = expr;` as `expr` applied register by register
    /// (each argument and the result are arrays of N registers), compiled for `features`.
    macro_rules! registerwise {
        ($features:literal; $(fn $name:ident($($a:ident: $t:ty),*) -> $r:ty = $e:expr;)*) => {$(
            #[inline]
            #[target_feature(enable = $features)]
            fn $name<const N: usize>($($a: $t),*) -> $r {
                // SAFETY: vectors and masks are plain bits; all zeros is a valid value.
                let mut o: $r = unsafe { std::mem::zeroed() };
                for i in 0..N {
                    $(let $a = $a[i];)*
                    o[i] = $e;
                }
                o
            }
        )*};
    }

    /// Box–Muller, `unit`, the sin/cos kernels, Philox, a run and the row fill, written once
    /// over what each instruction set's module defines: the `registerwise!` operations,
    /// five one-register helpers, `store_blocks`, `LANES` and `RUN`.
    macro_rules! kernels {
        ($features:literal) => {
            /// `box_muller` on N registers of pairs of words (the low 32 bits of each 64-bit
            /// lane): (r cos θ, r sin θ).
            #[inline]
            #[target_feature(enable = $features)]
            fn box_muller<const N: usize>(a: I<N>, b: I<N>) -> (F<N>, F<N>) {
                let low24 = ci(0xff_ffff);
                // ln u1 as `ln_normal`, on the bits of 2^24·u1 = (a >> 8) + 1.
                let k = sub(as_f64(or_and(ci(MAGIC), shr8(a), low24)), c(TWO_52 - 1.0));
                let hx = iadd(as_bits(k), ci(HX_ADD));
                let dk = sub(int_to_f64(shr52(hx)), c(1023.0));
                let f = sub(as_f64(iadd(and(hx, ci(0x000f_ffff_ffff_ffff)), ci(0x3fe6_a09e << 32))), c(1.0));
                let hfsq = mul(mul(c(0.5), f), f);
                let s = div(f, add(c(2.0), f));
                let z = mul(s, s);
                let w = mul(z, z);
                let t1 = mul(w, add(c(LG[1]), mul(w, add(c(LG[3]), mul(w, c(LG[5]))))));
                let t2 = mul(z, add(c(LG[0]), mul(w, add(c(LG[2]), mul(w, add(c(LG[4]), mul(w, c(LG[6]))))))));
                let ln = add(
                    add(sub(add(mul(s, add(hfsq, add(t2, t1))), mul(dk, c(LN2_LO))), hfsq), f),
                    mul(dk, c(LN2_HI)),
                );
                let r = sqrt(mul(c(-2.0), ln));

                // sin and cos of θ = fl(TAU·j·2^-24) as `sincos_turn`, with rho, xh and xl already
                // scaled by 2^-24.
                let j = and(shr8(b), low24);
                let jf = int_to_f64(j);
                let (h, l) = (mul(c(TAU_HI_S), jf), mul(c(TAU_LO_S), jf));
                let rho = sub(sub(add(h, l), h), l);
                let m = and(j, ci(0x3f_ffff));
                let upper = gt(m, ci(0x20_0000));
                let t = isub_where(upper, ci(0x40_0000), m);
                let n = iadd_where(upper, shr22(j), ci(1));
                let tail = neg_where(upper, add(rho, n_tau_err(n)));
                let tf = int_to_f64(t);
                let xh = mul(c(TAU_HI_S), tf);
                let xl = add(mul(c(TAU_LO_S), tf), tail);
                let x = add(xh, xl);
                let y = sub(xl, sub(x, xh));
                let (sn, cs) = (k_sin(x, y), k_cos(x, y));
                let sn = neg_where(upper, sn);
                let odd = test(n, ci(1));
                let (sn, cs) = (blend(odd, sn, cs), blend(odd, cs, sn));
                let sn = neg_where(test(n, ci(2)), sn);
                let cs = neg_where(test(iadd(n, ci(1)), ci(2)), cs);
                (mul(r, cs), mul(r, sn))
            }

            /// `unit` of each word: (w >> 8)·2^-24, formed exactly as 2^28 + (w >> 8)·2^-24 (the
            /// low bits of 2^28's mantissa weigh 2^-24) less 2^28.
            #[inline]
            #[target_feature(enable = $features)]
            fn unit<const N: usize>(w: I<N>) -> F<N> {
                const TWO_28: f64 = 268_435_456.0;
                sub(as_f64(or_and(ci(TWO_28.to_bits() as i64), shr8(w), ci(0xff_ffff))), c(TWO_28))
            }

            /// `k_sin`, operation for operation.
            #[inline]
            #[target_feature(enable = $features)]
            fn k_sin<const N: usize>(x: F<N>, y: F<N>) -> F<N> {
                let z = mul(x, x);
                let w = mul(z, z);
                let r = add(add(c(S[1]), mul(z, add(c(S[2]), mul(z, c(S[3]))))), mul(mul(z, w), add(c(S[4]), mul(z, c(S[5])))));
                let v = mul(z, x);
                sub(x, sub(sub(mul(z, sub(mul(c(0.5), y), mul(v, r))), y), mul(v, c(S[0]))))
            }

            /// `k_cos`, operation for operation.
            #[inline]
            #[target_feature(enable = $features)]
            fn k_cos<const N: usize>(x: F<N>, y: F<N>) -> F<N> {
                let z = mul(x, x);
                let w = mul(z, z);
                let r = add(
                    mul(z, add(c(C[0]), mul(z, add(c(C[1]), mul(z, c(C[2])))))),
                    mul(mul(w, w), add(c(C[3]), mul(z, add(c(C[4]), mul(z, c(C[5])))))),
                );
                let hz = mul(c(0.5), z);
                let w = sub(c(1.0), hz);
                add(w, add(sub(sub(c(1.0), w), hz), sub(mul(z, r), mul(x, y))))
            }


            /// `Stream::fill_normal` (`NORMAL`) or `Stream::fill_uniform`: runs of H registers
            /// of LANES blocks, the last partial run through a scratch run, as
            /// `for_each_batch` does.
            #[target_feature(enable = $features)]
            pub(in crate::rng) fn fill_on<const NORMAL: bool>(ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
                fill::<RUN, { 2 * RUN }, NORMAL>(ctr, key, out)
            }

            #[inline]
            #[target_feature(enable = $features)]
            fn fill<const H: usize, const N: usize, const NORMAL: bool>(ctr: [u32; 4], key: [u32; 2], out: &mut [f64]) {
                let (blocks, rest) = out.as_chunks_mut::<{ 4 * LANES }>();
                let mut runs = blocks.chunks_exact_mut(H);
                let mut first = ctr[0];
                for r in &mut runs {
                    run::<H, N, NORMAL>(first, ctr, key, r.try_into().expect("runs of H"));
                    first = first.wrapping_add((LANES * H) as u32);
                }
                let partial = runs.into_remainder();
                if !partial.is_empty() || !rest.is_empty() {
                    let mut scratch = [[0.0; 4 * LANES]; H];
                    run::<H, N, NORMAL>(first, ctr, key, &mut scratch);
                    let n = partial.len();
                    partial.copy_from_slice(&scratch[..n]);
                    rest.copy_from_slice(&scratch[n][..rest.len()]);
                }
            }

            /// `box_muller` on 32 chosen pairs of words, for the tests.
            #[cfg(test)]
            #[target_feature(enable = $features)]
            pub(in crate::rng) fn box_muller_words(a: &[u32; 32], b: &[u32; 32]) -> ([f64; 32], [f64; 32]) {
                const R: usize = 32 / LANES;
                let load = |w: &[u32; 32], i: usize| {
                    let lanes: [i64; LANES] = std::array::from_fn(|l| w[LANES * i + l] as i64);
                    // SAFETY: a register is LANES 64-bit lanes; the read is unaligned.
                    let v: I<1> = unsafe { std::ptr::read_unaligned(lanes.as_ptr() as *const I<1>) };
                    v[0]
                };
                let (cs, sn) = box_muller::<R>(std::array::from_fn(|i| load(a, i)), std::array::from_fn(|i| load(b, i)));
                let (mut c, mut s) = ([0.0; 32], [0.0; 32]);
                for i in 0..R {
                    // SAFETY: a register is LANES doubles, written unaligned at LANES·i of 32.
                    unsafe {
                        std::ptr::write_unaligned(c[LANES * i..].as_mut_ptr() as *mut F<1>, [cs[i]]);
                        std::ptr::write_unaligned(s[LANES * i..].as_mut_ptr() as *mut F<1>, [sn[i]]);
                    }
                }
                (c, s)
            }

            /// Philox4x32-10 on H registers of LANES blocks, counters
            /// `[first + i, ctr[1], ctr[2], ctr[3]]`: `[h][word]` holds block `LANES·h + lane` in
            /// 64-bit lane `lane`, each word in the low 32 bits; the high 32 are whatever the
            /// round left there (`vpmuludq` reads only the low half, and Box–Muller masks its 24
            /// bits out).
            #[inline]
            #[target_feature(enable = $features)]
            fn philox<const H: usize>(first: u32, ctr: [u32; 4], key: [u32; 2]) -> [I<4>; H] {
                // Counters in 64-bit lanes: only their low 32 bits are read, which wrap as u32s do.
                let start = |h: i64| {
                    let c0 = add64(ci1(first as i64 + LANES as i64 * h), lane_index());
                    [c0, ci1(ctr[1] as i64), ci1(ctr[2] as i64), ci1(ctr[3] as i64)]
                };
                let mut s: [I<4>; H] = std::array::from_fn(|h| start(h as i64));
                let (m0, m1) = (ci1(M0 as i64), ci1(M1 as i64));
                let mut k = key;
                for round in 0..10 {
                    if round > 0 {
                        k[0] = k[0].wrapping_add(W0);
                        k[1] = k[1].wrapping_add(W1);
                    }
                    let (k0, k1) = (ci1(k[0] as i64), ci1(k[1] as i64));
                    for w in &mut s {
                        let p0 = mul32(w[0], m0);
                        let p1 = mul32(w[2], m1);
                        // The high words move down by a shuffle, not a shift: on Zen 4 shifts
                        // share the pipes Box–Muller's additions need.
                        *w = [xor3(hi_down(p1), w[1], k0), p1, xor3(hi_down(p0), w[3], k1), p0];
                    }
                }
                s
            }

            /// The normals (or uniforms) of the LANES·H blocks from counter `first`, in column
            /// order (block i's four at 4i..4i+3).
            #[inline]
            #[target_feature(enable = $features)]
            fn run<const H: usize, const N: usize, const NORMAL: bool>(
                first: u32,
                ctr: [u32; 4],
                key: [u32; 2],
                out: &mut [[f64; 4 * LANES]; H],
            ) {
                const { assert!(N == 2 * H) };
                let w = philox::<H>(first, ctr, key);
                // Register 2h holds pairs (w0, w1) of register h's blocks, 2h+1 pairs (w2, w3).
                let a = std::array::from_fn(|i| w[i / 2][2 * (i % 2)]);
                let b = std::array::from_fn(|i| w[i / 2][2 * (i % 2) + 1]);
                // Uniforms go through the same shuffles: "cos" and "sin" are then words 0 and 1 (2, 3).
                let (cs, sn) = if NORMAL { box_muller::<N>(a, b) } else { (unit(a), unit(b)) };
                // An index loop: with `iter_mut().enumerate()` this ran 10% slower (2.18 against
                // 1.96 ns per normal on AVX-512), the stores scheduled differently.
                #[allow(clippy::needless_range_loop)]
                for h in 0..H {
                    store_blocks(&mut out[h], cs[2 * h], sn[2 * h], cs[2 * h + 1], sn[2 * h + 1]);
                }
            }
        };
    }

    pub(super) mod avx512 {
        use super::super::{C, LG, LN2_HI, LN2_LO, M0, M1, S, TAU_ERR_4, W0, W1};
        use super::{HX_ADD, MAGIC, TAU_HI_S, TAU_LO_S, TWO_52};
        use std::arch::x86_64::*;

        /// `(n as f64) * TAU_ERR_4` for n = 0..8: the products `sincos_turn` forms.
        const N_TAU_ERR: [f64; 8] = [
            0.0 * TAU_ERR_4,
            1.0 * TAU_ERR_4,
            2.0 * TAU_ERR_4,
            3.0 * TAU_ERR_4,
            4.0 * TAU_ERR_4,
            5.0 * TAU_ERR_4,
            6.0 * TAU_ERR_4,
            7.0 * TAU_ERR_4,
        ];

        /// N registers of 8 doubles, 64-bit integers or lane masks.
        type F<const N: usize> = [__m512d; N];
        type I<const N: usize> = [__m512i; N];
        type K<const N: usize> = [__mmask8; N];

        registerwise! { "avx512f,avx512dq";
            fn add(a: F<N>, b: F<N>) -> F<N> = _mm512_add_pd(a, b);
            fn sub(a: F<N>, b: F<N>) -> F<N> = _mm512_sub_pd(a, b);
            fn mul(a: F<N>, b: F<N>) -> F<N> = _mm512_mul_pd(a, b);
            fn div(a: F<N>, b: F<N>) -> F<N> = _mm512_div_pd(a, b);
            fn sqrt(a: F<N>) -> F<N> = _mm512_sqrt_pd(a);
            // −x where k is set: a sign-bit flip, which is what `-x` is.
            fn neg_where(k: K<N>, x: F<N>) -> F<N> = _mm512_mask_xor_pd(x, k, x, _mm512_set1_pd(-0.0));
            fn blend(k: K<N>, no: F<N>, yes: F<N>) -> F<N> = _mm512_mask_blend_pd(k, no, yes);
            fn as_f64(a: I<N>) -> F<N> = _mm512_castsi512_pd(a);
            fn as_bits(a: F<N>) -> I<N> = _mm512_castpd_si512(a);
            fn and(a: I<N>, b: I<N>) -> I<N> = _mm512_and_si512(a, b);
            fn iadd(a: I<N>, b: I<N>) -> I<N> = _mm512_add_epi64(a, b);
            fn shr8(a: I<N>) -> I<N> = _mm512_srli_epi64::<8>(a);
            fn shr22(a: I<N>) -> I<N> = _mm512_srli_epi64::<22>(a);
            fn shr52(a: I<N>) -> I<N> = _mm512_srli_epi64::<52>(a);
            // a | (b & c)
            fn or_and(a: I<N>, b: I<N>, c: I<N>) -> I<N> = _mm512_ternarylogic_epi64::<0xf8>(a, b, c);
            // The integer j < 2^52 in each lane as a double, exactly.
            fn int_to_f64(j: I<N>) -> F<N> =
                _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(j, _mm512_set1_epi64(MAGIC))), _mm512_set1_pd(TWO_52));
            fn gt(a: I<N>, b: I<N>) -> K<N> = _mm512_cmpgt_epu64_mask(a, b);
            fn test(a: I<N>, b: I<N>) -> K<N> = _mm512_test_epi64_mask(a, b);
            // a − b where k is set, else b.
            fn isub_where(k: K<N>, a: I<N>, b: I<N>) -> I<N> = _mm512_mask_sub_epi64(b, k, a, b);
            // a + b where k is set, else a.
            fn iadd_where(k: K<N>, a: I<N>, b: I<N>) -> I<N> = _mm512_mask_add_epi64(a, k, a, b);
            // `(n as f64) * TAU_ERR_4`, looked up.
            fn n_tau_err(n: I<N>) -> F<N> =
                // SAFETY: N_TAU_ERR is 8 doubles.
                _mm512_permutexvar_pd(n, unsafe { _mm512_loadu_pd(N_TAU_ERR.as_ptr()) });
        }

        /// An all-`x` operand.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn c<const N: usize>(x: f64) -> F<N> {
            [_mm512_set1_pd(x); N]
        }

        #[inline]
        #[target_feature(enable = "avx512f")]
        fn ci<const N: usize>(x: i64) -> I<N> {
            [_mm512_set1_epi64(x); N]
        }

        #[inline]
        #[target_feature(enable = "avx512f")]
        fn ci1(x: i64) -> __m512i {
            _mm512_set1_epi64(x)
        }

        kernels!("avx512f,avx512dq");

        /// What the shared Philox needs, on one register of 8 blocks.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn lane_index() -> __m512i {
            _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn add64(a: __m512i, b: __m512i) -> __m512i {
            _mm512_add_epi64(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn mul32(a: __m512i, b: __m512i) -> __m512i {
            _mm512_mul_epu32(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn hi_down(a: __m512i) -> __m512i {
            _mm512_shuffle_epi32::<0xf5>(a)
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
            _mm512_ternarylogic_epi64::<0x96>(a, b, c)
        }

        /// Blocks (64-bit lanes) per register.
        const LANES: usize = 8;
        /// Registers of blocks per run: 2, so Box–Muller takes 4 registers of pairs at once
        /// (2 or 8 ran slower here).
        const RUN: usize = 2;

        /// Blocks 0..8 of a run, from the cosines and sines of pairs (w0, w1) and (w2, w3),
        /// into column order.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn store_blocks(out: &mut [f64; 4 * LANES], c0: __m512d, s0: __m512d, c1: __m512d, s1: __m512d) {
            let lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
            let hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
            let pair_lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
            let pair_hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
            // (c0, s0) of blocks 0..3 interleaved, then of blocks 4..7; the same for (c1, s1);
            // then two blocks' [c0, s0, c1, s1] per register.
            let p = [_mm512_permutex2var_pd(c0, lo, s0), _mm512_permutex2var_pd(c0, hi, s0)];
            let q = [_mm512_permutex2var_pd(c1, lo, s1), _mm512_permutex2var_pd(c1, hi, s1)];
            let o = out.as_mut_ptr();
            for i in 0..2 {
                // SAFETY: out holds 32 doubles; these store 16i..16i+16.
                unsafe {
                    _mm512_storeu_pd(o.add(16 * i), _mm512_permutex2var_pd(p[i], pair_lo, q[i]));
                    _mm512_storeu_pd(o.add(16 * i + 8), _mm512_permutex2var_pd(p[i], pair_hi, q[i]));
                }
            }
        }
    }

    pub(super) mod avx2 {
        use super::super::{C, LG, LN2_HI, LN2_LO, M0, M1, S, TAU_ERR_4, W0, W1};
        use super::{HX_ADD, MAGIC, TAU_HI_S, TAU_LO_S, TWO_52};
        use std::arch::x86_64::*;

        /// N registers of 4 doubles or 64-bit integers; masks are all-ones lanes.
        type F<const N: usize> = [__m256d; N];
        type I<const N: usize> = [__m256i; N];
        type K<const N: usize> = [__m256i; N];

        registerwise! { "avx2";
            fn add(a: F<N>, b: F<N>) -> F<N> = _mm256_add_pd(a, b);
            fn sub(a: F<N>, b: F<N>) -> F<N> = _mm256_sub_pd(a, b);
            fn mul(a: F<N>, b: F<N>) -> F<N> = _mm256_mul_pd(a, b);
            fn div(a: F<N>, b: F<N>) -> F<N> = _mm256_div_pd(a, b);
            fn sqrt(a: F<N>) -> F<N> = _mm256_sqrt_pd(a);
            // −x where k is set: a sign-bit flip, which is what `-x` is.
            fn neg_where(k: K<N>, x: F<N>) -> F<N> =
                _mm256_xor_pd(x, _mm256_and_pd(_mm256_castsi256_pd(k), _mm256_set1_pd(-0.0)));
            fn blend(k: K<N>, no: F<N>, yes: F<N>) -> F<N> = _mm256_blendv_pd(no, yes, _mm256_castsi256_pd(k));
            fn as_f64(a: I<N>) -> F<N> = _mm256_castsi256_pd(a);
            fn as_bits(a: F<N>) -> I<N> = _mm256_castpd_si256(a);
            fn and(a: I<N>, b: I<N>) -> I<N> = _mm256_and_si256(a, b);
            fn iadd(a: I<N>, b: I<N>) -> I<N> = _mm256_add_epi64(a, b);
            fn shr8(a: I<N>) -> I<N> = _mm256_srli_epi64::<8>(a);
            fn shr22(a: I<N>) -> I<N> = _mm256_srli_epi64::<22>(a);
            fn shr52(a: I<N>) -> I<N> = _mm256_srli_epi64::<52>(a);
            // a | (b & c)
            fn or_and(a: I<N>, b: I<N>, c: I<N>) -> I<N> = _mm256_or_si256(a, _mm256_and_si256(b, c));
            // The integer j < 2^52 in each lane as a double, exactly.
            fn int_to_f64(j: I<N>) -> F<N> =
                _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(j, _mm256_set1_epi64x(MAGIC))), _mm256_set1_pd(TWO_52));
            // Signed, which is unsigned here: every operand is below 2^23.
            fn gt(a: I<N>, b: I<N>) -> K<N> = _mm256_cmpgt_epi64(a, b);
            // For a one-bit b.
            fn test(a: I<N>, b: I<N>) -> K<N> = _mm256_cmpeq_epi64(_mm256_and_si256(a, b), b);
            // a − b where k is set, else b.
            fn isub_where(k: K<N>, a: I<N>, b: I<N>) -> I<N> = _mm256_blendv_epi8(b, _mm256_sub_epi64(a, b), k);
            // a + b where k is set, else a.
            fn iadd_where(k: K<N>, a: I<N>, b: I<N>) -> I<N> = _mm256_add_epi64(a, _mm256_and_si256(b, k));
            // `(n as f64) * TAU_ERR_4`, the product itself (n < 5, so n as a double is exact).
            fn n_tau_err(n: I<N>) -> F<N> = _mm256_mul_pd(
                _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(n, _mm256_set1_epi64x(MAGIC))), _mm256_set1_pd(TWO_52)),
                _mm256_set1_pd(TAU_ERR_4),
            );
        }

        /// An all-`x` operand.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn c<const N: usize>(x: f64) -> F<N> {
            [_mm256_set1_pd(x); N]
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        fn ci<const N: usize>(x: i64) -> I<N> {
            [_mm256_set1_epi64x(x); N]
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        fn ci1(x: i64) -> __m256i {
            _mm256_set1_epi64x(x)
        }

        kernels!("avx2");

        /// What the shared Philox needs, on one register of 4 blocks.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn lane_index() -> __m256i {
            _mm256_set_epi64x(3, 2, 1, 0)
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        fn add64(a: __m256i, b: __m256i) -> __m256i {
            _mm256_add_epi64(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        fn mul32(a: __m256i, b: __m256i) -> __m256i {
            _mm256_mul_epu32(a, b)
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        fn hi_down(a: __m256i) -> __m256i {
            _mm256_shuffle_epi32::<0xf5>(a)
        }
        #[inline]
        #[target_feature(enable = "avx2")]
        fn xor3(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
            _mm256_xor_si256(_mm256_xor_si256(a, b), c)
        }

        /// Blocks (64-bit lanes) per register.
        const LANES: usize = 4;
        /// Registers of blocks per run: 2, so Box–Muller takes 4 registers of pairs at once
        /// (2 ran slower here, 6 or 8 no faster).
        const RUN: usize = 2;

        /// Blocks 0..4 of a run, from the cosines and sines of pairs (w0, w1) and (w2, w3),
        /// into column order.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn store_blocks(out: &mut [f64; 4 * LANES], c0: __m256d, s0: __m256d, c1: __m256d, s1: __m256d) {
            // [c0, s0] of blocks 0 and 2, then of 1 and 3; the same for [c1, s1]; then one
            // block's [c0, s0, c1, s1] per register.
            let (t0, t1) = (_mm256_unpacklo_pd(c0, s0), _mm256_unpackhi_pd(c0, s0));
            let (t2, t3) = (_mm256_unpacklo_pd(c1, s1), _mm256_unpackhi_pd(c1, s1));
            let o = out.as_mut_ptr();
            // SAFETY: out holds 16 doubles; these store 4 each at 0, 4, 8, 12.
            unsafe {
                _mm256_storeu_pd(o, _mm256_permute2f128_pd::<0x20>(t0, t2));
                _mm256_storeu_pd(o.add(4), _mm256_permute2f128_pd::<0x20>(t1, t3));
                _mm256_storeu_pd(o.add(8), _mm256_permute2f128_pd::<0x31>(t0, t2));
                _mm256_storeu_pd(o.add(12), _mm256_permute2f128_pd::<0x31>(t1, t3));
            }
        }
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

    /// The AVX-512 and AVX2 kernels against the portable `box_muller` on every word they
    /// can tell apart: all 2^24 values of `a >> 8` (u1 from 2^-24 to 1) paired with all 2^24 of
    /// `b >> 8` (every angle), the discarded low bytes varied, and then the edge cases
    /// named: u1 = 2^-24 and u1 = 1 (r = 0, so the sign of zero) against angles on and
    /// beside each quadrant and octant boundary. Bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_box_muller_is_bit_identical_on_every_word() {
        for simd in [Simd::Avx512, Simd::Avx2] {
            if simd.available() != simd {
                eprintln!("no {simd:?} on this CPU: its kernel is not run here");
            } else {
                box_muller_kernel_is_bit_identical_on_every_word(simd);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn box_muller_kernel_is_bit_identical_on_every_word(simd: Simd) {
        let check = |a: &[u32; 32], b: &[u32; 32]| {
            // SAFETY: the caller detected the level's features.
            let (c, s) = unsafe {
                match simd {
                    Simd::Avx512 => kernel::avx512::box_muller_words(a, b),
                    _ => kernel::avx2::box_muller_words(a, b),
                }
            };
            for i in 0..32 {
                let (c0, s0) = box_muller(a[i], b[i]);
                assert_eq!(
                    (c[i].to_bits(), s[i].to_bits()),
                    (c0.to_bits(), s0.to_bits()),
                    "{simd:?} words {:#010x} {:#010x}: kernel ({:e}, {:e}), portable ({c0:e}, {s0:e})",
                    a[i],
                    b[i],
                    c[i],
                    s[i]
                );
            }
        };
        // v ↦ v·odd mod 2^24 is a bijection, so b >> 8 takes every value once.
        for base in (0..1u32 << 24).step_by(32) {
            let a = std::array::from_fn(|i| ((base + i as u32) << 8) | (i as u32 * 37 & 0xff));
            let b = std::array::from_fn(|i| {
                let v = base + i as u32;
                ((v.wrapping_mul(0x9e37_79b1) & 0xff_ffff) << 8) | (v >> 16 & 0xff)
            });
            check(&a, &b);
        }
        let mut angles = Vec::new();
        for q in 0..4u32 {
            for m in [0, 1, 2, 0x1f_ffff, 0x20_0000, 0x20_0001, 0x3f_fffe, 0x3f_ffff] {
                angles.push((q << 22) | m);
            }
        }
        let mut pairs = Vec::new();
        for u in [0, 1, 0xff_fffe, 0xff_ffff] {
            for &j in &angles {
                pairs.push((u << 8 | 0xff, j << 8));
            }
        }
        for chunk in pairs.chunks(32) {
            let a = std::array::from_fn(|i| chunk[i % chunk.len()].0);
            let b = std::array::from_fn(|i| chunk[i % chunk.len()].1);
            check(&a, &b);
        }
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
