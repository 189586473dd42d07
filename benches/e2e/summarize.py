#!/usr/bin/env python3
"""Summarises an end-to-end benchmark run (benches/e2e/run.sh) as Markdown.

    python3 benches/e2e/summarize.py OUT_DIR

One table per scenario: the median over repetitions of requests/s, p50, p99, p99.9,
CPU seconds per 10,000 requests (the server's own processes, not the upstream's) and
peak RSS, each with its ratio to the direct upstream and to nginx in the same
scenario ("d" and "n"), and the spread of requests/s over repetitions. Then the
issue's targets, checked against the same numbers.
"""

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

SCENARIOS = {
    "public": "public route: forwarded without credentials",
    "key": "API-key route: X-Api-Key looked up, scope checked, rate-limit bucket taken",
    "jwt": "JWT route: ES256 bearer token (authmd-proxy and Envoy: verified once, then cached; "
    "HAProxy: verified every time; nginx: compared as a string)",
    "reject": "rejected: a well-formed unknown key, answered 401 by the server itself",
    "large": "100 KiB response body, API-key route",
}
ORDER = ["direct", "authmd", "authmd-global", "nginx", "haproxy", "envoy"]
METRICS = [  # column, csv field, scale, format
    ("req/s", "rps", 1, "{:,.0f}"),
    ("p50 µs", "p50_us", 1, "{:,.0f}"),
    ("p99 µs", "p99_us", 1, "{:,.0f}"),
    ("p99.9 µs", "p999_us", 1, "{:,.0f}"),
    ("CPU s/10k", "cpu_per_10k", 1, "{:.3f}"),
    ("peak RSS MiB", "peak_rss_kb", 1 / 1024, "{:.1f}"),
]


def load(out):
    rows = defaultdict(list)
    with open(out / "results.csv") as f:
        for row in csv.DictReader(f):
            requests = int(row["requests"])
            row["cpu_per_10k"] = float(row["cpu_s"]) / requests * 10_000 if requests else 0.0
            rows[(row["scenario"], row["target"], int(row["conns"]))].append(row)
    return rows


def median(runs, field):
    return statistics.median(float(r[field]) for r in runs)


def ratio(value, base):
    return f"{value / base:.2f}" if base else "–"


def main():
    out = Path(sys.argv[1])
    rows = load(out)
    env = (out / "env.txt").read_text() if (out / "env.txt").exists() else ""
    idle, keys = {}, {}
    for line in env.splitlines():
        if line.startswith("idle_rss_kb "):
            _, target, kb = line.split()
            idle[target] = int(kb) / 1024
        elif line.startswith("keys_"):
            name, value = line.split()
            keys[name] = value
    print("# authmd-proxy end-to-end benchmark\n")
    measured = ("idle_rss_kb", "keys_")
    print("```\n" + "\n".join(l for l in env.splitlines() if not l.startswith(measured)) + "\n```\n")
    print("Medians over repetitions. In each cell: the value, then its ratio to the direct "
          "upstream (d) and to nginx (n) at the same connection count. CPU is the server's "
          "own (for direct: the upstream's). Spread: (max − min) / median of req/s.\n")
    conns_all = sorted({c for (_, _, c) in rows})
    med = {}
    for key, runs in rows.items():
        med[key] = {field: median(runs, field) * scale for _, field, scale, _ in METRICS}
        rps = [float(r["rps"]) for r in runs]
        med[key]["spread"] = (max(rps) - min(rps)) / statistics.median(rps) if statistics.median(rps) else 0
        med[key]["n"] = len(runs)
        med[key]["errors"] = sum(int(r["socket_errors"] or 0) for r in runs)
    for scenario, title in SCENARIOS.items():
        targets = [t for t in ORDER if any((scenario, t, c) in med for c in conns_all)]
        if not targets:
            continue
        print(f"## {scenario}: {title}\n")
        print("| server | conns | " + " | ".join(m[0] for m in METRICS) + " | spread | n |")
        print("|---|---:|" + "---:|" * (len(METRICS) + 2))
        base_scenario = "large" if scenario == "large" else "public"
        rows_out = []
        for t in ["direct"] + [t for t in targets if t != "direct"]:
            for c in conns_all:
                m = med.get((base_scenario if t == "direct" else scenario, t, c))
                if m is None:
                    continue
                d = med.get((base_scenario, "direct", c), {})
                n = med.get((scenario, "nginx", c), {})
                cells = []
                for _, field, _, fmt in METRICS:
                    cell = fmt.format(m[field])
                    if t != "direct" and d:
                        cell += f" (d {ratio(m[field], d[field])}"
                        cell += f", n {ratio(m[field], n[field])})" if n and t != "nginx" else ")"
                    cells.append(cell)
                errors = f" ({m['errors']} socket errors)" if m["errors"] else ""
                rows_out.append(f"| {t} | {c} | " + " | ".join(cells) + f" | {m['spread']:.0%}{errors} | {m['n']} |")
        print("\n".join(rows_out) + "\n")
    if idle:
        print("Idle RSS before the load: " + ", ".join(f"{t} {mb:.1f} MiB" for t, mb in sorted(idle.items())) + "\n")
    if keys:
        print(f"authmd-proxy with {int(keys['keys_loaded']):,} stored keys: RSS "
              f"{int(keys['keys_rss_kb']) / 1024:.0f} MiB once ready (peak {int(keys['keys_peak_kb']) / 1024:.0f} MiB "
              f"while loading), ready {keys['keys_ready_s']} s after start; the benchmark key then got "
              f"{keys['keys_request_status']}.\n")
    check_targets(med, idle, keys)


def check_targets(med, idle, keys):
    """The issue's targets, on this run's numbers."""
    checks = []

    def get(s, t, c, field):
        return med.get((s, t, c), {}).get(field)

    ours, ng, ha = (get("key", t, 16, "rps") for t in ("authmd", "nginx", "haproxy"))
    if ours and ng:
        checks.append((f"key route, 16 conns: req/s ≥ 1.3× nginx's ({ours / ng:.2f}×)", ours >= 1.3 * ng))
    if ours and ha:
        checks.append((f"key route, 16 conns: req/s ≥ 1.2× HAProxy's ({ours / ha:.2f}×)", ours >= 1.2 * ha))
    p99 = get("key", "authmd", 16, "p99_us")
    for name in ("nginx", "haproxy"):
        theirs = get("key", name, 16, "p99_us")
        if p99 and theirs:
            checks.append((f"key route, 16 conns: p99 ≤ {name}'s ({p99:.0f} vs {theirs:.0f} µs)", p99 <= theirs))
    direct = get("public", "direct", 1, "p50_us")
    for s in ("public", "key", "jwt", "reject"):
        p50 = get(s, "authmd", 1, "p50_us")
        if p50 is not None and direct is not None and s != "reject":
            added = p50 - direct
            checks.append((f"{s} route, 1 conn: added p50 < 25 µs ({added:.0f} µs)", added < 25))
    for c in sorted({c for (_, _, c) in med}):
        ours, theirs = get("reject", "authmd", c, "rps"), get("reject", "nginx", c, "rps")
        if ours and theirs:
            checks.append((f"401, {c} conns: req/s ≥ nginx's ({ours / theirs:.2f}×)", ours >= theirs))
    if "authmd" in idle:
        checks.append((f"idle RSS < 20 MB ({idle['authmd'] * 1.048576:.1f} MB)", idle["authmd"] * 1.048576 < 20))
    if keys.get("keys_loaded") == "1000000":
        mb = int(keys["keys_rss_kb"]) * 1024 / 1e6
        checks.append((f"RSS with 1,000,000 keys loaded < 400 MB ({mb:.0f} MB)", mb < 400))
    if checks:
        print("## Targets\n")
        for text, ok in checks:
            print(f"- [{'x' if ok else ' '}] {text}")


if __name__ == "__main__":
    main()
