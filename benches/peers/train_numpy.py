"""The peer of `gradscope train` in BENCHMARKS.md: Nielsen's network2.py training loop
(sigmoid, cross-entropy, L2 decay), vectorised over the batch, in plain numpy float64.

    python3 train_numpy.py --inputs X.npy --targets Y.npy --widths 784,30,30,30,10 \
        --batch 1000 --epochs 100 --lr 0.1 --l2 5 [--record]

Prints JSON: seconds for the steps, and with --record also the seconds of the per-epoch
average ‖∂C/∂b^l‖ (Nielsen's get_average_gradient, one more backprop over the data, as his
fig/generate_gradient.py does before each epoch). The order of examples is 0..n (no shuffle),
as `gradscope train --shuffle none`.
"""
import argparse
import json
import time

import numpy as np


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def backprop(ws, bs, x, y):
    """∂C/∂W, ∂C/∂b (batch means) of the cross-entropy cost, x: B × n0, y: B × nL."""
    acts, zs = [x], []
    a = x
    for w, b in zip(ws, bs):
        z = a @ w.T + b
        zs.append(z)
        a = sigmoid(z)
        acts.append(a)
    delta = acts[-1] - y
    nb, nw = [None] * len(ws), [None] * len(ws)
    B = x.shape[0]
    for l in range(len(ws) - 1, -1, -1):
        if l < len(ws) - 1:
            s = sigmoid(zs[l])
            delta = (delta @ ws[l + 1]) * s * (1.0 - s)
        nb[l] = delta.sum(axis=0) / B
        nw[l] = delta.T @ acts[l] / B
    return nw, nb


def parser():
    """The protocol's options, shared with train_jax.py."""
    p = argparse.ArgumentParser()
    p.add_argument("--inputs", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--widths", required=True)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--l2", type=float, default=5.0)
    return p


def init(widths):
    """Nielsen's default_weight_initializer, from default_rng(0) (train_jax.py starts here too)."""
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(widths[:-1], widths[1:])]
    bs = [rng.standard_normal(o) for o in widths[1:]]
    return ws, bs


def main():
    p = parser()
    p.add_argument("--record", action="store_true")
    a = p.parse_args()
    x, y = np.load(a.inputs).astype(np.float64), np.load(a.targets).astype(np.float64)
    widths = [int(v) for v in a.widths.split(",")]
    ws, bs = init(widths)
    n = x.shape[0]
    t_step = t_rec = 0.0
    norms = []
    for _ in range(a.epochs):
        if a.record:
            t0 = time.perf_counter()
            _, nb = backprop(ws, bs, x, y)
            norms.append([float(np.linalg.norm(v)) for v in nb[:-1]])
            t_rec += time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(0, n, a.batch):
            nw, nb = backprop(ws, bs, x[k:k + a.batch], y[k:k + a.batch])
            ws = [(1 - a.lr * a.l2 / n) * w - a.lr * g for w, g in zip(ws, nw)]
            bs = [b - a.lr * g for b, g in zip(bs, nb)]
        t_step += time.perf_counter() - t0
    print(json.dumps({"peer": "numpy " + np.__version__, "epochs": a.epochs, "step_seconds": t_step,
                      "record_seconds": t_rec, "last_norms": norms[-1] if norms else None}))


if __name__ == "__main__":
    main()
