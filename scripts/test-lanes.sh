#!/usr/bin/env bash
# Run make targets in lanes that go on at the same time:
#
#   scripts/test-lanes.sh "labs:test-integration" "local:test-local test-molecule"
#
# Inside a lane the targets run one after another, and a failed one does not
# stop the next. Every line a lane prints is prefixed with its name ("labs| ")
# and also kept, unprefixed, in $LANES_LOG_DIR/<lane>.log. At the end: one
# line per lane (passed/FAILED, seconds, the targets that failed), under a
# failed lane its failed tests and scenarios again; the exit status is 1 if
# any target of any lane failed.
#
# Why lanes: the lab drills spend most of their time waiting on nodes (boot,
# timers, health checks), which leaves a core free for the loopback tests,
# Molecule and the linters. Lanes share nothing they could race on: each lab
# and scenario has its own containers, Docker network and subnet, and the
# collection's wheel cache is locked.
set -uo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 'lane:target [target ...]' ..." >&2
  exit 2
fi
make_cmd="${MAKE:-make}"
log_dir="${LANES_LOG_DIR:-build/lanes}"
mkdir -p "$log_dir"

run_lane() {  # name targets...; writes "<failed targets>" to <name>.failed
  local name="$1"; shift
  local failed=() target
  for target in "$@"; do
    echo "== make $target"
    "$make_cmd" --no-print-directory "$target" || { echo "== make $target FAILED"; failed+=("$target"); }
  done
  printf '%s\n' "${failed[*]:-}" > "$log_dir/$name.failed"
}

names=()
for spec in "$@"; do
  name="${spec%%:*}"
  targets="${spec#*:}"
  if [ -z "$name" ] || [ "$name" = "$spec" ] || [ -z "${targets// /}" ]; then
    echo "$0: '$spec' is not 'lane:target [target ...]'" >&2
    exit 2
  fi
  names+=("$name")
  rm -f "$log_dir/$name.failed"
  # shellcheck disable=SC2086  # the targets are words
  ( start=$(date +%s)
    run_lane "$name" $targets 2>&1 | tee "$log_dir/$name.log" | sed -u "s/^/$name| /"
    echo "$(( $(date +%s) - start ))" > "$log_dir/$name.seconds" ) &
done
wait

rc=0
echo "== lanes"
for name in "${names[@]}"; do
  seconds="$(cat "$log_dir/$name.seconds" 2>/dev/null || echo '?')"
  if [ ! -f "$log_dir/$name.failed" ]; then
    echo "== $name: FAILED in ${seconds}s (the lane ended before reporting; see $log_dir/$name.log)"
    rc=1
  elif [ -n "$(tr -d '[:space:]' < "$log_dir/$name.failed")" ]; then
    echo "== $name: FAILED in ${seconds}s: make $(cat "$log_dir/$name.failed")"
    # what failed, again at the very end of a long log: pytest's summary lines,
    # the failed Molecule scenarios and targets
    grep -E '^(FAILED|ERROR) tests/|^== .* FAILED$|^molecule scenarios failed' "$log_dir/$name.log" \
      | tail -n 40 | sed "s/^/$name| /"
    rc=1
  else
    echo "== $name: passed in ${seconds}s"
  fi
done
exit $rc
