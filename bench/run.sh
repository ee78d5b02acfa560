#!/usr/bin/env bash
# Scenario 1 (hot room) and idle memory, Bavard side by side with its peers, in one run.
#
#   bench/run.sh [--servers bavard,bun,node-ws,draft] [--quick] [--no-publish]
#
# 1. builds bavard and bavard-bench (release) and runs bench/peers/setup.sh;
# 2. for each server in turn: starts it on a free port (bavard with a fresh temporary
#    database and --rate-per-second 0), runs `bavard-bench hot-room` at rising rates
#    (stops at the first failed step, after one retry of that step), stops it;
# 3. for each server in turn: a fresh start, `bavard-bench idle --protocol plain` with
#    10,000 silent connections (RSS per connection, handshakes/s), stop; for bavard
#    also the same with its JSON protocol;
# 4. plots bench/results/hot-room.png (bench/plot.py) and writes the report
#    (bench/report.py): bench/results/benchmarks-section.md, and, unless --quick or
#    --no-publish, the section "## Scenario 1 (hot room) and idle memory, side by side"
#    of BENCHMARKS.md plus bench/hot-room.png.
#
# --servers  comma-separated subset, in the order given (default bavard,bun,node-ws,draft);
#            the published section then only lists those servers
# --quick    smoke test of this script (~1-2 min): 3 low rate steps of 1 s, 1,000 idle
#            connections; never touches BENCHMARKS.md or bench/hot-room.png
# --no-publish  a full run that only writes bench/results/
#
# Raw outputs go to bench/results/ (emptied at the start, git-ignored). Every server this
# script started is stopped when it exits, also on failure or Ctrl-C.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root" || exit 1

command_line="bench/run.sh"
for a in "$@"; do
  if [[ $a =~ ^[A-Za-z0-9_,./=:+-]+$ ]]; then command_line+=" $a"; else command_line+=" $(printf '%q' "$a")"; fi
done

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
servers=bavard,bun,node-ws,draft
quick=0
publish=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --servers) [[ $# -ge 2 ]] || usage; servers=$2; shift 2 ;;
    --servers=*) servers=${1#--servers=}; shift ;;
    --quick) quick=1; shift ;;
    --no-publish) publish=0; shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done
IFS=, read -r -a server_list <<< "$servers"
[[ ${#server_list[@]} -gt 0 ]] || usage
for s in "${server_list[@]}"; do
  case $s in bavard|bun|node-ws|draft) ;; *) echo "run.sh: unknown server '$s'" >&2; usage ;; esac
done

if [[ $quick == 1 ]]; then
  rates=100000,200000,400000
  step_args=(--step-secs 1)
  step_secs=1
  idle_conns=1000
  publish=0
else
  rates=100000,200000,400000,600000,800000,1000000,1250000,1500000,2000000,2500000,3000000,3500000,4000000,4500000,5000000,5500000,6000000,6500000,7000000
  step_args=()
  step_secs=5
  idle_conns=10000
fi

results=$here/results
py=$here/.venv/bin/python
failures=0
rc=0

say() { printf 'run.sh: %s\n' "$*" >&2; }

# --- process bookkeeping: everything started here is stopped on exit ---------------------
server_pids=()
tmp_dirs=()

stop_server() { # PID
  local pid=$1 i
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "server $pid still running 10 s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
  local kept=()
  for i in "${server_pids[@]}"; do [[ $i == "$pid" ]] || kept+=("$i"); done
  server_pids=("${kept[@]}")
}

sampler_pid=
cleanup() {
  local pid d
  for pid in "${server_pids[@]}"; do stop_server "$pid"; done
  if [[ -n $sampler_pid ]]; then
    kill -TERM "$sampler_pid" 2>/dev/null
    wait "$sampler_pid" 2>/dev/null
  fi
  for d in "${tmp_dirs[@]}"; do rm -rf "$d"; done
  [[ -z $bench_fifo ]] || rm -f "$bench_fifo"
}
# Runs "$@" (a bavard-bench command) with its output appended to file $1 and shown;
# in the background and waited for, so that INT/TERM traps run at once (bash defers
# traps until a foreground command ends). Sets rc to the command's exit status.
bench_pid=
bench_fifo=
run_logged() { # FILE CMD...
  local file=$1 out
  shift
  out=$(mktemp -u "${TMPDIR:-/tmp}/bavard-bench-out.XXXXXX")
  mkfifo "$out" || { rc=1; return; }
  bench_fifo=$out
  tee -a "$file" < "$out" &
  local tee_pid=$!
  "$@" > "$out" 2>&1 &
  bench_pid=$!
  wait "$bench_pid"
  rc=$?
  bench_pid=
  wait "$tee_pid"
  rm -f "$out"
  bench_fifo=
}
stop_bench() {
  if [[ -n $bench_pid ]]; then
    kill -TERM "$bench_pid" 2>/dev/null
    wait "$bench_pid" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'say "interrupted"; stop_bench; exit 130' INT
trap 'say "terminated"; stop_bench; exit 143' TERM

next_port=18500
free_port() { # prints a port nobody listens on (and that can be bound), from 18500 up
  local port
  for ((port = next_port; port < 19500; port++)); do
    if "$py" - "$port" <<'PY' 2>/dev/null; then
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
PY
      next_port=$((port + 1))
      echo "$port"
      return 0
    fi
  done
  return 1
}

server_pid=
server_port=
start_server() { # NAME: sets server_pid, server_port; returns non-zero if it does not come up
  local name=$1 port pid log=$results/$1-server.log i
  port=$(free_port) || { say "no free port"; return 1; }
  echo "### run.sh: $(date -u '+%H:%M:%S') start $name on 127.0.0.1:$port" >> "$log"
  if [[ $name == bavard ]]; then
    local db_dir
    db_dir=$(mktemp -d "${TMPDIR:-/tmp}/bavard-bench.XXXXXX") || return 1
    tmp_dirs+=("$db_dir")
    "$bavard_bin" --listen "127.0.0.1:$port" --db "$db_dir/bench.db" --rate-per-second 0 >> "$log" 2>&1 &
  else
    "$here/peers/start.sh" "$name" "$port" >> "$log" 2>&1 &
  fi
  pid=$!
  server_pids+=("$pid")
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      say "$name exited before accepting connections (see $log)"
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      server_pid=$pid server_port=$port
      say "$name up: pid $pid, port $port"
      return 0
    fi
    sleep 0.1
  done
  say "$name does not accept connections on $port after 30 s"
  stop_server "$pid"
  return 1
}

cpu_ticks() { # PID: utime + stime in clock ticks
  local stat
  stat=$(< "/proc/$1/stat") || return 1
  stat=${stat##*) }
  read -r -a f <<< "$stat"
  echo $((f[11] + f[12]))
}

wait_quiet() { # PID: waits (1-20 s) until the process uses less than 10% of a core over 0.5 s
  local pid=$1 hz a b i
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  sleep 1
  for ((i = 0; i < 38; i++)); do
    a=$(cpu_ticks "$pid") || return 0
    sleep 0.5
    b=$(cpu_ticks "$pid") || return 0
    (((b - a) * 20 < hz)) && return 0
  done
}

listen_overflows() { # machine-wide TcpExtListenOverflows (netns)
  awk '$1 == "TcpExt:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == "ListenOverflows") c = i; n = 1 } else print $c }' \
    /proc/net/netstat 2>/dev/null
}

# --- 0. results, build, setup ------------------------------------------------------------
rm -rf "$results"
mkdir -p "$results"
started=$(date +%s)
meta=$results/meta.env
{
  echo "command=$command_line"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "servers=$servers"
  echo "quick=$quick"
  echo "rates=$rates"
  echo "step_secs=$step_secs"
  echo "idle_conns=$idle_conns"
  echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$meta"

say "building (cargo build --release -p bavard -p bavard-bench)"
dirty=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | awk '{print "`" $NF "`"}' | paste -sd, - | sed 's/,/, /g')
{
  echo "commit=$(git rev-parse --short HEAD)"
  echo "dirty=$dirty"
  echo "rustc=$(rustc --version 2>/dev/null | cut -d' ' -f1-2)"
} >> "$meta"
if ! cargo build --release -p bavard -p bavard-bench 2>&1 | tee "$results/build.log" | tail -n 3; then
  say "cargo build failed (see $results/build.log)"
  exit 1
fi
[[ -z $dirty ]] || say "note: building with uncommitted changes in $dirty"

# Run private copies: others may rebuild target/release while this runs, and the idle
# phase must start the same bavard as the hot-room phase.
bin_dir=$(mktemp -d "${TMPDIR:-/tmp}/bavard-bench-bin.XXXXXX") || exit 1
tmp_dirs+=("$bin_dir")
cp "$root/target/release/bavard" "$root/target/release/bavard-bench" "$bin_dir/" || exit 1
bavard_bin=$bin_dir/bavard
bench_bin=$bin_dir/bavard-bench

say "bench/peers/setup.sh"
"$here/peers/setup.sh" 2>&1 | tee "$results/setup.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || { say "setup.sh failed"; exit 1; }

# Machine load while we run: CPU of this benchmark's processes and of everyone else's.
"$py" "$here/report.py" sample "$results/load.txt" --root $$ &
sampler_pid=$!
phase() { echo "$(date +%s.%N) $*" >> "$results/phases.txt"; } # begin|end NAME PHASE

# --- 1. hot room ---------------------------------------------------------------------------
hot_room() { # NAME
  local name=$1 txt=$results/$1-hot-room.txt todo=$rates retry
  : > "$txt"
  say "== hot room: $name"
  start_server "$name" || { echo "### run.sh: exit server did not start" >> "$txt"; failures=$((failures + 1)); return; }
  phase begin "$name" hot-room
  while :; do
    run_logged "$txt" "$bench_bin" hot-room --url "ws://127.0.0.1:$server_port" --server-pid "$server_pid" \
      --csv "$results/hot-room.csv" --label "$name" --rates "$todo" "${step_args[@]}"
    # 0: a step passed, 2: no step passed; anything else is an error of the run itself.
    if [[ $rc != 0 && $rc != 2 ]]; then
      echo "### run.sh: exit status $rc of bavard-bench hot-room" | tee -a "$txt"
      failures=$((failures + 1))
    fi
    retry=$("$py" "$here/report.py" retry-rates "$txt" "$rates")
    [[ -n $retry ]] || break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "### run.sh: exit $name died during the run (no retry)" | tee -a "$txt"
      failures=$((failures + 1))
      break
    fi
    wait_quiet "$server_pid"
    echo "### run.sh: retry of the ${retry%%,*}/s step (each failed step is retried once)" | tee -a "$txt"
    todo=$retry
  done
  phase end "$name" hot-room
  stop_server "$server_pid"
}

# --- 2. idle -------------------------------------------------------------------------------
idle() { # NAME [PROTOCOL]
  local name=$1 protocol=${2:-plain} txt before after backlog
  txt=$results/$name-idle.txt
  [[ $protocol == plain ]] || txt=$results/$name-idle-$protocol.txt
  : > "$txt"
  say "== idle ($protocol): $name"
  start_server "$name" || { echo "### run.sh: exit server did not start" >> "$txt"; failures=$((failures + 1)); return; }
  phase begin "$name" "idle-$protocol"
  # Send-Q of a listening socket is its accept backlog.
  backlog=$(ss -Hltn "sport = :$server_port" 2>/dev/null | awk 'NR == 1 { print $3 }')
  [[ -z $backlog ]] || echo "### run.sh: backlog $backlog" | tee -a "$txt"
  before=$(listen_overflows)
  run_logged "$txt" "$bench_bin" idle --url "ws://127.0.0.1:$server_port" --server-pid "$server_pid" \
    --conns "$idle_conns" --protocol "$protocol" --csv "$results/idle.csv" --label "$name"
  after=$(listen_overflows)
  phase end "$name" "idle-$protocol"
  if [[ -n $before && -n $after ]]; then
    echo "### run.sh: ListenOverflows $((after - before))" | tee -a "$txt"
  fi
  if [[ $rc != 0 ]]; then
    echo "### run.sh: exit status $rc of bavard-bench idle" | tee -a "$txt"
    failures=$((failures + 1))
  fi
  stop_server "$server_pid"
}

for s in "${server_list[@]}"; do hot_room "$s"; done
for s in "${server_list[@]}"; do
  idle "$s"
  [[ $s != bavard ]] || idle bavard json
done

# --- 3. plot and report --------------------------------------------------------------------
{
  echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  elapsed=$(($(date +%s) - started))
  echo "duration=$((elapsed / 60)) min $((elapsed % 60)) s"
} >> "$meta"

if [[ -s $results/hot-room.csv ]]; then
  "$py" "$here/report.py" plot-csv "$results/hot-room.csv" "$results/hot-room-plot.csv" &&
    "$py" "$here/plot.py" "$results/hot-room-plot.csv" -o "$results/hot-room.png" \
      --title "Hot room (1,000 + 10 connections): deliveries/s vs p99 latency" ||
    { say "plot failed"; failures=$((failures + 1)); }
else
  say "no hot-room CSV rows: no plot"
fi

report_args=("$results")
if [[ $publish == 1 ]]; then
  if [[ -f $results/hot-room.png ]]; then
    cp "$results/hot-room.png" "$here/hot-room.png"
  fi
  report_args+=(--benchmarks "$root/BENCHMARKS.md")
fi
"$py" "$here/report.py" report "${report_args[@]}" || { say "report failed"; failures=$((failures + 1)); }

if [[ $publish == 1 ]]; then
  say "updated BENCHMARKS.md and bench/hot-room.png"
else
  say "report in $results/benchmarks-section.md (BENCHMARKS.md untouched)"
fi
if [[ $failures -gt 0 ]]; then
  say "$failures problem(s), see above"
  exit 1
fi
say "done in $(($(date +%s) - started)) s"
