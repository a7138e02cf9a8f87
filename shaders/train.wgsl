// train.wgsl: the kernels SGD adds to the probe's (src/backend/gpu/train.rs): the batch gathered from
// the resident data set, the output error, the forward pass's finiteness check, and the
// fused weight gradient and update with the partial sums of ‖ΔW^l‖ and ‖W^l‖. A family like
// the others: common.wgsl is prepended, and its parameter block `TrainParams` is mirrored by
// src/backend/gpu/params.rs.
//
// The layer products, σ and σ′ and the renormalised backward rows are the probe's own
// kernels (matmul.wgsl, pointwise.wgsl); what reaches this file's `update` is δ̂^l with one
// power-of-two exponent per example (δ_x = δ̂_x·2^{e_x}), as pointwise.wgsl's backward_post
// leaves it, so a gradient of 10^-60 keeps its digits until it is added to W.

struct TrainParams {
    batch: u32,    // B, examples in this step's batch
    n_in: u32,     // n_{l-1} (update), or columns copied (gather)
    n_out: u32,    // n_l
    s_in: u32,     // row stride (floats, a multiple of 4) of n_in-wide arrays
    s_out: u32,    // row stride of n_out-wide arrays
    layer: u32,    // l (1-based), or L for check_forward
    step: u32,     // the step being taken, 1-based, for the status
    offset: u32,   // gather: first index of the batch in the order; update: its sums' offset
    lr: f32,       // η
    decay: f32,    // ηλ/n
    inv_b: f32,    // 1/B
    frec: u32,     // check_forward: floats per layer record (6B); update: backward record offset
}

struct Slot {
    @size(256) p: TrainParams,
}

@group(0) @binding(0) var<storage, read> PS: array<Slot>;
var<private> P: TrainParams;

// Status: [0] the first step at which a value left f32's range (0: none yet), [1] its layer,
// [2] the pass (1 forward, 2 backward or update). The first writer wins; writers within a
// dispatch write the same triple.
const PASS_FORWARD: u32 = 1u;
const PASS_BACKWARD: u32 = 2u;

// ---- gather: dst[x, j] = src[order[offset + x], j], x < B, j < s_in ----

@group(0) @binding(1) var<storage, read> g_src: array<f32>;
@group(0) @binding(2) var<storage, read> g_order: array<u32>;
@group(0) @binding(3) var<storage, read_write> g_dst: array<f32>;

// The linear index of a 64-wide invocation in a grid that may wrap into y (`grid` in
// src/backend/gpu/recorder.rs).
fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let k = flat(gid, nwg);
    if (k >= P.batch * P.s_in) {
        return;
    }
    let x = k / P.s_in;
    let j = k % P.s_in;
    g_dst[k] = g_src[g_order[P.offset + x] * P.s_in + j];
}

// ---- output_error: err[x, i] = a^L[x, i] − y[x, i] (zeros in the padding) ----

@group(0) @binding(1) var<storage, read> o_a: array<f32>;
@group(0) @binding(2) var<storage, read> o_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> o_err: array<f32>;

@compute @workgroup_size(64)
fn output_error(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let k = flat(gid, nwg);
    if (k >= P.batch * P.s_out) {
        return;
    }
    let i = k % P.s_out;
    o_err[k] = select(0.0, o_a[k] - o_y[k], i < P.n_out);
}

// ---- check_forward: the first layer whose z^l was not finite for some example ----

@group(0) @binding(1) var<storage, read> c_frec: array<f32>;
@group(0) @binding(4) var<storage, read_write> status: array<u32>;

// One invocation: L·B flags (pointwise.wgsl's forward record, [5B, 6B) of each layer's).
@compute @workgroup_size(1)
fn check_forward(@builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    if (status[0] != 0u) {
        return;
    }
    for (var l = 1u; l <= P.layer; l++) {
        for (var x = 0u; x < P.batch; x++) {
            if (c_frec[(l - 1u) * P.frec + 5u * P.batch + x] != 1.0) {
                status[0] = P.step;
                status[1] = l;
                status[2] = PASS_FORWARD;
                return;
            }
        }
    }
}

// ---- update: ∂C/∂W^l = (1/B) Σ_x δ_x a_xᵀ and ∂C/∂b^l = (1/B) Σ_x δ_x, then
//      ΔW = −(ηλ/n) W − η ∂C/∂W, W += ΔW, b −= η ∂C/∂b ----

@group(0) @binding(1) var<storage, read> u_d: array<vec4<f32>>;      // δ̂^l, B x s_out
@group(0) @binding(2) var<storage, read> u_a: array<vec4<f32>>;      // a^{l-1}, B x s_in
@group(0) @binding(5) var<storage, read> u_brec: array<f32>;         // [‖δ̂_x‖² (0: not live), e_x] (backward_post's record)
@group(0) @binding(6) var<storage, read_write> u_w: array<vec4<f32>>; // W^l, round4(n_out) x s_in
@group(0) @binding(7) var<storage, read_write> u_b: array<f32>;      // b^l
@group(0) @binding(8) var<storage, read_write> u_sums: array<f32>;   // [S, then Σt², ΣW² per workgroup]

const NO_LIVE: i32 = -2147483647;
var<workgroup> red: array<vec2<f32>, 64>;

// Invocation (gid.x, gid.y) owns the 4 x 4 block of W at rows 4·gid.y.. and columns
// 4·gid.x..: B multiply-adds of a vec4 of δ by a vec4 of a per row. Every example enters at
// 2^{e_x − m}, m the largest live exponent, so the sum is exact to f32 rounding at any scale;
// the gradient itself is 2^m times it, which only the update (rounded to W's ulp) flushes.
//
// For log10_update_w the workgroup adds t² with t = ΔW·2^{−S}: S = m when λ = 0 (ΔW is the
// gradient alone, whatever its scale) or m ≥ 0, else 0 (then the decay term dominates any
// gradient term that t would lose below 2^-126); and W² before the step.
@compute @workgroup_size(16, 4)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    P = PS[wid.z].p;
    let jq = gid.x;
    let i0 = 4u * gid.y;
    let nq_in = P.s_in / 4u;
    let nq_out = P.s_out / 4u;
    var m = NO_LIVE;
    for (var x = 0u; x < P.batch; x++) {
        if (u_brec[P.frec + x] > 0.0) {
            m = max(m, i32(u_brec[P.frec + P.batch + x]));
        }
    }
    let live = m != NO_LIVE;
    var big_s = 0;
    if (live && (P.decay == 0.0 || m >= 0)) {
        big_s = m;
    }
    var tt = 0.0;
    var ww = 0.0;
    var bad = false;
    if (jq < nq_in && i0 < P.n_out) {
        var acc: array<vec4<f32>, 4>;
        var accb = vec4<f32>(0.0);
        for (var r = 0u; r < 4u; r++) {
            acc[r] = vec4<f32>(0.0);
        }
        if (live) {
            for (var x = 0u; x < P.batch; x++) {
                var d = u_d[x * nq_out + gid.y];
                if (!(u_brec[P.frec + x] > 0.0)) {
                    // A row backward_post could not renormalise: zero, or not finite.
                    bad = bad || !(is_finite_f32(d.x) && is_finite_f32(d.y) && is_finite_f32(d.z) && is_finite_f32(d.w));
                    continue;
                }
                d = d * scale2(1.0, i32(u_brec[P.frec + P.batch + x]) - m);
                let a = u_a[x * nq_in + jq];
                acc[0] += d.x * a;
                acc[1] += d.y * a;
                acc[2] += d.z * a;
                acc[3] += d.w * a;
                accb += d;
            }
        }
        for (var r = 0u; r < 4u; r++) {
            let i = i0 + r;
            if (i >= P.n_out) {
                break;
            }
            let wi = i * nq_in + jq;
            var wv = u_w[wi];
            for (var c = 0u; c < 4u; c++) {
                if (4u * jq + c >= P.n_in) {
                    break;
                }
                let w = wv[c];
                let gs = acc[r][c] * P.inv_b;
                var dw = -P.lr * scale2(gs, m);
                var t = -P.lr * scale2(gs, m - big_s);
                if (P.decay != 0.0) {
                    dw = -P.decay * w + dw;
                    t = -P.decay * scale2(w, -big_s) + t;
                }
                if (!live) {
                    dw = -P.decay * w;
                    t = dw;
                }
                tt += t * t;
                ww += w * w;
                wv[c] = w + dw;
                bad = bad || !is_finite_f32(wv[c]);
            }
            u_w[wi] = wv;
            if (jq == 0u) {
                let gb = select(0.0, scale2(accb[r] * P.inv_b, m), live);
                u_b[i] = u_b[i] - P.lr * gb;
                bad = bad || !is_finite_f32(u_b[i]);
            }
        }
    }
    if (bad) {
        if (status[0] == 0u) {
            status[0] = P.step;
            status[1] = P.layer;
            status[2] = PASS_BACKWARD;
        }
    }
    red[li] = vec2<f32>(tt, ww);
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = red[li] + red[li + s];
        }
        workgroupBarrier();
    }
    let g = wid.x + wid.y * nwg.x;
    if (li == 0u) {
        u_sums[P.offset + 1u + 2u * g] = red[0].x;
        u_sums[P.offset + 2u + 2u * g] = red[0].y;
        if (g == 0u) {
            u_sums[P.offset] = f32(big_s);
        }
    }
}
