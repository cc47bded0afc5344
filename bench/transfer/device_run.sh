#!/usr/bin/env bash
# One device call for the transfer work (issue 13): the transfer tests (GPU and CPU), compute-sanitizer
# memcheck on the GPU copy tests, and the transfer bench, from a build/transfer carried over from a
# build machine (sm_90, with its Boost.Test and cudart bundled in build/transfer/runtime-libs).
# Writes device.txt, tests.log, bench.log, transfer.csv and sanitizer.log to $OUT.
#   bench/transfer/device_run.sh [prepare]
set -uo pipefail
cd "$(dirname "$0")/../.."
b=build/transfer
if [[ "${1:-}" == prepare ]]; then
  rm -rf "$b/runtime-libs" && mkdir -p "$b/runtime-libs"
  for e in "$b"/tests/transfer/test_transfer_* "$b"/bench/transfer/kvtier-bench-transfer; do
    ldd "$e" | awk '/boost|cudart/ {print $3}'
  done | sort -u | xargs -r -I{} cp -L {} "$b/runtime-libs/"
  exit 0
fi
out="${OUT:-$b/device-out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/$b/runtime-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cuBLAS (the bench's GEMM) from the CUDA toolkit, or else from the image's nvidia-cublas wheel.
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
[[ -n "$cublas_dir" ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$cublas_dir"
nvidia-smi --query-gpu=name,driver_version,pcie.link.gen.current,pcie.link.width.current,clocks.sm,power.draw \
  --format=csv 2>&1 | tee "$out/device.txt"
rc=0
for t in gpu_copy planner cpu_copy fast_divmod; do
  "$b/tests/transfer/test_transfer_$t" --log_level=test_suite --report_level=short >>"$out/tests.log" 2>&1
  r=$?; echo "test_transfer_$t: exit $r" | tee -a "$out/tests.log"; [[ $r -eq 0 ]] || rc=1
done
"$b/bench/transfer/kvtier-bench-transfer" "$out/transfer.csv" ${KVTIER_BENCH_ARGS:-} >"$out/bench.log" 2>&1
r=$?; echo "bench: exit $r"; [[ $r -eq 0 ]] || rc=1
timeout "${KVTIER_SANITIZER_S:-200}" compute-sanitizer --tool memcheck --error-exitcode 3 \
  "$b/tests/transfer/test_transfer_gpu_copy" \
  --run_test=staged_and_mixed_match_cpu_path,narrow_vector_fallbacks,per_layer_events_complete_in_order \
  >"$out/sanitizer.log" 2>&1
r=$?; echo "sanitizer: exit $r"; tail -n 4 "$out/sanitizer.log"; [[ $r -eq 0 ]] || rc=1
grep -E '^\|' "$out/bench.log" | grep -E 'staged|planner|mixed|contiguous|per layer' | tail -n 80
exit $rc
