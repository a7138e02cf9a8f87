// pointwise.wgsl: everything done to one example's row after a layer product: σ and σ′ with
// the conventions of src/model/activation.rs, max |σ′|, the finiteness check, and the exact
// power-of-two renormalisation of a (homogeneous σ) or δ (always) with its exponent.
// One 64-wide workgroup per example row. Needs common.wgsl.
//
// Forward record of layer l (floats, at P.rec): [0,B) max|σ′| per example, [B,2B) ‖â^{l-1}‖²,
// [2B,3B) exponent of â^{l-1}, [3B,4B) how many octaves the stored row of a^{l-1} sits above
// that scale (0 when it was renormalised, i.e. homogeneous σ), [4B,5B) unused, [5B,6B) 1 if z^l is finite
// else 0. Backward records (one per active depth and layer) are described at backward_post.

// The parameter block (src/backend/gpu/params.rs, `layouts`).
struct PointwiseParams {
    batch: u32,        // B, examples
    n_out: u32,        // n_l
    s_out: u32,        // its row stride (floats, a multiple of 4)
    flags: u32,        // FLAG_* bits
    row0: u32,         // this network's first per-example row (a, z, σ′, exponents)
    srow0: u32,        // its first stacked row (δ̂, g and their exponents)
    activation: u32,   // forward: the activation id (ACT_*)
    alpha: f32,        // forward: the leaky-relu slope
    slope_right: f32,  // forward, FLAG_TANGENT: σ's slope at 0 right of it
    slope_left: f32,   // and left of it
    rec: u32,          // forward: offset (floats) of layer l's record
    rec_next: u32,     // forward, FLAG_REC_NEXT: offset of layer l+1's record
    blocks: u32,       // backward: active depths at this layer, the joining one (if any) last
    brec: u32,         // backward: offset of the first one's backward record
    bstride: u32,      // backward: floats per backward record
    err: u32,          // backward, FLAG_JOIN: offset of the joining depth's output error ê
    err_e: u32,        // and of its exponents
}
struct Slot {
    @size(256) p: PointwiseParams,
}
@group(0) @binding(0) var<storage, read> PS: array<Slot>;
var<private> P: PointwiseParams;

const WG: u32 = 64u;

var<workgroup> red: array<f32, 64>;

fn wg_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// ---- activations (ids as `activation_id` in src/backend/gpu/probe.rs) ----

const ACT_SIGMOID: u32 = 0u;
const ACT_TANH: u32 = 1u;
const ACT_RELU: u32 = 2u;
const ACT_LEAKY_RELU: u32 = 3u;
const ACT_LINEAR: u32 = 4u;
const ACT_ERF: u32 = 5u;
const ACT_HARD_TANH: u32 = 6u;
const ACT_SOFTPLUS: u32 = 7u;
const ACT_SILU: u32 = 8u;
const ACT_GELU: u32 = 9u;
const ACT_ELU: u32 = 10u;
const ACT_SELU: u32 = 11u;

const SELU_LAMBDA: f32 = 1.0507009873554805;
const SELU_ALPHA: f32 = 1.6732632423543772;
const FRAC_2_SQRT_PI: f32 = 1.1283791670955126;
const FRAC_1_SQRT_2PI: f32 = 0.3989422804014327;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;

fn logistic(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// erfc with relative error < 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit `erfcc`),
// so the left tail of Φ keeps its relative precision.
fn erfc_f(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(-z * z + p);
    return select(2.0 - r, r, x >= 0.0);
}

// erf: Taylor series near 0 (where 1 - erfc would lose relative precision), else 1 - erfc.
fn erf_f(x: f32) -> f32 {
    let z = abs(x);
    if (z < 0.5) {
        let x2 = x * x;
        return FRAC_2_SQRT_PI * x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (1.0 / 10.0 + x2 * (-1.0 / 42.0
            + x2 * (1.0 / 216.0 + x2 * (-1.0 / 1320.0))))));
    }
    return sign(x) * (1.0 - erfc_f(z));
}

fn expm1_f(x: f32) -> f32 {
    if (abs(x) < 0.1) {
        return x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x / 720.0)))));
    }
    return exp(x) - 1.0;
}

fn log1p_f(u: f32) -> f32 {
    if (u < 0.01) {
        return u * (1.0 + u * (-0.5 + u * (1.0 / 3.0 + u * (-0.25 + u * 0.2))));
    }
    return log(1.0 + u);
}

// tanh from e = exp(-2|x|) (never inf/inf), with its series near 0.
fn tanh_f(x: f32) -> f32 {
    let z = abs(x);
    if (z < 0.25) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    }
    let e = exp(-2.0 * z);
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// (σ(x), σ′(x)); kinks as the CPU: relu′(0) = 0, leaky′(0) = α, hard-tanh′(±1) = 0.
fn act(kind: u32, alpha: f32, x: f32) -> vec2<f32> {
    switch kind {
        case ACT_SIGMOID: {
            let e = exp(-abs(x));
            return vec2<f32>(logistic(x), e / ((1.0 + e) * (1.0 + e)));
        }
        case ACT_TANH: {
            let e = exp(-2.0 * abs(x));
            return vec2<f32>(tanh_f(x), 4.0 * e / ((1.0 + e) * (1.0 + e)));
        }
        case ACT_RELU: {
            return select(vec2<f32>(0.0, 0.0), vec2<f32>(x, 1.0), x > 0.0);
        }
        case ACT_LEAKY_RELU: {
            return select(vec2<f32>(alpha * x, alpha), vec2<f32>(x, 1.0), x > 0.0);
        }
        case ACT_LINEAR: {
            return vec2<f32>(x, 1.0);
        }
        case ACT_ERF: {
            return vec2<f32>(erf_f(x), FRAC_2_SQRT_PI * exp(-x * x));
        }
        case ACT_HARD_TANH: {
            return vec2<f32>(clamp(x, -1.0, 1.0), select(0.0, 1.0, x > -1.0 && x < 1.0));
        }
        case ACT_SOFTPLUS: {
            return vec2<f32>(max(x, 0.0) + log1p_f(exp(-abs(x))), logistic(x));
        }
        case ACT_SILU: {
            let s = logistic(x);
            return vec2<f32>(x * s, s * (1.0 + x * logistic(-x)));
        }
        case ACT_GELU: {
            let cdf = 0.5 * erfc_f(-x * FRAC_1_SQRT_2);
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
            return vec2<f32>(x * cdf, cdf + x * pdf);
        }
        case ACT_ELU: {
            return select(vec2<f32>(expm1_f(x), exp(x)), vec2<f32>(x, 1.0), x > 0.0);
        }
        case ACT_SELU: {
            return select(vec2<f32>(SELU_LAMBDA * SELU_ALPHA * expm1_f(x), SELU_LAMBDA * SELU_ALPHA * exp(x)),
                          vec2<f32>(SELU_LAMBDA * x, SELU_LAMBDA), x > 0.0);
        }
        default: {
            return vec2<f32>(x, 1.0);
        }
    }
}

@group(0) @binding(1) var<storage, read> row_in: array<f32>;          // z^l, or g / ê (backward)
@group(0) @binding(2) var<storage, read_write> a_out: array<f32>;     // a^l
@group(0) @binding(3) var<storage, read_write> dsig_out: array<f32>;  // σ′(z^l)
@group(0) @binding(4) var<storage, read> e_in: array<i32>;            // exponents of a^{l-1}
@group(0) @binding(5) var<storage, read_write> e_out: array<i32>;     // exponents of a^l
@group(0) @binding(6) var<storage, read_write> rec: array<f32>;       // per-layer records

// After z^l = W a + b: a^l = σ(z^l), σ′(z^l), max|σ′|, finiteness, and for rows that carry
// an exponent (FLAG_SCALED) the renormalisation â^l = a^l·2^{-k}, e^l = e^{l-1} + k
// (k = round(log2 ‖a^l‖)). A homogeneous σ is evaluated on ẑ itself. A σ with σ(0) = 0
// that is not homogeneous (FLAG_TANGENT: tanh, erf, hard-tanh, silu, gelu, elu, selu) is
// its tangent at 0 while the row's true scale is below 2^TINY_LOG2 (slopes P.slope_right
// and P.slope_left), so vanishing activations stay exact as on the CPU;
// above that the row returns to its natural scale (z = ẑ·2^e, where overflow shows) first.
@compute @workgroup_size(64)
fn forward_post(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    P = PS[wid.z].p;
    let x = wid.x + wid.y * nwg.x;
    if (x >= P.batch) {
        return;
    }
    let bsz = P.batch;
    let row = (P.row0 + x) * P.s_out;
    let scaled = (P.flags & FLAG_SCALED) != 0u;
    var e0 = e_in[P.row0 + x];
    if (scaled && (P.flags & FLAG_BIAS) != 0u && e0 < E_RESET) {
        e0 = 0;
    }
    // The tangent regime, or the shift back to the natural scale.
    var tiny = false;
    var shift = 0;
    if ((P.flags & FLAG_TANGENT) != 0u) {
        var zt = 0.0;
        for (var i = lid; i < P.n_out; i += WG) {
            zt = max(zt, abs(row_in[row + i]));
        }
        zt = wg_max(lid, zt);
        tiny = !(zt > 0.0) || (is_finite_f32(zt) && exponent_of(zt) + e0 < TINY_LOG2);
        if (!tiny) {
            shift = e0;
            e0 = 0;
        }
    }
    let right = P.slope_right;
    let left = P.slope_left;
    var md = 0.0;
    var amax = 0.0;
    var bad = 0.0;
    for (var i = lid; i < P.s_out; i += WG) {
        if (i >= P.n_out) {
            // Zero the padding: a slot may have held a wider layer before.
            a_out[row + i] = 0.0;
            dsig_out[row + i] = 0.0;
            continue;
        }
        var z = row_in[row + i];
        if (shift != 0) {
            z = scale2(z, shift);
        }
        if (!is_finite_f32(z)) {
            bad = 1.0;
        }
        var sd = vec2<f32>(0.0);
        if (tiny) {
            let slope = select(left, right, z > 0.0);
            sd = vec2<f32>(slope * z, slope);
        } else {
            sd = act(P.activation, P.alpha, z);
        }
        a_out[row + i] = sd.x;
        dsig_out[row + i] = sd.y;
        md = max(md, abs(sd.y));
        amax = max(amax, abs(sd.x));
    }
    md = wg_max(lid, md);
    amax = wg_max(lid, amax);
    bad = wg_max(lid, bad);
    let usable = amax > 0.0 && is_finite_f32(amax);
    let big_e = select(0, exponent_of(amax), usable);
    var s = 0.0;
    for (var i = lid; i < P.n_out; i += WG) {
        let v = scale2(a_out[row + i], -big_e);
        s += v * v;
    }
    s = wg_sum(lid, s);
    // kr: the row's scale, recorded for every σ (‖a‖² of an unbounded σ can pass f32's range
    // while z is still finite); k: the rescaling applied to the row (homogeneous σ only).
    var kr = 0;
    var k = 0;
    if (usable && s > 0.0) {
        kr = big_e + i32(round(0.5 * log2(s)));
    }
    if (scaled) {
        k = kr;
        if (k != 0) {
            for (var i = lid; i < P.n_out; i += WG) {
                a_out[row + i] = scale2(a_out[row + i], -k);
            }
        }
    }
    if (lid == 0u) {
        let sq = scale2(s, 2 * (big_e - kr));
        rec[P.rec + x] = md;
        rec[P.rec + 5u * bsz + x] = 1.0 - bad;
        e_out[P.row0 + x] = e0 + k;
        if ((P.flags & FLAG_REC_NEXT) != 0u) {
            rec[P.rec_next + bsz + x] = sq;
            rec[P.rec_next + 2u * bsz + x] = f32(e0 + kr);
            rec[P.rec_next + 3u * bsz + x] = f32(kr - k);
        }
    }
}

@group(0) @binding(7) var<storage, read> dsig_in: array<f32>;         // σ′(z^l), B x s_out
@group(0) @binding(8) var<storage, read_write> d_out: array<f32>;     // δ̂^l, stacked
@group(0) @binding(9) var<storage, read_write> e_io: array<i32>;      // exponents of δ, stacked
@group(0) @binding(10) var<storage, read> err_in: array<f32>;         // output errors ê per depth
@group(0) @binding(11) var<storage, read> err_e_in: array<i32>;       // their exponents

// The stacked backward pass: row r = j·B + x is example x of active depth j (P.blocks of
// them). δ^l = g ⊙ σ′(z^l) for the depths already active; the depth joining at its top layer
// (FLAG_JOIN, the last block) starts from its output error ê, times σ′(z^l) when FLAG_DSIG
// (quadratic cost). Each row is renormalised: δ̂ = δ·2^{-k}, e += k; ‖δ̂‖² and e go to the
// block's backward record at P.brec + j·P.bstride ([0,B) ‖δ̂‖², [B,2B) exponent).
@compute @workgroup_size(64)
fn backward_post(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    P = PS[wid.z].p;
    let r = wid.x + wid.y * nwg.x;
    let bsz = P.batch;
    if (r >= P.blocks * bsz) {
        return;
    }
    let j = r / bsz;
    let x = r % bsz;
    let join = (P.flags & FLAG_JOIN) != 0u && j + 1u == P.blocks;
    let use_dsig = !join || (P.flags & FLAG_DSIG) != 0u;
    let row = (P.srow0 + r) * P.s_out;
    let xrow = x * P.s_out;               // in ê (at P.err)
    let drow = (P.row0 + x) * P.s_out;    // in σ′
    var dmax = 0.0;
    for (var i = lid; i < P.s_out; i += WG) {
        if (i >= P.n_out) {
            d_out[row + i] = 0.0;
            continue;
        }
        var d = 0.0;
        if (join) {
            d = err_in[P.err + xrow + i];
        } else {
            d = row_in[row + i];
        }
        if (use_dsig) {
            d = d * dsig_in[drow + i];
        }
        d_out[row + i] = d;
        dmax = max(dmax, abs(d));
    }
    dmax = wg_max(lid, dmax);
    let usable = dmax > 0.0 && is_finite_f32(dmax);
    let big_e = select(0, exponent_of(dmax), usable);
    var s = 0.0;
    for (var i = lid; i < P.n_out; i += WG) {
        let v = scale2(d_out[row + i], -big_e);
        s += v * v;
    }
    s = wg_sum(lid, s);
    var k = 0;
    if (usable && s > 0.0) {
        k = big_e + i32(round(0.5 * log2(s)));
        for (var i = lid; i < P.n_out; i += WG) {
            d_out[row + i] = scale2(d_out[row + i], -k);
        }
    }
    if (lid == 0u) {
        var e0 = 0;
        if (join) {
            e0 = err_e_in[P.err_e + x];
        } else {
            e0 = e_io[P.srow0 + r];
        }
        let e = e0 + k;
        e_io[P.srow0 + r] = e;
        let base = P.brec + j * P.bstride;
        rec[base + x] = select(0.0, scale2(s, 2 * (big_e - k)), usable);
        rec[base + bsz + x] = f32(e);
    }
}
