#!/usr/bin/env bash
# Bavard as a cluster on this machine: durable sends on PostgreSQL beside SQLite, and a
# hot room split over two nodes on each broker; medians as a markdown table.
#
#   bench/cluster.sh [--runs N] [--only durable|hot] [--brokers redis,nats]
#                    [--no-build] [--dry-run]
#
# durable  (a) `bavard-bench durable` with run.sh's options (100 senders, --in-flight K
#          for K = 1, 4, 8, --duration 5 --warmup-secs 1) against one bavard on a fresh
#          SQLite file, then one bavard on a fresh PostgreSQL database (created with
#          psql, dropped after), alternating, N runs each: acked messages/s, ack p99 and
#          server CPU-s per M acked messages (the bavard process only: PostgreSQL's own
#          processes are not counted).
# hot      (b) `bavard-bench hot-room`, 1,000 receivers + 10 publishers in one room, on:
#          solo   one node, fresh SQLite file, no broker (the reference);
#          redis  two nodes on one fresh PostgreSQL database and Redis, a unique
#                 --cluster-name per run;
#          nats   the same with NATS;
#          alternating solo, redis, nats, N runs each. With two nodes the bench's
#          connections go round-robin to both (--url node 1 --also-url node 2: 505 each,
#          5 publishers each) and --server-pid gives both pids, so the CPU is that of
#          both nodes summed. The ladder is run.sh's with 100k, 200k, 300k in front (as
#          run.sh does for slow peers), 3 s steps after 1 s of warm-up, p99 <= 50 ms;
#          a run stops at its first failed step, with no retry (run.sh retries a failed
#          step once). Per run: the best passing step's deliveries/s, its p99 and its
#          server CPU-s per M deliveries.
# Every server runs with every limit off (--rate-per-second 0 --api-rate-per-second 0
# --user-rate-per-second 0 --max-connections-per-ip 0) and is freshly started for each
# run. At the end the script prints (and writes to bench/results-cluster/section.md) a
# markdown table of the medians with the commit, the machine and the date, ready to
# paste into BENCHMARKS.md. Raw outputs: bench/results-cluster/ (emptied at the start).
#
# --runs N      runs per configuration (default 3; the median is reported)
# --only PART   durable or hot (default: both)
# --brokers L   the brokers of part (b), comma-separated (default redis,nats)
# --no-build    use the binaries already built instead of running cargo build --release
# --dry-run     print the commands it would run (ports and pids as placeholders), then exit
#
# Environment: CARGO_TARGET_DIR (default ./target), PGHOST (127.0.0.1), PGPORT (5432),
# PGUSER (postgres), BAVARD_BENCH_REDIS (redis://127.0.0.1:6379), BAVARD_BENCH_NATS
# (nats://127.0.0.1:4222). Every external call is bounded by `timeout`; every server
# and database this script made is stopped or dropped when it exits, also on failure
# or Ctrl-C. Expected duration with 3 runs: about 4 min for durable, 5-10 min for hot.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root" || exit 1

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
command_line="bench/cluster.sh"
for a in "$@"; do command_line+=" $a"; done
runs=3
only=
brokers=redis,nats
build=1
dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) [[ $# -ge 2 ]] || usage; runs=$2; shift 2 ;;
    --runs=*) runs=${1#--runs=}; shift ;;
    --only) [[ $# -ge 2 ]] || usage; only=$2; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    --brokers) [[ $# -ge 2 ]] || usage; brokers=$2; shift 2 ;;
    --brokers=*) brokers=${1#--brokers=}; shift ;;
    --no-build) build=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage ;;
    *) echo "cluster.sh: unknown argument $1" >&2; usage ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "cluster.sh: --runs needs a positive number" >&2; usage; }
[[ -z $only || $only == durable || $only == hot ]] || { echo "cluster.sh: --only takes durable or hot" >&2; usage; }
IFS=, read -r -a broker_list <<< "$brokers"
for b in "${broker_list[@]}"; do
  [[ $b == redis || $b == nats ]] || { echo "cluster.sh: unknown broker '$b' (redis, nats)" >&2; usage; }
done

target_dir=${CARGO_TARGET_DIR:-$root/target}
pg_host=${PGHOST:-127.0.0.1}
pg_port=${PGPORT:-5432}
pg_user=${PGUSER:-postgres}
redis_url=${BAVARD_BENCH_REDIS:-redis://127.0.0.1:6379}
nats_url=${BAVARD_BENCH_NATS:-nats://127.0.0.1:4222}
limits=(--rate-per-second 0 --api-rate-per-second 0 --user-rate-per-second 0 --max-connections-per-ip 0)

# The same options as run.sh's durable-K and hot-room measurements.
durable_senders=100
durable_in_flight=(1 4 8)
durable_secs=5
durable_warmup=1
rates=100000,200000,300000,500000,750000,1000000,1250000,1500000,2000000,2500000,3000000,3500000,4000000,4500000,5000000,5500000,6000000,6500000,7000000,7500000,8000000,9000000,10000000
step_secs=3
warmup_secs=1
p99_limit=50
n_rates=$(tr ',' '\n' <<< "$rates" | grep -c .)
durable_timeout=$((durable_warmup + durable_secs + 90))
hot_timeout=$((n_rates * (warmup_secs + step_secs + 3) + 60))
# A server lives at most as long as the bench call it serves, plus start and stop.
server_timeout=$((hot_timeout + 120))

results=$here/results-cluster
tag=$$
say() { printf 'cluster.sh: %s\n' "$*" >&2; }
show() { # prints a command, quoted for the shell where it needs to be
  local a line=+
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_,./=:+@%-]+$ ]]; then line+=" $a"; else line+=" $(printf '%q' "$a")"; fi
  done
  printf '%s\n' "$line"
}

# --- bookkeeping: every server and database made here goes on exit --------------------------
node_pids=()   # bavard processes
timer_pids=()  # their `timeout` parents
databases=()
tmp_dirs=()
clusters=()    # (name broker) pairs whose Redis keys are removed at the end

alive() { # PID: running (not a zombie)
  local state
  [[ -r /proc/$1/stat ]] || return 1
  state=$(< "/proc/$1/stat") 2>/dev/null || return 1
  state=${state##*) }
  [[ ${state%% *} != Z && ${state%% *} != X ]]
}

stop_nodes() { # stops every running node (TERM, then KILL after 10 s) and waits for them
  local pid i
  for pid in "${node_pids[@]}"; do alive "$pid" && kill -TERM "$pid" 2>/dev/null; done
  for ((i = 0; i < 100; i++)); do
    local any=0
    for pid in "${node_pids[@]}"; do alive "$pid" && any=1; done
    [[ $any == 1 ]] || break
    sleep 0.1
  done
  for pid in "${node_pids[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
  for pid in "${timer_pids[@]}"; do wait "$pid" 2>/dev/null; done
  node_pids=()
  timer_pids=()
}

psql_admin() { # SQL: runs it on the postgres database
  timeout 30 psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -v ON_ERROR_STOP=1 -qAtc "$1"
}

drop_databases() {
  local db
  for db in "${databases[@]}"; do
    psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || say "could not drop database $db"
  done
  databases=()
}

forget_clusters() { # removes the Redis keys of this script's clusters (names are unique)
  local i name keys
  for ((i = 0; i < ${#clusters[@]}; i += 2)); do
    name=${clusters[i]}
    [[ ${clusters[i + 1]} == redis ]] || continue
    keys=$(timeout 10 redis-cli -u "$redis_url" --scan --pattern "$name*" 2>/dev/null) || continue
    [[ -z $keys ]] || xargs timeout 10 redis-cli -u "$redis_url" del <<< "$keys" >/dev/null 2>&1
  done
  clusters=()
}

bench_pid=
cleanup() {
  [[ -z $bench_pid ]] || { kill -TERM "$bench_pid" 2>/dev/null; wait "$bench_pid" 2>/dev/null; }
  stop_nodes
  drop_databases
  forget_clusters
  local d
  for d in "${tmp_dirs[@]}"; do rm -rf "$d"; done
}
if [[ $dry_run == 0 ]]; then
  trap cleanup EXIT
  trap 'say "interrupted"; exit 130' INT
  trap 'say "terminated"; exit 143' TERM
fi

next_port=18700
free_port() { # sets port to one nobody listens on, from 18700 up (not in a subshell: it counts)
  for ((port = next_port; port < 19700; port++)); do
    if [[ $dry_run == 1 ]] || [[ -z $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
      next_port=$((port + 1))
      [[ $next_port -lt 19600 ]] || next_port=18700
      return 0
    fi
  done
  next_port=18700
  return 1
}

started_pid=
started_port=
start_node() { # LOG ARGS...: starts bavard ARGS on a free port; sets started_pid, started_port
  local log=$1 port tpid pid i
  shift
  free_port || { say "no free port"; return 1; }
  local cmd=(timeout -k 5 "$server_timeout" "$bavard_bin" --listen "127.0.0.1:$port" "$@" "${limits[@]}")
  if [[ $dry_run == 1 ]]; then
    printf '%s &\n' "$(show "${cmd[@]}")"
    started_pid=PID_$port started_port=$port
    return 0
  fi
  echo "### cluster.sh: $(date -u '+%H:%M:%S') $(show "${cmd[@]}")" >> "$log"
  "${cmd[@]}" >> "$log" 2>&1 &
  tpid=$!
  timer_pids+=("$tpid")
  pid=
  for ((i = 0; i < 300; i++)); do # 30 s to come up and be ready (broker included)
    [[ -n $pid ]] || pid=$(pgrep -P "$tpid" | head -n 1)
    if ! alive "$tpid"; then
      say "bavard exited before it was ready (see $log)"
      return 1
    fi
    if [[ -n $pid ]] && timeout 3 curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
      node_pids+=("$pid")
      started_pid=$pid started_port=$port
      return 0
    fi
    sleep 0.1
  done
  [[ -z $pid ]] || node_pids+=("$pid")
  say "bavard on port $port is not ready after 30 s (see $log)"
  return 1
}

new_database() { # NAME: creates it (and remembers to drop it)
  if [[ $dry_run == 1 ]]; then
    show timeout 30 psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d postgres -c "CREATE DATABASE $1"
    return 0
  fi
  psql_admin "CREATE DATABASE $1" || { say "cannot create database $1"; return 1; }
  databases+=("$1")
}

pg_url() { echo "postgres://$pg_user@$pg_host:$pg_port/$1"; }

rc=0
run_bench() { # FILE SECONDS ARGS...: bavard-bench ARGS, output appended to FILE; sets rc
  local file=$1 secs=$2
  shift 2
  local cmd=(timeout -k 5 "$secs" "$bench_bin" "$@")
  if [[ $dry_run == 1 ]]; then
    show "${cmd[@]}"
    rc=0
    return
  fi
  echo "### cluster.sh: $(show "${cmd[@]}")" >> "$file"
  "${cmd[@]}" >> "$file" 2>&1 &
  bench_pid=$!
  wait "$bench_pid"
  rc=$?
  bench_pid=
  [[ $rc != 124 && $rc != 137 ]] || echo "### cluster.sh: timed out after $secs s" >> "$file"
}

# --- the figures of one run's output ----------------------------------------------------------
durable_figures() { # FILE: "acked/s p99_ms cpu_per_M", "-" for what is missing
  awk '/^durable: [0-9]/ {
      a = $2; p = "-"; c = "-"
      if (match($0, /, p99 [0-9.]+ ms/)) { p = substr($0, RSTART + 6, RLENGTH - 9) }
      if (match($0, /server [0-9.]+ CPU-s/)) { c = substr($0, RSTART + 7, RLENGTH - 13) }
      if ($0 ~ /errors 0;/) found = a " " p " " c; else found = "- - -"
    }
    END { print (found == "" ? "- - -" : found) }' "$1"
}

hot_figures() { # FILE: the best passing step's "deliveries/s p99_ms cpu_per_M" ("0 - -": none passed)
  awk '/^rate [0-9]+\/s: .*PASS$/ {
      d = 0; p = "-"; c = "-"
      if (match($0, /, [0-9]+ deliveries\/s/)) { d = substr($0, RSTART + 2, RLENGTH - 15) + 0 }
      if (match($0, /, p99 [0-9.]+ ms/)) { p = substr($0, RSTART + 6, RLENGTH - 9) }
      if (match($0, /server [0-9.]+ CPU-s/)) { c = substr($0, RSTART + 7, RLENGTH - 13) }
      if (d > best) { best = d; line = d " " p " " c }
    }
    /^### cluster.sh: timed out/ || /^bavard-bench: / { failed = 1 }
    END { if (line != "") print line; else if (failed) print "- - -"; else print "0 - -" }' "$1"
}

median() { # numbers (and "-", ignored) on stdin: the median, or "-"
  grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- what runs ------------------------------------------------------------------------------
parts=()
[[ $only == hot ]] || parts+=(durable)
[[ $only == durable ]] || parts+=(hot)
hot_configs=(solo "${broker_list[@]}")
say "parts: ${parts[*]}; $runs run(s) each; durable in flight ${durable_in_flight[*]}; hot room on ${hot_configs[*]}"

if [[ $dry_run == 1 ]]; then
  bavard_bin=$target_dir/release/bavard
  bench_bin=$target_dir/release/bavard-bench
  [[ $build == 0 ]] || show cargo build --release -p bavard -p bavard-bench
else
  rm -rf "$results"
  mkdir -p "$results"
  if [[ $build == 1 ]]; then
    say "building (cargo build --release -p bavard -p bavard-bench)"
    timeout 1800 cargo build --release -p bavard -p bavard-bench > "$results/build.log" 2>&1 ||
      { tail -n 20 "$results/build.log" >&2; say "cargo build failed (see $results/build.log)"; exit 1; }
  fi
  # Private copies: others may rebuild target/release while this runs.
  bin_dir=$(mktemp -d "${TMPDIR:-/tmp}/bavard-cluster-bin.XXXXXX") || exit 1
  tmp_dirs+=("$bin_dir")
  cp "$target_dir/release/bavard" "$target_dir/release/bavard-bench" "$bin_dir/" || exit 1
  bavard_bin=$bin_dir/bavard
  bench_bin=$bin_dir/bavard-bench
  timeout 10 "$bavard_bin" --help 2>/dev/null | grep -q -- '--broker' ||
    { say "this bavard has no --broker flag: no cluster to measure"; exit 1; }
  printf 'part\tconfig\trun\trc\tfigures\n' > "$results/runs.tsv"
fi

# (a) durable sends: K in flight, one store, one run.
durable_run() { # STORE(sqlite|postgres) K RUN
  local store=$1 k=$2 r=$3 db_dir= db txt=$results/durable-$k-$1-r$3.txt
  say "== durable, $k in flight, $store, run $r of $runs"
  if [[ $store == sqlite ]]; then
    if [[ $dry_run == 1 ]]; then db_dir=/tmp/bavard-cluster.XXXXXX; else db_dir=$(mktemp -d "${TMPDIR:-/tmp}/bavard-cluster.XXXXXX") || return; tmp_dirs+=("$db_dir"); fi
    db=$db_dir/bench.db
  else
    local name=bavard_bench_${tag}_durable_${k}_r$r
    new_database "$name" || { rc=1; record durable "$store-$k" "$r" "- - -"; return; }
    db=$(pg_url "$name")
  fi
  if start_node "$results/durable-$k-$store-r$r-server.log" --db "$db"; then
    run_bench "$txt" "$durable_timeout" durable --url "ws://127.0.0.1:$started_port" --server-pid "$started_pid" \
      --csv "$results/durable.csv" --label "$store" --senders "$durable_senders" --in-flight "$k" \
      --duration "$durable_secs" --warmup-secs "$durable_warmup"
  else
    rc=1
  fi
  [[ $dry_run == 1 ]] || stop_nodes
  [[ $store == sqlite || $dry_run == 1 ]] || drop_databases
  [[ -z $db_dir || $dry_run == 1 ]] || rm -rf "$db_dir"
  record durable "$store-$k" "$r" "$([[ $dry_run == 1 || ! -f $txt ]] && echo "- - -" || durable_figures "$txt")"
}

# (b) the hot room on one configuration, one run.
hot_run() { # CONFIG(solo|redis|nats) RUN
  local config=$1 r=$2 txt=$results/hot-$1-r$2.txt db_dir= urls=() pids=()
  say "== hot room, $config, run $r of $runs"
  if [[ $config == solo ]]; then
    if [[ $dry_run == 1 ]]; then db_dir=/tmp/bavard-cluster.XXXXXX; else db_dir=$(mktemp -d "${TMPDIR:-/tmp}/bavard-cluster.XXXXXX") || return; tmp_dirs+=("$db_dir"); fi
    if start_node "$results/hot-solo-r$r-server.log" --db "$db_dir/bench.db"; then
      urls=("ws://127.0.0.1:$started_port")
      pids=("$started_pid")
    fi
  else
    local name=bavard_bench_${tag}_hot_${config}_r$r broker=$redis_url cluster=bavard-bench-$tag-r$r-$config n
    [[ $config == redis ]] || broker=$nats_url
    clusters+=("$cluster" "$config")
    if new_database "$name"; then
      for n in 1 2; do
        start_node "$results/hot-$config-r$r-node$n.log" --db "$(pg_url "$name")" --broker "$broker" \
          --cluster-name "$cluster" --node-id "node$n" || break
        urls+=("ws://127.0.0.1:$started_port")
        pids+=("$started_pid")
      done
    fi
  fi
  local want=2
  [[ $config != solo ]] || want=1
  if [[ ${#urls[@]} == "$want" ]]; then
    local spread=()
    [[ $want == 1 ]] || spread=(--also-url "${urls[1]}")
    run_bench "$txt" "$hot_timeout" hot-room --url "${urls[0]}" "${spread[@]}" \
      --server-pid "$(IFS=,; echo "${pids[*]}")" --csv "$results/hot-$config-r$r.csv" --label "$config" \
      --rates "$rates" --step-secs "$step_secs" --warmup-secs "$warmup_secs" --p99-limit-ms "$p99_limit"
  else
    rc=1
  fi
  if [[ $dry_run == 0 ]]; then
    stop_nodes
    drop_databases
    forget_clusters
    [[ -z $db_dir ]] || rm -rf "$db_dir"
  fi
  record hot "$config" "$r" "$([[ $dry_run == 1 || ! -f $txt ]] && echo "- - -" || hot_figures "$txt")"
}

declare -A figures=() # "part config run" -> "a b c"
record() { # PART CONFIG RUN FIGURES
  figures["$1 $2 $3"]=$4
  [[ $dry_run == 1 ]] || printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rc" "$4" >> "$results/runs.tsv"
  [[ $dry_run == 1 ]] || say "   $1 $2 run $3: $4 (exit $rc)"
}

t0=$(date +%s)
for ((r = 1; r <= runs; r++)); do
  if [[ " ${parts[*]} " == *" durable "* ]]; then
    for k in "${durable_in_flight[@]}"; do
      for store in sqlite postgres; do rc=0; durable_run "$store" "$k" "$r"; done
    done
  fi
  if [[ " ${parts[*]} " == *" hot "* ]]; then
    for c in "${hot_configs[@]}"; do rc=0; hot_run "$c" "$r"; done
  fi
done
[[ $dry_run == 0 ]] || exit 0

# --- the table of medians ----------------------------------------------------------------------
column_median() { # PART CONFIG FIELD(1-3)
  local r
  for ((r = 1; r <= runs; r++)); do
    awk -v f="$3" '{ print $f }' <<< "${figures["$1 $2 $r"]:-- - -}"
  done | median
}
thousands() { # 1234567.8 -> 1,234,568 ("-" stays)
  [[ $1 == - ]] && { echo -; return; }
  printf '%.0f\n' "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'
}
fixed() { # VALUE DECIMALS [UNIT]
  if [[ $1 == - ]]; then echo -; else printf "%.${2}f%s\n" "$1" "${3:+ $3}"; fi
}
ratio() { # A B: B/A in %
  [[ $1 == - || $2 == - ]] && { echo -; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.0f%%", 100 * b / a; else print "-" }'
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
[[ -z $(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]] || commit+=" (with uncommitted changes)"
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
when=$(date -u '+%Y-%m-%d %H:%M UTC')
pg_version=$(psql_admin "SHOW server_version" 2>/dev/null | cut -d' ' -f1)
section=$results/section.md
{
  echo "## Cluster: PostgreSQL and brokers"
  echo
  echo "Commit $commit, $when; $(nproc) cores ($cpu_model); PostgreSQL ${pg_version:-?}, Redis and NATS of this"
  echo "machine. \`$command_line\`: median of $runs runs, each on freshly started servers with every"
  echo "limit off and a fresh database (SQLite file or PostgreSQL database), the bench on the same machine."
  if [[ " ${parts[*]} " == *" durable "* ]]; then
    echo
    echo "Durable sends: $durable_senders senders over 100 rooms, ${durable_secs} s measured after ${durable_warmup} s; server CPU is"
    echo "the bavard process only (PostgreSQL's processes are not counted)."
    echo
    echo "| in flight per sender | SQLite acked/s | PostgreSQL acked/s | PostgreSQL / SQLite | ack p99 SQLite | ack p99 PostgreSQL | bavard CPU-s/M SQLite | bavard CPU-s/M PostgreSQL |"
    echo "|---|---|---|---|---|---|---|---|"
    for k in "${durable_in_flight[@]}"; do
      s_a=$(column_median durable "sqlite-$k" 1) p_a=$(column_median durable "postgres-$k" 1)
      echo "| $k | $(thousands "$s_a") | $(thousands "$p_a") | $(ratio "$s_a" "$p_a") |" \
        "$(fixed "$(column_median durable "sqlite-$k" 2)" 2 ms) | $(fixed "$(column_median durable "postgres-$k" 2)" 2 ms) |" \
        "$(fixed "$(column_median durable "sqlite-$k" 3)" 2) | $(fixed "$(column_median durable "postgres-$k" 3)" 2) |"
    done
  fi
  if [[ " ${parts[*]} " == *" hot "* ]]; then
    echo
    echo "Hot room: 1,000 receivers + 10 publishers in one plain-text room; the highest step with zero loss"
    echo "and p99 <= ${p99_limit} ms (${step_secs} s steps from 100k deliveries/s, no retry). Two nodes: one PostgreSQL"
    echo "database, half of the connections (and of the publishers) on each node, CPU of both nodes summed."
    echo
    header="| |" rule="|---|"
    for c in "${hot_configs[@]}"; do
      case $c in
        solo) header+=" 1 node (SQLite, solo) |" ;;
        redis) header+=" 2 nodes, Redis |" ;;
        nats) header+=" 2 nodes, NATS |" ;;
      esac
      rule+="---|"
    done
    echo "$header"
    echo "$rule"
    row1="| max deliveries/s |" row2="| p99 at that rate |" row3="| server CPU-s per M deliveries (all nodes) |"
    for c in "${hot_configs[@]}"; do
      row1+=" $(thousands "$(column_median hot "$c" 1)") |"
      row2+=" $(fixed "$(column_median hot "$c" 2)" 2 ms) |"
      row3+=" $(fixed "$(column_median hot "$c" 3)" 2) |"
    done
    printf '%s\n' "$row1" "$row2" "$row3"
  fi
  missing=()
  for key in "${!figures[@]}"; do
    [[ ${figures[$key]} != "- - -" ]] || missing+=("${key% *} run ${key##* }")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo
    echo "Runs without figures (failed, see bench/results-cluster/): $(printf '%s\n' "${missing[@]}" | sort | paste -sd, - | sed 's/,/, /g')."
  fi
} > "$section"
echo
cat "$section"
say "done in $(($(date +%s) - t0)) s; every run's figures in $results/runs.tsv, the table in $section"
failed=$(awk -F'\t' 'NR > 1 && $4 != 0 && !($1 == "hot" && $4 == 2)' "$results/runs.tsv" | grep -c .)
[[ $failed == 0 ]] || { say "$failed run(s) failed, see $results/runs.tsv"; exit 1; }
