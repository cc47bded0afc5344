#!/bin/sh
# Builds the prefix-index fuzz target with clang's libFuzzer (+ASan/UBSan) and runs it.
#   tests/index/run_fuzz.sh [SECONDS] [extra libFuzzer flags...]   (default 300 s)
# The corpus is kept in build/index-fuzz/corpus; crashes land in build/index-fuzz/.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
out="$src/build/index-fuzz"
seconds=${1:-300}
[ $# -gt 0 ] && shift
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$cxx" ]; then echo "run_fuzz.sh: clang++ not found (apt-get install clang)" >&2; exit 2; fi
mkdir -p "$out/corpus"
"$cxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src/include" -I"$src/tests" "$src/tests/index/fuzz_radix_index.cpp" -lxxhash -o "$out/fuzz_radix_index"
cd "$out"
exec ./fuzz_radix_index -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$@" corpus
