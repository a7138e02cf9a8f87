// reduce.wgsl: the batch statistics of one layer that couple examples, as per-workgroup
// partial sums the host adds in f64:
//   batch_mean: ‖Σ_x 2^{e_x - m} δ̂_x‖²                        (grad_b_mean)
//   gram:       Σ_{x,x'} w_x w_x' (δ̂_x·δ̂_x')(â_x·â_x')          (grad_w_mean, docs/MATH.md's
//               two B x B Gram matrices, never the n_l x n_{l-1} gradient)
// with m the largest live exponent, per active depth (block) of the stacked backward pass.
// Reads the records written by pointwise.wgsl.
// Needs common.wgsl.

// The parameter block (src/backend/gpu/params.rs, `layouts`).
struct ReduceParams {
    batch: u32,   // B, examples
    s_in: u32,    // row stride (floats) of â^{l-1}
    n_out: u32,   // n_l
    s_out: u32,   // its row stride
    row0: u32,    // this network's first row of â^{l-1}
    srow0: u32,   // its first stacked row of δ̂
    rec: u32,     // offset (floats) of layer l's forward record in frec
    brec: u32,    // offset of the first active depth's backward record
    bstride: u32, // floats per backward record
    gram0: u32,   // where the Gram partials start after 2B in a record (after MEAN_PARTS)
}
struct Slot {
    @size(256) p: ReduceParams,
}
@group(0) @binding(0) var<storage, read> PS: array<Slot>;
var<private> P: ReduceParams;

// A fixed number of invocations, each summing a strided share and writing its own partial:
// no workgroup barriers (costly on software adapters), a bounded record size, and the
// host adds the partials in f64.
const MEAN_PARTS: u32 = 64u;   // one workgroup
const GRAM_PARTS: u32 = 256u;  // four workgroups

@group(0) @binding(1) var<storage, read> dl: array<vec4<f32>>;   // δ̂^l, stacked (blocks x B) x s_out
@group(0) @binding(2) var<storage, read> ap: array<vec4<f32>>;   // â^{l-1}, B x s_in
@group(0) @binding(3) var<storage, read_write> rec: array<f32>;  // backward records
@group(0) @binding(4) var<storage, read> frec: array<f32>;       // forward record of layer l

const NO_LIVE: i32 = -2147483647;

// Block j = gid.y (one active depth): partial t of Σ_i (Σ_x 2^{e_x - m} δ̂_{x,i})² over units
// i ≡ t (mod MEAN_PARTS); at 2B + t of the block's record.
@compute @workgroup_size(64)
fn batch_mean(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let t = gid.x;
    let j = gid.y;
    let bsz = P.batch;
    let base = P.brec + j * P.bstride;
    var m = NO_LIVE;
    for (var x = 0u; x < bsz; x++) {
        if (rec[base + x] > 0.0) {
            m = max(m, i32(rec[base + bsz + x]));
        }
    }
    var acc = 0.0;
    if (m != NO_LIVE) {
        let nq = P.s_out / 4u;
        for (var i = t; i < P.n_out; i += MEAN_PARTS) {
            var v = 0.0;
            for (var x = 0u; x < bsz; x++) {
                if (rec[base + x] > 0.0) {
                    let d = dl[(P.srow0 + j * bsz + x) * nq + i / 4u][i % 4u];
                    v += scale2(d, i32(rec[base + bsz + x]) - m);
                }
            }
            acc += v * v;
        }
    }
    rec[base + 2u * bsz + t] = acc;
}

// Block j = gid.y: partial t of the Gram product over pairs p = x·B + x' ≡ t (mod
// GRAM_PARTS), x ≤ x'; at 2B + gram0 + t of the block's record. ‖â^{l-1}‖² and its exponent
// come from the forward record at P.rec.
@compute @workgroup_size(64)
fn gram(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let t = gid.x;
    let j = gid.y;
    let bsz = P.batch;
    let base = P.brec + j * P.bstride;
    var m = NO_LIVE;
    for (var x = 0u; x < bsz; x++) {
        if (rec[base + x] > 0.0 && frec[P.rec + bsz + x] > 0.0) {
            m = max(m, i32(rec[base + bsz + x]) + i32(frec[P.rec + 2u * bsz + x]));
        }
    }
    var acc = 0.0;
    if (m != NO_LIVE) {
        let nqo = P.s_out / 4u;
        let nqi = P.s_in / 4u;
        let d0 = P.srow0 + j * bsz;
        for (var p = t; p < bsz * bsz; p += GRAM_PARTS) {
            let x = p / bsz;
            let y = p % bsz;
            let live_x = rec[base + x] > 0.0 && frec[P.rec + bsz + x] > 0.0;
            let live_y = rec[base + y] > 0.0 && frec[P.rec + bsz + y] > 0.0;
            if (x > y || !live_x || !live_y) {
                continue;
            }
            var gd = 0.0;
            for (var q = 0u; q < nqo; q++) {
                gd += dot(dl[(d0 + x) * nqo + q], dl[(d0 + y) * nqo + q]);
            }
            // The rows at their records' scale (a row of an unbounded σ that was not
            // renormalised sits ux octaves above it, and its squares may pass f32's range).
            let ux = -i32(frec[P.rec + 3u * bsz + x]);
            let uy = -i32(frec[P.rec + 3u * bsz + y]);
            var ga = 0.0;
            if (ux == 0 && uy == 0) {
                for (var q = 0u; q < nqi; q++) {
                    ga += dot(ap[(P.row0 + x) * nqi + q], ap[(P.row0 + y) * nqi + q]);
                }
            } else {
                for (var q = 0u; q < nqi; q++) {
                    ga += dot(scale4(ap[(P.row0 + x) * nqi + q], ux), scale4(ap[(P.row0 + y) * nqi + q], uy));
                }
            }
            let cx = i32(rec[base + bsz + x]) + i32(frec[P.rec + 2u * bsz + x]);
            let cy = i32(rec[base + bsz + y]) + i32(frec[P.rec + 2u * bsz + y]);
            let w = scale2(1.0, cx - m) * scale2(1.0, cy - m);
            acc += w * gd * ga * select(2.0, 1.0, x == y);
        }
    }
    rec[base + 2u * bsz + P.gram0 + t] = acc;
}
