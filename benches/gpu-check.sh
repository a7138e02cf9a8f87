#!/usr/bin/env bash
# The GPU check, for a machine with a real GPU (sized to finish within ~5 minutes there,
# release build included): builds, lists the adapters, runs the GPU–CPU cross-check
# (`gradscope probe --backend gpu --check`) at two sizes, one probe with spectral norms on the
# device and on the host, one sweep with 16 configurations per dispatch and one at a time,
# and the GPU benchmarks
# (benches/gpu.rs: the probe and our matmul kernels on widths 256/1024/4096 × batch
# 1/32/256, beside the chip's published fp32 peak), and prints one table.
#
#   benches/gpu-check.sh          # on a real GPU
#   benches/gpu-check.sh --tiny   # tiny sizes, for a software adapter (Mesa's lavapipe) or CI
#
# GRADSCOPE_FP32_PEAK_TFLOPS=… supplies the peak for a chip benches/gpu.rs does not know;
# WGPU_ADAPTER_NAME=… picks the adapter. Logs go to target/gpu-check/.
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
LOG=${CARGO_TARGET_DIR:-target}/gpu-check
mkdir -p "$LOG"
t_start=$(date +%s)

echo "== build (release)"
cargo build --release -q
cargo bench --bench gpu --no-run -q 2> "$LOG/bench-build.log" || { cat "$LOG/bench-build.log"; exit 1; }
G=${CARGO_TARGET_DIR:-target}/release/gradscope

echo "== gradscope devices"
$G devices | tee "$LOG/devices.txt"

if [ $TINY = 1 ]; then
  CHECKS=("tanh 64 20 8" "relu 128 10 16")
  export GRADSCOPE_BENCH_TINY=1
else
  # depth × width × batch: a deep tanh run (log-domain drift over 1,000 layers) and a wide
  # one at the target's shape (the CPU reference spends most of its time in Lanczos here).
  CHECKS=("tanh 1024 1000 64" "relu 4096 6 256")
fi

rows=()
for c in "${CHECKS[@]}"; do
  read -r act width depth batch <<< "$c"
  echo "== probe --backend gpu --check -a $act --width $width --depth $depth --batch $batch"
  f="$LOG/check-$act-$width-$depth-$batch.txt"
  set +e
  $G probe --backend gpu --check -a "$act" --width "$width" --depth "$depth" --batch "$batch" > "$f" 2>&1
  rc=$?
  set -e
  verdict=$(grep -E "^(PASS|FAIL)" "$f" | head -1)
  secs=$(grep -oE "^backend gpu .*, [0-9.]+ s" "$f" | grep -oE "[0-9.]+ s$" || true)
  echo "$verdict"
  rows+=("$(printf "%-26s %-8s rc=%s  %s" "$act ${width}x${depth}x${batch}" "${secs:-?}" "$rc" "$verdict")")
done

# Spectral norms on the device against the host's f64 Lanczos, same probe.
if [ $TINY = 1 ]; then NORMS="tanh 64 50 8"; else NORMS="tanh 1024 2000 64"; fi
read -r act width depth batch <<< "$NORMS"
for where in device host; do
  echo "== GRADSCOPE_GPU_NORMS=$where probe --backend gpu -a $act --width $width --depth $depth --batch $batch"
  t0=$(date +%s%N)
  GRADSCOPE_PROFILE=1 GRADSCOPE_GPU_NORMS=$where $G probe --backend gpu -a "$act" --width "$width" --depth "$depth" --batch "$batch" \
    --out "$LOG/norms-$where.json" > "$LOG/norms-$where.txt" 2>&1 || echo "FAILED (see $LOG/norms-$where.txt)"
  rows+=("$(printf "%-26s %6.1f s  spectral norms on the %s" "$act ${width}x${depth}x${batch}" "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { print (b - a) / 1e9 }')" "$where")")
done
python3 - "$LOG/norms-device.json" "$LOG/norms-host.json" <<'PY' | tee "$LOG/norms-diff.txt" || true
import json, sys
d, h = (json.load(open(f)) for f in sys.argv[1:3])
pairs = [(a["log10_weight_norm"], b["log10_weight_norm"]) for a, b in zip(d["layers"], h["layers"])]
diff = max(abs(a - b) for a, b in pairs if a is not None and b is not None)
print(f"max |log10 ||W|| device - host| = {diff:.2e} decades over {len(d['layers'])} layers")
PY
rows+=("$(cat "$LOG/norms-diff.txt" 2>/dev/null || echo "norms comparison unavailable")")

# Sweep configurations sharing dispatches (the default, 16 per dispatch) against one at a time.
if [ $TINY = 1 ]; then SWEEP="--widths 32 --depths log:1..40:8 --batch 4"; else SWEEP="--widths 256 --depths log:1..1000:20 --batch 16"; fi
for per in 16 1; do
  rm -rf "$LOG/sweep-$per"
  t0=$(date +%s%N)
  # shellcheck disable=SC2086
  GRADSCOPE_NETS_PER_DISPATCH=$per $G sweep --backend gpu -q -o "$LOG/sweep-$per" --activations tanh,relu,sigmoid \
    --sigma-w2 0.5,1,1.5,2,3 $SWEEP > "$LOG/sweep-$per.txt" 2>&1 || echo "FAILED (see $LOG/sweep-$per.txt)"
  rows+=("$(printf "%-26s %6.1f s  sweep, %s configurations per dispatch" "15 configs, $SWEEP" "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { print (b - a) / 1e9 }')" "$per")")
done
cmp -s "$LOG/sweep-16/summary.csv" "$LOG/sweep-1/summary.csv" && rows+=("sweep summaries identical (16 vs 1 per dispatch)") || rows+=("SWEEP SUMMARIES DIFFER (16 vs 1 per dispatch)")

echo "== cargo bench --bench gpu"
cargo bench --bench gpu 2>&1 | tee "$LOG/bench.txt" | grep -E "^(gpu/|SKIPPED)" || true

echo
echo "================ gradscope GPU check ($(( $(date +%s) - t_start )) s) ================"
grep -E "^name|Vulkan|Metal|Dx12|Gl " "$LOG/devices.txt" | head -5
echo "-- GPU vs f64 CPU reference (probe --check): shape, GPU probe time, verdict"
printf '%s\n' "${rows[@]}"
echo "-- Submission profile (GRADSCOPE_PROFILE=1, with device time per kernel family where the adapter has timestamp queries) of the two probes above: device norms, host norms"
grep -h "profile (" "$LOG/norms-device.txt" "$LOG/norms-host.txt" || true
echo "-- GPU benchmarks (benches/gpu.rs)"
sed -n '/^GPU backend on/,$p' "$LOG/bench.txt"
grep -q "^SKIPPED" "$LOG/bench.txt" && grep "^SKIPPED" "$LOG/bench.txt"
exit 0
