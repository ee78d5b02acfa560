#!/usr/bin/env bash
# One bavard-bench scenario against several Bavard binaries, runs alternating between
# them (A, B, A, B, ...), each run on a freshly started server with a fresh database and
# every limit off; prints each run's output, prefixed with the binary's label, and keeps
# the CSV rows in bench/results/alternate-SCENARIO.csv.
#
#   bench/alternate.sh --runs 3 --bin LABEL=PATH [--bin LABEL=PATH ...] -- SCENARIO [ARGS...]
#
# e.g. bench/alternate.sh --runs 3 --bin head=target/release/bavard \
#        --bin base=/work/bins/bavard-34ec1e6 -- many-rooms
# The load generator is target/release/bavard-bench (build it first).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
runs=3
bins=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --bin) bins+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[[ $# -ge 1 && ${#bins[@]} -ge 1 ]] || { echo "usage: see the header of $0" >&2; exit 2; }
scenario=$1; shift
bench="$root/target/release/bavard-bench"
[[ -x $bench ]] || { echo "$bench is missing: cargo build --release -p bavard-bench" >&2; exit 1; }
mkdir -p "$root/bench/results"
csv="$root/bench/results/alternate-$scenario.csv"

# shellcheck source=limits_off.sh
source "$here/limits_off.sh"

for ((run = 1; run <= runs; run++)); do
  for entry in "${bins[@]}"; do
    label=${entry%%=*}
    bin=${entry#*=}
    dir=$(mktemp -d)
    # shellcheck disable=SC2046
    "$bin" --listen 127.0.0.1:0 --db "$dir/bench.db" $(limits_off "$bin") 2> "$dir/server.log" &
    pid=$!
    addr=""
    for _ in $(seq 1 100); do
      addr=$(grep -o 'listening on http://[0-9.:]*' "$dir/server.log" | sed 's|.*http://||' || true)
      [[ -n $addr ]] && break
      sleep 0.1
    done
    if [[ -z $addr ]]; then
      echo "[$label run $run] the server did not start:"; cat "$dir/server.log"
      kill "$pid" 2>/dev/null || true; continue
    fi
    echo "[$label run $run] $(date -u '+%H:%M:%S') $scenario on $addr"
    timeout 900 "$bench" "$scenario" --url "ws://$addr" --server-pid "$pid" --label "$label" --csv "$csv" "$@" \
      2>&1 | sed "s/^/[$label run $run] /" || echo "[$label run $run] bench failed"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
echo "CSV: $csv"
