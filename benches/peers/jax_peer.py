#!/usr/bin/env python3
"""The JAX peer of `gradscope sweep`: the same per-layer gradient norms for a depth sweep,
written the way a competent JAX user would (jit, `lax.scan` over layers, per-example δ
through per-example bias offsets: δ^l_x = B · ∂C/∂ε^l_x with z^l_x = W^l a^{l-1}_x + b^l + ε^l_x,
C = (1/B) Σ_x ½‖a^L_x − y_x‖²).

Per depth D of the grid and layer l = 1..D it computes the docs/MATH.md fields
    log10_grad_b_rms  = log10 sqrt((1/B) Σ_x ‖δ^l_x‖²)
    log10_grad_b_mean = log10 ‖(1/B) Σ_x δ^l_x‖
    log10_grad_w_rms  = log10 sqrt((1/B) Σ_x ‖δ^l_x‖² ‖a^{l-1}_x‖²)
    log10_grad_w_mean = log10 ‖(1/B) Σ_x δ^l_x a^{l-1}_xᵀ‖_F   (from two B×B Grams)
in plain floating point (no rescaling): in float32 they underflow to -inf where the
gradient passes below ~1e-38 (XLA on CPU flushes subnormals to zero). It does not compute
spectral norms or bounds unless --spectral (then ‖W^l‖₂ by jnp.linalg.norm(·, 2), an SVD).

Each depth is its own jitted function (the scan length is static), compiled ahead of time so
compile and run time are reported apart; both count in the total.

Weights: drawn with jax.random inside the timed region (gaussian, σ_w² = 1, σ_b² = 0, like
gradscope's default), or read from gradscope's `probe --save-weights FILE.npz` (w1..wL,
b1..bL) with --weights; inputs N(0,1) (jax.random), or gradscope's own Philox inputs with
--gradscope-inputs SEED (bit-compatible Philox4x32-10 + Box–Muller, see philox_normals).
"""

import argparse
import json
import math
import sys
import time

import numpy as np


def log_grid(a, b, n):
    """gradscope's `log:A..B:N` grid (src/sweep/grid.rs)."""
    if n == 1:
        return [b]
    la, lb = math.log(a), math.log(b)
    out = []
    for i in range(n):
        t = int(math.floor(math.exp(la + (lb - la) * i / (n - 1)) + 0.5))
        lo = out[-1] + 1 if out else a
        hi = b - (n - 1 - i)
        out.append(min(max(t, lo), hi))
    return out


def parse_depths(spec):
    if spec.startswith("log:"):
        rng, n = spec[4:].split(":")
        a, b = rng.split("..")
        return log_grid(int(a), int(b), int(n))
    return sorted({int(s) for s in spec.split(",") if s.strip()})


M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def philox4x32_10(ctr, key):
    """Vectorised Philox4x32-10; ctr: 4 uint64 arrays holding 32-bit words."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in ctr)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    mask = np.uint64(0xFFFFFFFF)
    for r in range(10):
        if r > 0:
            k0 = (k0 + np.uint64(W0)) & mask
            k1 = (k1 + np.uint64(W1)) & mask
        p0 = np.uint64(M0) * c0
        p1 = np.uint64(M1) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & mask
        hi1, lo1 = p1 >> np.uint64(32), p1 & mask
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def philox_normals(seed, rows, cols, purpose=2, layer=0):
    """gradscope's Stream::normal(purpose, layer, row, col) for a rows × cols array
    (purpose 2 = inputs): counter [col/4, row, layer, purpose], key = the seed's halves."""
    r, c = np.meshgrid(np.arange(rows, dtype=np.uint64), np.arange(cols, dtype=np.uint64), indexing="ij")
    words = philox4x32_10([c >> np.uint64(2), r, np.full_like(r, layer), np.full_like(r, purpose)], [seed & 0xFFFFFFFF, seed >> 32])
    lane = (c & np.uint64(3)).astype(np.int64)
    p = lane >> 1
    w = np.stack(words)
    wa = np.take_along_axis(w, (2 * p)[None], 0)[0]
    wb = np.take_along_axis(w, (2 * p + 1)[None], 0)[0]
    u1 = ((wa >> np.uint64(8)) + np.uint64(1)).astype(np.float64) * (1.0 / 16777216.0)
    u2 = (wb >> np.uint64(8)).astype(np.float64) * (1.0 / 16777216.0)
    rad = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * math.pi * u2
    return np.where(lane & 1 == 0, rad * np.cos(theta), rad * np.sin(theta))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--depths", default="log:1..2000:64")
    ap.add_argument("--activation", default="tanh", choices=["tanh", "sigmoid", "relu"])
    ap.add_argument("--sigma-w2", type=float, default=1.0)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", help="gradscope probe --save-weights FILE.npz (w1..wL, b1..bL)")
    ap.add_argument("--gradscope-inputs", type=int, metavar="SEED", help="use gradscope's Philox N(0,1) inputs of this seed")
    ap.add_argument("--spectral", action="store_true", help="also ‖W^l‖₂ (SVD) for every layer, as gradscope does")
    ap.add_argument("--out", help="write the statistics (.npz: depths, fields, stats[depth, field, layer])")
    args = ap.parse_args()

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    dt = jnp.float64 if args.dtype == "float64" else jnp.float32
    depths = parse_depths(args.depths)
    lmax, n, bsz = depths[-1], args.width, args.batch
    act = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}[args.activation]

    def stats(w_all, b_all, x, y, depth):
        w, b = w_all[:depth], b_all[:depth]

        def loss(eps):
            def step(a, inp):
                wl, bl, el = inp
                z = a @ wl.T + bl + el
                return act(z), a

            a_top, a_prev = lax.scan(step, x, (w, b, eps))
            return 0.5 * jnp.sum((a_top - y) ** 2) / bsz, a_prev

        eps = jnp.zeros((depth, bsz, n), dt)
        g, a_prev = jax.grad(loss, has_aux=True)(eps)
        delta = g * bsz  # δ^l_x (B is a power of two here: exact)
        sq_d = jnp.sum(delta * delta, -1)
        sq_a = jnp.sum(a_prev * a_prev, -1)
        lb = math.log10(bsz)
        rms_b = 0.5 * (jnp.log10(jnp.sum(sq_d, -1)) - lb)
        mean = jnp.mean(delta, 1)
        mean_b = 0.5 * jnp.log10(jnp.sum(mean * mean, -1))
        rms_w = 0.5 * (jnp.log10(jnp.sum(sq_d * sq_a, -1)) - lb)
        gd = jnp.einsum("lxi,lyi->lxy", delta, delta)
        ga = jnp.einsum("lxj,lyj->lxy", a_prev, a_prev)
        mean_w = 0.5 * jnp.log10(jnp.maximum(jnp.sum(gd * ga, (1, 2)), 0.0)) - lb
        out = [rms_b, mean_b, rms_w, mean_w]
        return jnp.stack(out)

    fields = ["log10_grad_b_rms", "log10_grad_b_mean", "log10_grad_w_rms", "log10_grad_w_mean"]
    t_start = time.perf_counter()
    if args.weights:
        z = np.load(args.weights)
        w_np = np.stack([z[f"w{l}"] for l in range(1, lmax + 1)])
        b_np = np.stack([z[f"b{l}"] for l in range(1, lmax + 1)])
        w_all, b_all = jnp.asarray(w_np, dt), jnp.asarray(b_np, dt)
        del w_np, b_np, z
    else:
        kw, kx = jax.random.split(jax.random.PRNGKey(args.seed))
        w_all = jax.random.normal(kw, (lmax, n, n), dt) * math.sqrt(args.sigma_w2 / n)
        b_all = jnp.zeros((lmax, n), dt)
    if args.gradscope_inputs is not None:
        x = jnp.asarray(philox_normals(args.gradscope_inputs, bsz, n), dt)
    else:
        x = jax.random.normal(jax.random.PRNGKey(args.seed + 1), (bsz, n), dt)
    y = jnp.zeros((bsz, n), dt)
    jax.block_until_ready((w_all, b_all, x))
    t_data = time.perf_counter() - t_start

    jitted = jax.jit(stats, static_argnames="depth")
    res = np.full((len(depths), len(fields), lmax), np.nan)
    t_compile = t_run = 0.0
    for i, d in enumerate(depths):
        t0 = time.perf_counter()
        f = jitted.lower(w_all, b_all, x, y, depth=d).compile()
        t1 = time.perf_counter()
        r = np.asarray(jax.block_until_ready(f(w_all, b_all, x, y)))
        t2 = time.perf_counter()
        t_compile += t1 - t0
        t_run += t2 - t1
        res[i, :, :d] = r
    t_spec = 0.0
    spec = None
    if args.spectral:
        t0 = time.perf_counter()
        spec = np.asarray(jax.block_until_ready(jax.jit(jax.vmap(lambda m: jnp.log10(jnp.linalg.norm(m, 2))))(w_all)))
        t_spec = time.perf_counter() - t0
    total = time.perf_counter() - t_start

    under = np.isneginf(res)
    first = None
    if under.any():
        di, fi, li = np.argwhere(under)[0]
        first = {"depth": int(depths[di]), "field": fields[fi], "layer": int(li + 1)}
    summary = {
        "dtype": args.dtype,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "depths": len(depths),
        "deepest": lmax,
        "width": n,
        "batch": bsz,
        "activation": args.activation,
        "seconds_total": total,
        "seconds_data": t_data,
        "seconds_compile": t_compile,
        "seconds_run": t_run,
        "seconds_spectral": t_spec,
        "underflow_values": int(under.sum()),
        "underflow_layers_grad_b_rms": int(under[:, 0, :].sum()),
        "first_underflow": first,
    }
    print(json.dumps(summary))
    if args.out:
        np.savez(args.out, depths=np.array(depths), fields=np.array(fields), stats=res, **({"log10_weight_norm": spec} if spec is not None else {}))


if __name__ == "__main__":
    sys.exit(main())
