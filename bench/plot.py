#!/usr/bin/env python3
"""Plot benchmark results: delivered messages per second against p99 latency.

    bench/.venv/bin/python bench/plot.py RESULTS.csv [-o OUT.png] [--title TITLE]

RESULTS.csv has a header with at least the columns
    server,rate,deliveries_per_s,p50_ms,p99_ms,loss
(one row per server and offered rate). The PNG has deliveries/s on x,
p99 latency in ms on y (log scale), one line per server, points in
increasing offered-rate order; a point whose loss is above zero is drawn
hollow. OUT defaults to RESULTS.png next to the CSV.
"""

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REQUIRED = ("server", "rate", "deliveries_per_s", "p50_ms", "p99_ms", "loss")


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            sys.exit(f"{path}: missing column(s) {', '.join(missing)}")
        series = defaultdict(list)
        for n, row in enumerate(reader, start=2):
            try:
                point = {c: float(row[c]) for c in REQUIRED if c != "server"}
            except (TypeError, ValueError):
                print(f"{path}:{n}: skipped, not a number: {row}", file=sys.stderr)
                continue
            series[row["server"].strip()].append(point)
    if not series:
        sys.exit(f"{path}: no data rows")
    for points in series.values():
        points.sort(key=lambda p: p["rate"])
    return series


def plot(series, out, title):
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    for server in sorted(series):
        points = series[server]
        xs = [p["deliveries_per_s"] for p in points]
        ys = [p["p99_ms"] for p in points]
        (line,) = ax.plot(xs, ys, marker="o", label=server)
        lossy = [p for p in points if p["loss"] > 0]
        if lossy:
            ax.scatter(
                [p["deliveries_per_s"] for p in lossy],
                [p["p99_ms"] for p in lossy],
                s=90, facecolors="white", edgecolors=line.get_color(), zorder=3,
            )
    if all(p["p99_ms"] > 0 for pts in series.values() for p in pts):
        ax.set_yscale("log")
    ax.set_xlabel("deliveries per second")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="server (hollow: loss > 0)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv", type=Path)
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--title", default="Bavard and its peers: throughput vs p99 latency")
    args = p.parse_args()
    out = args.output or args.csv.with_suffix(".png")
    plot(read_rows(args.csv), out, args.title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
