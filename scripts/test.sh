#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs every check and test.
# Ends with one plain line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
DENO=tools/deno/node_modules/deno/deno
export NO_COLOR=1
# This run's prefix for the namespaces and bpffs folders the tests make (tests/lib/netns.ts
# testPrefix), so that what an interrupted run leaves (deno test exits at once on Ctrl-C,
# before the tests' own clean-up) can be found and removed.
export EINAT_TEST_PREFIX=${EINAT_TEST_PREFIX:-einat$$}
# shellcheck source=scripts/lib/sweep.sh
. scripts/lib/sweep.sh
interrupted() {
  echo "interrupted: removing this run's namespaces and bpffs folders"
  sweep
}
trap 'interrupted; echo "0 passed, 1 failed"; exit 130' TERM
# The full suite (EINAT_FULL=1): 1,000,000 fuzzed packets and a 10-minute soak instead of
# CI's seeded 20,000 packets and 30 s.
if [[ ${EINAT_FULL:-0} == 1 ]]; then
  export EINAT_FUZZ_COUNT=${EINAT_FUZZ_COUNT:-1000000} EINAT_SOAK_SECONDS=${EINAT_SOAK_SECONDS:-600}
fi

checks_failed=0
echo "== deno check / lint / fmt, clang-format"
"$DENO" check main.ts lib/ tests/ bench/ || checks_failed=1
"$DENO" lint || checks_failed=1
"$DENO" fmt --check || checks_failed=1
make -s -C bpf format-check || checks_failed=1

echo "== deno test"
log=$(mktemp)
"$DENO" test -A --parallel "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# deno test exits 130 on Ctrl-C (SIGINT reaches it too), by itself: bash runs no INT trap then.
if ((rc == 130 || rc == 143)); then
  interrupted
else
  # A test process that died (a native crash aborts deno test: no test's own clean-up runs)
  # leaves its namespaces, with a daemon in one maybe: named here, then removed.
  left=$(leftovers)
  if [[ -n $left ]]; then
    echo "left behind by the tests (removed now):"
    sed 's/^/  /' <<<"$left"
    sweep
  fi
fi
summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -1)
rm -f "$log"
passed=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
[[ $passed =~ ^[0-9]+$ ]] || passed=0
[[ $failed =~ ^[0-9]+$ ]] || failed=$((rc != 0 ? 1 : 0))
if ((checks_failed)); then
  echo "check/lint/fmt/clang-format failed"
  failed=$((failed + 1))
  rc=1
fi
echo "${passed} passed, ${failed} failed"
exit "$rc"
