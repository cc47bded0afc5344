#!/usr/bin/env bash
# kvtier-replay with bad arguments and hostile input (issue 9): each case runs the program and
# checks its exit status, its message and what it left on disk.
#   replay_cli.sh CASE KVTIER_REPLAY WORKDIR [sanitized]
set -u
case_name=$1 replay=$2 work=$3 sanitized=${4:-}
rm -rf "$work" && mkdir -p "$work" || exit 1
cd "$work" || exit 1
fail() { echo "FAIL ($case_name): $*"; exit 1; }

# A small valid trace: two requests that share their first 512-token block.
printf '%s\n' '{"timestamp": 0, "input_length": 600, "output_length": 4, "hash_ids": [1, 2]}' \
              '{"timestamp": 1, "input_length": 700, "output_length": 4, "hash_ids": [1, 3]}' > small.jsonl

# Runs the replayer; its status in $rc, stdout+stderr in $out.
run() { out=$("$replay" "$@" 2>&1); rc=$?; printf '%s\n' "$out" | head -5; }
expect_rc() { [ "$rc" -eq "$1" ] || fail "exit status $rc, expected $1"; }
expect_msg() { printf '%s' "$out" | grep -qF -- "$1" || fail "no message \"$1\""; }

case $case_name in
  fractional_counts)  # used to be rounded silently: --capacity 0.4 ran with capacity 0
    run small.jsonl --capacity 0.4 --no-progress; expect_rc 2; expect_msg "--capacity 0.4: not a whole number"
    run small.jsonl --page-size 1.5 --no-progress; expect_rc 2; expect_msg "--page-size 1.5: not a whole number"
    run small.jsonl --capacity -3 --no-progress; expect_rc 2; expect_msg "--capacity -3: not a count"
    run small.jsonl --capacity 0.1M --page-size 16 --no-progress; expect_rc 0
    expect_msg "capacity 100000 tokens" ;;
  page_larger_than_every_prompt)  # used to print "inf ns per page"
    run small.jsonl --page-size 1024 --no-progress; expect_rc 1
    expect_msg "no prompt of small.jsonl fills one 1024-token page (the longest has 700 tokens)"
    printf '%s' "$out" | grep -q "inf ns" && fail "printed inf ns per page" ;;
  out_is_a_file)  # used to end in an uncaught std::filesystem::filesystem_error (SIGABRT)
    : > a_file
    run small.jsonl --sweep --out a_file --capacities 1000 --policies lru; expect_rc 2
    expect_msg "--out a_file is not a directory" ;;
  no_shell_injection)  # --out used to reach std::system("gnuplot '<out>/sweep.gp'")
    shell_dir="s'; touch INJECTED_SHELL; '"
    gnuplot_dir="g'; system('touch INJECTED_GNUPLOT'); '"
    run small.jsonl --sweep --out "$shell_dir" --capacities 1000,inf --policies lru --no-progress
    [ -f "$shell_dir/sweep.csv" ] || fail "no sweep.csv in the --out directory"
    run small.jsonl --sweep --out "$gnuplot_dir" --capacities 1000,inf --policies lru --no-progress
    [ -f "$gnuplot_dir/sweep.csv" ] || fail "no sweep.csv in the --out directory"
    run small.jsonl --sweep --out "n
x" --capacities 1000 --policies lru; expect_rc 2; expect_msg "--out must not hold control characters"
    [ -e INJECTED_SHELL ] && fail "the shell ran a command taken from --out"
    [ -e INJECTED_GNUPLOT ] && fail "gnuplot ran a command taken from --out"
    command -v gnuplot > /dev/null || echo "note: gnuplot is not installed; the gnuplot-level case checked the script only"
    grep -qF "'g''; system(''touch INJECTED_GNUPLOT''); ''/sweep.csv'" "$gnuplot_dir/sweep.gp" ||
      fail "sweep.gp does not quote the --out path" ;;
  out_of_memory)  # a valid 4 MB line (600,000 blocks) under a 1 GB limit used to abort on std::bad_alloc
    if [ -n "$sanitized" ]; then echo "SKIPPED: a sanitizer build cannot run under ulimit -v"; exit 77; fi
    { printf '{"timestamp": 0, "input_length": %d, "output_length": 1, "hash_ids": [' $((600000 * 512))
      seq -s, 0 599999 | tr -d '\n'; printf ']}\n'; } > huge.jsonl
    out=$(ulimit -v 1000000; "$replay" huge.jsonl --no-progress 2>&1); rc=$?
    printf '%s\n' "$out" | head -3
    expect_rc 1; expect_msg "out of memory while replaying huge.jsonl"; expect_msg "raise its memory limit" ;;
  *) fail "unknown case" ;;
esac
echo "PASS ($case_name)"
