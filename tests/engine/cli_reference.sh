#!/usr/bin/env bash
# kvtier-engine as llama2.c's run: `--temperature 0 --steps 256`, no prompt, prints exactly the
# reference text of stories260K (and, with a prompt, the prompt followed by its continuation).
# usage: cli_reference.sh KVTIER_ENGINE MODEL_DIR REFERENCE_TXT
set -euo pipefail
engine=$1 model=$2 reference=$3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$engine" --model "$model" --temperature 0 --steps 256 >"$out" 2>/dev/null
if ! cmp -s "$out" "$reference"; then
  echo "kvtier-engine printed:"; cat "$out"; echo "expected:"; cat "$reference"; exit 1
fi
prompted=$("$engine" --model "$model" --prompt "Once upon a time, there was a little girl named Lily." --temperature 0 --steps 40 2>/dev/null)
[[ "$prompted" == "Once upon a time, there was a little girl named Lily. "* ]] || { echo "prompt not echoed: $prompted"; exit 1; }
# steps counts prompt and generated tokens together: 40 positions print 39 tokens.
echo "ok: $(wc -c <"$reference") bytes as the reference; prompted: ${prompted:0:80}..."
