// matmul.wgsl: the layer products, on two paths that compute the same thing (Needs common.wgsl):
//
// - register-blocked (`forward`, `backward`): each invocation owns a 4 x 4 block of outputs
//   and streams vec4 loads from global memory, with no workgroup memory or barriers. On Mesa's
//   lavapipe barriers cost more than the reuse they buy, so this is the software path.
// - workgroup-tiled (`forward_tiled`, `backward_tiled`): a workgroup of WG_X x WG_Y
//   invocations owns a 4·WG_Y x 4·WG_X output tile; it stages TILE_K-wide slices of the lhs
//   rows and of W in workgroup memory, then each invocation accumulates its 4 x 4 register
//   block from them. The sizes are override constants chosen by the host from the adapter's
//   limits (src/backend/shaders.rs, `Tiling`); this is the hardware path.
//
// Layouts: activations and δ are B x n row-major with row stride s (a multiple of 4) and at
// least round4(B) rows, zero padded; W^l is round4(n_out) x s_in row-major, zero padded.

// The parameter block (src/backend/gpu/params.rs, `layouts`).
struct MatmulParams {
    batch: u32,   // rows of lhs and out: B forward, B per active depth backward
    n_in: u32,    // columns of W (n_{l-1})
    s_in: u32,    // their row stride (floats, a multiple of 4)
    n_out: u32,   // rows of W (n_l)
    s_out: u32,   // their row stride
    flags: u32,   // FLAG_SCALED, FLAG_BIAS (forward)
    row0: u32,    // this network's first row of lhs, out and e_in
    w0: u32,      // its first vec4 of W
    bias0: u32,   // its first float of b^l in bias (forward)
}
struct Slot {
    @size(256) p: MatmulParams,
}
@group(0) @binding(0) var<storage, read> PS: array<Slot>;
var<private> P: MatmulParams;

@group(0) @binding(1) var<storage, read> lhs: array<vec4<f32>>;     // a^{l-1} (forward) or δ^l (backward)
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;       // W^l
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // b^l at P.bias0
@group(0) @binding(4) var<storage, read> e_in: array<i32>;          // exponents of a^{l-1}
@group(0) @binding(5) var<storage, read_write> out: array<f32>;   // z^l (B x s_out) or δ^l W^l (B x s_in)

// z[x, i] = Σ_j a[x, j] W[i, j] + b_i·2^{-e_x}: rows i0..i0+3 (gid.x) of examples x0..x0+3 (gid.y).
@compute @workgroup_size(16, 4)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let i0 = 4u * gid.x;
    let x0 = 4u * gid.y;
    if (i0 >= P.n_out || x0 >= P.batch) {
        return;
    }
    let kq = P.s_in / 4u;
    var acc: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        acc[r] = vec4<f32>(0.0);
    }
    for (var q = 0u; q < kq; q++) {
        let w0 = w[P.w0 + (i0 + 0u) * kq + q];
        let w1 = w[P.w0 + (i0 + 1u) * kq + q];
        let w2 = w[P.w0 + (i0 + 2u) * kq + q];
        let w3 = w[P.w0 + (i0 + 3u) * kq + q];
        for (var r = 0u; r < 4u; r++) {
            let a = lhs[(P.row0 + x0 + r) * kq + q];
            acc[r] += vec4<f32>(dot(a, w0), dot(a, w1), dot(a, w2), dot(a, w3));
        }
    }
    store_z(x0, i0, &acc);
}

// g[x, j] = Σ_i δ[x, i] W[i, j]: columns 4jq..4jq+3 (gid.x) of examples x0..x0+3 (gid.y).
@compute @workgroup_size(16, 4)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let jq = gid.x;
    let x0 = 4u * gid.y;
    let nq_in = P.s_in / 4u;
    let nq_out = P.s_out / 4u;
    if (jq >= nq_in || x0 >= P.batch) {
        return;
    }
    var acc: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        acc[r] = vec4<f32>(0.0);
    }
    for (var iq = 0u; iq < nq_out; iq++) {
        let w0 = w[P.w0 + (4u * iq + 0u) * nq_in + jq];
        let w1 = w[P.w0 + (4u * iq + 1u) * nq_in + jq];
        let w2 = w[P.w0 + (4u * iq + 2u) * nq_in + jq];
        let w3 = w[P.w0 + (4u * iq + 3u) * nq_in + jq];
        for (var r = 0u; r < 4u; r++) {
            let d = lhs[(P.row0 + x0 + r) * nq_out + iq];
            acc[r] += d.x * w0 + d.y * w1 + d.z * w2 + d.w * w3;
        }
    }
    store_g(x0, jq, &acc);
}

// The forward epilogue of both paths: z = acc + b_i·2^{-e_x} for the 4 x 4 block at rows
// (examples) x0.. and units i0.., in the scale of each row's exponent e_x.
fn store_z(x0: u32, i0: u32, acc: ptr<function, array<vec4<f32>, 4>>) {
    let scaled = (P.flags & FLAG_SCALED) != 0u;
    let has_bias = (P.flags & FLAG_BIAS) != 0u;
    for (var r = 0u; r < 4u; r++) {
        let x = x0 + r;
        if (x >= P.batch) {
            break;
        }
        let e = e_in[P.row0 + x];
        for (var c = 0u; c < 4u; c++) {
            let i = i0 + c;
            if (i >= P.n_out) {
                break;
            }
            var z = (*acc)[r][c];
            if (has_bias) {
                let b = bias[P.bias0 + i];
                if (!scaled || e == 0) {
                    z = z + b;
                } else if (e < E_RESET) {
                    z = scale2(z, e) + b;
                } else {
                    z = z + b * scale2(1.0, -e);
                }
            }
            out[(P.row0 + x) * P.s_out + i] = z;
        }
    }
}

// The backward epilogue of both paths: g for examples x0.. and columns 4jq..4jq+3 (padding
// columns included, as zeros).
fn store_g(x0: u32, jq: u32, acc: ptr<function, array<vec4<f32>, 4>>) {
    if (jq >= P.s_in / 4u) {
        return;
    }
    for (var r = 0u; r < 4u; r++) {
        let x = x0 + r;
        if (x < P.batch) {
            let o = (P.row0 + x) * P.s_in + 4u * jq;
            for (var c = 0u; c < 4u; c++) {
                out[o + c] = (*acc)[r][c];
            }
        }
    }
}

// ---- The workgroup-tiled path ----

override WG_X: u32 = 16u;   // invocations along the output columns: the tile is 4·WG_X wide
override WG_Y: u32 = 16u;   // invocations along the examples: the tile is 4·WG_Y rows tall
override TILE_K: u32 = 16u; // inner-dimension floats staged per step, a multiple of 4

// The lhs tile at [0, TILE_K·WG_Y) and the W tile after it, both k-major: entry k·WG_Y + m
// holds rows 4m..4m+3 of inner index k (entry TILE_K·WG_Y + k·WG_X + n: columns 4n..4n+3),
// so an invocation reads its four rows, or its four columns, as one vec4.
var<workgroup> tiles: array<vec4<f32>, TILE_K * (WG_X + WG_Y)>;

// A vec4 of lhs or of W (the staging loop is the same for both).
// Entry i of this network's W (from_w) or lhs rows, i counted in vec4s from its first row;
// nq is the row length in vec4s.
fn load4(from_w: bool, i: u32, nq: u32) -> vec4<f32> {
    if (from_w) {
        return w[P.w0 + i];
    }
    return lhs[P.row0 * nq + i];
}

// Stages floats 4·q0 .. 4·q0 + TILE_K of rows row0 .. row0 + 4·width of a row-major array
// (nq vec4 per row, n_rows rows) into the tile at `base`, transposed to k-major; entries
// beyond n_rows or nq are zeros.
fn stage_transposed(from_w: bool, base: u32, width: u32, row0: u32, n_rows: u32, q0: u32, nq: u32, li: u32) {
    let kq = TILE_K / 4u;
    for (var idx = li; idx < 4u * width * kq; idx += WG_X * WG_Y) {
        let m = idx / kq;
        let t = idx % kq;
        var v = vec4<f32>(0.0);
        if (row0 + m < n_rows && q0 + t < nq) {
            v = load4(from_w, (row0 + m) * nq + q0 + t, nq);
        }
        let o = base + 4u * t * width + m / 4u;
        let c = m % 4u;
        tiles[o][c] = v.x;
        tiles[o + width][c] = v.y;
        tiles[o + 2u * width][c] = v.z;
        tiles[o + 3u * width][c] = v.w;
    }
}

// acc[r] += lhs[row 4·ty + r, k] · W-tile[k, columns 4·tx..4·tx+3] over the staged k, then
// waits until every invocation is done with the tiles.
fn accumulate_tile(acc: ptr<function, array<vec4<f32>, 4>>, tx: u32, ty: u32) {
    workgroupBarrier();
    let wb = TILE_K * WG_Y;
    for (var k = 0u; k < TILE_K; k++) {
        let a = tiles[k * WG_Y + ty];
        let b = tiles[wb + k * WG_X + tx];
        (*acc)[0] += a.x * b;
        (*acc)[1] += a.y * b;
        (*acc)[2] += a.z * b;
        (*acc)[3] += a.w * b;
    }
    workgroupBarrier();
}

// z[x, i] = Σ_j a[x, j] W[i, j] + b_i·2^{-e_x}, tiled: examples 4·WG_Y·wid.y.. and units
// 4·WG_X·wid.x..; both operands are staged transposed (their inner index runs along rows).
@compute @workgroup_size(WG_X, WG_Y)
fn forward_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    P = PS[wid.z].p;
    let x_base = 4u * WG_Y * wid.y;
    let i_base = 4u * WG_X * wid.x;
    let kq = P.s_in / 4u;
    var acc: array<vec4<f32>, 4>;
    for (var q0 = 0u; q0 < kq; q0 += TILE_K / 4u) {
        stage_transposed(false, 0u, WG_Y, x_base, P.batch, q0, kq, li);
        stage_transposed(true, TILE_K * WG_Y, WG_X, i_base, P.n_out, q0, kq, li);
        accumulate_tile(&acc, lid.x, lid.y);
    }
    store_z(x_base + 4u * lid.y, i_base + 4u * lid.x, &acc);
}

// g[x, j] = Σ_i δ[x, i] W[i, j], tiled: examples 4·WG_Y·wid.y.. and columns 4·WG_X·wid.x..;
// δ is staged transposed, W's rows are already k-major and are copied as they are.
@compute @workgroup_size(WG_X, WG_Y)
fn backward_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    P = PS[wid.z].p;
    let x_base = 4u * WG_Y * wid.y;
    let jq_base = WG_X * wid.x;
    let nq_in = P.s_in / 4u;
    let nq_out = P.s_out / 4u;
    let wb = TILE_K * WG_Y;
    var acc: array<vec4<f32>, 4>;
    for (var q0 = 0u; q0 < nq_out; q0 += TILE_K / 4u) {
        stage_transposed(false, 0u, WG_Y, x_base, P.batch, q0, nq_out, li);
        for (var idx = li; idx < TILE_K * WG_X; idx += WG_X * WG_Y) {
            let i = 4u * q0 + idx / WG_X;
            let jq = jq_base + idx % WG_X;
            var v = vec4<f32>(0.0);
            if (i < P.s_out && jq < nq_in) {
                v = w[P.w0 + i * nq_in + jq];
            }
            tiles[wb + idx] = v;
        }
        accumulate_tile(&acc, lid.x, lid.y);
    }
    store_g(x_base + 4u * lid.y, jq_base + lid.x, &acc);
}
