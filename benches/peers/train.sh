#!/usr/bin/env bash
# gradscope train against Nielsen's network2.py loop in numpy (benches/peers/train_numpy.py),
# one protocol in the same run: [784, 30, 30, 30, 10], sigmoid, cross-entropy, 1,000
# synthetic 784-dim examples (MNIST-like sparsity), full batch, η = 0.1, λ = 5, EPOCHS epochs.
#   benches/peers/train.sh            # 100 epochs, 3 repeats
#   EPOCHS=50 REPEATS=5 benches/peers/train.sh
#   THREADS=1 benches/peers/train.sh   # one thread each (matrixmultiply, OpenBLAS, XLA)
# Prints ms per epoch of SGD steps (records excluded on all sides) and the ratios.
# Needs python3 with numpy. JAX (benches/peers/train_jax.py) runs in the same run when
# benches/peers/.venv has it (benches/peers/run.sh makes that venv); its first epoch (trace and
# compile) is printed apart and left out of its ms/epoch, which is over the other EPOCHS − 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
EPOCHS=${EPOCHS:-100}
if [ "${THREADS:-}" = 1 ]; then
  export MATMUL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
  # XLA's CPU client: no Eigen thread pool, one intra-op thread.
  export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
fi
JAXPY=benches/peers/.venv/bin/python
if [ -x "$JAXPY" ] && "$JAXPY" -c 'import jax' 2>/dev/null; then HAVE_JAX=1; else
  HAVE_JAX=0
  echo "JAX: no $JAXPY with jax (make it with benches/peers/run.sh); JAX column skipped"
fi
REPEATS=${REPEATS:-3}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/peers-train}
cargo build --release -q
G=${G:-${CARGO_TARGET_DIR:-target}/release/gradscope}
mkdir -p "$OUT"
python3 - "$OUT" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(1)
x = (rng.random((1000, 784)) < 0.26) * rng.random((1000, 784))
y = np.eye(10)[rng.integers(0, 10, 1000)]
np.save(sys.argv[1] + "/x.npy", x); np.save(sys.argv[1] + "/y.npy", y)
PY
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$REPEATS"); do
  g=$($G train --inputs "$OUT/x.npy" --targets "$OUT/y.npy" --widths 784,30,30,30,10 --init nielsen \
        --cost cross-entropy --batch 1000 --epochs "$EPOCHS" --lr 0.1 --l2 5 --shuffle none \
        --every "$EPOCHS" -q | sed -n 's/.*SGD steps \([0-9.]*\) s.*/\1/p')
  n=$(python3 benches/peers/train_numpy.py --inputs "$OUT/x.npy" --targets "$OUT/y.npy" \
        --widths 784,30,30,30,10 --epochs "$EPOCHS" | python3 -c "import json,sys; print(json.load(sys.stdin)['step_seconds'])")
  python3 -c "g,n,e=$g,$n,$EPOCHS; print(f'repeat $r: gradscope {1e3*g/e:.2f} ms/epoch, numpy {1e3*n/e:.2f} ms/epoch, numpy/gradscope {n/g:.2f}x')"
  if [ "$HAVE_JAX" = 1 ]; then
    "$JAXPY" benches/peers/train_jax.py --inputs "$OUT/x.npy" --targets "$OUT/y.npy" \
        --widths 784,30,30,30,10 --epochs "$EPOCHS" | python3 -c "
import json, sys
j = json.load(sys.stdin); g, n, e = $g, $n, $EPOCHS
ms = 1e3 * j['step_seconds'] / j['epochs_timed']
print(f'repeat $r: {j[\"peer\"]} {ms:.2f} ms/epoch (CPU {1e3 * j[\"step_cpu_seconds\"] / j[\"epochs_timed\"]:.2f}),'
      f' first epoch with compile {1e3 * j[\"compile_seconds\"]:.0f} ms,'
      f' jax/gradscope {ms / (1e3 * g / e):.2f}x, numpy/jax {(1e3 * n / e) / ms:.2f}x')"
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
