// reduce.wgsl: the batch statistics of one layer that couple examples, as per-workgroup
// partial sums the host adds in f64:
//   batch_mean: ‖Σ_x 2^{e_x - m} δ̂_x‖²                        (grad_b_mean)
//   gram:       Σ_{x,x'} w_x w_x' (δ̂_x·δ̂_x')(â_x·â_x')          (grad_w_mean, MATH.md's
//               two B x B Gram matrices, never the n_l x n_{l-1} gradient)
// with m the largest live exponent. Reads the layer record written by pointwise.wgsl.
// Needs common.wgsl.

const RWG: u32 = 256u;

var<workgroup> part: array<f32, 256>;

fn wg_total(lid: u32, v: f32) -> f32 {
    part[lid] = v;
    workgroupBarrier();
    for (var s = RWG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            part[lid] = part[lid] + part[lid + s];
        }
        workgroupBarrier();
    }
    return part[0];
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> dl: array<vec4<f32>>;   // δ̂^l, B x s_out
@group(0) @binding(2) var<storage, read> ap: array<vec4<f32>>;   // â^{l-1}, B x s_in
@group(0) @binding(3) var<storage, read_write> rec: array<f32>;

const NO_LIVE: i32 = -2147483647;

// Partial sums over units i (256 per workgroup) of (Σ_x 2^{e_x - m} δ̂_{x,i})²; at 6B + wg.
@compute @workgroup_size(256)
fn batch_mean(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = wid.x + wid.y * nwg.x;
    let i = wg * RWG + lid;
    let bsz = P.batch;
    var m = NO_LIVE;
    for (var x = 0u; x < bsz; x++) {
        if (rec[P.rec + 3u * bsz + x] > 0.0) {
            m = max(m, i32(rec[P.rec + 4u * bsz + x]));
        }
    }
    var v = 0.0;
    if (m != NO_LIVE && i < P.n_out) {
        let nq = P.s_out / 4u;
        for (var x = 0u; x < bsz; x++) {
            if (rec[P.rec + 3u * bsz + x] > 0.0) {
                let d = dl[x * nq + i / 4u][i % 4u];
                v += scale2(d, i32(rec[P.rec + 4u * bsz + x]) - m);
            }
        }
    }
    let s = wg_total(lid, v * v);
    if (lid == 0u) {
        rec[P.rec + 6u * bsz + wg] = s;
    }
}

// Partial sums over pairs (x, x'), 256 per workgroup, of the Gram product; at 6B + aux0 + wg.
@compute @workgroup_size(256)
fn gram(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let wg = wid.x + wid.y * nwg.x;
    let p = wg * RWG + lid;
    let bsz = P.batch;
    var m = NO_LIVE;
    for (var x = 0u; x < bsz; x++) {
        if (rec[P.rec + 3u * bsz + x] > 0.0 && rec[P.rec + bsz + x] > 0.0) {
            m = max(m, i32(rec[P.rec + 4u * bsz + x]) + i32(rec[P.rec + 2u * bsz + x]));
        }
    }
    var t = 0.0;
    if (m != NO_LIVE && p < bsz * bsz) {
        let x = p / bsz;
        let y = p % bsz;
        let live_x = rec[P.rec + 3u * bsz + x] > 0.0 && rec[P.rec + bsz + x] > 0.0;
        let live_y = rec[P.rec + 3u * bsz + y] > 0.0 && rec[P.rec + bsz + y] > 0.0;
        if (x <= y && live_x && live_y) {
            let nqo = P.s_out / 4u;
            let nqi = P.s_in / 4u;
            var gd = 0.0;
            for (var q = 0u; q < nqo; q++) {
                gd += dot(dl[x * nqo + q], dl[y * nqo + q]);
            }
            var ga = 0.0;
            for (var q = 0u; q < nqi; q++) {
                ga += dot(ap[x * nqi + q], ap[y * nqi + q]);
            }
            let cx = i32(rec[P.rec + 4u * bsz + x]) + i32(rec[P.rec + 2u * bsz + x]);
            let cy = i32(rec[P.rec + 4u * bsz + y]) + i32(rec[P.rec + 2u * bsz + y]);
            let w = scale2(1.0, cx - m) * scale2(1.0, cy - m);
            t = w * gd * ga * select(2.0, 1.0, x == y);
        }
    }
    let s = wg_total(lid, t);
    if (lid == 0u) {
        rec[P.rec + 6u * bsz + P.aux0 + wg] = s;
    }
}
