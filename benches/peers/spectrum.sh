#!/usr/bin/env bash
# gradscope spectrum against plain numpy on one network, in the same run:
#   benches/peers/spectrum.sh                      # width 512, depth 1000, tanh at its critical point
#   WIDTH=256 DEPTH=200 THREADED=0 benches/peers/spectrum.sh
# Rows: gradscope (QR every layer, graded Jacobi SVD), the same QR algorithm written plainly in
# numpy (one and the default number of BLAS threads), and numpy.linalg.svd of the explicit
# product at SVD_DEPTH. Prints wall and CPU (user+sys) seconds: on a shared machine CPU time is
# the steadier figure. Needs python3 with numpy (a venv in benches/peers/.venv if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
WIDTH=${WIDTH:-512}
DEPTH=${DEPTH:-1000}
SVD_DEPTH=${SVD_DEPTH:-30}
PEERS=benches/peers
PY=python3
if ! $PY -c "import numpy" 2>/dev/null; then
  PY=$PEERS/.venv/bin/python
  [ -x "$PY" ] || { python3 -m venv "$PEERS/.venv"; "$PEERS/.venv/bin/pip" install -q numpy; }
fi
cargo build --release -q
G=${G:-${CARGO_TARGET_DIR:-target}/release/gradscope}
OUT=$(mktemp -d)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %U %S" -o "$OUT/t" "$@" > "$OUT/o" 2>/dev/null
  read -r wall user sys < "$OUT/t"
  printf "%-34s wall %8.1f s   cpu %8.1f s\n" "$label" "$wall" "$(echo "$user + $sys" | bc)"
}
run "gradscope spectrum (f64)" $G spectrum -a tanh --width "$WIDTH" --depth "$DEPTH" --sigma-w2 1.7610 --sigma-b2 0.05 --examples 1 --backend cpu
grep -A1 "^example" "$OUT/o" | tail -1
# The fair single-core row against 1 BLAS thread: matrixmultiply's threads off.
run "gradscope spectrum, 1 thread" env MATMUL_NUM_THREADS=1 $G spectrum -a tanh --width "$WIDTH" --depth "$DEPTH" --sigma-w2 1.7610 --sigma-b2 0.05 --examples 1 --backend cpu
run "numpy plain QR, 1 BLAS thread" env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $PY $PEERS/spectrum_numpy.py --width "$WIDTH" --depth "$DEPTH" --method qr
$PY -c "import json,sys; d=json.load(open('$OUT/o')); print('  top', d['top'], 'bottom', d['bottom'], 'lost to underflow', d['lost_to_underflow'])"
# On a machine shared with other jobs OpenBLAS's threads oversubscribe the cores (10× slower
# here at depth 100); THREADED=0 leaves this row out.
[ "${THREADED:-1}" = 1 ] && run "numpy plain QR, default threads" $PY $PEERS/spectrum_numpy.py --width "$WIDTH" --depth "$DEPTH" --method qr
run "numpy svd of J, depth $SVD_DEPTH" env OPENBLAS_NUM_THREADS=1 $PY $PEERS/spectrum_numpy.py --width "$WIDTH" --depth "$SVD_DEPTH" --method svd
$PY -c "import json,sys; d=json.load(open('$OUT/o')); print('  top', d['top'], 'bottom', d['bottom'])"
run "gradscope spectrum, depth $SVD_DEPTH" $G spectrum -a tanh --width "$WIDTH" --depth "$SVD_DEPTH" --sigma-w2 1.7610 --sigma-b2 0.05 --examples 1 --backend cpu
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$OUT"
