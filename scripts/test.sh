#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, then runs
# every test of the workspace, end-to-end tests with real processes included.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v strace >/dev/null 2>&1 || need_pkgs+=(strace)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_pkgs[*]} (needed by the durability tests)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing: ${need_pkgs[*]} — install it (e.g. apt-get install ${need_pkgs[*]}) and rerun" >&2
    exit 1
  fi
fi

cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads "${TALLY_TEST_THREADS:-2}"
