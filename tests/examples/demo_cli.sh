#!/usr/bin/env bash
# kvtier-demo with bad arguments (issue 9): each case checks the exit status, the message, and that
# no temporary directory is left behind ($TMPDIR points at a private, checked directory).
#   demo_cli.sh CASE KVTIER_DEMO WORKDIR
set -u
case_name=$1 demo=$2 work=$3
rm -rf "$work" && mkdir -p "$work/tmp" || exit 1
export TMPDIR=$work/tmp
fail() { echo "FAIL ($case_name): $*"; exit 1; }
# Runs the demo with a time limit (the old --sessions -1 ran for ever); status in $rc, output in $out.
run() { out=$(timeout 60 "$demo" "$@" 2>&1); rc=$?; printf '%s\n' "$out" | head -3; }
expect_rc() { [ "$rc" -eq "$1" ] || fail "exit status $rc, expected $1"; }
expect_msg() { printf '%s' "$out" | grep -qF -- "$1" || fail "no message \"$1\""; }
expect_no_temp_dir() { [ -z "$(ls -A "$TMPDIR")" ] || fail "left behind: $(ls -A "$TMPDIR")"; }

case $case_name in
  negative_sessions)  # "-1" used to wrap to 2^64 - 1 sessions
    run --sessions -1 --no-redis; expect_rc 2; expect_msg "--sessions -1: give the number of chat sessions"
    run --sessions 0 --no-redis; expect_rc 2
    run --device-pages 18446744073709551616 --no-redis; expect_rc 2; expect_msg "--device-pages"
    expect_no_temp_dir ;;
  bad_redis)  # "localhost:abc" used to run without Redis (port 0, host never resolved)
    run --sessions 5 --redis localhost:abc; expect_rc 2
    expect_msg "--redis localhost:abc: the port must be a number from 1 to 65535"
    run --sessions 5 --redis localhost:0; expect_rc 2
    run --sessions 5 --redis localhost; expect_rc 2; expect_msg "give HOST:PORT"
    expect_no_temp_dir ;;
  unresolvable_redis_host)  # a typo in the host used to look like "no Redis running"
    run --sessions 5 --redis no-such-host.invalid:6379
    case "$out" in *"built without the Redis tier"*) echo "SKIPPED: built without the Redis tier"; exit 77 ;; esac
    expect_rc 1; expect_msg "cannot resolve the Redis host 'no-such-host.invalid'"
    expect_no_temp_dir ;;
  signal_removes_temp_dir)  # SIGTERM in the middle of a run used to leave /tmp/kvtier-demo-* behind
    "$demo" --sessions 1000000 --no-redis > "$work/out.txt" 2>&1 & pid=$!
    for _ in $(seq 300); do [ -n "$(ls -A "$TMPDIR")" ] && break; sleep 0.05; done
    if [ -z "$(ls -A "$TMPDIR")" ]; then
      kill -KILL $pid
      grep -q "built without liburing" "$work/out.txt" && { echo "SKIPPED: no file tier (built without liburing)"; exit 77; }
      fail "the demo made no temporary directory in \$TMPDIR"
    fi
    sleep 0.3
    kill -TERM $pid; wait $pid; rc=$?
    cat "$work/out.txt" | tail -1
    expect_rc 143; expect_no_temp_dir ;;
  *) fail "unknown case" ;;
esac
echo "PASS ($case_name)"
