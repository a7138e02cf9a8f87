// spectral.wgsl: ‖W‖₂ of generated weight matrices by the Lanczos method on the GPU, for a
// chunk of C layers of one shape at once (workgroup_id.y, or .x for lz_norm, is the layer c
// of the chunk). The operator is A = WᵀW (P.op = 0, vectors of n_in) or WWᵀ (P.op = 1,
// vectors of n_out), whichever is smaller. Step k is eight dispatches over the chunk:
//   u = W q_k or Wᵀ q_k (lz_rows / lz_cols, P.phase = 0); v = the other product of u (phase 1);
//   d = Qᵀ v, v −= Q d, twice (lz_dots / lz_axpy, phase 0 then 1: classical Gram–Schmidt
//   against q_0..q_k, "twice is enough", so no ghost copies of the top eigenvalue in f32;
//   the first pass's d_k is α_k = q_kᵀ A q_k); β_k = ‖v‖ (lz_norm); q_{k+1} = v / β_k (lz_next).
// No kernel uses workgroup barriers (on Mesa's lavapipe a barrier costs more than the work
// between two): every invocation owns one output and loops over its sum. The host reads the
// tridiagonal T (α, β) back and finds its top eigenvalue in f64 (src/backend/gpu/norms.rs).
// Needs common.wgsl.
//
// The parameter block (src/backend/gpu/params.rs, `layouts`); workgroup_id.y = layer c of
// the chunk everywhere.
struct SpectralParams {
    layers: u32,        // C, layers in the chunk
    n_in: u32,          // columns of W
    n_out: u32,         // rows of W
    s_in: u32,          // its row stride (floats)
    mat_floats: u32,    // floats per matrix
    vec_floats: u32,    // floats per Lanczos vector (a multiple of 4, ≥ n_in and n_out)
    basis_floats: u32,  // floats of one layer's basis (kmax + 1 vectors)
    kmax: u32,          // the most steps (KMAX)
    step: u32,          // this step, k
    op: u32,            // 0: A = WᵀW, 1: A = WWᵀ
    phase: u32,         // 0: the step's first product or Gram–Schmidt pass; 1: the second
}
struct Slot {
    @size(256) p: SpectralParams,
}
@group(0) @binding(0) var<storage, read> PS: array<Slot>;
var<private> P: SpectralParams;

@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;      // C × (rows × s_in / 4)
@group(0) @binding(2) var<storage, read_write> basis: array<f32>;  // C × (KMAX + 1) × vec_floats
@group(0) @binding(3) var<storage, read_write> u: array<f32>;      // C × vec_floats
@group(0) @binding(4) var<storage, read_write> v: array<f32>;      // C × vec_floats
@group(0) @binding(5) var<storage, read_write> tri: array<f32>;    // C × KMAX × 2: (α_k, β_k)
@group(0) @binding(6) var<storage, read_write> dots: array<f32>;   // C × (KMAX + 1)

const LZ_WG: u32 = 64u;

// The input of a product: the Lanczos vector q_k (phase 0) or u (phase 1), of layer c.
fn lz_input(c: u32, j: u32) -> f32 {
    if (P.phase == 0u) {
        return basis[c * P.basis_floats + P.step * P.vec_floats + j];
    }
    return u[c * P.vec_floats + j];
}

fn lz_output(c: u32, i: u32, x: f32) {
    if (P.phase == 0u) {
        u[c * P.vec_floats + i] = x;
    } else {
        v[c * P.vec_floats + i] = x;
    }
}

// The operator's dimension m.
fn lz_m() -> u32 {
    return select(P.n_in, P.n_out, P.op == 1u);
}

// y_i = Σ_j W[i, j] x_j: one invocation per row i, four columns per load.
@compute @workgroup_size(64)
fn lz_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let i = gid.x;
    let c = gid.y;
    if (i >= P.n_out) {
        return;
    }
    let base = (c * P.mat_floats + i * P.s_in) / 4u;
    var acc = vec4<f32>(0.0);
    for (var jq = 0u; jq < P.s_in / 4u; jq++) {
        let j = 4u * jq;
        let x = vec4<f32>(lz_input(c, j), lz_input(c, j + 1u), lz_input(c, j + 2u), lz_input(c, j + 3u));
        acc += w[base + jq] * x;
    }
    lz_output(c, i, acc.x + acc.y + acc.z + acc.w);
}

// y_j = Σ_i W[i, j] x_i: one invocation per four columns 4jq..4jq+3 (adjacent invocations
// read adjacent pieces of a row).
@compute @workgroup_size(64)
fn lz_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let jq = gid.x;
    let c = gid.y;
    if (4u * jq >= P.n_in) {
        return;
    }
    let sq = P.s_in / 4u;
    let base = c * P.mat_floats / 4u + jq;
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < P.n_out; i++) {
        acc += w[base + i * sq] * lz_input(c, i);
    }
    for (var t = 0u; t < 4u; t++) {
        if (4u * jq + t < P.n_in) {
            lz_output(c, 4u * jq + t, acc[t]);
        }
    }
}

// d_b = q_bᵀ v for b = 0..=k: one invocation per b. The first pass (phase 0) keeps d_k as α_k.
@compute @workgroup_size(64)
fn lz_dots(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let b = gid.x;
    let c = gid.y;
    let k = P.step;
    if (b > k) {
        return;
    }
    let m = lz_m();
    let q = c * P.basis_floats + b * P.vec_floats;
    let vb = c * P.vec_floats;
    var d = 0.0;
    for (var j = 0u; j < m; j++) {
        d += basis[q + j] * v[vb + j];
    }
    dots[c * (P.kmax + 1u) + b] = d;
    if (b == k && P.phase == 0u) {
        tri[(c * P.kmax + k) * 2u] = d;
    }
}

// v_j −= Σ_b q_b[j] d_b: one invocation per entry j.
@compute @workgroup_size(64)
fn lz_axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let j = gid.x;
    let c = gid.y;
    if (j >= lz_m()) {
        return;
    }
    let k = P.step;
    let q = c * P.basis_floats + j;
    let db = c * (P.kmax + 1u);
    var s = 0.0;
    for (var b = 0u; b <= k; b++) {
        s += basis[q + b * P.vec_floats] * dots[db + b];
    }
    v[c * P.vec_floats + j] -= s;
}

// β_k = ‖v‖: one invocation per layer.
@compute @workgroup_size(64)
fn lz_norm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let c = gid.x;
    if (c >= P.layers) {
        return;
    }
    let m = lz_m();
    let vb = c * P.vec_floats;
    var sq = 0.0;
    for (var j = 0u; j < m; j++) {
        sq += v[vb + j] * v[vb + j];
    }
    tri[(c * P.kmax + P.step) * 2u + 1u] = sqrt(sq);
}

// q_{k+1} = v / β_k, or 0 when v vanished (the Krylov space is invariant; every later step
// then writes α = β = 0): one invocation per entry.
@compute @workgroup_size(64)
fn lz_next(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    P = PS[wid.z].p;
    let j = gid.x;
    let c = gid.y;
    let k = P.step;
    if (j >= lz_m() || k + 1u > P.kmax) {
        return;
    }
    let beta = tri[(c * P.kmax + k) * 2u + 1u];
    let inv = select(0.0, 1.0 / beta, beta > 0.0 && is_finite_f32(beta));
    basis[c * P.basis_floats + (k + 1u) * P.vec_floats + j] = v[c * P.vec_floats + j] * inv;
}
