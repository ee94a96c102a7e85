#!/usr/bin/env python3
"""Plots the capped-downlink test's timeline (the DOWNLINK_TIMELINE lines of
`cargo test -p kaskade-e2e --test browser a_subscriber_behind -- --nocapture`).

    cargo test ... -- --nocapture | python3 tests/browser/plot_downlink.py --out docs/downlink.png

Two panels against seconds since the cap started: rates in kbit/s (the cap on Bob's link, what
Bob receives, what Alice's two simulcast layers send), and the height of the layer Bob's
Chromium decodes with his picture's total frozen time. Needs matplotlib.
"""

import argparse
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIELD = re.compile(r"(\w+)=(\S+)")


def samples(lines):
    """One dict per distinct sample time, in order."""
    seen = {}
    for line in lines:
        if "DOWNLINK_TIMELINE" not in line:
            continue
        fields = dict(FIELD.findall(line.split("DOWNLINK_TIMELINE", 1)[1]))
        seen[int(fields["t_ms"])] = fields
    return [seen[t] for t in sorted(seen)]


def number(value):
    try:
        return float(value)
    except ValueError:
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", help="the test's output (default: stdin)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    lines = open(args.input).readlines() if args.input else sys.stdin.readlines()
    rows = samples(lines)
    if not rows:
        sys.exit("no DOWNLINK_TIMELINE lines")
    t = [int(r["t_ms"]) / 1000 for r in rows]
    # cap=0: no cap
    cap = [number(r["cap"]) or float("nan") for r in rows]
    fig, (rates, layer) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                       gridspec_kw={"height_ratios": [2, 1]})
    rates.step(t, cap, where="post",
               color="black", linestyle="--", label="cap on Bob's link")
    for key, label in [("bob_kbps", "Bob receives"), ("alice_f_kbps", "Alice sends 640x480 (f)"),
                       ("alice_h_kbps", "Alice sends 320x240 (h)")]:
        rates.plot(t, [number(r[key]) for r in rows], label=label)
    rates.set_ylabel("kbit/s")
    rates.legend(loc="upper left", fontsize="small")
    rates.grid(alpha=0.3)
    layer.step(t, [number(r["bob_sees"]) for r in rows], where="post", color="tab:purple",
               label="height Bob decodes")
    layer.set_ylabel("picture height")
    layer.set_yticks([240, 480])
    frozen = layer.twinx()
    frozen_ms = [number(r["bob_frozen_ms"]) or 0 for r in rows]
    frozen.plot(t, frozen_ms, color="tab:red", linestyle=":", label="Bob frozen, total ms")
    frozen.set_ylim(0, max(1000, max(frozen_ms) * 1.2))
    frozen.set_ylabel("frozen ms")
    layer.set_xlabel("seconds since the 300 kbit/s cap")
    layer.grid(alpha=0.3)
    handles = layer.get_legend_handles_labels()[0] + frozen.get_legend_handles_labels()[0]
    labels = layer.get_legend_handles_labels()[1] + frozen.get_legend_handles_labels()[1]
    layer.legend(handles, labels, loc="center right", fontsize="small")
    fig.suptitle("A subscriber behind a capped link (Chromium, simulcast, RTX)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
