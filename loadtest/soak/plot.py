#!/usr/bin/env python3
"""Plots a soak run's per-second series (kaskade-loadtest --series) and computes its figures.

    python3 loadtest/soak/plot.py SERIES.csv --out docs/soak.png [--figures FIGURES.md]
                                  [--warmup-min 5] [--block-min 5]

The plot: resident memory with its linear fit after warm-up, open file descriptors and tokio
tasks, the node's and the locator's map sizes, participants and churn, loss and latency, all
against minutes into the measurement window. The figures (Markdown on stdout, and in
--figures): the RSS slope after warm-up in KB/min (least squares over the window's seconds
after --warmup-min), the gauges at the window's start, at the end of warm-up and at its end, and
per --block-min block: loss (lost over expected packets), latency (median and worst of the
seconds' p50 and p99), RSS, descriptors, tasks, participants and churn.

Needs matplotlib (pip install matplotlib).
"""

import argparse
import csv
import math
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NODE = "kaskade_sfu"
LOCATOR = "kaskade_locator"


def read(path):
    """The series' rows as dicts of floats (empty cells: None)."""
    with open(path, newline="") as f:
        rows = []
        for raw in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in raw.items()})
    return rows


def window(rows):
    """The measurement window's rows, each with `min`: minutes since the window opened."""
    measured = [r for r in rows if r.get("measuring") == 1.0]
    if not measured:
        sys.exit("no row of the series is inside the measurement window")
    t0 = measured[0]["time_s"]
    for r in measured:
        r["min"] = (r["time_s"] - t0) / 60.0
    return measured


def column(rows, name):
    return [(r["min"], r[name]) for r in rows if r.get(name) is not None]


def fit(points):
    """Least-squares slope and intercept of (x, y) points."""
    n = len(points)
    if n < 2:
        return float("nan"), float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx if sxx else float("nan")
    return slope, my - slope * mx


def maps(rows, prefix):
    """Map-size columns of one process: {label: column name}."""
    head = f"{prefix}_map_entries{{map="
    names = [k for k in rows[0] if k.startswith(head)]
    return {k[len(head):-1]: k for k in names}


def rss_column(rows):
    for prefix in (NODE, LOCATOR):
        name = f"{prefix}_process_resident_memory_bytes"
        if any(r.get(name) is not None for r in rows):
            return prefix, name
    sys.exit("the series has no resident memory column (was --metrics-url given?)")


def heap_column(rss):
    """The heap-in-use column of the process whose RSS column is `rss`."""
    return rss.replace("_process_resident_memory_bytes", "_process_heap_in_use_bytes")


def plot(rows, out, warmup, slope, intercept, rss):
    fig, axes = plt.subplots(6, 1, figsize=(11, 20), sharex=True)
    (ax_rss, ax_fd, ax_node, ax_loc, ax_people, ax_q) = axes
    mib = [(x, y / 1048576) for x, y in column(rows, rss)]
    ax_rss.plot(*zip(*mib), lw=0.8, label="RSS")
    xs = [x for x, _ in mib if x >= warmup]
    if xs and not math.isnan(slope):
        ax_rss.plot(
            [xs[0], xs[-1]],
            [(intercept + slope * x) / 1024 for x in (xs[0], xs[-1])],
            "r--",
            lw=1.2,
            label=f"fit after {warmup:g} min: {slope:+.1f} KB/min",
        )
    heap = heap_column(rss)
    heap_mib = [(x, y / 1048576) for x, y in column(rows, heap)]
    if heap_mib:
        heap_slope, _ = fit([(x, y * 1024) for x, y in heap_mib if x >= warmup])
        ax_rss.plot(
            *zip(*heap_mib),
            lw=0.8,
            label=f"heap in use (fit after {warmup:g} min: {heap_slope:+.1f} KB/min)",
        )
    ax_rss.set_ylabel("MiB")
    ax_rss.set_title("resident memory and heap in use (all-in-one process)")
    ax_rss.legend(loc="lower right")

    prefix = rss.split("_process_")[0]
    for name, label in (
        (f"{prefix}_process_open_fds", "open file descriptors"),
        (f"{prefix}_tokio_alive_tasks", "tokio tasks"),
    ):
        pts = column(rows, name)
        if pts:
            ax_fd.plot(*zip(*pts), lw=0.8, label=label)
    ax_fd.set_title("file descriptors and tasks")
    ax_fd.legend(loc="lower right")

    for ax, prefix, title in ((ax_node, NODE, "node maps"), (ax_loc, LOCATOR, "locator maps")):
        for label, name in sorted(maps(rows, prefix).items()):
            pts = column(rows, name)
            if pts and any(y for _, y in pts):
                ax.plot(*zip(*pts), lw=0.8, label=label)
        ax.set_yscale("symlog", linthresh=10)
        ax.set_title(f"{title} (entries, symlog scale)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)

    ax_people.plot(*zip(*column(rows, "joined")), lw=0.8, label="participants (generator)")
    node_people = column(rows, f"{NODE}_participants")
    if node_people:
        ax_people.plot(*zip(*node_people), lw=0.8, label="participants (node)")
    ax_churn = ax_people.twinx()
    ax_churn.plot(*zip(*column(rows, "churn_leaves")), "g", lw=0.8, label="churn leaves")
    ax_churn.set_ylabel("leaves so far")
    ax_people.set_ylim(bottom=0)
    ax_churn.set_ylim(bottom=0)
    ax_people.set_title("participants and churn")
    ax_people.legend(loc="lower left")
    ax_churn.legend(loc="lower right")

    for name, label in (("latency_p50_ms", "latency p50"), ("latency_p99_ms", "latency p99")):
        pts = column(rows, name)
        if pts:
            ax_q.plot(*zip(*pts), lw=0.6, label=label)
    ax_q.set_ylabel("ms (per second)")
    ax_loss = ax_q.twinx()
    loss = column(rows, "loss_percent")
    if loss:
        ax_loss.plot(*zip(*loss), "r", lw=0.6, label="loss %")
    ax_loss.set_ylabel("loss %")
    ax_loss.set_ylim(bottom=0)
    ax_q.set_ylim(bottom=0)
    ax_q.set_title("latency and loss, each second")
    ax_q.legend(loc="upper left")
    ax_loss.legend(loc="upper right")
    ax_q.set_xlabel("minutes into the measurement window")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def value_at(rows, name, minute):
    """The column's value in the first row at or after `minute`."""
    for r in rows:
        if r["min"] >= minute and r.get(name) is not None:
            return r[name]
    return None


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def figures(rows, warmup, block, slope, rss):
    prefix = rss.split("_process_")[0]
    end = rows[-1]["min"]
    lines = []
    after = [(x, y / 1024) for x, y in column(rows, rss) if x >= warmup]
    lines.append(
        f"RSS slope after {warmup:g} min (least squares over {len(after)} seconds): "
        f"**{slope:+.1f} KB/min** ({slope * 60 / 1024:+.2f} MiB/hour); RSS "
        f"{fmt(value_at(rows, rss, 0) / 1048576, 1)} MiB at the window's start, "
        f"{fmt(value_at(rows, rss, warmup) / 1048576, 1)} MiB at {warmup:g} min, "
        f"{fmt(rows[-1][rss] / 1048576, 1)} MiB at {end:.1f} min."
    )
    heap = [(x, y / 1024) for x, y in column(rows, heap_column(rss)) if x >= warmup]
    if heap:
        heap_slope, _ = fit(heap)
        lines.append(
            f"Heap in use (glibc's allocated chunks) slope after {warmup:g} min: "
            f"**{heap_slope:+.1f} KB/min**; {fmt(heap[0][1] / 1024, 1)} MiB at {warmup:g} min, "
            f"{fmt(heap[-1][1] / 1024, 1)} MiB at {end:.1f} min."
        )
    lines.append("")
    gauges = [
        ("open file descriptors", f"{prefix}_process_open_fds"),
        ("tokio tasks", f"{prefix}_tokio_alive_tasks"),
        ("node participants", f"{NODE}_participants"),
    ]
    gauges += [(f"node `{k}`", v) for k, v in sorted(maps(rows, NODE).items())]
    gauges += [(f"locator `{k}`", v) for k, v in sorted(maps(rows, LOCATOR).items())]
    lines.append(f"| gauge | window start | {warmup:g} min | end ({end:.1f} min) | min..max after {warmup:g} min |")
    lines.append("|---|---|---|---|---|")
    for label, name in gauges:
        late = [y for x, y in column(rows, name) if x >= warmup]
        span = f"{fmt(min(late))}..{fmt(max(late))}" if late else "-"
        lines.append(
            f"| {label} | {fmt(value_at(rows, name, 0))} | {fmt(value_at(rows, name, warmup))} "
            f"| {fmt(rows[-1].get(name))} | {span} |"
        )
    lines.append("")
    lines.append(
        "| minutes | loss | latency p50 (median / worst second) | latency p99 (median / worst second) "
        "| RSS MiB (mean) | fds | tasks | participants | churn leaves |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    start = 0.0
    while start < end - 1e-9:
        stop = min(start + block, end + 1e-9)
        rs = [r for r in rows if start <= r["min"] < stop]
        start += block
        if not rs:
            continue
        expected = sum(r.get("expected_packets") or 0 for r in rs)
        lost = sum(r.get("lost_packets") or 0 for r in rs)
        loss = f"{100 * lost / expected:.4f} % ({lost:.0f} of {expected:,.0f})" if expected else "-"

        def stat(name):
            vs = [r[name] for r in rs if r.get(name) is not None]
            return f"{statistics.median(vs):.2f} / {max(vs):.2f} ms" if vs else "-"

        def span(name):
            vs = [r[name] for r in rs if r.get(name) is not None]
            return f"{fmt(min(vs))}..{fmt(max(vs))}" if vs else "-"

        rss_mean = statistics.mean(r[rss] for r in rs if r.get(rss) is not None) / 1048576
        leaves = [r["churn_leaves"] for r in rs]
        lines.append(
            f"| {rs[0]['min']:.0f}-{rs[-1]['min']:.0f} | {loss} | {stat('latency_p50_ms')} "
            f"| {stat('latency_p99_ms')} | {rss_mean:.1f} | {span(f'{prefix}_process_open_fds')} "
            f"| {span(f'{prefix}_tokio_alive_tasks')} | {span(f'{NODE}_participants')} "
            f"| {leaves[0]:.0f}..{leaves[-1]:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--figures", help="also write the figures (Markdown) here")
    parser.add_argument("--warmup-min", type=float, default=5.0)
    parser.add_argument("--block-min", type=float, default=5.0)
    args = parser.parse_args()
    rows = window(read(args.series))
    _, rss = rss_column(rows)
    after = [(x, y / 1024) for x, y in column(rows, rss) if x >= args.warmup_min]
    slope, intercept = fit(after)
    plot(rows, args.out, args.warmup_min, slope, intercept, rss)
    text = figures(rows, args.warmup_min, args.block_min, slope, rss)
    if args.figures:
        with open(args.figures, "w") as f:
            f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
