#!/usr/bin/env bash
# The long fuzzing run: property-based fuzzing (proptest, stable Rust) of every input
# parser that the network reaches, a million cases per target by default.
#
#   scripts/fuzz.sh              # 1,000,000 cases per target
#   CASES=50000 scripts/fuzz.sh  # a quicker pass
#
# The test command runs the same properties with a few thousand cases. A failure prints
# the smallest input proptest found and stores it in the target's
# `*.proptest-regressions` file, so the next run (and the test command) tries it first.
set -euo pipefail
cd "$(dirname "$0")/.."

cases="${CASES:-1000000}"
targets=(
  "tally-analytics fuzz_parse"   # event parsing and validation (POST /v1/events bodies)
  "tally-raft fuzz_rpc"          # Raft RPC decoding (/raft/* bodies and replies)
  "tally-storage guard_properties" # the SQL guard of POST /v1/sql
)
for target in "${targets[@]}"; do
  read -r package test <<<"$target"
  echo "== $package: $test, $cases cases per property"
  start=$(date +%s)
  PROPTEST_CASES="$cases" cargo test --release --locked -p "$package" --test "$test" -- --test-threads 2
  echo "== $package: $test passed in $(( $(date +%s) - start )) s"
done
