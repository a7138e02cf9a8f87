// train.wgsl: the kernels SGD adds to the probe's (src/backend/gpu/train.rs): the batch gathered from
// the resident data set, the output error, the forward pass's finiteness check, and the
// fused weight gradient and update with the partial sums of ‖ΔW^l‖ and ‖W^l‖. Standalone: its
// own parameter block (`TrainParams` in src/backend/gpu/train.rs) at binding 0, in the same 256-byte
// slots as common.wgsl's, so the recorder dispatches it like any other kernel.
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
    pad0: u32,
    pad1: u32,
    pad2: u32,
    pad3: u32,
    pad4: u32,
    pad5: u32,
    pad6: u32,
    pad7: u32,
    pad8: u32,
    pad9: u32,
    pad10: u32,
    pad11: u32,
}

struct TrainSlot {
    p: TrainParams,
    pad: array<vec4<u32>, 10>,
}

@group(0) @binding(0) var<storage, read> TPS: array<TrainSlot>;
var<private> T: TrainParams;

// Status: [0] the first step at which a value left f32's range (0: none yet), [1] its layer,
// [2] the pass (1 forward, 2 backward or update). The first writer wins; writers within a
// dispatch write the same triple.
const PASS_FORWARD: u32 = 1u;
const PASS_BACKWARD: u32 = 2u;

// 2^k exactly (0 below 2^-126, clamped at 2^127), and v·2^k in two exact steps: common.wgsl's
// helpers, repeated because this module has its own binding 0.
fn pow2t(k: i32) -> f32 {
    if (k < -126) {
        return 0.0;
    }
    return bitcast<f32>(u32(min(k, 127) + 127) << 23u);
}

fn scale2t(v: f32, k: i32) -> f32 {
    let h = k / 2;
    return v * pow2t(h) * pow2t(k - h);
}

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

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
    T = TPS[wid.z].p;
    let k = flat(gid, nwg);
    if (k >= T.batch * T.s_in) {
        return;
    }
    let x = k / T.s_in;
    let j = k % T.s_in;
    g_dst[k] = g_src[g_order[T.offset + x] * T.s_in + j];
}

// ---- output_error: err[x, i] = a^L[x, i] − y[x, i] (zeros in the padding) ----

@group(0) @binding(1) var<storage, read> o_a: array<f32>;
@group(0) @binding(2) var<storage, read> o_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> o_err: array<f32>;

@compute @workgroup_size(64)
fn output_error(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    T = TPS[wid.z].p;
    let k = flat(gid, nwg);
    if (k >= T.batch * T.s_out) {
        return;
    }
    let i = k % T.s_out;
    o_err[k] = select(0.0, o_a[k] - o_y[k], i < T.n_out);
}

// ---- check_forward: the first layer whose z^l was not finite for some example ----

@group(0) @binding(1) var<storage, read> c_frec: array<f32>;
@group(0) @binding(4) var<storage, read_write> status: array<u32>;

// One invocation: L·B flags (pointwise.wgsl's forward record, [5B, 6B) of each layer's).
@compute @workgroup_size(1)
fn check_forward(@builtin(workgroup_id) wid: vec3<u32>) {
    T = TPS[wid.z].p;
    if (status[0] != 0u) {
        return;
    }
    for (var l = 1u; l <= T.layer; l++) {
        for (var x = 0u; x < T.batch; x++) {
            if (c_frec[(l - 1u) * T.frec + 5u * T.batch + x] != 1.0) {
                status[0] = T.step;
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
    T = TPS[wid.z].p;
    let jq = gid.x;
    let i0 = 4u * gid.y;
    let nq_in = T.s_in / 4u;
    let nq_out = T.s_out / 4u;
    var m = NO_LIVE;
    for (var x = 0u; x < T.batch; x++) {
        if (u_brec[T.frec + x] > 0.0) {
            m = max(m, i32(u_brec[T.frec + T.batch + x]));
        }
    }
    let live = m != NO_LIVE;
    var big_s = 0;
    if (live && (T.decay == 0.0 || m >= 0)) {
        big_s = m;
    }
    var tt = 0.0;
    var ww = 0.0;
    var bad = false;
    if (jq < nq_in && i0 < T.n_out) {
        var acc: array<vec4<f32>, 4>;
        var accb = vec4<f32>(0.0);
        for (var r = 0u; r < 4u; r++) {
            acc[r] = vec4<f32>(0.0);
        }
        if (live) {
            for (var x = 0u; x < T.batch; x++) {
                var d = u_d[x * nq_out + gid.y];
                if (!(u_brec[T.frec + x] > 0.0)) {
                    // A row backward_post could not renormalise: zero, or not finite.
                    bad = bad || !(finite(d.x) && finite(d.y) && finite(d.z) && finite(d.w));
                    continue;
                }
                d = d * scale2t(1.0, i32(u_brec[T.frec + T.batch + x]) - m);
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
            if (i >= T.n_out) {
                break;
            }
            let wi = i * nq_in + jq;
            var wv = u_w[wi];
            for (var c = 0u; c < 4u; c++) {
                if (4u * jq + c >= T.n_in) {
                    break;
                }
                let w = wv[c];
                let gs = acc[r][c] * T.inv_b;
                var dw = -T.lr * scale2t(gs, m);
                var t = -T.lr * scale2t(gs, m - big_s);
                if (T.decay != 0.0) {
                    dw = -T.decay * w + dw;
                    t = -T.decay * scale2t(w, -big_s) + t;
                }
                if (!live) {
                    dw = -T.decay * w;
                    t = dw;
                }
                tt += t * t;
                ww += w * w;
                wv[c] = w + dw;
                bad = bad || !finite(wv[c]);
            }
            u_w[wi] = wv;
            if (jq == 0u) {
                let gb = select(0.0, scale2t(accb[r] * T.inv_b, m), live);
                u_b[i] = u_b[i] - T.lr * gb;
                bad = bad || !finite(u_b[i]);
            }
        }
    }
    if (bad) {
        if (status[0] == 0u) {
            status[0] = T.step;
            status[1] = T.layer;
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
        u_sums[T.offset + 1u + 2u * g] = red[0].x;
        u_sums[T.offset + 2u + 2u * g] = red[0].y;
        if (g == 0u) {
            u_sums[T.offset] = f32(big_s);
        }
    }
}
