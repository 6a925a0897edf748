#!/usr/bin/env bash
# Runs the gateway on this machine with embedded defaults: a control plane and
# a data plane on SQLite, all state under ./.switchboard, and (unless
# SWITCHBOARD_DEMO=0) a demo upstream, Switchboard's mock of OpenAI's API,
# configured as provider "demo" with a route "gpt-4o-mini" and an API key:
# the gateway answers offline. Ctrl-C or SIGTERM stops everything (exit 0).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SWITCHBOARD_BIN_DIR:-target/release}
STATE=${SWITCHBOARD_HOME:-.switchboard}
LISTEN=${SWITCHBOARD_LISTEN:-0.0.0.0:8080}
ADMIN_ADDR=${SWITCHBOARD_HTTP_ADDR:-0.0.0.0:8081}
GRPC_ADDR=${SWITCHBOARD_GRPC_ADDR:-0.0.0.0:50051}
DEMO=${SWITCHBOARD_DEMO:-1}
DEMO_ADDR=${SWITCHBOARD_DEMO_ADDR:-127.0.0.1:8090}
mkdir -p "$STATE"
chmod 700 "$STATE"

# Secrets made once and kept here (mode 0600): the data plane must present the
# token the control plane expects, and this script configures the demo.
secret() {
  if [ ! -s "$STATE/$1" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/$1")
  fi
  cat "$STATE/$1"
}
export SWITCHBOARD_CLUSTER_TOKEN=${SWITCHBOARD_CLUSTER_TOKEN:-$(secret cluster-token)}
export SWITCHBOARD_ADMIN_TOKEN=${SWITCHBOARD_ADMIN_TOKEN:-$(secret admin-token)}
# Nothing balances load in front of a local run: no drain delay on stop.
export SWITCHBOARD_DRAIN_DELAY_MS=${SWITCHBOARD_DRAIN_DELAY_MS:-0}
export SWITCHBOARD_LISTEN=$LISTEN SWITCHBOARD_HTTP_ADDR=$ADMIN_ADDR SWITCHBOARD_GRPC_ADDR=$GRPC_ADDR

local_url() { echo "http://localhost:${1##*:}"; }
ADMIN_URL=$(local_url "$ADMIN_ADDR")
GATEWAY_URL=$(local_url "$LISTEN")

# Each process in a group of its own: a Ctrl-C reaches this script only,
# which stops them once (a second signal would make them skip their drain).
set -m
pids=()
stop() {
  trap - INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  exit "$status"
}
trap stop INT TERM

"$BIN/control-plane" --database-url "sqlite://$STATE/control-plane.db" &
pids+=($!)
"$BIN/data-plane" --state-dir "$STATE/data-plane" --control-plane "http://127.0.0.1:${GRPC_ADDR##*:}" &
pids+=($!)

admin() {
  curl -sf -X "$1" "$ADMIN_URL/api/v1$2" -H "authorization: Bearer $SWITCHBOARD_ADMIN_TOKEN" \
    -H 'content-type: application/json' ${3:+-d "$3"}
}

if [ "$DEMO" != 0 ]; then
  "$BIN/mock-provider" --kind openai_compatible --listen "$DEMO_ADDR" --api-key demo-upstream-key >/dev/null &
  pids+=($!)
  until curl -sf "$ADMIN_URL/readyz" >/dev/null; do sleep 0.2; done
  # Configured once; a provider already pointed elsewhere is left as it is.
  admin GET /providers/demo >/dev/null ||
    admin POST /providers "{\"name\":\"demo\",\"kind\":\"openai_compatible\",\"base_url\":\"http://$DEMO_ADDR/v1\",\"api_key\":\"demo-upstream-key\"}" >/dev/null
  admin GET /routes/gpt-4o-mini >/dev/null ||
    admin POST /routes '{"model":"gpt-4o-mini","targets":[{"provider":"demo","model":"gpt-4o-mini"}]}' >/dev/null
  if [ ! -s "$STATE/demo-key" ]; then
    (umask 077; admin POST /keys '{"name":"demo"}' | sed -n 's/.*"key":"\([^"]*\)".*/\1/p' > "$STATE/demo-key")
  fi
  until curl -sf "$GATEWAY_URL/readyz" >/dev/null; do sleep 0.2; done
  KEY=$(cat "$STATE/demo-key")
  cat <<EOF

Switchboard is running, offline, with a demo upstream:
  OpenAI-compatible API   $GATEWAY_URL/v1   (also /healthz, /readyz, /metrics)
  admin REST API          $ADMIN_URL/api/v1   (admin token in $STATE/admin-token)
  web console             $ADMIN_URL/ui/   (sign in with the admin token)
  admin gRPC              localhost:${GRPC_ADDR##*:}
  API key                 $KEY   (also in $STATE/demo-key)

Try it:
  curl -s $GATEWAY_URL/v1/chat/completions -H "authorization: Bearer $KEY" -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

  from openai import OpenAI
  client = OpenAI(base_url="$GATEWAY_URL/v1", api_key="$KEY")
  print(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]).choices[0].message.content)

  import anthropic
  client = anthropic.Anthropic(base_url="$GATEWAY_URL", api_key="$KEY")
  print(client.messages.create(model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]).content[0].text)

Ctrl-C stops it. README.md shows how to put a real provider in the demo's place.
EOF
fi

# One process ending by itself ends the run, with its status.
status=0
wait -n "${pids[@]}" || status=$?
trap - INT TERM
kill -TERM "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" 2>/dev/null || true
exit "$status"
