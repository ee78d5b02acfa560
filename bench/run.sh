#!/usr/bin/env bash
# Bavard side by side with its peers, every measurement repeated, medians reported.
#
#   bench/run.sh [--servers bavard,bun] [--runs N] [--only LIST] [--baseline BIN]
#                [--baseline-label LABEL] [--section TITLE] [--quick] [--no-publish]
#                [--force] [--dry-run]
#
# 1. builds bavard and bavard-bench (release), runs bench/peers/setup.sh, then checks
#    that the machine is quiet: it samples /proc for 5 s and refuses to go on if
#    processes other than its own use more than 15% of a core on average (--force: go
#    on, and the report says how busy the machine was). It keeps sampling the
#    machine's load every second during the whole run.
# 2. runs each measurement N times per server, alternating servers (bavard, bun,
#    bavard, bun, ...), each run on a freshly started server (bavard with a fresh
#    temporary database and every limit off: --rate-per-second 0 and, when the build has
#    them, --api-rate-per-second 0 --user-rate-per-second 0 --max-connections-per-ip 0);
#    every bench call has a timeout, and
#    a failing call is reported, not fatal:
#      hot-room     `bavard-bench hot-room`: 1,000 + 10 plain connections in one room,
#                   rising rates (3 s steps), stop at the first failed step after one
#                   retry; deliveries/s, p99 and server CPU-s per M deliveries
#      idle         10,000 idle plain connections in rooms of 10 (RSS per connection,
#                   handshakes/s)
#      room-a/b     one plain room of 10,000, then of 19,000 idle connections: time to
#                   connect them all, joins/s, RSS per connection (checked by a probe
#                   message that must reach every connection)
#      storm-plain  10,000 plain connections in one room, then 1,000 connect at once
#                   (256 in flight): connect latency p50/p99, connections/s
#      storm-json   bavard only: the same with 10,000 JSON members and 1,000 JSON
#                   joins: join-reply latency p50/p99, joins/s
#      durable-K    bavard only: 100 senders with K = 1, 4, 8 sends in flight each:
#                   acked messages/s, ack p50/p99
#      idle-json    bavard only: 10,000 idle JSON connections (RSS, handshakes/s)
#    ("bavard only" means bavard and bavard-base, the baseline below.)
#    Every run of idle, idle-json, room-a/b and storm-* (whatever the server) opens its
#    clients from source addresses of its own: run k of the script uses 127.0.K.2 and
#    127.0.K.3 (`bavard-bench --first-source`), K = 1, 2, ... 250, then 1 again, so no
#    run reuses an address of the previous 60+ s and none is the servers' 127.0.0.1.
#    A server that lets the client close first (Bun) leaves ~10,000 client sockets in
#    TIME_WAIT for 60 s on the addresses its run used; a next run connecting from those
#    same addresses connected about twice as slowly (0.84 s instead of 0.40 s for 10,000
#    idle connections), penalising whichever server came right after it.
# 3. plots bench/results/hot-room.png (median per rate) and writes the report
#    (bench/report.py): medians of the runs per figure, bench/results/runs.csv with
#    every run's figures, bench/results/benchmarks-section.md and, unless --quick or
#    --no-publish, the section "## Side by side: ..." of BENCHMARKS.md plus
#    bench/hot-room.png.
#
# --servers  comma-separated, in the order given (default bavard,bun; node-ws and
#            draft are available too, and then the ladder starts at 100k; bavard-base
#            with --baseline)
# --runs N   runs per server of each measurement (default 3; the median is reported)
# --only LIST  comma-separated measurements to run, in the order above whatever the
#            order given: hot-room, idle, room-a, room-b, storm-plain, storm-json,
#            durable-1, durable-4, durable-8, idle-json, or the groups room, storm,
#            durable (default: all); the report shows only those
# --baseline BIN  a second Bavard build measured as its own server, bavard-base:
#            started exactly as bavard is (fresh temporary database, --rate-per-second
#            0, same flags) from a private copy of the server binary BIN (e.g.
#            /work/bins/bavard-31ca8f7), driven by the same freshly built bavard-bench
#            (so BIN must speak the protocol this bench speaks), and run in every
#            measurement bavard runs in, the bavard-only ones too. It goes right
#            after bavard unless --servers lists it. The report gives it a column and, for every figure both Bavards
#            have, a "change" column: bavard's median against bavard-base's, in %.
# --baseline-label LABEL  the baseline's name in the report (default: BIN's file name)
# --section TITLE  publish the report as the section "## TITLE" of BENCHMARKS.md
#            (replacing the section of that title, or appended) rather than as the main
#            "## Side by side: ..." section; bench/hot-room.png is then left alone.
#            A run with --only or --baseline never replaces the main section: without
#            --section it only writes bench/results/ (as with --no-publish), its report
#            being bench/results/benchmarks-section.md.
# --quick    smoke test of this script (a few minutes): small sizes, three 1 s steps
#            passing at p99 <= 1 s; never touches BENCHMARKS.md or bench/hot-room.png
# --no-publish  a full run that only writes bench/results/
# --force    run even if the machine is busy (the report then says so)
# --dry-run  print what would run and the duration estimate, then exit (no build)
#
# Expected duration of a full default run (bavard,bun, 3 runs) on a 2-core machine:
# about 16 minutes plus the build (estimated and printed at the start; see
# bench/README-bench.md for how the step lengths were chosen); with
# --servers bavard,bavard-base,bun about 25 minutes. A before/after check of a
# refactor (no behaviour change), about 19 minutes plus the build:
#
#   bench/run.sh --servers bavard,bavard-base,bun --baseline /work/bins/bavard-31ca8f7 \
#     --baseline-label 31ca8f7 --only hot-room,idle,durable --runs 3
#
# (report in bench/results/benchmarks-section.md; add --section TITLE to also write it
# into BENCHMARKS.md as a section of its own).
#
# Raw outputs go to bench/results/ (emptied at the start, git-ignored). Every server
# this script started is stopped when it exits, also on failure or Ctrl-C.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
invoked_from=$PWD
cd "$root" || exit 1

command_line="bench/run.sh"
for a in "$@"; do
  if [[ $a =~ ^[A-Za-z0-9_,./=:+-]+$ ]]; then command_line+=" $a"; else command_line+=" $(printf '%q' "$a")"; fi
done

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
servers=bavard,bun
runs=3
quick=0
publish=1
force=0
only=
baseline=
baseline_label=
section=
dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --servers) [[ $# -ge 2 ]] || usage; servers=$2; shift 2 ;;
    --servers=*) servers=${1#--servers=}; shift ;;
    --runs) [[ $# -ge 2 ]] || usage; runs=$2; shift 2 ;;
    --runs=*) runs=${1#--runs=}; shift ;;
    --only) [[ $# -ge 2 ]] || usage; only=$2; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    --baseline) [[ $# -ge 2 ]] || usage; baseline=$2; shift 2 ;;
    --baseline=*) baseline=${1#--baseline=}; shift ;;
    --baseline-label) [[ $# -ge 2 ]] || usage; baseline_label=$2; shift 2 ;;
    --baseline-label=*) baseline_label=${1#--baseline-label=}; shift ;;
    --section) [[ $# -ge 2 ]] || usage; section=$2; shift 2 ;;
    --section=*) section=${1#--section=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --quick) quick=1; shift ;;
    --no-publish) publish=0; shift ;;
    --force) force=1; shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --runs needs a positive number" >&2; usage; }
IFS=, read -r -a server_list <<< "$servers"
[[ ${#server_list[@]} -gt 0 ]] || usage
if [[ -n $baseline ]]; then
  [[ $baseline == /* ]] || baseline=$invoked_from/$baseline
  [[ -f $baseline && -x $baseline ]] || { echo "run.sh: --baseline $baseline is not an executable file" >&2; exit 2; }
  baseline=$(realpath -s "$baseline")
  [[ -n $baseline_label ]] || baseline_label=$(basename "$baseline")
  if [[ ",$servers," != *,bavard-base,* ]]; then # right after bavard (or last)
    listed=()
    for s in "${server_list[@]}"; do
      listed+=("$s")
      [[ $s != bavard ]] || listed+=(bavard-base)
    done
    [[ ",$servers," == *,bavard,* ]] || listed+=(bavard-base)
    server_list=("${listed[@]}")
    servers=$(IFS=,; echo "${server_list[*]}")
  fi
else
  [[ ",$servers," != *,bavard-base,* ]] || { echo "run.sh: the server bavard-base needs --baseline BIN" >&2; usage; }
  [[ -z $baseline_label ]] || { echo "run.sh: --baseline-label needs --baseline BIN" >&2; usage; }
fi
[[ ! $baseline_label =~ [[:space:],] ]] || { echo "run.sh: --baseline-label takes no spaces or commas" >&2; usage; }
section=${section#"${section%%[!#[:space:]]*}"} # "## Title" or "Title": the title
[[ $section != *$'\n'* ]] || usage
slow_peer=0
for s in "${server_list[@]}"; do
  case $s in
    bavard|bavard-base|bun) ;;
    node-ws|draft) slow_peer=1 ;;
    *) echo "run.sh: unknown server '$s'" >&2; usage ;;
  esac
done

busy_limit=15 # % of a core used by other processes, on average, above which we refuse
if [[ $quick == 1 ]]; then
  rates=100000,200000,400000
  p99_limit=1000 # a smoke test on whatever machine: exercise the passing steps too
  step_secs=1
  warmup_secs=0.5
  idle_conns=1000
  room_a=1000
  room_b=1900
  storm_members=1000
  storm_joiners=100
  durable_secs=1
  durable_warmup=0.5
  busy_secs=3
  publish=0
else
  # 3 s steps on a ladder whose steps are at most 33% apart above 0.75M (0.5M apart
  # from 2M, where Bavard and Bun top out on 2 cores): a server reaching 7M runs 17
  # steps, about 1.5 min, so 3 runs per server fit in the budget; the median of 3
  # short runs says more on a shared machine than one long one.
  rates=500000,750000,1000000,1250000,1500000,2000000,2500000,3000000,3500000,4000000,4500000,5000000,5500000,6000000,6500000,7000000,7500000,8000000,9000000,10000000
  [[ $slow_peer == 0 ]] || rates=100000,200000,300000,$rates
  p99_limit=50
  step_secs=3
  warmup_secs=1
  idle_conns=10000
  room_a=10000
  room_b=19000
  storm_members=10000
  storm_joiners=1000
  durable_secs=5
  durable_warmup=1
  busy_secs=5
fi
held_back=0 # a subset, or a before/after run, is not the main side-by-side section
if [[ $publish == 1 && -z $section && ( -n $only || -n $baseline ) ]]; then
  publish=0
  held_back=1
fi
storm_concurrency=256
durable_senders=100
durable_in_flight=(1 4 8)

results=$here/results
py=$here/.venv/bin/python
failures=0
rc=0

say() { printf 'run.sh: %s\n' "$*" >&2; }

# --- what runs, in which order ------------------------------------------------------------
measures=(hot-room idle room-a room-b storm-plain storm-json)
for k in "${durable_in_flight[@]}"; do measures+=("durable-$k"); done
measures+=(idle-json)
if [[ -n $only ]]; then
  declare -A wanted=()
  IFS=, read -r -a only_list <<< "$only"
  for w in "${only_list[@]}"; do
    [[ -n $w ]] || continue
    found=0
    for m in "${measures[@]}"; do
      if [[ $m == "$w" || ($w =~ ^(room|storm|durable)$ && $m == "$w"-*) ]]; then
        wanted[$m]=1
        found=1
      fi
    done
    [[ $found == 1 ]] || {
      echo "run.sh: --only: no measurement '$w' (there are ${measures[*]}; and room, storm, durable)" >&2
      exit 2
    }
  done
  kept=()
  for m in "${measures[@]}"; do [[ -z ${wanted[$m]:-} ]] || kept+=("$m"); done
  [[ ${#kept[@]} -gt 0 ]] || { echo "run.sh: --only: nothing to run" >&2; exit 2; }
  measures=("${kept[@]}")
fi

servers_of() { # MEASURE: the servers that can do it, in the order given
  case $1 in
    storm-json|durable-*|idle-json)
      for s in "${server_list[@]}"; do [[ $s != bavard && $s != bavard-base ]] || echo "$s"; done ;;
    *) printf '%s\n' "${server_list[@]}" ;;
  esac
}

n_rates=$(tr ',' '\n' <<< "$rates" | grep -c .)
# Seconds one bench call of MEASURE may take before it is stopped.
timeout_of() {
  case $1 in
    # every step twice (retries), each with warm-up, step, drain and slack, plus setup
    hot-room) awk -v n="$n_rates" -v w="$warmup_secs" -v s="$step_secs" 'BEGIN { printf "%d", n * (w + s + 3) + 60 }' ;;
    idle|idle-json|room-a|room-b) echo 150 ;;
    storm-*) echo 240 ;;
    durable-*) awk -v w="$durable_warmup" -v d="$durable_secs" 'BEGIN { printf "%d", w + d + 90 }' ;;
  esac
}
# Rough seconds one run of MEASURE takes (server start and stop included), for the estimate.
estimate_of() {
  if [[ $quick == 1 ]]; then
    case $1 in
      hot-room) awk -v n="$n_rates" -v w="$warmup_secs" -v s="$step_secs" 'BEGIN { printf "%d", n * (w + s + 0.4) + 4 }' ;;
      durable-*) awk -v w="$durable_warmup" -v d="$durable_secs" 'BEGIN { printf "%d", w + d + 4 }' ;;
      *) echo 5 ;;
    esac
    return
  fi
  case $1 in
    # A server reaching 7M passes 16 steps, then a failed step and its retry (with
    # drain), plus connecting, calming down before the retry, start and stop.
    hot-room) awk -v n="$n_rates" -v w="$warmup_secs" -v s="$step_secs" \
        'BEGIN { p = n > 16 ? 16 : n; printf "%d", p * (w + s + 0.4) + 2 * (w + s + 2) + 12 }' ;;
    idle|idle-json) echo 7 ;;
    room-a) echo 8 ;;
    room-b) echo 11 ;;
    storm-plain) echo 8 ;;
    storm-json) echo 14 ;;
    durable-*) awk -v w="$durable_warmup" -v d="$durable_secs" 'BEGIN { printf "%d", w + d + 4 }' ;;
  esac
}
estimate=0
for m in "${measures[@]}"; do
  n=$(servers_of "$m" | grep -c .)
  estimate=$((estimate + n * runs * $(estimate_of "$m")))
done
say "measurements: ${#measures[@]} kinds x $runs runs over ${servers}: expected to take about" \
  "$(((estimate + 59) / 60)) min, plus the build"
if [[ $dry_run == 1 ]]; then
  for m in "${measures[@]}"; do
    say "  $m: $(servers_of "$m" | paste -sd, -) x $runs runs, about $(estimate_of "$m") s each"
  done
  [[ -z $baseline ]] || say "bavard-base: $baseline (label $baseline_label)"
  if [[ $held_back == 1 ]]; then
    say "publishes nothing (--only or --baseline without --section): the report goes to bench/results/benchmarks-section.md"
  elif [[ $publish == 1 ]]; then
    say "publishes: the section \"## ${section:-Side by side: ...}\" of BENCHMARKS.md"
  else
    say "publishes nothing: the report goes to bench/results/benchmarks-section.md"
  fi
  exit 0
fi

# --- process bookkeeping: everything started here is stopped on exit ---------------------
server_pids=()
tmp_dirs=()
declare -A server_db_dir=()

alive() { # PID: running (not a zombie)
  local state
  [[ -r /proc/$1/stat ]] || return 1
  state=$(< "/proc/$1/stat") 2>/dev/null || return 1
  state=${state##*) }
  [[ ${state%% *} != Z && ${state%% *} != X ]]
}

stop_server() { # PID
  local pid=$1 i
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      say "server $pid still running 15 s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
  local kept=()
  for i in "${server_pids[@]}"; do [[ $i == "$pid" ]] || kept+=("$i"); done
  server_pids=("${kept[@]}")
  if [[ -n ${server_db_dir[$pid]:-} ]]; then
    rm -rf "${server_db_dir[$pid]}"
    unset "server_db_dir[$pid]"
  fi
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
# Runs "$@" (a bavard-bench command) under `timeout`, with its output appended to file $1
# and shown; in the background and waited for, so that INT/TERM traps run at once (bash
# defers traps until a foreground command ends). Sets rc to the command's exit status
# (124: timed out).
bench_pid=
bench_fifo=
run_logged() { # FILE SECONDS CMD...
  local file=$1 secs=$2 out
  shift 2
  out=$(mktemp -u "${TMPDIR:-/tmp}/bavard-bench-out.XXXXXX")
  mkfifo "$out" || { rc=1; return; }
  bench_fifo=$out
  tee -a "$file" < "$out" &
  local tee_pid=$!
  timeout -k 5 "$secs" "$@" > "$out" 2>&1 &
  bench_pid=$!
  wait "$bench_pid"
  rc=$?
  bench_pid=
  wait "$tee_pid"
  rm -f "$out"
  bench_fifo=
  if [[ $rc == 124 || $rc == 137 ]]; then
    echo "### run.sh: exit timed out after $secs s" | tee -a "$file"
  fi
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
      [[ $next_port -lt 19400 ]] || next_port=18500
      echo "$port"
      return 0
    fi
  done
  next_port=18500
  return 1
}

# The flags that turn off every limit BIN has (rates per connection, per user and for
# REST writes, connections per address): a baseline build may predate some of them.
# shellcheck source=limits_off.sh
source "$here/limits_off.sh"

server_pid=
server_port=
start_server() { # NAME LOG: sets server_pid, server_port; non-zero if it does not come up
  local name=$1 log=$2 port pid i db_dir=
  port=$(free_port) || { say "no free port"; return 1; }
  if [[ $name == bavard || $name == bavard-base ]]; then
    local bin=$bavard_bin from="target/release/bavard"
    [[ $name == bavard ]] || bin=$base_bin from=$baseline
    echo "### run.sh: $(date -u '+%H:%M:%S') start $name ($from) on 127.0.0.1:$port" >> "$log"
    db_dir=$(mktemp -d "${TMPDIR:-/tmp}/bavard-bench.XXXXXX") || return 1
    tmp_dirs+=("$db_dir")
    "$bin" --listen "127.0.0.1:$port" --db "$db_dir/bench.db" $(limits_off "$bin") >> "$log" 2>&1 &
  else
    echo "### run.sh: $(date -u '+%H:%M:%S') start $name on 127.0.0.1:$port" >> "$log"
    "$here/peers/start.sh" "$name" "$port" >> "$log" 2>&1 &
  fi
  pid=$!
  server_pids+=("$pid")
  [[ -z $db_dir ]] || server_db_dir[$pid]=$db_dir
  for ((i = 0; i < 300; i++)); do
    if ! alive "$pid"; then
      wait "$pid" 2>/dev/null
      say "$name exited before accepting connections (see $log)"
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      server_pid=$pid server_port=$port
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

phase() { echo "$(date +%s.%N) $*" >> "$results/phases.txt"; } # begin|end MEASURE NAME RUN

# --- 0. results, build, setup, is the machine quiet? ---------------------------------------
rm -rf "$results"
mkdir -p "$results"
started=$(date +%s)
meta=$results/meta.env
{
  echo "command=$command_line"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "servers=$servers"
  echo "runs=$runs"
  echo "quick=$quick"
  echo "rates=$rates"
  echo "step_secs=$step_secs"
  echo "p99_limit_ms=$p99_limit"
  echo "warmup_secs=$warmup_secs"
  echo "idle_conns=$idle_conns"
  echo "room_a=$room_a"
  echo "room_b=$room_b"
  echo "storm_members=$storm_members"
  echo "storm_joiners=$storm_joiners"
  echo "storm_concurrency=$storm_concurrency"
  echo "durable_senders=$durable_senders"
  echo "durable_in_flight=$(IFS=,; echo "${durable_in_flight[*]}")"
  echo "durable_secs=$durable_secs"
  echo "busy_limit_pct=$busy_limit"
  echo "estimate_min=$(((estimate + 59) / 60))"
  echo "measures=$(IFS=,; echo "${measures[*]}")"
  echo "only=$only"
  echo "section=$section"
  echo "publish=$publish"
  echo "baseline=$baseline"
  echo "baseline_label=$baseline_label"
  [[ -z $baseline ]] || echo "baseline_sha256=$(sha256sum "$baseline" | cut -c1-12)"
} > "$meta"
printf 'measure\tserver\trun\trc\tseconds\n' > "$results/runs.tsv"

say "building (cargo build --release -p bavard -p bavard-bench)"
dirty=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | awk '{print "`" $NF "`"}' | paste -sd, - | sed 's/,/, /g')
{
  echo "commit=$(git rev-parse --short HEAD)"
  echo "dirty=$dirty"
  echo "dirty_any=$(git status --porcelain 2>/dev/null | grep -c .)"
  echo "rustc=$(rustc --version 2>/dev/null | cut -d' ' -f1-2)"
} >> "$meta"
if ! cargo build --release -p bavard -p bavard-bench 2>&1 | tee "$results/build.log" | tail -n 3; then
  say "cargo build failed (see $results/build.log)"
  exit 1
fi
[[ -z $dirty ]] || say "note: building with uncommitted changes in $dirty"

# Run private copies: others may rebuild target/release while this runs, and every run
# must start the same bavard.
bin_dir=$(mktemp -d "${TMPDIR:-/tmp}/bavard-bench-bin.XXXXXX") || exit 1
tmp_dirs+=("$bin_dir")
cp "$root/target/release/bavard" "$root/target/release/bavard-bench" "$bin_dir/" || exit 1
bavard_bin=$bin_dir/bavard
bench_bin=$bin_dir/bavard-bench
base_bin=
if [[ -n $baseline ]]; then
  cp "$baseline" "$bin_dir/bavard-base" || exit 1
  base_bin=$bin_dir/bavard-base
fi

say "bench/peers/setup.sh"
"$here/peers/setup.sh" 2>&1 | tee "$results/setup.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || { say "setup.sh failed"; exit 1; }

say "checking that the machine is quiet (${busy_secs} s)"
"$py" "$here/report.py" busy --root $$ --seconds "$busy_secs" --limit "$busy_limit" --out "$results/busy-start.txt" >&2
busy_rc=$?
busy_pct=$(sed -n 's/.*others_pct=\([0-9]*\).*/\1/p' "$results/busy-start.txt" 2>/dev/null)
echo "busy_start_pct=${busy_pct:-?}" >> "$meta"
if [[ $busy_rc == 3 ]]; then
  if [[ $force == 0 ]]; then
    say "the machine is busy: other processes use ${busy_pct:-?}% of a core on average (limit ${busy_limit}%)."
    say "Figures measured now would measure that contention; wait until it is quiet, or run with --force"
    say "(the report then says how busy the machine was)."
    exit 3
  fi
  say "the machine is busy (${busy_pct:-?}% of a core), going on because of --force"
  echo "busy_forced=1" >> "$meta"
elif [[ $busy_rc != 0 ]]; then
  say "could not measure how busy the machine is (report.py busy exited $busy_rc); going on"
fi

# The machine's load while we run: CPU of this benchmark's processes and of everyone else's.
"$py" "$here/report.py" sample "$results/load.txt" --root $$ &
sampler_pid=$!

# --- 1. the measurements ----------------------------------------------------------------------
# Fresh client source addresses for each run that opens thousands of connections (see the
# header): 127.0.K.2 up, K cycling through 1..250. A run needs at most 2 addresses (19,000
# connections at bavard-bench's 10,000 per address), and 250 runs take far more than the
# 60 s a TIME_WAIT socket lives, so an address is never reused while one is left there.
source_block=0
first_source=
next_sources() { # sets first_source to the next run's first client address
  source_block=$((source_block % 250 + 1))
  first_source=127.0.$source_block.2
}
# One bench call (or, for the hot room, one call plus retries) on a fresh server.
bench_call() { # MEASURE NAME TXT CSV
  local m=$1 name=$2 txt=$3 csv=$4 url="ws://127.0.0.1:$server_port" secs
  secs=$(timeout_of "$m")
  local common=(--url "$url" --server-pid "$server_pid" --csv "$csv" --label "$name")
  case $m in
    idle|idle-json|room-*|storm-*)
      next_sources
      echo "### run.sh: sources $first_source ($(ss -Htan state time-wait 2>/dev/null | grep -c .) sockets in TIME_WAIT)" \
        >> "$txt"
      common+=(--first-source "$first_source") ;;
  esac
  case $m in
    hot-room)
      local todo=$rates retry
      while :; do
        run_logged "$txt" "$secs" "$bench_bin" hot-room "${common[@]}" --rates "$todo" \
          --step-secs "$step_secs" --warmup-secs "$warmup_secs" --p99-limit-ms "$p99_limit"
        # 0: a step passed, 2: no step passed; anything else is an error of the run itself.
        [[ $rc == 0 || $rc == 2 ]] || return
        retry=$("$py" "$here/report.py" retry-rates "$txt" "$rates")
        [[ -n $retry ]] || return
        if ! alive "$server_pid"; then
          echo "### run.sh: exit $name died during the run (no retry)" | tee -a "$txt"
          rc=1
          return
        fi
        wait_quiet "$server_pid"
        echo "### run.sh: retry of the ${retry%%,*}/s step (each failed step is retried once)" | tee -a "$txt"
        todo=$retry
      done
      ;;
    idle)
      run_logged "$txt" "$secs" "$bench_bin" idle "${common[@]}" --conns "$idle_conns" --room-size 10 --protocol plain ;;
    idle-json)
      run_logged "$txt" "$secs" "$bench_bin" idle "${common[@]}" --conns "$idle_conns" --protocol json ;;
    room-a|room-b)
      local n=$room_a
      [[ $m == room-a ]] || n=$room_b
      run_logged "$txt" "$secs" "$bench_bin" idle "${common[@]}" --conns "$n" --room-size "$n" --protocol plain \
        --probe --kill-server ;;
    storm-plain|storm-json)
      run_logged "$txt" "$secs" "$bench_bin" join-storm "${common[@]}" --members "$storm_members" \
        --joiners "$storm_joiners" --connect-concurrency "$storm_concurrency" --protocol "${m#storm-}" --kill-server ;;
    durable-*)
      run_logged "$txt" "$secs" "$bench_bin" durable "${common[@]}" --senders "$durable_senders" \
        --in-flight "${m#durable-}" --duration "$durable_secs" --warmup-secs "$durable_warmup" ;;
  esac
}

run_one() { # MEASURE NAME RUN
  local m=$1 name=$2 run=$3 dir=$results/$1 t0 before after backlog
  mkdir -p "$dir"
  local txt=$dir/$name-r$run.txt csv=$dir/$name-r$run.csv log=$dir/$name-r$run-server.log
  : > "$txt"
  t0=$(date +%s.%N)
  say "== $m: $name, run $run of $runs ($(date -u '+%H:%M:%S'), $(($(date +%s) - started)) s in)"
  rc=0
  if ! start_server "$name" "$log"; then
    echo "### run.sh: exit server did not start" >> "$txt"
    rc=1
  else
    phase begin "$m" "$name" "$run"
    # Send-Q of a listening socket is its accept backlog.
    backlog=$(ss -Hltn "sport = :$server_port" 2>/dev/null | awk 'NR == 1 { print $3 }')
    [[ -z $backlog ]] || echo "### run.sh: backlog $backlog" >> "$txt"
    before=$(listen_overflows)
    bench_call "$m" "$name" "$txt" "$csv"
    after=$(listen_overflows)
    phase end "$m" "$name" "$run"
    if [[ $m != hot-room && -n $before && -n $after ]]; then
      echo "### run.sh: ListenOverflows $((after - before))" >> "$txt"
    fi
    if [[ $rc != 0 && $rc != 2 ]]; then
      grep -q '^### run.sh: exit' "$txt" || echo "### run.sh: exit status $rc of bavard-bench" | tee -a "$txt"
    fi
    stop_server "$server_pid"
  fi
  # 2 from the hot room only says that no step passed (a slow server): a result, not a failure.
  [[ $rc == 0 || ($m == hot-room && $rc == 2) ]] || failures=$((failures + 1))
  printf '%s\t%s\t%s\t%s\t%s\n' "$m" "$name" "$run" "$rc" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" \
    >> "$results/runs.tsv"
}

for m in "${measures[@]}"; do
  mapfile -t names < <(servers_of "$m")
  [[ ${#names[@]} -gt 0 ]] || continue
  for ((r = 1; r <= runs; r++)); do
    for s in "${names[@]}"; do run_one "$m" "$s" "$r"; done
  done
done

# --- 2. plot and report -------------------------------------------------------------------------
{
  echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  elapsed=$(($(date +%s) - started))
  echo "duration=$((elapsed / 60)) min $((elapsed % 60)) s"
} >> "$meta"
kill -TERM "$sampler_pid" 2>/dev/null
wait "$sampler_pid" 2>/dev/null
sampler_pid=

if "$py" "$here/report.py" plot-csv "$results" "$results/hot-room-plot.csv"; then
  "$py" "$here/plot.py" "$results/hot-room-plot.csv" -o "$results/hot-room.png" \
    --title "Hot room (1,000 + 10 connections): deliveries/s vs p99 latency, median of $runs runs${baseline:+ (bavard-base: $baseline_label)}" ||
    { say "plot failed"; failures=$((failures + 1)); }
else
  say "no hot-room CSV rows: no plot"
fi

report_args=("$results")
if [[ $publish == 1 ]]; then
  if [[ -z $section && -f $results/hot-room.png ]]; then
    cp "$results/hot-room.png" "$here/hot-room.png"
  fi
  report_args+=(--benchmarks "$root/BENCHMARKS.md")
fi
"$py" "$here/report.py" report "${report_args[@]}" || { say "report failed"; failures=$((failures + 1)); }

if [[ $publish == 1 && -n $section ]]; then
  say "updated the section \"## $section\" of BENCHMARKS.md (report also in $results/benchmarks-section.md)"
elif [[ $publish == 1 ]]; then
  say "updated BENCHMARKS.md and bench/hot-room.png"
elif [[ $held_back == 1 ]]; then
  say "report in $results/benchmarks-section.md (BENCHMARKS.md untouched: --only and --baseline runs" \
    "publish only with --section TITLE)"
else
  say "report in $results/benchmarks-section.md (BENCHMARKS.md untouched)"
fi
say "done in $(($(date +%s) - started)) s (estimated $(((estimate + 59) / 60)) min plus the build)"
if [[ $failures -gt 0 ]]; then
  say "$failures bench call(s) failed or found a problem, see above and bench/results/runs.tsv"
  exit 1
fi
