#!/usr/bin/env bash
# Starts, on this machine: a Redis master (6401), a replica (6402), three
# sentinels (26401-26403) and three edge nodes (HTTP 8081-8083, admin
# 9181-9183) sharing them. Everything lives in a temporary directory and
# stops with Ctrl-C. Needs redis-server (Debian: apt-get install
# redis-server redis-sentinel) and Go, or EDGE=/path/to/edge.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

edge="${EDGE:-}"
if [[ -z "$edge" ]]; then
  echo "building edge..."
  (cd "$here/../.." && go build -o "$dir/edge" ./cmd/edge)
  edge="$dir/edge"
fi

redis() { redis-server --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" "$@" >>"$dir/redis.log" 2>&1 & pids+=($!); }
redis --port 6401
redis --port 6402 --replicaof 127.0.0.1 6401
for port in 26401 26402 26403; do
  cat >"$dir/sentinel-$port.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
sentinel monitor edgemaster 127.0.0.1 6401 2
sentinel down-after-milliseconds edgemaster 1000
sentinel failover-timeout edgemaster 3000
CONF
  redis-server "$dir/sentinel-$port.conf" --sentinel >>"$dir/sentinel.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 50); do redis-cli -p 26401 ping >/dev/null 2>&1 && break; sleep 0.1; done

for i in 1 2 3; do
  (cd "$here" && exec "$edge" run -config "node$i.yaml") >"$dir/node$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:918$i/readyz" >/dev/null && break; sleep 0.1; done
  echo "node $i: $(curl -s "http://127.0.0.1:918$i/readyz")"
done

cat <<TRY

Three edge nodes on one Redis (master 6401, replica 6402, sentinels 26401-26403).
Logs: $dir/*.log

  # watch node 3 (npx wscat, or websocat):
  npx wscat -c 'ws://127.0.0.1:8083/socket/?channel=orders'
  # publish through node 1's admin API, or from a backend with FCALL:
  curl -X POST --data '{"id":1}' http://127.0.0.1:9181/publish/orders
  redis-cli -p 6401 FCALL edge_publish 1 orders '{"id":2}'
  # presence across nodes:
  curl -s http://127.0.0.1:9182/hub/stats | grep -A3 cluster
  # fail the master over: nodes report it on /readyz, then follow the new one
  redis-cli -p 6401 shutdown nosave
  redis-cli -p 26401 sentinel get-master-addr-by-name edgemaster

Ctrl-C stops everything.
TRY
wait
