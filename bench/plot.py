#!/usr/bin/env python3
"""Draw the benchmark's figures against their targets as an SVG bar chart (stdlib only).

Usage: python3 bench/plot.py [RESULTS_JSON] [OUTPUT_SVG]
Defaults: bench/results.json and docs/bench.svg, relative to the workspace root.

One horizontal bar per metric that has a target, as a percentage of that target. For a
"at most" target (CPU, latency, memory) a bar past the 100 % line is a miss; for an
"at least" target (handshakes/s) a bar short of it is a miss. Each bar is labelled with the
raw value and the target. Values are the medians of the runs. When the results hold a peer
(`--peer`: the same scenarios against another bridge), a thin grey bar under each bar shows
the peer's value on the same scale.
"""

import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 960
LEFT = 320  # room for the metric names
RIGHT = 40
ROW = 38
BAR = 22
TOP = 112
GREEN = "#2e8b57"
RED = "#c0392b"
GREY = "#8a8a8a"
PEER_BAR = 10


def fmt(value):
    """Three significant figures or so, thousands separated."""
    if value is None or value != value:  # None or NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def peer_values(results):
    """{(scenario, metric): value} of the peer side, empty without one."""
    peer = results.get("peer") or {}
    return {
        (scenario["name"], metric["name"]): metric["value"]
        for scenario in peer.get("scenarios", [])
        for metric in scenario.get("metrics", [])
    }


def rows_of(results):
    """(label, value, unit, target, goal, met) for every metric that has a target."""
    rows = []
    for scenario in results.get("scenarios", []):
        for metric in scenario["metrics"]:
            target = metric.get("target")
            if not target:
                continue
            rows.append(
                (
                    (scenario["name"], metric["name"]),
                    metric["value"],
                    metric["unit"],
                    target["value"],
                    target["goal"],
                    bool(metric.get("met")),
                )
            )
    return rows


def percent_of(value, target):
    return (value / target * 100) if value is not None and value == value and target else 0.0


def svg(results):
    rows = rows_of(results)
    peer = peer_values(results)
    peer_name = (results.get("peer") or {}).get("kind", "peer")
    machine = results.get("machine", {})
    config = results.get("config", {})
    row_height = ROW + (PEER_BAR + 4 if peer else 0)
    percents = [percent_of(value, target) for _, value, _, target, _, _ in rows]
    peer_percents = [percent_of(peer.get(key), target) for key, _, _, target, _, _ in rows]
    scale_max = max([100.0] + percents + peer_percents) * 1.08
    plot_width = WIDTH - LEFT - RIGHT
    height = TOP + row_height * len(rows) + 64

    def x_of(percent):
        return LEFT + plot_width * min(percent, scale_max) / scale_max

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        '<text x="16" y="26" font-size="17" font-weight="bold">'
        "websocket-bridge: measured value as % of target</text>",
        f'<text x="16" y="48" fill="#444">{escape(machine.get("cpu_model", "?"))}, '
        f'{machine.get("nproc", "?")} cores shared by bridge, backend and clients; '
        f'commit {escape(str(machine.get("git_commit", "?")))}, {escape(str(machine.get("date_utc", "?")))}</text>',
        f'<text x="16" y="68" fill="#444">{config.get("connections", "?")} connections, '
        f'{config.get("size_bytes", "?")} B messages, {fmt(config.get("duration_seconds"))} s windows, '
        f'{config.get("idle_connections", "?")} idle connections.</text>',
        '<text x="16" y="88" fill="#444">Green: target met; red: missed. '
        "Costs (CPU, latency, memory) must stay left of the 100% line, rates reach past it."
        + (f" Grey: {escape(peer_name)} (--peer)." if peer else "")
        + "</text>",
    ]
    # Gridlines every 100 %.
    step = 100 if scale_max <= 1000 else 200
    grid = 0
    while grid <= scale_max:
        x = x_of(grid)
        colour = "#222" if grid == 100 else "#ddd"
        width = 2 if grid == 100 else 1
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP - 8}" x2="{x:.1f}" y2="{TOP + row_height * len(rows)}" '
            f'stroke="{colour}" stroke-width="{width}"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + row_height * len(rows) + 18}" text-anchor="middle" fill="#555">{grid}%</text>'
        )
        grid += step
    for i, ((key, value, unit, target, goal, met), percent) in enumerate(zip(rows, percents)):
        label = f"{key[0]}: {key[1]}"
        y = TOP + i * row_height
        colour = GREEN if met else RED
        bar_end = x_of(percent)
        op = "≤" if goal == "at_most" else "≥"
        text = f"{fmt(value)} {unit} (target {op} {fmt(target)} {unit}, {percent:.0f}%)"
        out.append(
            f'<text x="{LEFT - 8}" y="{y + BAR / 2 + 5}" text-anchor="end">{escape(label)}</text>'
        )
        out.append(
            f'<rect x="{LEFT}" y="{y}" width="{max(bar_end - LEFT, 1):.1f}" height="{BAR}" fill="{colour}"/>'
        )
        # The label goes right of the bar when there is room, else inside it.
        if bar_end + 8 + 7.5 * len(text) < WIDTH:
            out.append(
                f'<text x="{bar_end + 6:.1f}" y="{y + BAR / 2 + 5}" paint-order="stroke" '
                f'stroke="white" stroke-width="4">{escape(text)}</text>'
            )
        else:
            out.append(
                f'<text x="{bar_end - 6:.1f}" y="{y + BAR / 2 + 5}" text-anchor="end" '
                f'fill="white">{escape(text)}</text>'
            )
        if key in peer:
            peer_end = x_of(peer_percents[i])
            py = y + BAR + 3
            out.append(
                f'<rect x="{LEFT}" y="{py}" width="{max(peer_end - LEFT, 1):.1f}" '
                f'height="{PEER_BAR}" fill="{GREY}"/>'
            )
            out.append(
                f'<text x="{peer_end + 6:.1f}" y="{py + PEER_BAR - 1}" font-size="11" fill="#555">'
                f"{escape(peer_name)}: {fmt(peer[key])} {escape(unit)}</text>"
            )
    out.append(
        f'<text x="16" y="{height - 14}" fill="#777">Generated by bench/plot.py from '
        "websocket-bridge-bench results.</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    source = Path(argv[1]) if len(argv) > 1 else ROOT / "bench" / "results.json"
    target = Path(argv[2]) if len(argv) > 2 else ROOT / "docs" / "bench.svg"
    results = json.loads(source.read_text())
    if not rows_of(results):
        print(f"{source}: no metric with a target", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(svg(results))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
