#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, then runs
# every test of the workspace, end-to-end tests with real processes included.
set -euo pipefail
cd "$(dirname "$0")/.."

# strace: the durability tests watch fsync calls. MariaDB: the record-store tests start a
# throwaway mariadbd (tally-testkit); mariadbd lives in /usr/sbin, often not on PATH.
# faketime (libfaketime): the clock test and the chaos pass's clock nemesis move one node's
# wall clock (tally_testkit::faketime).
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
need_pkgs=()
have strace || need_pkgs+=(strace)
have python3 || need_pkgs+=(python3)
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || [ -n "${TALLY_LIBFAKETIME:-}" ] \
  || need_pkgs+=(faketime)
if ! have mariadbd || ! have mariadb-install-db || ! have mariadb; then
  need_pkgs+=(mariadb-server-core mariadb-client-core)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_pkgs[*]} (needed by the tests)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing: ${need_pkgs[*]} — install them (e.g. apt-get install ${need_pkgs[*]}) and rerun" >&2
    exit 1
  fi
fi

# The codebase's shape: no module import cycles, no string-indexed node status outside the
# protocol crate, no reference to files outside the repository.
python3 scripts/check_shape.py

cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads "${TALLY_TEST_THREADS:-2}"

# A short mixed-nemesis chaos pass (docs/chaos.md): a real cluster under kills, pauses,
# partitions and record-store outages; exits non-zero unless the history is valid.
target/debug/tally-jepsen run --nemesis kill,pause,partition,sink \
  --time-limit "${TALLY_CHAOS_SECONDS:-45}" --seed "${TALLY_CHAOS_SEED:-42}" \
  --store-dir target/jepsen-ci

# A short clock pass: the leader's wall clock jumps a year ahead (libfaketime) between
# kills; nothing may be evicted or counted twice. Its own run, so that the seed surely draws
# clock faults (seed 4: two jumps of the leader's clock in 20 s).
target/debug/tally-jepsen run --nemesis clock,kill \
  --time-limit "${TALLY_CHAOS_CLOCK_SECONDS:-20}" --seed "${TALLY_CHAOS_CLOCK_SEED:-4}" \
  --store-dir target/jepsen-ci-clock
