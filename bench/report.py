#!/usr/bin/env python3
"""Parse the outputs of bench/run.sh and write its report.

    bench/.venv/bin/python bench/report.py retry-rates TXT RATES
    bench/.venv/bin/python bench/report.py plot-csv CSV OUT
    bench/.venv/bin/python bench/report.py report RESULTS_DIR [--benchmarks BENCHMARKS.md] [--png-ref PATH]

retry-rates: TXT is a server's hot-room output so far (one or more runs of
  `bavard-bench hot-room`), RATES the comma-separated steps run.sh asked for.
  When the last step printed FAILed and that rate has failed only once, prints
  the steps still to try, starting with the failed one (run.sh retries them);
  otherwise prints nothing.
plot-csv: CSV is the hot-room CSV (all attempts); writes OUT with only the last
  attempt of each (server, rate), for plot.py.
report: reads RESULTS_DIR/{meta.env,setup.txt,NAME-hot-room.txt,NAME-idle.txt},
  prints the Markdown section, writes it to RESULTS_DIR/benchmarks-section.md
  and, with --benchmarks, replaces (or appends) the section in that file,
  keeping every other section as it is.
"""

import argparse
import csv
import os
import re
import sys
import tempfile
from pathlib import Path

SECTION = "## Scenario 1 (hot room) and idle memory, side by side"
DISTURBED_PCT = 25  # others' mean CPU (% of a core) during a server's hot room that flags its figure

STEP_RE = re.compile(r"^rate (?P<rate>\d+)/s: (?P<sends>[\d.]+) sends/s, (?P<deliv>[\d.]+) deliveries/s, (?P<rest>.*?)\s+(?P<verdict>PASS|FAIL)\s*$")
P50_RE = re.compile(r"\bp50 (?P<v>[\d.]+) ms")
P99_RE = re.compile(r"\bp99 (?P<v>[\d.]+) ms")
LOSS_RE = re.compile(r"\bloss (?P<loss>\d+) of (?P<expected>\d+) \((?P<detail>[^)]*)\)")
SERVER_CPU_RE = re.compile(r"\bserver (?P<cpu>[\d.]+) CPU-s/M (?P<what>\w+) \((?P<core>\d+)% of a core\)")
BENCH_CPU_RE = re.compile(r"\bbench (?P<cpu>[\d.]+) CPU-s/M (?P<what>\w+) \((?P<core>\d+)% of a core\)")
RSS_END_RE = re.compile(r"^server RSS at the end: (?P<mib>[\d.]+) MiB")
CONNECTED_RE = re.compile(r"^connected (?P<n>\d+) in (?P<secs>[\d.]+) s")
OPENED_RE = re.compile(r"^opened (?P<n>\d+) connections in (?P<secs>[\d.]+) s: (?P<hs>[\d.]+) handshakes/s, handshake (?P<lat>.*?), (?P<failed>\d+) failed")
IDLE_HEAD_RE = re.compile(r"^idle: (?P<n>\d+) (?P<proto>\w+) connections from (?P<addrs>\d+) source")
SATURATED_RE = re.compile(r"^warning: the bench used (?P<pct>\d+)% of its")
IDLE_RSS_RE = re.compile(r"^server RSS (?P<before>[\d.]+) MiB -> (?P<after>[\d.]+) MiB: (?P<per>[\d.]+) KiB per connection")


# --- parsing ---------------------------------------------------------------------------

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
        step = {
            "rate": int(m["rate"]),
            "sends": float(m["sends"]),
            "deliveries": float(m["deliv"]),
            "passed": m["verdict"] == "PASS",
            "line": line.strip(),
        }
        if (p := P50_RE.search(rest)):
            step["p50"] = float(p["v"])
        if (p := P99_RE.search(rest)):
            step["p99"] = float(p["v"])
        if (p := LOSS_RE.search(rest)):
            step["loss"] = int(p["loss"])
            step["expected"] = int(p["expected"])
            step["loss_detail"] = p["detail"]
        if (p := SERVER_CPU_RE.search(rest)):
            step["server_cpu"] = float(p["cpu"])
            step["server_core"] = int(p["core"])
        if (p := BENCH_CPU_RE.search(rest)):
            step["bench_cpu"] = float(p["cpu"])
            step["bench_core"] = int(p["core"])
        steps.append(step)
    return steps


def parse_hot_room(path):
    info = {"steps": [], "found": path.is_file(), "errors": [], "rss_end": None, "retries": []}
    if not info["found"]:
        return info
    text = path.read_text(encoding="utf-8", errors="replace")
    info["steps"] = parse_steps(text)
    for line in text.splitlines():
        line = line.strip()
        if (m := RSS_END_RE.match(line)):
            info["rss_end"] = float(m["mib"])
        elif line.startswith("### run.sh: retry"):
            m = re.search(r"(\d+)/s", line)
            info["retries"].append(fmt_rate(int(m[1])) if m else "?")
        elif line.startswith("### run.sh: exit") or line.lower().startswith("error"):
            info["errors"].append(line.removeprefix("### run.sh: ").strip())
    passed = [s for s in info["steps"] if s["passed"]]
    info["best"] = max(passed, key=lambda s: s["deliveries"]) if passed else None
    failed = [s for s in info["steps"] if not s["passed"]]
    info["last_fail"] = failed[-1] if failed and not info["steps"][-1]["passed"] else None
    return info


def parse_idle(path):
    info = {"found": path.is_file(), "errors": []}
    if not info["found"]:
        return info
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if (m := IDLE_HEAD_RE.match(line)):
            info.update(asked=int(m["n"]), protocol=m["proto"], addresses=int(m["addrs"]))
        elif (m := OPENED_RE.match(line)):
            info.update(opened=int(m["n"]), secs=float(m["secs"]), handshakes=float(m["hs"]),
                        failed=int(m["failed"]))
            if (p := P99_RE.search(m["lat"])):
                info["hs_p99"] = float(p["v"])
            if (p := SERVER_CPU_RE.search(line)):
                info.update(server_cpu=float(p["cpu"]), server_core=int(p["core"]))
            if (p := BENCH_CPU_RE.search(line)):
                info.update(bench_cpu=float(p["cpu"]), bench_core=int(p["core"]))
        elif (m := IDLE_RSS_RE.match(line)):
            info.update(rss_before=float(m["before"]), rss_after=float(m["after"]),
                        rss_per_conn_kib=float(m["per"]))
        elif line.startswith("### run.sh: "):
            key, _, value = line.removeprefix("### run.sh: ").partition(" ")
            if key == "ListenOverflows":
                info["listen_overflows"] = value
            elif key == "backlog":
                info["backlog"] = value
            elif key == "exit":
                info["errors"].append(line.removeprefix("### run.sh: "))
        elif line.lower().startswith(("error", "idle: connection failed")):
            info["errors"].append(line)
    return info


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
                info["mem"] = f"{kib / 1048576:.1f} GiB ({kib} kB)"
                break
    except OSError:
        pass
    return info


# --- commands ----------------------------------------------------------------------------

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
    last = {}
    with open(args.csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        for row in reader:
            last[(row["server"], row["rate"])] = row  # later attempts replace earlier ones
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(last.values())
    return 0


def proc_table():
    """{pid: (ppid, utime + stime ticks)} of every process right now."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def cmd_sample(args):
    """Every INTERVAL s: time, 1-min load, CPU % (100 = one core) of the processes of the
    tree under ROOT (this benchmark) and of every other process (other people's work)."""
    import signal
    import time
    hz = os.sysconf("SC_CLK_TCK")
    running = True

    def stop(*_):
        nonlocal running
        running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    prev, prev_t = proc_table(), time.monotonic()
    with open(args.out, "a", buffering=1, encoding="utf-8") as out:
        out.write("# unix_time load1 ours_pct others_pct\n")
        while running and os.path.exists(f"/proc/{args.root}"):
            time.sleep(args.interval)
            cur, t = proc_table(), time.monotonic()
            ours = {args.root}
            grew = True
            while grew:  # descendants of root
                grew = False
                for pid, (ppid, _) in cur.items():
                    if ppid in ours and pid not in ours:
                        ours.add(pid)
                        grew = True
            mine = others = 0
            for pid, (_, ticks) in cur.items():
                delta = ticks - prev.get(pid, (0, 0))[1] if pid in prev else ticks
                if pid not in prev and delta > hz * (t - prev_t) * 4:
                    delta = 0  # an old process we had not seen (pid reuse): ignore
                if pid in ours:
                    mine += delta
                else:
                    others += delta
            wall = t - prev_t
            load1 = Path("/proc/loadavg").read_text().split()[0]
            out.write(f"{time.time():.1f} {load1} {100 * mine / hz / wall:.0f} {100 * others / hz / wall:.0f}\n")
            prev, prev_t = cur, t
    return 0


def read_load(results_dir):
    """[(unix_time, load1, ours_pct, others_pct)] and {(name, phase): (start, end)}."""
    samples, phases = [], {}
    path = results_dir / "load.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                continue
            try:
                t, load1, ours, others = line.split()
                samples.append((float(t), float(load1), float(ours), float(others)))
            except ValueError:
                continue
    path = results_dir / "phases.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                t, edge, name, phase = line.split()
            except ValueError:
                continue
            start, end = phases.get((name, phase), (None, None))
            phases[(name, phase)] = (float(t), end) if edge == "begin" else (start, float(t))
    return samples, phases


def others_during(samples, span):
    start, end = span
    if start is None or end is None:
        return None
    xs = [s[3] for s in samples if start < s[0] <= end + 0.5]
    if not xs:
        return None
    return sum(xs) / len(xs), max(xs)


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_rate(r):
    if r >= 1_000_000:
        return f"{r / 1e6:g}M"
    if r >= 1000:
        return f"{r / 1e3:g}k"
    return str(r)


def why_failed(step):
    reasons = []
    if step.get("loss"):
        reasons.append(f"lost {fmt_int(step['loss'])} of {fmt_int(step['expected'])} ({step.get('loss_detail', '')})")
    if "closed" in step.get("loss_detail", "") and re.search(r"closed [1-9]", step.get("loss_detail", "")):
        reasons.append("connections closed")
    if step.get("p99", 0) > 50:
        reasons.append("p99 above 50 ms")
    if step.get("p99") is None:
        reasons.append("no deliveries measured")
    return ", ".join(reasons) or "?"


def build_section(results, servers, meta, versions, png_ref, samples, phases):
    m = machine()
    quick = meta.get("quick") == "1"
    idle_conns = meta.get("idle_conns", "10000")
    lines = [SECTION, ""]
    if quick:
        lines += ["> **Quick run** (`--quick`): 1-second steps, a few low rates, "
                  f"{int(idle_conns):,} idle connections. A smoke test of `bench/run.sh`, not a measurement.", ""]
    lines += [
        "Written by `bench/run.sh` (parsing by `bench/report.py`); rerun it to refresh this section.",
        "",
        "Command (from the repository root):",
        "",
        "```sh",
        meta.get("command", "bench/run.sh"),
        "```",
        "",
        f"- Date: {meta.get('date', '?')} (run took {meta.get('duration', '?')})",
        f"- Machine: {m['nproc']} cores (`nproc`), {m['cpu']}, kernel {m['kernel']}, {m['mem']} RAM; "
        f"loopback only. **Shared machine**: other engineers were building and testing on the same 2 cores "
        f"during the run (load average {meta.get('load_start', '?')} at the start, "
        f"{meta.get('load_end', '?')} at the end)"
        + (f"; processes other than this benchmark's used {sum(x[3] for x in samples) / len(samples):.0f}% of a core "
           f"on average during the run (sampled every second from `/proc`, see the notes per server)"
           if samples else "")
        + ". Take differences of less than ~20 % as noise.",
    ]
    commit = meta.get("commit", "?")
    dirty = meta.get("dirty", "")
    lines.append(f"- Bavard: commit `{commit}`"
                 + (f" **plus uncommitted changes** in {dirty} (built from the working tree)" if dirty else
                    " (clean working tree)")
                 + f", `cargo build --release` ({meta.get('rustc', 'rustc ?')}); `bavard --listen 127.0.0.1:PORT "
                   "--db FRESH_TMP/bench.db --rate-per-second 0`, all other options default.")
    v = versions
    lines.append(
        "- Peers (`bench/peers/`, see `bench/README-bench.md`): "
        f"bun {v.get('bun', '?')}; node-ws: Node.js {v.get('node', '?')} + ws {v.get('ws', '?')}; "
        f"draft: FastAPI {v.get('fastapi', '?')} (starlette {v.get('starlette', '?')}) on uvicorn "
        f"{v.get('uvicorn', '?')}, Python {v.get('python', '?')} (websockets {v.get('websockets', '?')})."
    )
    lines += [
        f"- Hot room (`bavard-bench hot-room`, scenario 1): one room on `/ws/chat` with 1,000 receiving "
        f"connections + 10 publishers, plain-text protocol, bench on 1 thread; steps of "
        f"{meta.get('step_secs', '5')} s measured after 1 s of warm-up, 2 s drain; rates (deliveries/s offered) "
        f"{', '.join(fmt_rate(int(r)) for r in meta.get('rates', '').split(',') if r)}. "
        "A step passes with zero loss and p99 <= 50 ms. Rising stops at the first failure, but a failed step "
        "is retried once (new connections, same server process, after the server's CPU has calmed down) "
        "before it counts as the limit, because on a shared machine a single step can fail on noise.",
        f"- Idle (`bavard-bench idle --protocol plain`, scenario 3): a fresh server process, {int(idle_conns):,} silent "
        "plain-text connections on `/ws/chat/idle-N` (rooms of 10), from 127.0.0.2 (10,000 per source "
        "address), 256 handshakes in flight; RSS per connection is "
        "(VmRSS 2 s after the last handshake - VmRSS before) / connections. Handshakes/s is "
        "connections opened divided by the time to open them all.",
        "",
    ]
    disturbed = []
    header = ("| server | max sustained deliveries/s (zero loss, p99 <= 50 ms) | p99 there "
              "| server CPU-s per M deliveries there "
              f"| idle RSS per connection ({int(idle_conns) // 1000}k) | handshakes/s |")
    lines += [header, "| --- | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for name in servers:
        hot, idle = results[name]["hot"], results[name]["idle"]
        best = hot.get("best")
        if not hot["found"]:
            cells = ["not run", "—", "—"]
        elif best:
            cpu = best.get("server_cpu")
            cells = [fmt_int(best["deliveries"]), f"{best['p99']:.2f} ms",
                     f"{cpu:.3f} ({best['server_core']}% of a core)" if cpu is not None else "—"]
        elif hot["steps"]:
            first = hot["steps"][0]
            cells = [f"none (below {fmt_rate(first['rate'])})", "—", "—"]
        else:
            cells = ["error", "—", "—"]
        if idle.get("rss_per_conn_kib") is not None:
            rss = f"{idle['rss_per_conn_kib']:.1f} KiB"
            if idle.get("failed"):
                rss += f" ({fmt_int(idle['opened'])} opened, {idle['failed']} failed)"
        elif idle["found"]:
            rss = "error"
        else:
            rss = "not run"
        hs = fmt_int(idle["handshakes"]) if idle.get("handshakes") is not None else "—"
        busy = others_during(samples, phases.get((name, "hot-room"), (None, None)))
        if busy and busy[0] >= DISTURBED_PCT and hot["steps"]:
            cells[0] += " ‡"
            disturbed.append(f"{busy[0]:.0f}% of a core during {name}'s")
        lines.append(f"| {name} | " + " | ".join(cells + [rss, hs]) + " |")

        # Notes: where it stopped, retries, memory, idle details.
        parts = []
        if hot["steps"]:
            lf = hot.get("last_fail")
            if lf:
                parts.append(f"stopped at the {fmt_rate(lf['rate'])} step: {fmt_int(lf['deliveries'])} deliveries/s, "
                             f"p99 {lf.get('p99', float('nan')):,.2f} ms, {why_failed(lf)}; "
                             f"server {lf.get('server_core', '?')}% of a core, bench {lf.get('bench_core', '?')}%")
            else:
                parts.append(f"passed every step up to {fmt_rate(hot['steps'][-1]['rate'])}")
            if best:
                parts.append(f"at its best step p50 {best['p50']:.2f} ms, server {best.get('server_core', '?')}% "
                             f"of a core, bench {best.get('bench_core', '?')}%")
            sat = [s for s in hot["steps"] if s.get("bench_saturated")]
            if sat:
                parts.append("the bench warned that it was saturated (>85% of its thread) at "
                             + ", ".join(f"{fmt_rate(s['rate'])} ({s['bench_saturated']}%)" for s in sat))
            if hot["retries"]:
                parts.append("retried the " + ", ".join(hot["retries"]) + " step"
                             + ("s" if len(hot["retries"]) > 1 else ""))
            if (o := others_during(samples, phases.get((name, "hot-room"), (None, None)))):
                parts.append(f"other processes on the machine meanwhile: {o[0]:.0f}% of a core on average, "
                             f"{o[1]:.0f}% at most")
            if hot.get("rss_end") is not None:
                parts.append(f"server RSS after the hot room {hot['rss_end']:.1f} MiB")
        for e in hot["errors"]:
            parts.append(f"hot room: {e}")
        if idle.get("opened") is not None:
            ip = (f"idle: {fmt_int(idle['opened'])} opened in {idle['secs']:.2f} s, handshake p99 "
                  f"{idle.get('hs_p99', float('nan')):,.0f} ms, RSS {idle.get('rss_before', 0):.1f} -> "
                  f"{idle.get('rss_after', 0):.1f} MiB")
            if idle.get("server_cpu") is not None:
                ip += (f", server {idle['server_cpu'] / 1000:.3f} ms CPU per handshake ({idle['server_core']}% of a core)"
                       f", bench {idle.get('bench_core', '?')}% of a core")
            if idle.get("backlog"):
                ip += f", listen backlog {idle['backlog']}"
            if idle.get("listen_overflows"):
                ip += f", TCP ListenOverflows during the open phase {idle['listen_overflows']}"
            parts.append(ip)
        for e in idle["errors"]:
            parts.append(f"idle: {e}")
        if parts:
            notes.append(f"- **{name}**: " + "; ".join(parts) + ".")
    extra = results.get("_bavard_json")
    if extra and extra.get("rss_per_conn_kib") is not None:
        notes.append(
            f"- **bavard, JSON protocol** (`--protocol json`: `/ws?name=...`, a handshake counted once "
            f"`welcome` is read; same kind of fresh server): {extra['rss_per_conn_kib']:.1f} KiB per idle connection, "
            f"{fmt_int(extra.get('handshakes', 0))} handshakes/s, handshake p99 {extra.get('hs_p99', float('nan')):,.0f} ms"
            + (f", {extra['failed']} failed" if extra.get("failed") else "") + ".")
    if disturbed:
        lines += ["", f"‡ Disturbed: other processes on the machine used on average {', '.join(disturbed)} hot room "
                  "(sampled every second from `/proc`), while the server and the bench need about "
                  "one core each at high rates. This figure measures that contention as much as the server; "
                  "rerun `bench/run.sh` when the machine is quiet before drawing conclusions from it."]
    if any(s.get("bench_saturated") for name in servers for s in results[name]["hot"]["steps"]):
        lines += ["", "Where the notes say the bench warned it was saturated, the one-thread load generator used "
                  "more than 85% of its core: the limit found there may be the generator's, not the server's."]
    lines += ["", "Details per server (from the raw outputs):", ""] + notes
    lines += [
        "",
        "Reading the figures:",
        "",
        "- \"server CPU-s per M deliveries\" is the server process's user + system CPU time (from "
        "`/proc/PID/stat`) during the measured seconds of that step, divided by the deliveries in them; "
        "the load generator runs on the same 2 cores (one thread), so a server that uses more than one core "
        "competes with it.",
        "- Handshakes/s comes from the open phase of the idle scenario (256 in flight, one bench thread). "
        "A p99 handshake time near 1 s or more means SYNs were dropped and retransmitted 1 s later because the "
        "server's accept queue was full (`TcpExtListenOverflows`, counted for the whole machine, so other "
        "engineers' tests can add to it); the accept backlog each server asked for is in the notes "
        "(`ss -ltn` Send-Q). With 256 handshakes in flight, a backlog below 256 overflows.",
        "",
        f"![Hot room: deliveries/s against p99 latency, one line per server]({png_ref})",
        "",
        f"Raw outputs (not committed): `bench/results/` (`NAME-hot-room.txt`, `NAME-idle.txt`, `hot-room.csv`, "
        "`idle.csv`, server logs).",
        "",
    ]
    return "\n".join(lines)


def replace_section(path, section):
    """Re-reads PATH right now, replaces our section (up to the next `## ` heading) or appends it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip("\n").strip() == SECTION), None)
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
        return replace_section(path, section)
    os.replace(tmp, path)


def cmd_report(args):
    results_dir = Path(args.results)
    meta = read_meta(results_dir / "meta.env")
    versions = read_versions(results_dir / "setup.txt")
    servers = [s for s in meta.get("servers", "bavard,bun,node-ws,draft").split(",") if s]
    results = {
        name: {"hot": parse_hot_room(results_dir / f"{name}-hot-room.txt"),
               "idle": parse_idle(results_dir / f"{name}-idle.txt")}
        for name in servers
    }
    if (results_dir / "bavard-idle-json.txt").is_file():
        results["_bavard_json"] = parse_idle(results_dir / "bavard-idle-json.txt")
    samples, phases = read_load(results_dir)
    section = build_section(results, servers, meta, versions, args.png_ref, samples, phases)
    (results_dir / "benchmarks-section.md").write_text(section, encoding="utf-8")
    print(section)
    if args.benchmarks:
        replace_section(Path(args.benchmarks), section)
        print(f"report: section written to {args.benchmarks}", file=sys.stderr)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("retry-rates")
    r.add_argument("txt")
    r.add_argument("rates")
    r.set_defaults(func=cmd_retry_rates)
    c = sub.add_parser("plot-csv")
    c.add_argument("csv")
    c.add_argument("out")
    c.set_defaults(func=cmd_plot_csv)
    smp = sub.add_parser("sample")
    smp.add_argument("out")
    smp.add_argument("--root", type=int, required=True)
    smp.add_argument("--interval", type=float, default=1.0)
    smp.set_defaults(func=cmd_sample)
    rep = sub.add_parser("report")
    rep.add_argument("results")
    rep.add_argument("--benchmarks", help="BENCHMARKS.md to update (omit: only print the section)")
    rep.add_argument("--png-ref", default="bench/hot-room.png")
    rep.set_defaults(func=cmd_report)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
