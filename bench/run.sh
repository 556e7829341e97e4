#!/usr/bin/env bash
# Side-by-side benchmark: edge vs nginx vs Caddy vs a bare net/http server.
#
#   bench/run.sh                      all scenarios (about 15 minutes)
#   bench/run.sh static-1k https-1k   selected scenarios
#   bench/run.sh -rounds 3 -d 10s ws-echo
#   bench/run.sh -profile 10s static-1k   CPU profile of edge alone
#   bench/run.sh -h                   flags and scenario names
#
# Installs nginx, caddy, wrk and h2load from apt when missing, builds bin/edge when
# missing (make bench builds it first) and the bench tools, then runs
# bench/cmd/benchrun. The report goes to stdout and bench/results/<date>.txt, its
# bar chart of the ratios to bench/results/<date>.svg (benchrun -chart FILE.txt
# redraws one from an existing report).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$repo"

. bench/lib.sh
install_missing nginx:nginx caddy:caddy wrk:wrk h2load:nghttp2-client taskset:util-linux openssl:openssl
# The Debian packages start system services on :80; the benchmark does
# not need them (it runs its own instances on 127.0.0.1:2xxxx).

need_two_cpus bench "server on CPU 1, load on CPU 0"

if [ ! -x bin/edge ]; then
	echo "building bin/edge" >&2
	make build
fi

tools=$(mktemp -d /tmp/edge-bench-bin.XXXXXX)
trap 'rm -rf "$tools"' EXIT
go build -o "$tools/" ./bench/cmd/benchrun ./bench/cmd/bare ./bench/cmd/backend ./bench/cmd/tlsload ./bench/cmd/wsload ./bench/cmd/h3load

# Each server holds two sockets per proxied WebSocket.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p bench/results
out="bench/results/$(date +%Y-%m-%d_%H%M).txt"
"$tools/benchrun" -bin "$tools" -configs bench/configs -edge bin/edge -out "$out" "$@"
