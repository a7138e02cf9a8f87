// matmul.wgsl: the layer products, register-blocked (each invocation owns a 4 x 4 block of
// outputs and streams vec4 loads), with no workgroup memory or barriers: on Mesa's lavapipe
// barriers cost more than the reuse they buy, and on discrete GPUs the L1/L2 caches serve
// the repeated rows. Needs common.wgsl.
//
// Layouts: activations and δ are B x n row-major with row stride s (a multiple of 4) and at
// least round4(B) rows, zero padded; W^l is round4(n_out) x s_in row-major, zero padded.

@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> lhs: array<vec4<f32>>;     // a^{l-1} (forward) or δ^l (backward)
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;       // W^l
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // b^l at P.aux1
@group(0) @binding(4) var<storage, read> e_in: array<i32>;          // exponents of a^{l-1}
@group(0) @binding(5) var<storage, read_write> out: array<f32>;   // z^l (B x s_out) or δ^l W^l (B x s_in)

// z[x, i] = Σ_j a[x, j] W[i, j] + b_i·2^{-e_x}: rows i0..i0+3 (gid.x) of examples x0..x0+3 (gid.y).
@compute @workgroup_size(16, 4)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
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
        let w0 = w[(i0 + 0u) * kq + q];
        let w1 = w[(i0 + 1u) * kq + q];
        let w2 = w[(i0 + 2u) * kq + q];
        let w3 = w[(i0 + 3u) * kq + q];
        for (var r = 0u; r < 4u; r++) {
            let a = lhs[(x0 + r) * kq + q];
            acc[r] += vec4<f32>(dot(a, w0), dot(a, w1), dot(a, w2), dot(a, w3));
        }
    }
    let scaled = (P.flags & FLAG_SCALED) != 0u;
    let has_bias = (P.flags & FLAG_BIAS) != 0u;
    for (var r = 0u; r < 4u; r++) {
        let x = x0 + r;
        if (x >= P.batch) {
            break;
        }
        let e = e_in[x];
        for (var c = 0u; c < 4u; c++) {
            let i = i0 + c;
            if (i >= P.n_out) {
                break;
            }
            var z = acc[r][c];
            if (has_bias) {
                let b = bias[P.aux1 + i];
                if (!scaled || e == 0) {
                    z = z + b;
                } else if (e < E_RESET) {
                    z = scale2(z, e) + b;
                } else {
                    z = z + b * scale2(1.0, -e);
                }
            }
            out[x * P.s_out + i] = z;
        }
    }
}

// g[x, j] = Σ_i δ[x, i] W[i, j]: columns 4jq..4jq+3 (gid.x) of examples x0..x0+3 (gid.y).
@compute @workgroup_size(16, 4)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
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
        let w0 = w[(4u * iq + 0u) * nq_in + jq];
        let w1 = w[(4u * iq + 1u) * nq_in + jq];
        let w2 = w[(4u * iq + 2u) * nq_in + jq];
        let w3 = w[(4u * iq + 3u) * nq_in + jq];
        for (var r = 0u; r < 4u; r++) {
            let d = lhs[(x0 + r) * nq_out + iq];
            acc[r] += d.x * w0 + d.y * w1 + d.z * w2 + d.w * w3;
        }
    }
    for (var r = 0u; r < 4u; r++) {
        let x = x0 + r;
        if (x < P.batch) {
            let o = x * P.s_in + 4u * jq;
            for (var c = 0u; c < 4u; c++) {
                out[o + c] = acc[r][c];
            }
        }
    }
}
