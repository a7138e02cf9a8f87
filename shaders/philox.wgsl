// philox.wgsl: Philox4x32-10 (Salmon et al., SC'11), bit for bit the generator of src/rng.rs.
// WGSL has no 32x32->64 multiply, so the high word is built from 16-bit limbs.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// (high, low) words of the 64-bit product a·b.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key_in;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let p0 = mulhilo(PHILOX_M0, c.x);
        let p1 = mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Uniforms from the top 24 bits, exact in f32: [0, 1) and (0, 1].
fn unit_f32(w: u32) -> f32 {
    return f32(w >> 8u) * 5.9604644775390625e-8;
}
fn open_unit_f32(w: u32) -> f32 {
    return f32((w >> 8u) + 1u) * 5.9604644775390625e-8;
}

// Box-Muller on two words, as src/rng.rs: (r cos 2πu2, r sin 2πu2). The angle is reduced to
// [-π, π) exactly (u2 - 1/2 is exact) where WGSL bounds sin and cos; cos(θ) = -cos(θ - π).
fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let r = sqrt(-2.0 * log(open_unit_f32(a)));
    let phi = 6.283185307179586 * (unit_f32(b) - 0.5);
    return vec2<f32>(-r * cos(phi), -r * sin(phi));
}
