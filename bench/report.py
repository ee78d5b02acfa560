#!/usr/bin/env python3
"""Parse the outputs of bench/run.sh, watch the machine's load, and write the report.

    bench/.venv/bin/python bench/report.py busy --root PID [--seconds 5] [--limit 15] [--out FILE]
    bench/.venv/bin/python bench/report.py sample OUT --root PID [--interval 1]
    bench/.venv/bin/python bench/report.py retry-rates TXT RATES
    bench/.venv/bin/python bench/report.py plot-csv RESULTS_DIR OUT
    bench/.venv/bin/python bench/report.py report RESULTS_DIR [--benchmarks BENCHMARKS.md] [--png-ref PATH]

busy: samples the machine for SECONDS and prints how much CPU processes outside the
  tree of PID (run.sh) used; exits 3 when that is more than LIMIT % of a core on
  average (run.sh then refuses to start unless --force), else 0.
sample: the same measurement every INTERVAL s until PID exits, one line per sample
  in OUT (`unix_time load1 ours_pct others_pct steal_pct softirqd_pct`).
retry-rates: TXT is one hot-room run's output so far (one or more attempts of
  `bavard-bench hot-room`), RATES the comma-separated steps run.sh asked for. When
  the last step printed FAIL and that rate has failed only once, prints the steps
  still to try, starting with the failed one (run.sh retries them); else nothing.
plot-csv: merges RESULTS_DIR/hot-room/NAME-rN.csv (the last attempt of each rate of
  each run) into OUT with, per server and rate, the median over the runs, for plot.py.
report: reads RESULTS_DIR (meta.env, setup.txt, runs.tsv, load.txt, phases.txt and
  MEASURE/NAME-rN.txt), writes RESULTS_DIR/runs.csv (every figure of every run and
  the medians), prints the Markdown section, writes it to
  RESULTS_DIR/benchmarks-section.md and, with --benchmarks, replaces that section of
  the file (or the older section it succeeds, or appends it), keeping every other
  section as it is. The section is "## Side by side: ..." for a run of every
  measurement without a baseline; meta.env's section (run.sh --section TITLE) makes
  it "## TITLE"; else a run with a baseline or with --only gets a title of its own
  (it is not the main section). The table shows only the measurements that ran;
  with a baseline (server bavard-base) and bavard, a last column gives bavard's
  median against the baseline's, in %.

How busy the machine is: /proc/stat gives the CPU time of everything (user, nice,
system, irq, softirq; the kernel here charges interrupt time to the task it
interrupts), from which the time of the benchmark's own processes is taken away
(utime + stime + the children's cutime + cstime of every process under PID, so
processes that ended between two samples count too) and that of the ksoftirqd
threads (loopback traffic, mostly the benchmark's). What remains is other people's
work: builds, tests, daemons. Hypervisor steal is reported apart.
"""

import argparse
import csv
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

SECTION = "## Side by side: hot room, idle rooms, join storm, durable sends"
# Earlier titles of the section this script writes; the first one found is replaced.
OLD_SECTIONS = ("## Scenario 1 (hot room) and idle memory, side by side",)
BUSY_LIMIT_PCT = 15  # others' mean CPU (% of a core) above which a machine counts as busy

STEP_RE = re.compile(r"^rate (?P<rate>\d+)/s: (?P<sends>[\d.]+) sends/s, (?P<deliv>[\d.]+) deliveries/s, (?P<rest>.*?)\s+(?P<verdict>PASS|FAIL)\s*$")
P50_RE = re.compile(r"\bp50 (?P<v>[\d.]+) ms")
P99_RE = re.compile(r"\bp99 (?P<v>[\d.]+) ms")
LOSS_RE = re.compile(r"\bloss (?P<loss>\d+) of (?P<expected>\d+) \((?P<detail>[^)]*)\)")
SERVER_CPU_RE = re.compile(r"\bserver (?P<cpu>[\d.]+) CPU-s/M (?P<what>\w+) \((?P<core>\d+)% of a core\)")
BENCH_CPU_RE = re.compile(r"\bbench (?P<cpu>[\d.]+) CPU-s/M (?P<what>\w+) \((?P<core>\d+)% of a core\)")
RSS_END_RE = re.compile(r"^server RSS at the end: (?P<mib>[\d.]+) MiB")
OPENED_RE = re.compile(r"^opened (?P<n>\d+) connections in (?P<secs>[\d.]+) s: (?P<hs>[\d.]+) handshakes/s, handshake (?P<lat>.*?), (?P<failed>\d+) failed")
IDLE_HEAD_RE = re.compile(r"^idle: (?P<n>\d+) (?P<proto>\w+) connections from (?P<addrs>\d+) source")
SATURATED_RE = re.compile(r"^warning: the bench used (?P<pct>\d+)% of its")
IDLE_RSS_RE = re.compile(r"^server RSS (?P<before>[\d.]+) MiB -> (?P<after>[\d.]+) MiB: (?P<per>[\d.]+) KiB per connection")
PROBE_RE = re.compile(r"^probe: reached (?P<reached>\d+) of (?P<total>\d+) connections in (?P<ms>[\d.]+) ms")
FILLED_RE = re.compile(r"^room filled: (?P<n>\d+) of (?P<asked>\d+) members in (?P<secs>[\d.]+) s \((?P<rate>[\d.]+) joins/s\), join (?P<lat>.*), (?P<failed>\d+) failed")
STORM_RE = re.compile(
    r"^storm: (?P<n>\d+) of (?P<asked>\d+) joined in (?P<secs>[\d.]+) s: (?P<rate>[\d.]+) joins/s; [^:]*: "
    r"p50 (?P<p50>[\d.]+) ms, p99 (?P<p99>[\d.]+) ms, p999 (?P<p999>[\d.]+) ms, max (?P<max>[\d.]+) ms; "
    r"connect p50 (?P<c50>[\d.]+) ms, p99 (?P<c99>[\d.]+) ms.*?; (?P<failed>\d+) failed")
PER_JOIN_RE = re.compile(r"^server CPU per join in the storm: (?P<ms>[\d.]+) ms")
REPLIES_RE = re.compile(r"^join replies: member_count (?P<lo>\d+)\.\.(?P<hi>\d+), at most (?P<listed>\d+) members listed")
TOLD_RE = re.compile(r"^members told: (?P<told>\d+) of (?P<members>\d+) members' last count is (?P<count>\d+);.* they got (?P<occ>\d+) occupancy and (?P<pres>\d+) presence events")
STORM_RSS_RE = re.compile(r"^server RSS with (?P<n>\d+) connections in the room: (?P<mib>[\d.]+) MiB")
DURABLE_RE = re.compile(
    r"^durable: (?P<rate>[\d.]+) acked messages/s, ack p50 (?P<p50>[\d.]+) ms, p99 (?P<p99>[\d.]+) ms, "
    r"p999 (?P<p999>[\d.]+) ms, max (?P<max>[\d.]+) ms, errors (?P<errors>\d+)")
RUN_FILE_RE = re.compile(r"^(?P<name>.+)-r(?P<run>\d+)\.(?P<ext>txt|csv)$")


# --- machine load --------------------------------------------------------------------------

def cpu_totals():
    """(busy, steal) ticks of /proc/stat's `cpu` line; busy = user nice system irq softirq."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    v += [0] * (8 - len(v))
    return v[0] + v[1] + v[2] + v[5] + v[6], v[7]


def descendants(table, root):
    """ROOT and every process below it in TABLE (pid -> (ppid, ...))."""
    ours = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, *_rest) in table.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return ours


def proc_table():
    """{pid: (ppid, own ticks, reaped children's ticks, comm)} of every process right now."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        try:
            table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]),
                                      int(fields[13]) + int(fields[14]), comm)
        except (IndexError, ValueError):
            continue
    return table


class LoadProbe:
    """Successive readings of the CPU used by the tree under `root` and by everyone else."""

    def __init__(self, root):
        self.root = root
        self.hz = os.sysconf("SC_CLK_TCK")
        self.prev = self.read()

    def read(self):
        table = proc_table()
        busy, steal = cpu_totals()
        ours = descendants(table, self.root)
        ours_ticks = sum(table[p][1] + table[p][2] for p in ours if p in table)
        softirqd = sum(t[1] for t in table.values() if t[3].startswith("ksoftirqd"))
        return time.monotonic(), busy, steal, ours_ticks, softirqd, frozenset(ours), table

    def step(self):
        """(wall s, ours %, others %, steal %, softirqd %) since the previous call (100 = one core)."""
        cur = self.read()
        t0, busy0, steal0, _, softirqd0, ours0, table0 = self.prev
        t1, busy1, steal1, _, softirqd1, ours1, table1 = cur
        # Our tree's time: cumulative (own + reaped children) over the processes of our tree
        # now, minus the same over the processes of our tree before. A process that ended
        # and was reaped by a parent in the tree moves into the parent's children ticks.
        before = sum(table0[p][1] + table0[p][2] for p in ours0 if p in table0)
        now = sum(table1[p][1] + table1[p][2] for p in ours1 if p in table1)
        ours = now - before
        others = (busy1 - busy0) - ours - (softirqd1 - softirqd0)
        wall = max(t1 - t0, 1e-6)
        scale = 100 / self.hz / wall
        self.prev = cur
        return wall, ours * scale, others * scale, (steal1 - steal0) * scale, (softirqd1 - softirqd0) * scale


def cmd_busy(args):
    probe = LoadProbe(args.root)
    samples = []
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        time.sleep(args.interval)
        samples.append(probe.step())
    wall = sum(s[0] for s in samples) or 1e-6
    others = sum(s[0] * s[2] for s in samples) / wall
    steal = sum(s[0] * s[3] for s in samples) / wall
    peak = max((s[2] for s in samples), default=0)
    top = busiest_others(args.root)
    line = (f"others_pct={max(others, 0):.0f} others_max_pct={max(peak, 0):.0f} steal_pct={steal:.0f} "
            f"seconds={args.seconds:g} limit_pct={args.limit:g}")
    text = (f"machine check: processes other than this benchmark's used {max(others, 0):.0f}% of a core on "
            f"average over {args.seconds:g} s ({max(peak, 0):.0f}% at most over {args.interval:g} s)"
            + (f", hypervisor steal {steal:.0f}%" if steal >= 1 else "") + f"; limit {args.limit:g}%"
            + (f"; busiest now: {top}" if top else ""))
    if args.out:
        Path(args.out).write_text(line + "\n" + text + "\n", encoding="utf-8")
    print(text)
    return 3 if others > args.limit else 0


def busiest_others(root, n=3):
    """The processes outside root's tree that used the most CPU over 0.5 s, as text."""
    a = proc_table()
    time.sleep(0.5)
    b = proc_table()
    ours = descendants(b, root)
    hz = os.sysconf("SC_CLK_TCK")
    use = []
    for pid, (_, ticks, _, comm) in b.items():
        if pid in ours or pid not in a:
            continue
        d = ticks - a[pid][1]
        if d > 0:
            use.append((d, comm, pid))
    use.sort(reverse=True)
    return ", ".join(f"{comm} ({pid}) {100 * d / hz / 0.5:.0f}%" for d, comm, pid in use[:n])


def cmd_sample(args):
    running = True

    def stop(*_):
        nonlocal running
        running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    probe = LoadProbe(args.root)
    with open(args.out, "a", buffering=1, encoding="utf-8") as out:
        out.write("# unix_time load1 ours_pct others_pct steal_pct softirqd_pct\n")
        while running and os.path.exists(f"/proc/{args.root}"):
            time.sleep(args.interval)
            _, ours, others, steal, softirqd = probe.step()
            load1 = Path("/proc/loadavg").read_text().split()[0]
            out.write(f"{time.time():.1f} {load1} {ours:.0f} {others:.0f} {steal:.0f} {softirqd:.0f}\n")
    return 0


def read_load(results_dir):
    """[(unix_time, load1, ours_pct, others_pct, steal_pct)] and {(measure, name, run): (start, end)}."""
    samples, phases = [], {}
    path = results_dir / "load.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                continue
            parts = line.split()
            try:
                t, load1, ours, others = (float(x) for x in parts[:4])
                steal = float(parts[4]) if len(parts) > 4 else 0.0
            except ValueError:
                continue
            samples.append((t, load1, ours, others, steal))
    path = results_dir / "phases.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                t, edge, measure, name, run = line.split()
            except ValueError:
                continue
            key = (measure, name, int(run))
            start, end = phases.get(key, (None, None))
            phases[key] = (float(t), end) if edge == "begin" else (start, float(t))
    return samples, phases


def others_during(samples, spans):
    """Others' mean and max % of a core over the samples that fall in any of `spans`."""
    xs = []
    for start, end in spans:
        if start is None or end is None:
            continue
        xs += [max(s[3], 0) for s in samples if start < s[0] <= end + 0.5]
    if not xs:
        return None
    return sum(xs) / len(xs), max(xs)


# --- parsing -----------------------------------------------------------------------------------

def errors_in(text):
    errs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("### run.sh: exit"):
            errs.append(line.removeprefix("### run.sh: "))
        elif line.startswith(("bavard-bench:", "error", "Error", "check failed:")):
            errs.append(line)
        elif line.startswith(("idle: connection failed", "join-storm:")) and "failed" in line:
            errs.append(line)
    return errs


def parse_steps(text):
    steps = []
    for line in text.splitlines():
        if (w := SATURATED_RE.match(line.strip())) and steps:
            steps[-1]["bench_saturated"] = int(w["pct"])  # the warning follows its step's line
            continue
        m = STEP_RE.match(line.strip())
        if not m:
            continue
        rest = m["rest"]
        step = {"rate": int(m["rate"]), "sends": float(m["sends"]), "deliveries": float(m["deliv"]),
                "passed": m["verdict"] == "PASS"}
        if (p := P50_RE.search(rest)):
            step["p50"] = float(p["v"])
        if (p := P99_RE.search(rest)):
            step["p99"] = float(p["v"])
        if (p := LOSS_RE.search(rest)):
            step.update(loss=int(p["loss"]), expected=int(p["expected"]), loss_detail=p["detail"])
        if (p := SERVER_CPU_RE.search(rest)):
            step.update(server_cpu=float(p["cpu"]), server_core=int(p["core"]))
        if (p := BENCH_CPU_RE.search(rest)):
            step.update(bench_cpu=float(p["cpu"]), bench_core=int(p["core"]))
        steps.append(step)
    return steps


def parse_hot_room(text):
    info = {"steps": parse_steps(text), "errors": errors_in(text), "rss_end": None, "retries": []}
    for line in text.splitlines():
        line = line.strip()
        if (m := RSS_END_RE.match(line)):
            info["rss_end"] = float(m["mib"])
        elif line.startswith("### run.sh: retry"):
            m = re.search(r"(\d+)/s", line)
            info["retries"].append(fmt_rate(int(m[1])) if m else "?")
    steps = info["steps"]
    passed = [s for s in steps if s["passed"]]
    best = max(passed, key=lambda s: s["deliveries"]) if passed else None
    info["best"] = best
    info["last_fail"] = steps[-1] if steps and not steps[-1]["passed"] else None
    info["passed_rates"] = {s["rate"] for s in passed}
    fig = info["fig"] = {}
    if steps:
        fig["max"] = best["deliveries"] if best else 0.0
    if best:
        if "p99" in best:
            fig["p99"] = best["p99"]
        if "server_cpu" in best:
            fig["cpu"] = best["server_cpu"]
            fig["core"] = best["server_core"]
        if "bench_core" in best:
            fig["bench_core"] = best["bench_core"]
    if info["rss_end"] is not None:
        fig["rss_end"] = info["rss_end"]
    return info


def hot_cpu_at(info, rate):
    """Server CPU-s per M deliveries of the last passing attempt at `rate`."""
    for s in reversed(info["steps"]):
        if s["rate"] == rate and s["passed"] and "server_cpu" in s:
            return s["server_cpu"], s.get("server_core")
    return None


def parse_idle(text):
    info = {"errors": errors_in(text), "fig": {}}
    fig = info["fig"]
    for line in text.splitlines():
        line = line.strip()
        if (m := IDLE_HEAD_RE.match(line)):
            info.update(asked=int(m["n"]), protocol=m["proto"].lower())
        elif (m := OPENED_RE.match(line)):
            info.update(opened=int(m["n"]), failed=int(m["failed"]))
            fig["connect_s"] = float(m["secs"])
            fig["handshakes"] = float(m["hs"])
            if (p := P99_RE.search(m["lat"])):
                fig["hs_p99"] = float(p["v"])
            if (p := SERVER_CPU_RE.search(line)):
                fig["server_ms_per_conn"] = float(p["cpu"]) / 1000  # CPU-s per million = µs per handshake
                fig["server_core"] = int(p["core"])
            if (p := BENCH_CPU_RE.search(line)):
                fig["bench_core"] = int(p["core"])
        elif (m := IDLE_RSS_RE.match(line)):
            fig["rss_kib"] = float(m["per"])
            info.update(rss_before=float(m["before"]), rss_after=float(m["after"]))
        elif (m := PROBE_RE.match(line)):
            info.update(probe_reached=int(m["reached"]), probe_total=int(m["total"]))
            fig["probe_ms"] = float(m["ms"])
        elif line.startswith("### run.sh: "):
            key, _, value = line.removeprefix("### run.sh: ").partition(" ")
            if key == "ListenOverflows":
                info["listen_overflows"] = int(value) if value.strip().isdigit() else value
            elif key == "backlog":
                info["backlog"] = value
    if info.get("failed"):
        info["errors"].append(f"{info['failed']} of {info.get('asked', '?')} connections failed")
    if "probe_reached" in info and info["probe_reached"] != info.get("probe_total"):
        info["errors"].append(f"probe reached only {info['probe_reached']} of {info['probe_total']} connections")
    return info


def parse_storm(text):
    info = {"errors": errors_in(text), "fig": {}}
    fig = info["fig"]
    for line in text.splitlines():
        line = line.strip()
        if (m := FILLED_RE.match(line)):
            fig["fill_rate"] = float(m["rate"])
            fig["fill_s"] = float(m["secs"])
            if (p := P99_RE.search(m["lat"])):
                fig["fill_p99"] = float(p["v"])
        elif (m := STORM_RE.match(line)):
            info.update(joined=int(m["n"]), asked=int(m["asked"]), failed=int(m["failed"]))
            fig.update(rate=float(m["rate"]), secs=float(m["secs"]), p50=float(m["p50"]), p99=float(m["p99"]),
                       max=float(m["max"]), connect_p99=float(m["c99"]))
            if (p := SERVER_CPU_RE.search(line)):
                fig["server_core"] = int(p["core"])
        elif (m := PER_JOIN_RE.match(line)):
            fig["cpu_per_join_ms"] = float(m["ms"])
        elif (m := REPLIES_RE.match(line)):
            info.update(count_lo=int(m["lo"]), count_hi=int(m["hi"]), listed=int(m["listed"]))
        elif (m := TOLD_RE.match(line)):
            info.update(told=int(m["told"]), told_of=int(m["members"]), final=int(m["count"]),
                        occupancy=int(m["occ"]), presence=int(m["pres"]))
        elif (m := STORM_RSS_RE.match(line)):
            fig["rss_mib"] = float(m["mib"])
        elif (m := SATURATED_RE.match(line)):
            info["bench_saturated"] = int(m["pct"])
        elif line.startswith("### run.sh: ListenOverflows"):
            v = line.split()[-1]
            info["listen_overflows"] = int(v) if v.isdigit() else v
    return info


def parse_durable(text):
    info = {"errors": errors_in(text), "fig": {}}
    for line in text.splitlines():
        if (m := DURABLE_RE.match(line.strip())):
            info["fig"].update(rate=float(m["rate"]), p50=float(m["p50"]), p99=float(m["p99"]),
                               p999=float(m["p999"]))
            if (p := SERVER_CPU_RE.search(line)):
                info["fig"]["server_core"] = int(p["core"])
            if int(m["errors"]):
                info["errors"].append(f"{m['errors']} sends failed")
    return info


PARSERS = {"hot-room": parse_hot_room, "idle": parse_idle, "room-a": parse_idle, "room-b": parse_idle,
           "idle-json": parse_idle, "storm-plain": parse_storm, "storm-json": parse_storm}


def parser_for(measure):
    return parse_durable if measure.startswith("durable-") else PARSERS.get(measure, parse_idle)


def read_meta(path):
    meta = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                meta[key.strip()] = value.strip()
    return meta


def read_versions(path):
    """Versions from the `setup: ...` lines bench/peers/setup.sh prints."""
    versions = {}
    if not path.is_file():
        return versions
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("setup: "):
            continue
        for part in line.removeprefix("setup: ").split(","):
            words = part.strip().split()
            if len(words) == 2 and re.match(r"^v?\d", words[1]):
                versions[words[0]] = words[1].lstrip("v")
    return versions


def read_runs(results_dir):
    """{measure: {name: {run: {"rc": int, "secs": float, "info": parsed}}}} from runs.tsv."""
    out = {}
    path = results_dir / "runs.tsv"
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 5 or parts[0] == "measure":
            continue
        measure, name, run, rc, secs = parts[:5]
        txt = results_dir / measure / f"{name}-r{run}.txt"
        text = txt.read_text(encoding="utf-8", errors="replace") if txt.is_file() else ""
        info = parser_for(measure)(text)
        rc_i = int(rc) if rc.lstrip("-").isdigit() else -1
        if rc_i == 124:
            info["errors"].append("timed out (run.sh's timeout for this step)")
        out.setdefault(measure, {}).setdefault(name, {})[int(run)] = {"rc": rc_i, "secs": float(secs or 0), "info": info}
    return out


def machine():
    info = {"nproc": str(os.cpu_count() or "?"), "cpu": "?", "kernel": os.uname().release, "mem": "?"}
    try:
        info["nproc"] = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                info["mem"] = f"{kib / 1048576:.1f} GiB"
                break
    except OSError:
        pass
    return info


# --- formatting ---------------------------------------------------------------------------------

def fmt_int(x):
    return f"{x:,.0f}"


def fmt_rate(r):
    if r >= 1_000_000:
        return f"{r / 1e6:g}M"
    if r >= 1000:
        return f"{r / 1e3:g}k"
    return str(r)


def num_millions(x):
    return f"{x / 1e6:.2f}"


def num_ms(x):
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def num_secs(x):
    return f"{x:.2f}"


def num_kib(x):
    return f"{x:.1f}"


def num_cpu(x):
    return f"{x:.3f}"


def num_count(x):
    return fmt_int(x)


class Figure:
    """One row of the table: how to get a run's value and how to print it."""

    def __init__(self, label, get, num, unit="", lower_is_better=False):
        # lower_is_better: True, False (higher is better) or None (neither, e.g. % of a core)
        self.label, self.get, self.num, self.unit, self.lower = label, get, num, unit, lower_is_better


def median_cell(values, fig, runs):
    """`median unit (min–max)` of the runs' values; `[k of n runs]` when some had none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    med = statistics.median(values)
    cell = fig.num(med) + (f" {fig.unit}" if fig.unit else "")
    lo, hi = min(values), max(values)
    if len(values) > 1 and fig.num(lo) != fig.num(hi):
        cell += f" ({fig.num(lo)}–{fig.num(hi)})"
    if len(values) < runs:
        cell += f" [{len(values)} of {runs} runs]"
    return cell


def change_cell(new, base, fig):
    """bavard's median against the baseline's, in % of the baseline's; `better`/`worse` only
    when the two servers' run ranges do not overlap (else within the run-to-run spread)."""
    new, base = [v for v in new if v is not None], [v for v in base if v is not None]
    if not new or not base:
        return "", None
    mn, mb = statistics.median(new), statistics.median(base)
    if mb == 0:
        return ("0%", 0.0) if mn == 0 else ("—", None)
    pct = (mn - mb) / abs(mb) * 100
    cell = f"{pct:+.1f}%"
    if len(new) > 1 and len(base) > 1 and (min(new) > max(base) or max(new) < min(base)):
        if fig.lower is None:
            cell += " (ranges apart)"
        else:
            cell += " (better)" if (mn < mb) == fig.lower else " (worse)"
    return cell, pct


def why_failed(step):
    reasons = []
    if step.get("loss"):
        reasons.append(f"lost {fmt_int(step['loss'])} of {fmt_int(step['expected'])}")
    if re.search(r"closed [1-9]", step.get("loss_detail", "")):
        reasons.append("connections closed")
    if step.get("p99", 0) > 50:
        reasons.append(f"p99 {step['p99']:,.0f} ms")
    if step.get("p99") is None:
        reasons.append("no deliveries measured")
    return ", ".join(reasons) or "?"


# --- the report ---------------------------------------------------------------------------------

def measure_plan(meta):
    """[(measure id, title, [(figure, ...)], servers note)] in table order."""
    q = lambda k, d: int(meta.get(k, d))  # noqa: E731
    room_a, room_b = q("room_a", 10000), q("room_b", 19000)
    idle_conns = q("idle_conns", 10000)
    members, joiners = q("storm_members", 10000), q("storm_joiners", 1000)
    senders = q("durable_senders", 100)
    p99_limit = meta.get("p99_limit_ms", "50")
    hot = [
        Figure(f"max deliveries/s (zero loss, p99 ≤ {p99_limit} ms), millions", lambda f: f.get("max"), num_millions,
               "M"),
        Figure("p99 at that step", lambda f: f.get("p99"), num_ms, "ms", True),
        Figure("server CPU-s per M deliveries at that step", lambda f: f.get("cpu"), num_cpu, "", True),
        Figure("server % of a core at that step", lambda f: f.get("core"), num_count, "%", None),
    ]
    idle = lambda: [  # noqa: E731
        Figure("time to connect them all", lambda f: f.get("connect_s"), num_secs, "s", True),
        Figure("joins/s (connections per second)", lambda f: f.get("handshakes"), num_count),
        Figure("server RSS per connection", lambda f: f.get("rss_kib"), num_kib, "KiB", True),
        Figure("handshake p99", lambda f: f.get("hs_p99"), num_ms, "ms", True),
    ]
    storm_json = [
        Figure("join-reply p50", lambda f: f.get("p50"), num_ms, "ms", True),
        Figure("join-reply p99", lambda f: f.get("p99"), num_ms, "ms", True),
        Figure(f"joins/s (connect + join, {joiners:,} at once)", lambda f: f.get("rate"), num_count),
        Figure("server CPU per join", lambda f: f.get("cpu_per_join_ms"), num_cpu, "ms", True),
    ]
    storm_plain = [
        Figure("connect p50 (TCP + upgrade = the join)", lambda f: f.get("p50"), num_ms, "ms", True),
        Figure("connect p99", lambda f: f.get("p99"), num_ms, "ms", True),
        Figure("connections/s", lambda f: f.get("rate"), num_count),
        Figure("server CPU per connection", lambda f: f.get("cpu_per_join_ms"), num_cpu, "ms", True),
    ]
    durable = lambda: [  # noqa: E731
        Figure("acked messages/s", lambda f: f.get("rate"), num_count),
        Figure("ack p50", lambda f: f.get("p50"), num_ms, "ms", True),
        Figure("ack p99", lambda f: f.get("p99"), num_ms, "ms", True),
    ]
    plan = [
        ("hot-room", "Hot room: 1 plain room, 1,000 receivers + 10 publishers", hot),
        ("idle", f"Idle: {idle_conns:,} plain connections in rooms of 10", idle()),
        ("room-a", f"Idle: one plain room of {room_a:,}", idle()),
        ("room-b", f"Idle: one plain room of {room_b:,}", idle()),
        ("storm-plain", f"Join storm, plain: {joiners:,} connect at once into a plain room of {members:,}", storm_plain),
        ("storm-json", f"Join storm, JSON: {joiners:,} join at once a room of {members:,} JSON members", storm_json),
    ]
    for k in meta.get("durable_in_flight", "1,4,8").split(","):
        if k:
            plan.append((f"durable-{k}", f"Durable sends: {senders} senders, {k} in flight each", durable()))
    plan.append(("idle-json", f"Idle: {idle_conns:,} JSON connections (welcome read, no room)", [
        Figure("server RSS per connection", lambda f: f.get("rss_kib"), num_kib, "KiB", True),
        Figure("handshakes/s", lambda f: f.get("handshakes"), num_count),
    ]))
    return plan


NA = {
    "storm-json": "n/a (no join reply)",
    "durable": "n/a (stores nothing)",
    "idle-json": "n/a (no JSON protocol)",
}


def na_for(measure):
    return NA.get("durable" if measure.startswith("durable-") else measure, "n/a")


def reference_rate(runs_hot, servers, ladder):
    """The highest ladder rate every server passed in every one of its runs."""
    best = None
    for rate in ladder:
        ok = True
        for name in servers:
            per_run = runs_hot.get(name, {})
            if not per_run or any(rate not in r["info"]["passed_rates"] for r in per_run.values()):
                ok = False
                break
        if ok:
            best = rate
    return best


def section_title(meta):
    """The heading of the section this run writes (see the module's doc)."""
    if meta.get("section"):
        return "## " + meta["section"].lstrip("#").strip()
    if meta.get("baseline"):
        label = meta.get("baseline_label") or Path(meta["baseline"]).name
        dirty = " with uncommitted changes" if meta.get("dirty") else ""
        return f"## Before and after: bavard at {meta.get('commit', '?')}{dirty} against {label}"
    if meta.get("only"):
        return SECTION + f" (only {meta.get('measures', meta['only']).replace(',', ', ')})"
    return SECTION


def build_section(results_dir, meta, versions, runs, samples, phases, png_ref):
    m = machine()
    servers = [s for s in meta.get("servers", "bavard,bun").split(",") if s]
    n_runs = int(meta.get("runs", "3"))
    quick = meta.get("quick") == "1"
    ladder = [int(r) for r in meta.get("rates", "").split(",") if r]
    ran = set(runs)
    base_label = meta.get("baseline_label") or Path(meta.get("baseline") or "bavard-base").name
    compare = "bavard" in servers and "bavard-base" in servers
    heading = section_title(meta)
    lines = [heading, ""]
    if quick:
        lines += ["> **Quick run** (`--quick`): small sizes, 1-second steps, a few low rates, a p99 limit of "
                  f"{meta.get('p99_limit_ms', '?')} ms. A smoke test of `bench/run.sh`, not a measurement.", ""]
    lines += [
        "Written by `bench/run.sh` (parsing by `bench/report.py`); rerun it to refresh this section. "
        f"Every figure is the **median of {n_runs} runs** per server (range in brackets when the runs "
        "differ); the runs alternate between servers (one server, then the next, then the first again) "
        "and each run has a freshly started server process.",
        "",
        "Command (from the repository root):",
        "",
        "```sh",
        meta.get("command", "bench/run.sh"),
        "```",
        "",
        f"- Date: {meta.get('date', '?')} (run took {meta.get('duration', '?')}).",
        f"- Machine: {m['nproc']} cores (`nproc`), {m['cpu']}, kernel {m['kernel']}, {m['mem']} RAM; "
        "server and load generator on the same cores, loopback only.",
    ]
    busy_start = meta.get("busy_start_pct")
    allv = [max(s[3], 0) for s in samples]
    mean_all = sum(allv) / len(allv) if allv else None
    steal = [s[4] for s in samples]
    mean_steal = sum(steal) / len(steal) if steal else 0
    busy = "how busy the machine was (CPU of processes other than this benchmark's, sampled from `/proc`): "
    parts = []
    if busy_start is not None and meta.get("busy_forced") != "1":
        parts.append(f"{busy_start}% of a core before starting (limit {meta.get('busy_limit_pct', BUSY_LIMIT_PCT)}%)")
    if mean_all is not None:
        parts.append(f"{mean_all:.0f}% of a core on average during the run, {max(allv):.0f}% at most over one second")
    if mean_steal >= 1:
        parts.append(f"hypervisor steal {mean_steal:.0f}% of a core on average")
    busy += "; ".join(parts) if parts else "not sampled"
    busy += (f". Measurements during which they used more than {BUSY_LIMIT_PCT}% of a core on average are "
             "marked ‡ in the table.")
    if meta.get("busy_forced") == "1":
        busy = (f"**The machine was busy**: started with `--force` although other processes used "
                f"{busy_start}% of a core (more than the {meta.get('busy_limit_pct', BUSY_LIMIT_PCT)}% "
                "limit); " + busy)
    lines.append("- " + busy[0].upper() + busy[1:])
    commit, dirty, dirty_any = meta.get("commit", "?"), meta.get("dirty", ""), meta.get("dirty_any", "0")
    if dirty:
        tree = f" **plus uncommitted changes** in {dirty} (the binaries were built from the working tree)"
    elif dirty_any not in ("", "0"):
        tree = f" (working tree: {dirty_any} uncommitted file(s) outside the crates, none that is built)"
    else:
        tree = " (clean working tree)"
    lines.append(f"- Bavard: commit `{commit}`{tree}, `cargo build --release` ({meta.get('rustc', 'rustc ?')}); "
                 "`bavard --listen 127.0.0.1:PORT --db FRESH_TMP/bench.db --rate-per-second 0`, all other "
                 "options default.")
    if "bavard-base" in servers:
        sha = meta.get("baseline_sha256")
        lines.append(
            f"- Baseline **bavard-base** ({base_label}): `{meta.get('baseline', '?')}`"
            + (f" (sha256 `{sha}…`)" if sha else "") + ", started exactly as bavard (a fresh temporary "
            "database, `--rate-per-second 0`, all other options default) and driven by the same freshly built "
            "`bavard-bench`; it runs in every measurement bavard runs in, alternating with the other servers."
            + (" The last column compares the medians: bavard's against bavard-base's, in % of bavard-base's; "
               "it says *better* or *worse* only when the two servers' ranges over the runs do not overlap "
               "(otherwise the difference is within the run-to-run spread)." if compare else ""))
    if meta.get("only"):
        lines.append(f"- Only some measurements ran (`--only {meta['only']}`): "
                     + ", ".join(f"`{x}`" for x in meta.get("measures", meta["only"]).split(",") if x) + ".")
    v = versions
    peers = []
    if "bun" in servers:
        peers.append(f"bun {v.get('bun', '?')} (`bench/peers/bun`)")
    if "node-ws" in servers:
        peers.append(f"node-ws: Node.js {v.get('node', '?')} + ws {v.get('ws', '?')}")
    if "draft" in servers:
        peers.append(f"draft: FastAPI {v.get('fastapi', '?')} on uvicorn {v.get('uvicorn', '?')}, "
                     f"Python {v.get('python', '?')}")
    if peers:
        lines.append("- Peers (see `bench/README-bench.md`; plain-text protocol only, they store nothing): "
                     + "; ".join(peers) + ".")
    step = meta.get("step_secs", "3")
    if "hot-room" in ran:
        lines.append(
            f"- Hot room (`bavard-bench hot-room`): rates (deliveries/s offered) "
            f"{', '.join(fmt_rate(r) for r in ladder)}; each step {meta.get('warmup_secs', '1')} s of warm-up, "
            f"{step} s measured, up to 2 s of drain. A step passes with zero loss and p99 ≤ "
            f"{meta.get('p99_limit_ms', '50')} ms; rising stops at "
            "the first failure, after one retry of that step on the same server process (a single step can fail "
            "on noise on a shared machine). The bench runs on 1 thread.")
    if ran & {"idle", "room-a", "room-b", "storm-plain", "storm-json", "idle-json"}:
        text = ("- The idle and join-storm measurements open their connections 256 at a time, each run from "
                "source addresses of its own (127.0.K.2, and 127.0.K.3 above 10,000, K changing every run): "
                "sockets a previous run left in TIME_WAIT never slow the next one.")
        if ran & {"room-a", "room-b"}:
            text += (" One-room figures are checked: a message sent after connecting must reach every connection "
                     "(`--probe`), and the server is killed before the bench closes its connections "
                     "(`--kill-server`), since a plain room emptying at once costs n²/2 disconnect notices (see "
                     "the notes).")
        lines.append(text)
    lines.append("")

    plan = [p for p in measure_plan(meta) if p[0] in runs]
    columns = [f"bavard-base ({base_label})" if s == "bavard-base" else s for s in servers]
    if compare:
        columns.append(f"change: bavard vs {base_label}")
    header = "| measurement | figure | " + " | ".join(columns) + " |"
    lines += [header, "| --- | --- | " + " | ".join("---:" for _ in columns) + " |"]
    rows_csv = []
    disturbed = []
    for measure, title, figures in plan:
        per_server = runs.get(measure, {})
        spans = [phases.get((measure, name, run), (None, None))
                 for name in per_server for run in per_server[name]]
        o = others_during(samples, spans)
        mark = ""
        if o and o[0] >= BUSY_LIMIT_PCT:
            mark = " ‡"
            disturbed.append((title, o[0]))
        first = True
        for fig in figures:
            cells = []
            by_server = {}
            for name in servers:
                if name not in per_server:
                    bavards = ("bavard", "bavard-base")
                    cells.append("not run" if name in bavards else na_for(measure) if first else "n/a")
                    continue
                values = [fig.get(r["info"]["fig"]) for r in per_server[name].values()]
                by_server[name] = values
                for run, r in sorted(per_server[name].items()):
                    val = fig.get(r["info"]["fig"])
                    rows_csv.append((measure, name, run, fig.label, "" if val is None else val))
                cell = median_cell(values, fig, n_runs)
                if cell is None:
                    # No figure: the bench call failed, or (hot room) no step passed.
                    broken = any(r["rc"] not in (0, 2) or r["info"]["errors"] for r in per_server[name].values())
                    cell = "failed" if broken else "—"
                elif measure == "hot-room" and fig is figures[0] and statistics.median(
                        [v for v in values if v is not None]) == 0:
                    cell = f"none (below {fmt_rate(ladder[0])})" if ladder else "none"
                cells.append(cell)
                med = [v for v in values if v is not None]
                if med:
                    rows_csv.append((measure, name, "median", fig.label, statistics.median(med)))
            if compare:
                cell, pct = change_cell(by_server.get("bavard", []), by_server.get("bavard-base", []), fig)
                cells.append(cell)
                if pct is not None:
                    rows_csv.append((measure, "bavard vs bavard-base (%)", "median", fig.label, round(pct, 2)))
            lines.append(f"| {(title + mark) if first else ''} | {fig.label} | " + " | ".join(cells) + " |")
            first = False
        if measure == "hot-room":
            ref = reference_rate(per_server, [s for s in servers if s in per_server], ladder)
            if ref:
                fig = Figure(f"server CPU-s per M deliveries at {fmt_rate(ref)}/s (the highest step every server "
                             "passed in every run)", None, num_cpu)
                cells = []
                by_server = {}
                for name in servers:
                    vals = [c[0] for r in per_server.get(name, {}).values() if (c := hot_cpu_at(r["info"], ref))]
                    by_server[name] = vals
                    cores = [c[1] for r in per_server.get(name, {}).values()
                             if (c := hot_cpu_at(r["info"], ref)) and c[1] is not None]
                    cell = median_cell(vals, fig, n_runs) or "—"
                    if cores:
                        cell += f", {statistics.median(cores):.0f}% of a core"
                    cells.append(cell)
                    for run, r in sorted(per_server.get(name, {}).items()):
                        c = hot_cpu_at(r["info"], ref)
                        rows_csv.append((measure, name, run, fig.label, c[0] if c else ""))
                if compare:
                    cell, pct = change_cell(by_server.get("bavard", []), by_server.get("bavard-base", []), fig)
                    cells.append(cell)
                    if pct is not None:
                        rows_csv.append((measure, "bavard vs bavard-base (%)", "median", fig.label, round(pct, 2)))
                lines.append(f"| | {fig.label} | " + " | ".join(cells) + " |")
    lines.append("")
    if disturbed and len(disturbed) == len(plan):
        lows = [d[1] for d in disturbed]
        lines += [f"‡ Busy machine: other processes used more than {BUSY_LIMIT_PCT}% of a core during every "
                  f"measurement ({min(lows):.0f}% to {max(lows):.0f}% of a core on average per measurement). "
                  "These figures measure that contention as much as the servers.", ""]
    elif disturbed:
        lines += [f"‡ Busy machine: other processes used more than {BUSY_LIMIT_PCT}% of a core during "
                  + "; ".join(f"{d[0]} ({d[1]:.0f}% of a core on average)" for d in disturbed)
                  + ". Those figures measure that contention as much as the servers.", ""]

    hot_runs = runs.get("hot-room", {})
    if any(s.get("bench_saturated") and s["passed"] for per in hot_runs.values() for r in per.values()
           for s in r["info"]["steps"]):
        lines += ["Where the notes say the bench was >85% busy, the one-thread load generator was near its limit: "
                  "the hot-room limit found there may be the generator's, not the server's.", ""]

    # Notes from the raw outputs.
    notes = notes_per_measure(runs, servers, plan, ladder)
    if notes:
        lines += ["Notes from the raw outputs:", ""] + notes + [""]
    lines += ["Reading the figures:", ""]
    if "hot-room" in ran:
        lines.append(
            "- Deliveries/s counts every copy received: one message sent into the room of 1,010 is 1,010 "
            "deliveries. \"Server CPU-s per M deliveries\" is the server's user + system CPU time "
            "(`/proc/PID/stat`) during the measured seconds divided by the deliveries in them; a server using "
            "more than one core competes with the one-thread load generator on these 2 cores. Because it "
            "depends on the rate, the table also gives it at a rate every server passed.")
    if ran & {"idle", "room-a", "room-b", "idle-json"}:
        lines.append(
            "- Idle: RSS per connection = (VmRSS 2 s after the last handshake − VmRSS before) / connections, on a "
            "fresh server; joins/s = connections opened / the time to open them all (for the plain-text "
            "protocol, opening the connection is joining the room).")
    if ran & {"storm-plain", "storm-json"}:
        lines.append(
            "- Join storm: members connect and join first (256 at a time) and keep reading; then the joiners "
            "start together, 256 in flight. JSON: the join-reply latency runs from sending `join` to reading "
            "its reply (which carries `member_count` and at most 100 `members`); joins/s = joiners / the time "
            "from the first connect to the last reply. Plain: the latency is the whole connect (TCP + upgrade), "
            "the only join the plain-text protocol has; Bun has no JSON protocol, so this is its analogue.")
    if any(x.startswith("durable-") for x in ran):
        lines.append(
            "- Durable sends: each acked message is committed to SQLite (WAL, `synchronous = FULL`) before its "
            "ack; Bun stores nothing, so it has no figure here.")
    lines.append("")
    if "hot-room" in ran:
        if heading == SECTION and not meta.get("section"):
            lines += [f"![Hot room: deliveries/s against p99 latency, one line per server (median of the runs per "
                      f"rate)]({png_ref})", ""]
        else:  # not the main section: its plot is not copied to bench/hot-room.png
            lines += ["Hot-room plot (deliveries/s against p99 latency, median per rate; not committed): "
                      "`bench/results/hot-room.png`.", ""]
    lines += [
        "Raw outputs (not committed): `bench/results/` — `MEASURE/NAME-rN.txt` (each run's output), "
        "`MEASURE/NAME-rN.csv`, server logs, `runs.csv` (every figure of every run, and the medians), "
        "`load.txt` (the machine's load every second).",
        "",
    ]
    return "\n".join(lines), rows_csv


def notes_per_measure(runs, servers, plan, ladder):
    notes = []
    titles = {p[0]: p[1] for p in plan}
    for measure, _title, _figs in plan:
        per_server = runs.get(measure, {})
        for name in servers:
            if name not in per_server:
                continue
            parts = []
            for run, r in sorted(per_server[name].items()):
                info = r["info"]
                bits = []
                if measure == "hot-room":
                    lf = info.get("last_fail")
                    if lf:
                        bits.append(f"stopped at {fmt_rate(lf['rate'])} ({why_failed(lf)})")
                    elif info["steps"]:
                        bits.append(f"passed every step up to {fmt_rate(info['steps'][-1]['rate'])}")
                    if info["retries"]:
                        bits.append("retried " + ", ".join(info["retries"]))
                    sat = [s for s in info["steps"] if s.get("bench_saturated") and s["passed"]]
                    if sat:
                        bits.append("bench >85% busy at " + ", ".join(fmt_rate(s["rate"]) for s in sat[-3:]))
                elif measure.startswith("storm"):
                    if info.get("bench_saturated"):
                        bits.append(f"the bench was {info['bench_saturated']}% busy during the storm")
                    if "told" in info and info["told"] != info.get("told_of"):
                        bits.append(f"only {info['told']} of {info['told_of']} members were told the final count")
                    if info.get("listen_overflows"):
                        bits.append(f"{info['listen_overflows']} TCP listen overflows")
                else:
                    if info.get("listen_overflows"):
                        bits.append(f"{info['listen_overflows']} TCP listen overflows (SYNs dropped, retried after 1 s)")
                bits += info["errors"][:3]
                if r["rc"] not in (0, 2) and not info["errors"]:
                    bits.append(f"bench exit status {r['rc']}")
                if bits:
                    parts.append(f"run {run}: " + "; ".join(bits))
            if measure == "storm-json":
                infos = [r["info"] for r in per_server[name].values()]
                i = next((x for x in infos if "count_hi" in x), None)
                if i:
                    parts.insert(0, f"replies carried member_count {i['count_lo']:,}..{i['count_hi']:,} and at most "
                                    f"{i['listed']} members; after the storm "
                                    + (f"{i['told']:,} of {i['told_of']:,} members had been told the count "
                                       f"{i['final']:,} ({i['occupancy'] / max(i['told_of'], 1):.1f} occupancy "
                                       "events each)" if "told" in i else "members' counts unknown"))
            if measure in ("room-a", "room-b"):
                infos = [r["info"] for r in per_server[name].values()]
                probes = [x.get("fig", {}).get("probe_ms") for x in infos if "probe_reached" in x]
                ok = all(x.get("probe_reached") == x.get("probe_total") for x in infos if "probe_reached" in x)
                if probes and ok:
                    parts.insert(0, f"the probe reached every connection in every run "
                                    f"(fan-out to the whole room {statistics.median(probes):.0f} ms, median)")
            if parts:
                notes.append(f"- {titles[measure].split(':')[0]} ({titles[measure].split(': ', 1)[-1]}), "
                             f"**{name}**: " + "; ".join(parts) + ".")
    return notes


def replace_section(path, section, titles):
    """Re-reads PATH right now, replaces our section (the first of TITLES found, up to the next
    `## ` heading) or appends it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = None
    for title in titles:
        start = next((i for i, l in enumerate(lines) if l.rstrip("\n").strip() == title), None)
        if start is not None:
            break
    body = section.rstrip("\n") + "\n"
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        after = "".join(lines[end:])
        new = "".join(lines[:start]) + body + ("\n" + after if after else "")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".BENCHMARKS.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new)
    os.chmod(tmp, (path.stat().st_mode & 0o777) if path.exists() else 0o644)
    # Last check: if someone wrote the file while we were composing, start again from theirs.
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if current != text:
        os.unlink(tmp)
        return replace_section(path, section, titles)
    os.replace(tmp, path)


# --- commands ------------------------------------------------------------------------------------

def cmd_retry_rates(args):
    path = Path(args.txt)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    steps = parse_steps(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else []
    if not steps or steps[-1]["passed"]:
        return 0
    failed_rate = steps[-1]["rate"]
    if sum(1 for s in steps if s["rate"] == failed_rate and not s["passed"]) > 1:
        return 0  # already retried once: that is the server's limit
    if failed_rate not in rates:
        return 0
    print(",".join(str(r) for r in rates[rates.index(failed_rate):]))
    return 0


def cmd_plot_csv(args):
    fields = ["server", "rate", "deliveries_per_s", "p50_ms", "p99_ms", "loss"]
    per = {}  # (server, rate) -> [row of each run]
    order = []
    for path in sorted(Path(args.results, "hot-room").glob("*-r*.csv")):
        last = {}
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                last[(row["server"], row["rate"])] = row  # a retry replaces the first attempt
        for key, row in last.items():
            if key[0] not in order:
                order.append(key[0])
            per.setdefault(key, []).append(row)
    if not per:
        print("plot-csv: no hot-room CSV rows", file=sys.stderr)
        return 1
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for (server, rate), rows in sorted(per.items(), key=lambda kv: (order.index(kv[0][0]), int(kv[0][1]))):
            out = {"server": server, "rate": rate}
            for c in fields[2:]:
                out[c] = statistics.median(float(r[c]) for r in rows)
            writer.writerow(out)
    return 0


def cmd_report(args):
    results_dir = Path(args.results)
    meta = read_meta(results_dir / "meta.env")
    versions = read_versions(results_dir / "setup.txt")
    runs = read_runs(results_dir)
    samples, phases = read_load(results_dir)
    section, rows = build_section(results_dir, meta, versions, runs, samples, phases, args.png_ref)
    with open(results_dir / "runs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["measure", "server", "run", "figure", "value"])
        w.writerows(rows)
    (results_dir / "benchmarks-section.md").write_text(section, encoding="utf-8")
    print(section)
    if args.benchmarks:
        title = section_title(meta)
        replace_section(Path(args.benchmarks), section, (title,) + (OLD_SECTIONS if title == SECTION else ()))
        print(f"report: section written to {args.benchmarks}", file=sys.stderr)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("busy")
    b.add_argument("--root", type=int, required=True)
    b.add_argument("--seconds", type=float, default=5.0)
    b.add_argument("--interval", type=float, default=0.5)
    b.add_argument("--limit", type=float, default=BUSY_LIMIT_PCT)
    b.add_argument("--out")
    b.set_defaults(func=cmd_busy)
    smp = sub.add_parser("sample")
    smp.add_argument("out")
    smp.add_argument("--root", type=int, required=True)
    smp.add_argument("--interval", type=float, default=1.0)
    smp.set_defaults(func=cmd_sample)
    r = sub.add_parser("retry-rates")
    r.add_argument("txt")
    r.add_argument("rates")
    r.set_defaults(func=cmd_retry_rates)
    c = sub.add_parser("plot-csv")
    c.add_argument("results")
    c.add_argument("out")
    c.set_defaults(func=cmd_plot_csv)
    rep = sub.add_parser("report")
    rep.add_argument("results")
    rep.add_argument("--benchmarks", help="BENCHMARKS.md to update (omit: only print the section)")
    rep.add_argument("--png-ref", default="bench/hot-room.png")
    rep.set_defaults(func=cmd_report)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
