#!/usr/bin/env bash
# Start one benchmark peer in the foreground, listening on 127.0.0.1:PORT.
#
#   bench/peers/start.sh NAME PORT        NAME: draft | node-ws | bun
#
# The script execs the server, so the PID of `start.sh ... &` is the server
# process itself (for CPU/RSS measurement). Poll the port until it accepts.
# Set BENCH_HOST to listen elsewhere than 127.0.0.1. Run setup.sh first.
set -euo pipefail

usage() { echo "usage: $0 draft|node-ws|bun PORT" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
name=$1 port=$2
[[ $port =~ ^[0-9]+$ ]] || usage
host=${BENCH_HOST:-127.0.0.1}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench=$(dirname "$here")

case $name in
  draft)
    py=$bench/.venv/bin/python
    [[ -x $py ]] || { echo "$py missing: run bench/peers/setup.sh" >&2; exit 1; }
    cd "$here/draft"
    # One process (uvicorn runs in-process with a single worker), no reload.
    exec "$py" -m uvicorn app:app --host "$host" --port "$port" \
      --workers 1 --log-level warning --no-access-log
    ;;
  node-ws)
    [[ -d $here/node-ws/node_modules/ws ]] || { echo "node-ws: run bench/peers/setup.sh" >&2; exit 1; }
    cd "$here/node-ws"
    exec node server.mjs "$port" "$host"
    ;;
  bun)
    cd "$here/bun"
    # The platform package's binary if it is still there (postinstall not run),
    # else the one bun's postinstall moved into node_modules/bun/bin.
    bin=
    for f in node_modules/@oven/bun-linux-*/bin/bun node_modules/bun/bin/bun.exe; do
      if [[ -x $f && $(stat -c %s "$f") -gt 1000000 ]]; then bin=$f; break; fi
    done
    [[ -n $bin ]] || { echo "bun binary missing: run bench/peers/setup.sh" >&2; exit 1; }
    exec "$bin" server.ts "$port" "$host"
    ;;
  *) usage ;;
esac
