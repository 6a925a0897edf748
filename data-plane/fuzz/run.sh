#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10), with its seeds, the
# corpus kept from earlier runs, and the JSON dictionary. Stops at the first
# crash, leaving the input under fuzz/artifacts/<target>/.
#   fuzz/run.sh [SECONDS] [--dev|-O]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on the stable toolchain
# without a sanitizer (-s none): panics, aborts and timeouts are what it finds.
set -euo pipefail
seconds=${1:-10}
profile=${2:--O}
cd "$(dirname "$0")/.."
cargo fuzz build -s none "$profile"
for target in $(cargo fuzz list); do
  mkdir -p "fuzz/corpus/$target"
  log=$(mktemp)
  if ! cargo fuzz run -s none "$profile" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -dict=fuzz/json.dict -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $target FAILED; the input is under data-plane/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  echo "fuzz $target: ${runs:-?} runs in ${seconds}s, $cov, no crash"
  rm -f "$log"
done
