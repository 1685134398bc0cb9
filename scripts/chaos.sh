#!/usr/bin/env bash
# Longer chaos runs (docs/chaos.md), beyond the short pass the test command makes.
#
#   scripts/chaos.sh plants            each planted bug must make a run INVALID, naming the
#                                      anomaly that caught it (builds a chaos server first)
#   scripts/chaos.sh soak [N] [SECS] [FIRST]
#                                      N mixed-nemesis runs of SECS seconds (default 10 × 300)
#                                      with seeds FIRST.. (default 1); stops at the first
#                                      invalid run; the figures go to jepsen-store/soak-summary.tsv
#
# Everything goes under jepsen-store/. Needs MariaDB like the tests (scripts/test.sh
# installs it), and for the `clock` nemesis libfaketime (package `faketime`, likewise).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
case "$mode" in
  plants)
    cargo build --release --locked -p tally-jepsen
    # A separate target dir keeps the planted server away from the real one.
    cargo build --release --locked --features chaos --bin tally --target-dir target/chaos
    for plant in skip-dedup ack-before-commit; do
      dir="jepsen-store/plant-$plant"
      set +e
      target/release/tally-jepsen run --nemesis kill,pause,partition,sink --time-limit 60 \
        --seed 7 --plant "$plant" --tally-bin target/chaos/release/tally --store-dir "$dir"
      code=$?
      set -e
      if [ "$code" != 1 ]; then
        echo "plant $plant: expected an INVALID run (exit 1), got exit $code" >&2
        exit 1
      fi
      echo "plant $plant: caught; anomalies in $dir/results.json and $dir/report.html"
    done
    ;;
  soak)
    runs="${2:-10}"
    secs="${3:-300}"
    cargo build --release --locked --workspace --bins
    summary="jepsen-store/soak-summary.tsv"
    mkdir -p jepsen-store
    printf 'seed\tvalid\tseconds\tfaults\tacknowledged\tattempted\twrites_unknown\n' >"$summary"
    first="${4:-1}"
    for seed in $(seq "$first" $((first + runs - 1))); do
      dir="jepsen-store/soak-seed-$seed"
      set +e
      target/release/tally-jepsen run --nemesis kill,pause,partition,sink --time-limit "$secs" \
        --seed "$seed" --store-dir "$dir"
      code=$?
      set -e
      f="$dir/results.json"
      field() { grep -m1 "\"$1\":" "$f" | sed 's/.*: *//; s/,$//'; }
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$seed" "$(field valid)" "$(field duration_s)" \
        "$(field faults)" "$(field events_acked)" "$(field events_attempted)" \
        "$(field writes_info)" >>"$summary"
      if [ "$code" != 0 ]; then
        cat "$summary"
        echo "seed $seed: run exited $code (see $dir)" >&2
        exit "$code"
      fi
    done
    cat "$summary"
    ;;
  *)
    echo "usage: scripts/chaos.sh plants | soak [RUNS] [SECONDS]" >&2
    exit 2
    ;;
esac
