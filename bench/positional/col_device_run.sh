#!/usr/bin/env bash
# One device call for issue 15 (RoPE on load, compute or load): the GPU RoPE test, the RoPE-on-load
# bench, the compute-or-load TTFT bench, then the GPU copy regression test, from build/col-carry
# (binaries built here for sm_90 plus Boost.Test and cudart; cuBLAS from the GPU machine's toolkit).
#   bench/positional/col_device_run.sh prepare   # here, after building build/col-cuda
#   bench/positional/col_device_run.sh           # on the GPU machine (carry build/col-carry)
set -uo pipefail
cd "$(dirname "$0")/../.."
c=build/col-carry
if [[ "${1:-}" == prepare ]]; then
  b=build/col-cuda
  rm -rf "$c" && mkdir -p "$c/lib"
  cp "$b/tests/transfer/test_transfer_rope_gpu" "$b/tests/transfer/test_transfer_gpu_copy" \
     "$b/bench/positional/kvtier-bench-rope-load" "$b/bench/engine/kvtier-bench-compute-or-load" "$c/"
  for e in "$c"/test_* "$c"/kvtier-*; do ldd "$e" | awk '/boost|cudart/ {print $3}'; done | sort -u | xargs -r -I{} cp -L {} "$c/lib/"
  du -sh "$c"
  exit 0
fi
out="${OUT:-build/col-device-out}"
mkdir -p "$out"
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="$PWD/$c/lib:/usr/local/cuda/lib64${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$out/device.txt"
rc=0
timeout 60 "$c/test_transfer_rope_gpu" --log_level=message --report_level=short >"$out/rope_gpu.log" 2>&1
r=$?; echo "rope_gpu: exit $r"; grep -aE "error|failed|passed|No errors" "$out/rope_gpu.log" | tail -5; [[ $r -eq 0 ]] || rc=1
timeout 60 "$c/kvtier-bench-rope-load" "$out/rope-load-h200.csv" >"$out/rope_load.log" 2>&1
r=$?; echo "rope-load bench: exit $r"; grep -E '^\||GB/s' "$out/rope_load.log"; [[ $r -eq 0 ]] || rc=1
timeout "${KVTIER_COL_S:-150}" "$c/kvtier-bench-compute-or-load" "$out/compute-or-load-h200.csv" 32256 16128 >"$out/col.log" 2>&1
r=$?; echo "compute-or-load bench: exit $r"; grep -vE '^$' "$out/col.log" | tail -12; [[ $r -eq 0 ]] || rc=1
timeout 40 "$c/test_transfer_gpu_copy" --report_level=short >"$out/gpu_copy.log" 2>&1
r=$?; echo "gpu_copy: exit $r"; tail -3 "$out/gpu_copy.log"
exit $rc
