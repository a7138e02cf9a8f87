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
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
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
    /// The tails are cut at √(2·24 ln 2) ≈ 5.77σ, which no statistic here can notice.
    pub fn normal(&self, purpose: Purpose, layer: u32, row: u32, col: u32) -> f64 {
        let w = self.block(purpose, layer, row, col);
        normal_from_block(&w, col & 3)
    }

    /// A uniform in [0, 1) for (purpose, layer, row, col): word `col % 4` of the block.
    pub fn uniform(&self, purpose: Purpose, layer: u32, row: u32, col: u32) -> f64 {
        unit(self.block(purpose, layer, row, col)[(col & 3) as usize])
    }

    /// Fills `out[c] = normal(purpose, layer, row, c)` with one Philox call per four entries.
    pub fn fill_normal(&self, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        for (q, chunk) in out.chunks_mut(4).enumerate() {
            let w = self.block(purpose, layer, row, (q as u32) << 2);
            for pair in 0..chunk.len().div_ceil(2) {
                let (c, s) = box_muller(w[2 * pair], w[2 * pair + 1]);
                chunk[2 * pair] = c;
                if 2 * pair + 1 < chunk.len() {
                    chunk[2 * pair + 1] = s;
                }
            }
        }
    }

    /// Fills `out[c] = uniform(purpose, layer, row, c)`.
    pub fn fill_uniform(&self, purpose: Purpose, layer: u32, row: u32, out: &mut [f64]) {
        for (q, chunk) in out.chunks_mut(4).enumerate() {
            let w = self.block(purpose, layer, row, (q as u32) << 2);
            for (k, v) in chunk.iter_mut().enumerate() {
                *v = unit(w[k]);
            }
        }
    }
}

#[inline]
fn box_muller(a: u32, b: u32) -> (f64, f64) {
    let r = (-2.0 * open_unit(a).ln()).sqrt();
    let theta = 2.0 * std::f64::consts::PI * unit(b);
    let (s, c) = theta.sin_cos();
    (r * c, r * s)
}

#[inline]
fn normal_from_block(w: &[u32; 4], lane: u32) -> f64 {
    let p = (lane >> 1) as usize;
    let (c, s) = box_muller(w[2 * p], w[2 * p + 1]);
    if lane & 1 == 0 { c } else { s }
}

#[cfg(test)]
mod tests {
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
