"""The JAX peer of `gradscope train` in BENCHMARKS.md: the loop of train_numpy.py (Nielsen's
network2.py: sigmoid, cross-entropy, L2 decay), the SGD step written the way a JAX user would
(the cost's gradient by `jax.grad`, the step `jax.jit`-compiled), float64.

    benches/peers/.venv/bin/python train_jax.py --inputs X.npy --targets Y.npy \
        --widths 784,30,30,30,10 --batch 1000 --epochs 100 --lr 0.1 --l2 5 [--check-numpy K]

Same data files and the same initial weights as train_numpy.py (drawn by numpy's
default_rng(0) in the same order, then moved to the device), same order of examples (0..n, no
shuffle). Prints JSON: `compile_seconds` (the first epoch, which traces and compiles the step,
then runs it), `step_seconds` (the later epochs' steps; `step_cpu_seconds`: the process's CPU
time over them, all threads), `epochs_timed` (how many later epochs).
With --check-numpy K it also runs train_numpy.py's backprop for K epochs from the same start
and prints both costs (Nielsen's total_cost: mean cross-entropy + λ/(2n) Σ‖W‖²) and the
largest difference of any weight; those K epochs are not timed.
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_numpy import backprop, init, parser  # noqa: E402  (the numpy peer, beside this file)

jax.config.update("jax_enable_x64", True)


def batch_cost(params, x, y):
    """Mean cross-entropy of sigmoid outputs over the batch; from log σ so it never takes log 0,
    and its gradient in z^L is exactly a^L − y, as network2.py's delta."""
    a = x
    for w, b in params[:-1]:
        a = jax.nn.sigmoid(a @ w.T + b)
    w, b = params[-1]
    z = a @ w.T + b
    ce = -(y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
    return ce.sum() / x.shape[0]


def make_step(lr, l2, n):
    decay = 1.0 - lr * l2 / n

    def step(params, x, y):
        g = jax.grad(batch_cost)(params, x, y)
        return [(decay * w - lr * gw, b - lr * gb) for (w, b), (gw, gb) in zip(params, g)]

    # Donating the parameters lets XLA update them in place, as numpy's loop rebinds them.
    return jax.jit(step, donate_argnums=0)


def total_cost(ws, bs, x, y, l2):
    """network2.py's total_cost (CrossEntropyCost, sum over the data / n, plus the L2 term), in
    numpy so both peers' weights are scored by the same code."""
    a = x
    for w, b in zip(ws, bs):
        a = 0.5 * (1.0 + np.tanh(0.5 * (a @ w.T + b)))
    n = x.shape[0]
    ce = np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a))) / n
    return float(ce + 0.5 * (l2 / n) * sum(np.sum(w * w) for w in ws))


def main():
    p = parser()
    p.add_argument("--check-numpy", type=int, default=0, metavar="K")
    a = p.parse_args()
    x_np, y_np = np.load(a.inputs).astype(np.float64), np.load(a.targets).astype(np.float64)
    widths = [int(v) for v in a.widths.split(",")]
    ws0, bs0 = init(widths)
    n = x_np.shape[0]
    step = make_step(a.lr, a.l2, n)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    batches = [(x[k:k + a.batch], y[k:k + a.batch]) for k in range(0, n, a.batch)]
    jax.block_until_ready(batches)

    def epoch(params):
        for xb, yb in batches:
            params = step(params, xb, yb)
        return jax.block_until_ready(params)

    out = {"peer": "jax " + jax.__version__, "epochs": a.epochs}
    if a.check_numpy:
        params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in zip(ws0, bs0)]
        ws, bs = ws0, bs0
        for _ in range(a.check_numpy):
            params = epoch(params)
            for k in range(0, n, a.batch):
                nw, nb = backprop(ws, bs, x_np[k:k + a.batch], y_np[k:k + a.batch])
                ws = [(1 - a.lr * a.l2 / n) * w - a.lr * g for w, g in zip(ws, nw)]
                bs = [b - a.lr * g for b, g in zip(bs, nb)]
        jw = [np.asarray(w) for w, _ in params]
        jb = [np.asarray(b) for _, b in params]
        out["check"] = {
            "epochs": a.check_numpy,
            "cost_jax": total_cost(jw, jb, x_np, y_np, a.l2),
            "cost_numpy": total_cost(ws, bs, x_np, y_np, a.l2),
            "max_abs_param_diff": max(float(np.max(np.abs(u - v)))
                                      for u, v in zip(jw + jb, ws + bs)),
        }
        out["check"]["cost_diff"] = abs(out["check"]["cost_jax"] - out["check"]["cost_numpy"])
        # A fresh jit for the timed run, so its first epoch pays the compile again.
        step = make_step(a.lr, a.l2, n)

    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in zip(ws0, bs0)]
    jax.block_until_ready(params)
    t0 = time.perf_counter()
    params = epoch(params)
    out["compile_seconds"] = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.epochs - 1):
        params = epoch(params)
    out["step_seconds"] = time.perf_counter() - t0
    out["step_cpu_seconds"] = time.process_time() - c0
    out["epochs_timed"] = a.epochs - 1
    print(json.dumps(out))


if __name__ == "__main__":
    main()
