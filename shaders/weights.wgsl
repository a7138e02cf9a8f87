// weights.wgsl: generated weights drawn from Philox into a padded row-major W^l, so no L x N^2
// weight storage is ever needed (one layer at a time), and the raw Philox words for the tests.
// Needs common.wgsl and philox.wgsl.

// The parameter block (src/backend/gpu/params.rs, `layouts`).
struct WeightsParams {
    n_in: u32,    // real columns of W
    n_out: u32,   // real rows of W
    s_in: u32,    // its row stride (floats, a multiple of 4)
    rows: u32,    // its rows with padding
    layer: u32,   // l, Philox counter word 2
    dist: u32,    // DIST_NORMAL or DIST_UNIFORM
    scale: f32,   // std (normal) or half-width a (uniform)
    key_lo: u32,  // Philox key = seed
    key_hi: u32,
    w0: u32,      // first vec4 of W in w_out
    count: u32,   // philox_words: counters to hash
}
struct Slot {
    @size(256) p: WeightsParams,
}
@group(0) @binding(0) var<storage, read> PS: array<Slot>;
var<private> P: WeightsParams;

@group(0) @binding(1) var<storage, read_write> w_out: array<vec4<f32>>;

// Distributions (P.dist).
const DIST_NORMAL: u32 = 0u;
const DIST_UNIFORM: u32 = 1u;

// One invocation per four consecutive entries W[i, 4q..4q+3] (one Philox block, counter
// [q, i, l, 0]); P.n_out x P.n_in real entries, P.rows x P.s_in (columns) with zero
// padding, written from vec4 P.w0 of w_out on (several layers or networks share one buffer).
// Linear invocation id over a 2-D grid of 64-wide workgroups (65,535 per dimension).
@compute @workgroup_size(64)
fn draw_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let idx = gid.x + gid.y * nwg.x * 64u;
    let qn = P.s_in / 4u;
    if (idx >= P.rows * qn) {
        return;
    }
    let i = idx / qn;
    let q = idx % qn;
    var v = vec4<f32>(0.0);
    if (i < P.n_out) {
        let w = philox4x32_10(vec4<u32>(q, i, P.layer, 0u), vec2<u32>(P.key_lo, P.key_hi));
        if (P.dist == DIST_UNIFORM) {
            let u = vec4<f32>(unit_f32(w.x), unit_f32(w.y), unit_f32(w.z), unit_f32(w.w));
            v = P.scale * (2.0 * u - vec4<f32>(1.0));
        } else {
            let g0 = box_muller(w.x, w.y);
            let g1 = box_muller(w.z, w.w);
            v = P.scale * vec4<f32>(g0.x, g0.y, g1.x, g1.y);
        }
        let j0 = 4u * q;
        for (var c = 0u; c < 4u; c++) {
            if (j0 + c >= P.n_in) {
                v[c] = 0.0;
            }
        }
    }
    w_out[P.w0 + idx] = v;
}

@group(0) @binding(2) var<storage, read> counters: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> words: array<vec4<u32>>;

// Test kernel: words[k] = philox(counters[k], seed) for k < P.count.
@compute @workgroup_size(64)
fn philox_words(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.count) {
        return;
    }
    words[idx] = philox4x32_10(counters[idx], vec2<u32>(P.key_lo, P.key_hi));
}
