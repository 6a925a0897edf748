#!/usr/bin/env bash
# Gateway vs direct path to the mock upstream, in the same run, on this machine.
# Full request path on: API-key auth, route lookup, usage record emitted and shipped.
# Usage: tests/bench/run.sh [seconds-per-scenario]   (BENCH_OUT=file to write the report elsewhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-10}
OUT=${BENCH_OUT:-docs/benchmarks.md}
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null 2>&1 || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }; }
cargo build --release -q -p control-plane -p data-plane -p switchboard-tests
BIN=target/release
WORK=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK_PORT=$(port); GRPC=$(port); ADMIN=$(port); DP=$(port)
ADMIN_TOKEN=bench-admin-token-0123456789; CLUSTER=bench-cluster-token-0123456789
"$BIN/mock-openai" --listen "127.0.0.1:$MOCK_PORT" --api-key sk-bench >/dev/null &
"$BIN/control-plane" --database-url "sqlite://$WORK/cp.db" --grpc-addr "127.0.0.1:$GRPC" --http-addr "127.0.0.1:$ADMIN" \
  --admin-token $ADMIN_TOKEN --cluster-token $CLUSTER --log warn 2>"$WORK/cp.log" &
"$BIN/data-plane" --listen "127.0.0.1:$DP" --control-plane "http://127.0.0.1:$GRPC" --cluster-token $CLUSTER \
  --state-dir "$WORK/dp" --log warn 2>"$WORK/dp.log" &
until curl -sf "127.0.0.1:$ADMIN/readyz" >/dev/null; do sleep 0.1; done
api() { curl -sf -X POST "127.0.0.1:$ADMIN/api/v1/$1" -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' -d "$2"; }
api providers "{\"name\":\"mock\",\"kind\":\"openai_compatible\",\"base_url\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"api_key\":\"sk-bench\"}" >/dev/null
api routes '{"model":"bench","targets":[{"provider":"mock","model":"gpt-4o-mini"}]}' >/dev/null
KEY=$(api keys '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
until curl -sf "127.0.0.1:$DP/v1/models" -H "authorization: Bearer $KEY" | grep -q bench; do sleep 0.1; done

run() { # url key model threads connections
  BENCH_KEY=$2 BENCH_MODEL=$3 wrk -t"$4" -c"$5" -d"${SECONDS_EACH}s" --latency -s tests/bench/chat.lua "$1" | grep '^RESULT'
}
field() { echo "$1" | sed -E "s/.* $2=([0-9.]+).*/\1/"; }

declare -A R
for c in 32 1; do
  t=$(( c < 2 ? 1 : 2 ))
  R[direct_$c]=$(run "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" sk-bench gpt-4o-mini $t $c)
  R[gateway_$c]=$(run "http://127.0.0.1:$DP/v1/chat/completions" "$KEY" bench $t $c)
done
sleep 2
USAGE=$(curl -sf "127.0.0.1:$ADMIN/api/v1/usage" -H "authorization: Bearer $ADMIN_TOKEN")

ratio=$(python3 -c "print(f'{$(field "${R[gateway_32]}" rps) / $(field "${R[direct_32]}" rps):.2f}')")
add_p50=$(( $(field "${R[gateway_1]}" p50_us) - $(field "${R[direct_1]}" p50_us) ))
add_p99=$(( $(field "${R[gateway_1]}" p99_us) - $(field "${R[direct_1]}" p99_us) ))
{
  echo "# Benchmarks"
  echo
  echo "Reproduce with \`make bench\` (\`tests/bench/run.sh [seconds]\`): wrk drives the mock OpenAI upstream"
  echo "directly and through the gateway, in the same run, ${SECONDS_EACH}s per scenario. The gateway path"
  echo "has API-key auth, route lookup and usage recording on. Load generator, gateway and mock share the"
  echo "machine, so absolute figures are modest; the ratios are what to compare across changes."
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%F)."
  echo
  echo "| scenario | direct | gateway | gateway vs direct |"
  echo "|---|---|---|---|"
  echo "| 1. throughput, concurrency 32 (req/s) | $(field "${R[direct_32]}" rps) | $(field "${R[gateway_32]}" rps) | ratio $ratio |"
  echo "| 2. latency, concurrency 1, P50 (us) | $(field "${R[direct_1]}" p50_us) | $(field "${R[gateway_1]}" p50_us) | +$add_p50 us |"
  echo "| 2. latency, concurrency 1, P99 (us) | $(field "${R[direct_1]}" p99_us) | $(field "${R[gateway_1]}" p99_us) | +$add_p99 us |"
  echo
  echo "Errors: direct $(field "${R[direct_32]}" errors)/$(field "${R[direct_1]}" errors), gateway $(field "${R[gateway_32]}" errors)/$(field "${R[gateway_1]}" errors)."
  echo "Usage recorded by the control plane after the run: \`$USAGE\`."
  echo
  echo "The remaining scenarios of the performance issue (fixed-rate latency, streaming, memory, CPU per"
  echo "request, config scale, propagation) are not measured yet."
} > "$OUT"
cat "$OUT"
