#!/usr/bin/env bash
# One device call for issue 18 (CacheBlend on the CUDA backend): the GPU tests of tests/blend
# (partial prefill and blending against full prefill; GPU selection against the CPU reference), the
# attention cases of engine.cuda_kernels (flash_prefill with row positions and without), the TTFT
# bench (8 x 2K-token chunks + a 64-token question, llama3-8b shape; then the issue's 6 x 512 + 100),
# then compute-sanitizer on the partial-prefill test's scattered-rows case while time is left, from
# build/blend-carry (binaries of the committed tree built here for
# sm_90 plus Boost.Test, cudart, xxHash, liburing; cuBLAS from the GPU machine's toolkit or pip's
# nvidia.cublas). Logs and CSV to $OUT; every step under `timeout`, about 150 s in all.
#   bench/blend/device_run.sh prepare   # here: build build/blend-gpu-head, bundle build/blend-carry
#   bench/blend/device_run.sh           # on the GPU machine (carry build/blend-carry)
set -uo pipefail
cd "$(dirname "$0")/../.."
c=build/blend-carry
if [[ "${1:-}" == prepare ]]; then
  export PATH="$PATH:/usr/local/cuda/bin"
  # Built from the committed tree (HEAD, exported to build/blend-src), not from the shared working
  # tree's uncommitted edits of other parts; KVTIER_PREPARE_TREE=1 builds the working tree instead.
  if [[ "${KVTIER_PREPARE_TREE:-0}" == 1 ]]; then src=.; b=build/blend-gpu; else
    src=build/blend-src; b=build/blend-gpu-head
    rm -rf "$src" && mkdir -p "$src" && git archive HEAD | tar -x -m -C "$src" || exit 1  # -m: fresh mtimes, ninja rebuilds (ccache hits what is unchanged)
    git rev-parse HEAD >"$src/COMMIT"
  fi
  cmake -S "$src" -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DKVTIER_PARTS="blend;engine" \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache >"$b.configure.log" 2>&1 || { cat "$b.configure.log"; exit 1; }
  cmake --build "$b" -j "${KVTIER_JOBS:-2}" --target test_blend_partial_prefill_gpu test_blend_select_gpu test_engine_cuda_kernels \
    kvtier-bench-blend-ttft || exit 1
  rm -rf "$c" && mkdir -p "$c/lib"
  cp "$b/tests/blend/test_blend_partial_prefill_gpu" "$b/tests/blend/test_blend_select_gpu" "$b/tests/engine/test_engine_cuda_kernels" \
    "$b/bench/blend/kvtier-bench-blend-ttft" "$c/"
  strip "$c"/test_* "$c"/kvtier-*
  for e in "$c"/test_* "$c"/kvtier-*; do ldd "$e" | awk '/boost|cudart|xxhash|uring/ {print $3}'; done | sort -u | xargs -r -I{} cp -L {} "$c/lib/"
  [[ -f "$src/COMMIT" ]] && cp "$src/COMMIT" "$c/COMMIT"
  ls -la "$c" "$c/lib"
  du -sh "$c"
  exit 0
fi
out="${OUT:-build/blend-device-out}"
mkdir -p "$out"
export PATH="$PATH:/usr/local/cuda/bin"
cublas_dir=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="$PWD/$c/lib:/usr/local/cuda/lib64${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVTIER_ENGINE_MODELS_DIR="$PWD/models"  # stories260K in this checkout (the binary's path is the build machine's)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$out/device.txt"
echo "binaries of commit $(cat "$c/COMMIT" 2>/dev/null || echo '(working tree)')" | tee -a "$out/device.txt"
rc=0
timeout 30 "$c/test_blend_partial_prefill_gpu" --log_level=message --report_level=short >"$out/partial_prefill_gpu.log" 2>&1
r=$?; echo "partial_prefill_gpu: exit $r"; grep -aE "error|rel L2|fail|passed|No errors|SKIPPED" "$out/partial_prefill_gpu.log" | tail -40; [[ $r -eq 0 ]] || rc=1
timeout 15 "$c/test_blend_select_gpu" --log_level=message --report_level=short >"$out/select_gpu.log" 2>&1
r=$?; echo "select_gpu: exit $r"; grep -aE "error|fail|passed|No errors|SKIPPED|ms" "$out/select_gpu.log" | tail -8; [[ $r -eq 0 ]] || rc=1
timeout 20 "$c/test_engine_cuda_kernels" --log_level=message --report_level=short \
  --run_test=flash_prefill_matches_reference,flash_prefill_with_row_positions_matches_reference,paged_attention_matches_reference \
  >"$out/cuda_kernels.log" 2>&1
r=$?; echo "engine.cuda_kernels (attention): exit $r"; grep -aE "error|fail|flash|passed|No errors|SKIPPED" "$out/cuda_kernels.log" | tail -16; [[ $r -eq 0 ]] || rc=1
timeout 60 "$c/kvtier-bench-blend-ttft" "$out/blend-ttft-h200.csv" >"$out/blend_ttft.log" 2>&1
r=$?; echo "blend-ttft bench: exit $r"; grep -vE '^$' "$out/blend_ttft.log" | tail -30; [[ $r -eq 0 ]] || rc=1
timeout 20 "$c/kvtier-bench-blend-ttft" "$out/blend-ttft-6x512-h200.csv" 6 512 100 >"$out/blend_ttft_6x512.log" 2>&1
r=$?; echo "blend-ttft bench, 6 x 512 + 100: exit $r"; grep -E '^\||^full|baseline' "$out/blend_ttft_6x512.log"; [[ $r -eq 0 ]] || rc=1
left=$((148 - SECONDS))
if command -v compute-sanitizer >/dev/null && [[ $left -gt 5 ]]; then
  timeout "$left" compute-sanitizer --tool memcheck --error-exitcode 3 "$c/test_blend_partial_prefill_gpu" \
    --run_test=a_subset_over_full_kv_gives_full_logits >"$out/sanitizer.log" 2>&1
  r=$?; echo "compute-sanitizer memcheck (scattered rows, ${left} s allowed): exit $r"; tail -4 "$out/sanitizer.log"; [[ $r -eq 0 || $r -eq 124 ]] || rc=1
else
  echo "compute-sanitizer: not run (missing or no time left: $left s)"
fi
echo "device_run: exit $rc after $SECONDS s"
exit $rc
