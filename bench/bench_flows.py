#!/usr/bin/env python3
"""linkwatch benchmark for issue 11: flows and policies. Measured in the lab (dampening off: the
trials fail wan1 again and again, which would rightly dampen it).

Run by hand, as root, from the repository (after scripts/bootstrap.sh):

    .venv/bin/python bench/bench_flows.py                    # everything
    .venv/bin/python bench/bench_flows.py --only flush --trials 3

* flush: 10,000 NATed flows through wan1 (one UDP datagram each from the LAN client), then wan1 is
  blackholed: how long after the route switch the last of their conntrack entries is gone (the
  engine's own report: the flush by flow mark is one kernel operation), checked with `conntrack -L`
  in the router namespace; then the same with sticky flows off (the old entry-by-entry flush by
  NAT address), for comparison.

(The failback with 20 long-lived flows is bench/bench_traffic.py --only failback.)
It prints a Markdown table and writes the raw figures to bench/results/flows-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Lab, summary  # noqa: E402
from bench_traffic import settle  # noqa: E402
from labbench import fault, log, status, wait_for  # noqa: E402

from linkwatch.core.flows import FLOW_MASK  # noqa: E402
from linkwatch.lab.manyflows import echo_flow_marks, run_in_lab  # noqa: E402
from linkwatch.lab.plan import LabSpec  # noqa: E402

NO_DAMPENING = {"policy": {"dampening": False}}


def echo_entries(spec: LabSpec) -> list[int]:
    return echo_flow_marks(spec.name)


def flush_trials(spec: LabSpec, trials: int, flows: int, sticky: bool) -> dict:
    rows = []
    for i in range(trials):
        settle(spec)
        time.sleep(1.0)
        started = run_in_lab(spec.name, flows)
        marks = echo_entries(spec)
        mark = max(set(m & FLOW_MASK for m in marks), key=lambda m: sum(x & FLOW_MASK == m for x in marks))
        of_wan1 = sum(m & FLOW_MASK == mark for m in marks) if sticky else len(marks)
        before = len(status(spec)["conntrack_flushes"])
        fault(spec, "wan1", "blackhole")
        wait_for(lambda: status(spec)["active"] == ["wan2"], 10.0, "failover to wan2")
        wait_for(lambda: any(f["uplink"] == "wan1" for f in status(spec)["conntrack_flushes"][before:]), 60.0,
                 "the flush of wan1's flows")
        f = next(f for f in status(spec)["conntrack_flushes"][before:] if f["uplink"] == "wan1")
        left = echo_entries(spec)
        remaining = sum(m & FLOW_MASK == mark for m in left) if sticky else len(left)
        row = {"flows_started": started, "entries_before": of_wan1, "deleted": f["deleted"], "flush_ms": f["ms"],
               "after_switch_ms": f["after_switch_ms"], "by_mark": f["mark"] is not None, "left": remaining}
        rows.append(row)
        log(f"flush ({'by mark' if sticky else 'by address'}) trial {i + 1}/{trials}: {of_wan1} entries of wan1, "
            f"deleted {f['deleted']} in {f['ms']:.1f} ms, {f['after_switch_ms']:.1f} ms after the route switch, "
            f"{remaining} left")
        fault(spec, "wan1", "clear")
    return {"trials": rows, "after_switch_ms": summary([r["after_switch_ms"] for r in rows]),
            "flush_ms": summary([r["flush_ms"] for r in rows]), "left": sum(r["left"] for r in rows),
            "entries": summary([r["entries_before"] for r in rows])}


def table(r: dict) -> str:
    rows = ["| what | measured | target |", "|---|---|---|"]
    if "flush" in r:
        m, a = r["flush"]["by_mark"], r["flush"]["by_address"]
        rows.append(f"| 10,000 NATed flows on a dead uplink: last entry gone after the route switch, by flow mark "
                    f"({len(m['trials'])} trials) | median {m['after_switch_ms']['median']:.0f} ms, range "
                    f"{m['after_switch_ms']['min']:.0f}–{m['after_switch_ms']['max']:.0f} ms (the flush itself "
                    f"median {m['flush_ms']['median']:.0f} ms); {m['left']} entries left | ≤ 100 ms |")
        rows.append(f"| the same, sticky flows off (entry by entry, by NAT address; {len(a['trials'])} trials) | "
                    f"median {a['after_switch_ms']['median']:.0f} ms, range {a['after_switch_ms']['min']:.0f}–"
                    f"{a['after_switch_ms']['max']:.0f} ms | (the old way) |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="flush")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--address-trials", type=int, default=3)
    ap.add_argument("--flows", type=int, default=10_000)
    args = ap.parse_args()
    parts = set(args.only.split(","))
    r: dict = {}
    if "flush" in parts:
        r["flush"] = {}
        with Lab("bflush", overrides=NO_DAMPENING) as spec:
            r["flush"]["by_mark"] = flush_trials(spec, args.trials, args.flows, sticky=True)
        with Lab("bflush", overrides={"policy": {"dampening": False, "sticky_flows": False}}) as spec:
            r["flush"]["by_address"] = flush_trials(spec, args.address_trials, args.flows, sticky=False)
    print(table(r))
    out = REPO / "bench" / "results" / f"flows-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    print(f"\nraw figures: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
