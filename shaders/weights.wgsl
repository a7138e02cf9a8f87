// weights.wgsl: generated weights drawn from Philox into a padded row-major W^l, so no L x N^2
// weight storage is ever needed (one layer at a time), and the raw Philox words for the tests.
// Needs common.wgsl and philox.wgsl.

@group(0) @binding(1) var<storage, read_write> w_out: array<vec4<f32>>;

// Distributions (P.kind).
const DIST_NORMAL: u32 = 0u;
const DIST_UNIFORM: u32 = 1u;

// One invocation per four consecutive entries W[i, 4q..4q+3] (one Philox block, counter
// [q, i, l, 0]); P.n_out x P.n_in real entries, P.aux0 (rows) x P.s_in (columns) with zero
// padding, written from vec4 P.w0 of w_out on (several layers or networks share one buffer).
// Linear invocation id over a 2-D grid of 64-wide workgroups (65,535 per dimension).
@compute @workgroup_size(64)
fn draw_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let idx = gid.x + gid.y * nwg.x * 64u;
    let qn = P.s_in / 4u;
    if (idx >= P.aux0 * qn) {
        return;
    }
    let i = idx / qn;
    let q = idx % qn;
    var v = vec4<f32>(0.0);
    if (i < P.n_out) {
        let w = philox4x32_10(vec4<u32>(q, i, P.layer, 0u), vec2<u32>(P.key_lo, P.key_hi));
        if (P.kind == DIST_UNIFORM) {
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

// Test kernel: words[k] = philox(counters[k], seed) for k < P.aux0.
@compute @workgroup_size(64)
fn philox_words(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let idx = gid.x + gid.y * nwg.x * 64u;
    if (idx >= P.aux0) {
        return;
    }
    words[idx] = philox4x32_10(counters[idx], vec2<u32>(P.key_lo, P.key_hi));
}
