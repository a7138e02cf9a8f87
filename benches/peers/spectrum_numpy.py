"""The Jacobian's singular values in plain numpy, the peers of `gradscope spectrum`.

Two methods, one example (x ~ N(0, I)), weights W ~ N(0, sigma_w2/n), biases N(0, sigma_b2):
  qr   the same algorithm as gradscope, written plainly: Q, R = qr(diag(s') W Q) after every
       layer, T = R @ T with one scalar rescale per layer, then svd(T). The scalar rescale keeps
       the top of T finite; values more than ~10^-300 below the top underflow (plain f64).
  svd  numpy.linalg.svd of the explicitly formed product J (works while J stays within f64
       and its condition number below ~1e16).
Prints one JSON line: seconds, log10 singular values (top 3, bottom 3), and how many are lost.
With --weights FILE.npz (w1..wL, b1..bL as gradscope --save-weights writes) and --inputs
FILE.npy the network is gradscope's own, for an agreement check.
"""
import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--sigma-w2", type=float, default=1.7610)
    ap.add_argument("--sigma-b2", type=float, default=0.05)
    ap.add_argument("--method", choices=["qr", "svd"], default="qr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights")
    ap.add_argument("--inputs")
    a = ap.parse_args()
    n, depth = a.width, a.depth
    rng = np.random.default_rng(a.seed)
    stored = np.load(a.weights) if a.weights else None
    if stored is not None:
        depth = sum(1 for k in stored.files if k.startswith("w"))
    x = np.load(a.inputs)[0] if a.inputs else rng.standard_normal(n)
    t0 = time.perf_counter()
    act = x
    if a.method == "qr":
        q = np.eye(n)
        t = np.eye(n)
        log10_scale = 0.0
    else:
        j = np.eye(n)
    for layer in range(1, depth + 1):
        if stored is not None:
            w, b = stored[f"w{layer}"], stored[f"b{layer}"]
        else:
            w = rng.standard_normal((n, n)) * np.sqrt(a.sigma_w2 / n)
            b = rng.standard_normal(n) * np.sqrt(a.sigma_b2)
        act = np.tanh(w @ act + b)
        d = 1.0 - act * act
        if a.method == "qr":
            q, r = np.linalg.qr(d[:, None] * (w @ q))
            t = r @ t
            m = np.abs(t).max()
            t /= m
            log10_scale += np.log10(m)
        else:
            j = d[:, None] * (w @ j)
    s = np.linalg.svd(t if a.method == "qr" else j, compute_uv=False)
    seconds = time.perf_counter() - t0
    with np.errstate(divide="ignore"):
        l10 = np.log10(s) + (log10_scale if a.method == "qr" else 0.0)
    lost = int(np.sum(~np.isfinite(l10)))
    print(json.dumps({"method": a.method, "width": n, "depth": depth, "seconds": seconds,
                      "top": [float(v) for v in l10[:3]], "bottom": [float(v) for v in l10[-3:]],
                      "all": [float(v) if np.isfinite(v) else None for v in l10],
                      "lost_to_underflow": lost}))


if __name__ == "__main__":
    main()
