#!/usr/bin/env bash
# gradscope train against Nielsen's network2.py loop in numpy (benches/peers/train_numpy.py),
# one protocol in the same run: [784, 30, 30, 30, 10], sigmoid, cross-entropy, 1,000
# synthetic 784-dim examples (MNIST-like sparsity), full batch, η = 0.1, λ = 5, EPOCHS epochs.
#   benches/peers/train.sh            # 100 epochs, 3 repeats
#   EPOCHS=50 REPEATS=5 benches/peers/train.sh
#   THREADS=1 benches/peers/train.sh   # one thread each (matrixmultiply and OpenBLAS)
# Prints seconds per epoch of SGD steps (records excluded on both sides) and the ratio.
# Needs python3 with numpy.
set -euo pipefail
cd "$(dirname "$0")/../.."
EPOCHS=${EPOCHS:-100}
if [ "${THREADS:-}" = 1 ]; then export MATMUL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1; fi
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
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
