#!/usr/bin/env bash
# gradscope against the JAX peer on one depth sweep, from one command:
#   benches/peers/run.sh                  # log:1..2000:64, width 256, batch 32, tanh
#   DEPTHS=log:1..300:24 ACT=sigmoid benches/peers/run.sh
# Prints the wall-time ratio (JAX's compile time counted), the float64 agreement on shared
# weights and where JAX's float32 underflows. Needs python3; installs jax + numpy into
# benches/peers/.venv (git-ignored) on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEPTHS=${DEPTHS:-log:1..2000:64}
WIDTH=${WIDTH:-256}
BATCH=${BATCH:-32}
ACT=${ACT:-tanh}
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/peers}
PEERS=benches/peers
PY=$PEERS/.venv/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv "$PEERS/.venv"
  "$PEERS/.venv/bin/pip" install -q jax numpy
fi
cargo build --release -q
G=${CARGO_TARGET_DIR:-target}/release/gradscope
rm -rf "$OUT"
mkdir -p "$OUT"
LMAX=$(cd $PEERS && ../../$PY -c "import jax_peer; print(jax_peer.parse_depths('$DEPTHS')[-1])")
now() { date +%s.%N; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

t0=$(now)
$G sweep --activations "$ACT" --widths "$WIDTH" --batch "$BATCH" --depths "$DEPTHS" --backend cpu -o "$OUT/sweep" -q
t1=$(now)
$PY $PEERS/jax_peer.py --width "$WIDTH" --batch "$BATCH" --depths "$DEPTHS" --activation "$ACT" --dtype float64 > "$OUT/jax_float64.json"
t2=$(now)
$PY $PEERS/jax_peer.py --width "$WIDTH" --batch "$BATCH" --depths "$DEPTHS" --activation "$ACT" --dtype float32 > "$OUT/jax_float32.json"
t3=$(now)
cat > "$OUT/times.json" <<JSON
{"gradscope": $(echo "$t1 - $t0" | bc), "jax_float64": $(echo "$t2 - $t1" | bc), "jax_float32": $(echo "$t3 - $t2" | bc),
 "depths": "$DEPTHS", "width": $WIDTH, "batch": $BATCH, "activation": "$ACT"}
JSON

# Shared weights: the deepest network's (its prefixes are the shallower ones), gradscope's
# own inputs (seed 0, reproduced bit for bit by the peer's Philox), zero targets.
$G probe --backend cpu --width "$WIDTH" --depth "$LMAX" --batch "$BATCH" -a "$ACT" --save-weights "$OUT/w.npz" -o "$OUT/probe_deepest.json" > /dev/null
for dt in float64 float32; do
  $PY $PEERS/jax_peer.py --width "$WIDTH" --batch "$BATCH" --depths "$DEPTHS" --activation "$ACT" --dtype $dt \
    --weights "$OUT/w.npz" --gradscope-inputs 0 --out "$OUT/shared_$dt.npz" > "$OUT/shared_$dt.json"
done
rm -f "$OUT/w.npz"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
$PY $PEERS/compare.py "$OUT"
