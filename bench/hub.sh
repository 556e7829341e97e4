#!/usr/bin/env bash
# Hub benchmark: edge's hub vs a bare one-write-per-delivery gorilla loop
# (and Centrifugo when it builds), all fed by one private redis-server.
#
#   bench/hub.sh                          every scenario, 2 rounds (about 8 minutes)
#   bench/hub.sh fanout-10                selected scenarios
#   bench/hub.sh cluster-3x3000 history-cost
#                                         three edge nodes on one Redis; the cost of
#                                         the hub's history in Redis vs per node
#   bench/hub.sh -rounds 1 -d 10s         shorter
#   bench/hub.sh -profile-dir /tmp/p      also CPU profiles of edge per scenario
#   bench/hub.sh -h                       flags and scenario names
#   bench/hub.sh deflate [go test flags]  compression: a 2 KiB JSON fan-out with and
#                                         without permessage-deflate (BenchmarkFanoutDeflate)
#
# Environment: EDGE=path uses that edge binary instead of building bin/edge;
# CENTRIFUGO=path uses that Centrifugo binary, CENTRIFUGO=off skips it
# (default: try `go install github.com/centrifugal/centrifugo/v6@v6.9.1`;
# only for the scenarios that compare with it). EDGE_OLD=path is the edge
# binary from before the hub's history moved to Redis, for history-cost
# (default: built from commit EDGE_OLD_COMMIT, 6fdfebd: the main line just
# before the merge that moved it); EDGE_OLD=off leaves that column out.
#
# Installs redis-server from apt when missing, builds bin/edge (make build)
# and bench/cmd/hubload, then runs `hubload bench`. The report goes to stdout
# and bench/results/hub_<date>.txt. See bench/HUB.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$repo"

# The compression scenario is a Go benchmark of its own (hub and readers in
# one process, no Redis): bytes on the wire and CPU per delivery.
if [ "${1:-}" = deflate ]; then
	shift
	exec go test -run '^$' -bench FanoutDeflate -benchtime 100x "$@" ./hub/
fi

. bench/lib.sh
install_missing redis-server:redis-server taskset:util-linux
# The Debian package may start a system redis on :6379; the benchmark runs
# its own on a free port.

need_two_cpus hub.sh "server on CPU 1, load and redis on CPU 0"

# The scenarios named on the command line (none: all of them).
scenarios=()
for a in "$@"; do
	case $a in fanout-5 | fanout-10 | coalesce-400 | cluster-3x3000 | history-cost) scenarios+=("$a") ;; esac
done
wants() { ((${#scenarios[@]} == 0)) || [[ " ${scenarios[*]} " == *" $1 "* ]]; }

tools=$(mktemp -d /tmp/edge-hubbench-bin.XXXXXX)
trap 'rm -rf "$tools"' EXIT

edge=${EDGE:-}
if [ -z "$edge" ]; then
	echo "building bin/edge" >&2
	make -s build
	edge=bin/edge
fi
go build -o "$tools/hubload" ./bench/cmd/hubload

centrifugo=${CENTRIFUGO:-}
note=""
if [ -z "$centrifugo" ] && ! wants fanout-5 && ! wants fanout-10 && ! wants coalesce-400; then
	: # cluster-3x3000 and history-cost measure edge only: no Centrifugo to build
elif [ -z "$centrifugo" ]; then
	echo "trying to build Centrifugo v6 from the Go module proxy (CENTRIFUGO=off skips this)" >&2
	mkdir -p "$tools/gobin"
	if (cd "$tools" && GOFLAGS=-mod=mod GOBIN="$tools/gobin" timeout 900 \
		go install github.com/centrifugal/centrifugo/v6@v6.9.1) >"$tools/centrifugo-build.log" 2>&1; then
		centrifugo="$tools/gobin/centrifugo"
	else
		echo "Centrifugo did not build; no Centrifugo column. The attempt ended with:" >&2
		tail -n 3 "$tools/centrifugo-build.log" | sed 's/^/  /' >&2
		note="go install github.com/centrifugal/centrifugo/v6@v6.9.1 failed: $(grep -m1 -o '[0-9][0-9][0-9] [A-Z][A-Za-z ]*' "$tools/centrifugo-build.log" || tail -n 1 "$tools/centrifugo-build.log")"
		centrifugo=""
	fi
elif [ "$centrifugo" = off ]; then
	centrifugo=""
	note="skipped (CENTRIFUGO=off)"
fi

old=${EDGE_OLD:-}
old_commit=${EDGE_OLD_COMMIT:-6fdfebd}
old_note=""
if [ -z "$old" ] && wants history-cost; then
	echo "building edge at $old_commit (before the hub's history moved to Redis) for history-cost" >&2
	mkdir "$tools/old"
	git archive "$old_commit" | tar -x -C "$tools/old"
	(cd "$tools/old" && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-X main.version=$old_commit -X main.commit=$old_commit" -o "$tools/edge-old" ./cmd/edge)
	old="$tools/edge-old"
	old_note="commit $old_commit"
elif [ "$old" = off ]; then
	old=""
elif [ -n "$old" ]; then
	old_note="EDGE_OLD=$old"
fi

# Every connection is a file descriptor: 10,000 on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 12000 ]; then
	echo "hub.sh: the open-file limit is $(ulimit -n); 10,000 connections need about 10,100 (raise the hard limit, or pass -c)" >&2
fi

mkdir -p bench/results
out="bench/results/hub_$(date +%Y-%m-%d_%H%M).txt"
"$tools/hubload" bench -edge "$edge" -centrifugo "$centrifugo" -centrifugo-note "$note" \
	-edge-old "$old" -edge-old-note "$old_note" -rounds 2 -out "$out" "$@"
