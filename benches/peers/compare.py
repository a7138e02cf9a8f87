#!/usr/bin/env python3
"""Prints the gradscope/JAX comparison that benches/peers/run.sh set up: wall times and
their ratio, agreement on shared weights (float64), and where JAX's float32 underflows."""

import json
import sys

import numpy as np

out = sys.argv[1]
t = json.load(open(f"{out}/times.json"))
jf = {dt: json.loads(open(f"{out}/jax_{dt}.json").read().strip().splitlines()[-1]) for dt in ("float64", "float32")}

depths = np.genfromtxt(f"{out}/sweep/summary.csv", delimiter=",", names=True, dtype=None, encoding=None)["depth"]
gs = {f: np.load(f"{out}/sweep/profiles/{f}.npy") for f in ("log10_grad_b_rms", "log10_grad_b_mean", "log10_grad_w_rms")}
probe = json.load(open(f"{out}/probe_deepest.json"))["layers"]


def rel(a, b):
    """|10^(a-b) - 1|: the relative error of the norm whose log10 is a, against b."""
    return np.abs(np.expm1((a - b) * np.log(10.0)))


def agreement(path):
    z = np.load(path)
    jd, fields, st = list(z["depths"]), [str(f) for f in z["fields"]], z["stats"]
    worst, n_cmp, n_under, first, n_under_gs = 0.0, 0, 0, None, 0
    for i, d in enumerate(depths):
        k = jd.index(int(d))
        for f, g in gs.items():
            a, b = st[k, fields.index(f), :d], g[i, :d]
            ok = np.isfinite(a) & np.isfinite(b)
            under = np.isneginf(a) & np.isfinite(b)
            n_under += int(under.sum())
            if under.any() and (first is None or d < first[0]):
                first = (int(d), f, int(np.argmax(under)) + 1, float(b[np.argmax(under)]))
            n_under_gs += int((~np.isfinite(b)).sum())
            if ok.any():
                worst = max(worst, float(rel(a[ok], b[ok]).max()))
            n_cmp += int(ok.sum())
    # grad_w_mean is not in the sweep's profiles: hold it against the deepest probe.
    k = len(jd) - 1
    a = st[k, fields.index("log10_grad_w_mean"), : len(probe)]
    b = np.array([l["log10_grad_w_mean"] if l["log10_grad_w_mean"] is not None else np.nan for l in probe])
    ok = np.isfinite(a) & np.isfinite(b)
    worst = max(worst, float(rel(a[ok], b[ok]).max()))
    n_cmp += int(ok.sum())
    return worst, n_cmp, n_under, first


gsec, j64, j32 = t["gradscope"], t["jax_float64"], t["jax_float32"]
print(f"Depth sweep {t['depths']}: width {t['width']}, batch {t['batch']}, {t['activation']}, {len(depths)} depths, deepest {depths[-1]}")
print(f"  gradscope sweep (CPU, f64)    {gsec:8.2f} s  (process wall time: drawing, Lanczos ‖W‖₂, bounds and outputs included)")
for dt, w in (("float64", j64), ("float32", j32)):
    s = jf[dt]
    print(f"  JAX {dt} (jit, lax.scan)   {w:8.2f} s  (process wall time; inside: data {s['seconds_data']:.2f} s, compile {s['seconds_compile']:.2f} s, run {s['seconds_run']:.2f} s)")
r = j64 / gsec
print(f"  ratio JAX float64 / gradscope = {r:.2f}×   (target ≥ 10×: {'met' if r >= 10 else f'missed, {10 / r:.1f}× short'})")
print(f"  ratio JAX float32 / gradscope = {j32 / gsec:.2f}×")
w64, n64, u64, _ = agreement(f"{out}/shared_float64.npz")
print(f"Shared weights (gradscope probe --save-weights, gradscope's Philox inputs), float64:")
print(f"  max relative difference over {n64} values (grad_b_rms, grad_b_mean, grad_w_rms of every depth and layer; grad_w_mean at the deepest) = {w64:.1e}   (target ≤ 1e-9: {'met' if w64 <= 1e-9 else 'missed'})")
w32, n32, u32, first = agreement(f"{out}/shared_float32.npz")
print(f"JAX float32 on the same weights: max relative difference where finite = {w32:.1e} over {n32} values;")
if u32:
    d, f, l, v = first
    print(f"  {u32} values underflow to 0 (log10 = -inf) where gradscope's are finite; the shallowest: depth {d}, layer {l}, {f} (gradscope: 10^{v:.1f})")
else:
    print("  no value underflows to 0 in this configuration (the gradient stays above float32's range limit)")
