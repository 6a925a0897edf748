#!/usr/bin/env bash
# Runs a control plane and a data plane on this machine with embedded defaults:
# SQLite and all state under ./.switchboard. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${SWITCHBOARD_BIN_DIR:-target/release}
STATE=${SWITCHBOARD_HOME:-.switchboard}
mkdir -p "$STATE"
chmod 700 "$STATE"

# The data plane must present the token the control plane expects: keep one here.
if [ -z "${SWITCHBOARD_CLUSTER_TOKEN:-}" ]; then
  if [ ! -s "$STATE/cluster-token" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/cluster-token")
  fi
  SWITCHBOARD_CLUSTER_TOKEN=$(cat "$STATE/cluster-token")
fi
export SWITCHBOARD_CLUSTER_TOKEN

"$BIN/control-plane" --database-url "sqlite://$STATE/control-plane.db" &
CP=$!
"$BIN/data-plane" --state-dir "$STATE/data-plane" &
DP=$!
trap 'kill -TERM $DP $CP 2>/dev/null; wait $DP $CP 2>/dev/null' INT TERM EXIT
wait -n $CP $DP
