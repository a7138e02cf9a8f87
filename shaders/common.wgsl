// common.wgsl: the flags and exact power-of-two helpers every gradscope kernel shares.
// Prepended to every kernel file (see src/backend/shaders.rs, `modules`).

// Each family's file declares its own parameter block, with named fields that mean one thing
// (mirrored by the Rust structs src/backend/gpu/params.rs lists in `layouts`; tests/shaders.rs
// holds the two layouts equal), in 256-byte slots bound read-only with a dynamic offset:
//
//     struct MatmulParams { ... }
//     struct Slot { @size(256) p: MatmulParams }
//     @group(0) @binding(0) var<storage, read> PS: array<Slot>;
//     var<private> P: MatmulParams;
//
// A dispatch over N independent networks of equal widths (workgroup_id.z = network n) binds
// N consecutive slots, and every entry point starts with P = PS[n].p.

const FLAG_SCALED: u32 = 1u;   // rows carry a power-of-two exponent (homogeneous σ; σ(0) = 0 via its tangent)
const FLAG_BIAS: u32 = 2u;     // the layer has a non-zero bias
const FLAG_DSIG: u32 = 4u;     // multiply by σ'(z) (backward)
const FLAG_REC_NEXT: u32 = 8u; // write ‖a^l‖², e^l into layer l+1's record
const FLAG_JOIN: u32 = 16u;    // a depth joins the backward pass at this layer (its last block)
const FLAG_TANGENT: u32 = 32u; // σ(0) = 0, not homogeneous: tiny rows use σ's tangent at 0

// Below 2^TINY_LOG2 every σ with σ(0) = 0 is its tangent at 0 to f32 precision (the next
// term is O(z) relative at most); the CPU's threshold (f64) is the same.
const TINY_LOG2: i32 = -60;

// An exponent at which a row's scale makes its activation negligible beside the bias
// (|â·2^e| < 2^-100 |b|): the row returns to its natural scale (cf. the CPU's −900 in f64).
const E_RESET: i32 = -100;

// 2^k exactly, by building the bits; 0 below 2^-126 and clamped at 2^127.
fn pow2i(k: i32) -> f32 {
    if (k < -126) {
        return 0.0;
    }
    return bitcast<f32>(u32(min(k, 127) + 127) << 23u);
}

// v·2^k in two exact steps (|k| up to 252).
fn scale2(v: f32, k: i32) -> f32 {
    let h = k / 2;
    return v * pow2i(h) * pow2i(k - h);
}

// v·2^k for a vec4, as scale2.
fn scale4(v: vec4<f32>, k: i32) -> vec4<f32> {
    let h = k / 2;
    return v * pow2i(h) * pow2i(k - h);
}

// The unbiased binary exponent of a positive finite f32 (denormals count as -127).
fn exponent_of(v: f32) -> i32 {
    return i32((bitcast<u32>(v) >> 23u) & 0xffu) - 127;
}

// True for finite values, by the bits: shader compilers may assume NaN and Inf never occur,
// so `v != v` can be folded away; the exponent field cannot.
fn is_finite_f32(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}
