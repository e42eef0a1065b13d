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
* balance: policy.mode = "balance", wan1 weight 3, wan2 weight 1: the split of 1,000 new flows per
  trial, then wan2 blackholed: how many of wan1's flows that disturbed (conntrack entries gone or
  re-marked) and how many of wan2's are left.
* rules: a policy rule sends the LAN's echo flow (50 packets/s each way, a call) to wan2 first,
  wan1 second, while the default policy has wan1 active; wan2 blackholed: the call's longest
  outage before it continues through wan1 (10 trials).
* ptp: a point-to-point uplink (priority 0) that comes and goes: a tun device in the router carried
  by a relay to provider 2 (this kernel has no PPP: the lab's stand-in for a PPPoE session; see
  linkwatch/lab/tunlink.py). The session drops (the relay is killed, ptp0 vanishes) under a
  100 packets/s flow: the client's outage (10 trials); each reconnect comes with a new address and
  must take traffic back without a restart.

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

from linkwatch.core.flows import FLOW_MASK, flow_mark  # noqa: E402
from linkwatch.lab import client, tunlink  # noqa: E402
from linkwatch.lab.manyflows import echo_flow_marks, echo_flows, flows_by_uplink, run_in_lab  # noqa: E402
from linkwatch.lab.plan import LabSpec  # noqa: E402

WAN1_NAT, WAN2_NAT = "198.51.100.2", "198.51.100.10"

NO_DAMPENING = {"policy": {"dampening": False}}


def flush_trials(spec: LabSpec, trials: int, flows: int, sticky: bool) -> dict:
    rows = []
    for i in range(trials):
        settle(spec)
        time.sleep(1.0)
        started = run_in_lab(spec.name, flows)
        marks = echo_flow_marks(spec.name)
        mark = max(set(m & FLOW_MASK for m in marks), key=lambda m: sum(x & FLOW_MASK == m for x in marks))
        of_wan1 = sum(m & FLOW_MASK == mark for m in marks) if sticky else len(marks)
        before = len(status(spec)["conntrack_flushes"])
        fault(spec, "wan1", "blackhole")
        wait_for(lambda: status(spec)["active"] == ["wan2"], 10.0, "failover to wan2")
        wait_for(lambda: any(f["uplink"] == "wan1" for f in status(spec)["conntrack_flushes"][before:]), 60.0,
                 "the flush of wan1's flows")
        f = next(f for f in status(spec)["conntrack_flushes"][before:] if f["uplink"] == "wan1")
        left = echo_flow_marks(spec.name)
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



def by_uplink(spec: LabSpec, ports: range) -> dict[str, int]:
    """Uplink -> the client's flows (from these source ports) it carries, by their flow marks."""
    return dict(flows_by_uplink(spec.name, status(spec)["uplinks"], ports))


def balance_trials(spec: LabSpec, trials: int, flows: int) -> dict:
    for up in ("wan1", "wan2"):
        fault(spec, up, "clear")
    wait_for(lambda: status(spec)["active"] == ["wan1", "wan2"], 120.0, "both active")
    rows, first = [], 20000
    for i in range(trials):
        ports = range(first + i * flows, first + (i + 1) * flows)
        run_in_lab(spec.name, flows, first_port=ports.start)
        split = by_uplink(spec, ports)
        rows.append({"flows": flows, "split": split, "wan1_pct": 100.0 * split.get("wan1", 0) / flows})
        log(f"balance 3:1 trial {i + 1}/{trials}: {split} ({rows[-1]['wan1_pct']:.1f} % on wan1)")
    every = range(first, first + trials * flows)
    before = {p: m for p, m in echo_flows(spec.name) if p in every}
    wan2_mark = flow_mark(next(u["table"] for u in status(spec)["uplinks"] if u["name"] == "wan2"))
    fault(spec, "wan2", "blackhole")
    wait_for(lambda: status(spec)["active"] == ["wan1"], 10.0, "wan2 out of the set")
    wait_for(lambda: not any(m & FLOW_MASK == wan2_mark for p, m in echo_flows(spec.name) if p in every), 30.0,
             "wan2's flows reset")
    after = {p: m for p, m in echo_flows(spec.name) if p in every}
    of_wan1 = {p: m for p, m in before.items() if m & FLOW_MASK != wan2_mark}
    disturbed = sum(1 for p, m in of_wan1.items() if after.get(p) != m)
    log(f"wan2 left the set: {disturbed} of wan1's {len(of_wan1)} flows disturbed, "
        f"{sum(1 for m in after.values() if m & FLOW_MASK == wan2_mark)} of wan2's left")
    fault(spec, "wan2", "clear")
    pcts = [r["wan1_pct"] for r in rows]
    return {"trials": rows, "wan1_pct": summary(pcts), "wan1_flows": len(of_wan1), "wan1_disturbed": disturbed}


RULES = """
[[rules]]
name = "call"
dst = "203.0.113.7"
proto = "udp"
dport = 7007
uplinks = ["wan2", "wan1"]
"""


def rule_trials(spec: LabSpec, trials: int) -> dict:
    outages = []
    for i in range(trials):
        for up in ("wan1", "wan2"):
            fault(spec, up, "clear")
        wait_for(lambda: (st := status(spec))["active"] == ["wan1"] and st["rules"][0]["now"] == ["wan2"]
                 and all(u["state"] == "UP" for u in st["uplinks"]), 60.0, "wan1 active, the rule on wan2")
        time.sleep(0.3 + (i * 0.071) % 0.4)
        flow = client.start_flow(spec.name, duration=7.0, interval=0.02)
        time.sleep(3.0)  # a call that has been going on (as bench_traffic's blackhole under LAN traffic)
        fault(spec, "wan2", "blackhole")
        report = flow.result(timeout=30)
        via = [c.after for c in report.changes]
        first = report.replies[0].address if report.replies else None
        if first != WAN2_NAT or via[:1] != [WAN1_NAT] or report.trailing_outage_s > 0:
            raise RuntimeError(f"rule trial {i}: the call did not start on wan2 and move to wan1: {report.summary()}")
        outages.append(report.longest_outage_s)
        log(f"rule trial {i + 1}/{trials}: the call moved wan2 -> wan1 after an outage of "
            f"{report.longest_outage_s * 1000:.0f} ms (the default policy kept wan1 active: {status(spec)['active']})")
    fault(spec, "wan2", "clear")
    return {"outage_s": summary(outages)}


def ptp_trials(spec: LabSpec, trials: int) -> dict:
    outages, followed = [], 0
    for i in range(trials):
        local, peer = f"10.64.{i}.2", f"10.64.{i}.1"  # a new address at every connect
        session = tunlink.start(spec.name, 2, local, peer)
        try:
            wait_for(lambda: status(spec)["active"] == ["ptp"], 60.0, "the session takes traffic")
            followed += next(u["address"] for u in status(spec)["uplinks"] if u["name"] == "ptp") == local
            flow = client.start_flow(spec.name, duration=4.0, interval=0.01)
            time.sleep(1.5 + (i * 0.071) % 0.4)
            session.stop()
            report = flow.result(timeout=30)
        finally:
            session.stop()
        if report.trailing_outage_s > 0 or [c.after for c in report.changes][:1] != [WAN1_NAT]:
            raise RuntimeError(f"ptp trial {i}: the client did not move to wan1: {report.summary()}")
        outages.append(report.longest_outage_s)
        log(f"ptp trial {i + 1}/{trials}: session on {local} dropped, client outage "
            f"{report.longest_outage_s * 1000:.0f} ms")
    return {"outage_s": summary(outages), "reconnects_followed": followed, "trials": trials}


def table(r: dict) -> str:
    rows = ["| what | measured | target |", "|---|---|---|"]
    if "flush" in r:
        m, a = r["flush"]["by_mark"], r["flush"]["by_address"]
        rows.append(f"| {m['entries']['median']:,.0f} NATed flows on a dead uplink: last entry gone after the route "
                    f"switch, by flow mark "
                    f"({len(m['trials'])} trials) | median {m['after_switch_ms']['median']:.0f} ms, range "
                    f"{m['after_switch_ms']['min']:.0f}–{m['after_switch_ms']['max']:.0f} ms (the flush itself "
                    f"median {m['flush_ms']['median']:.0f} ms); {m['left']} entries left | ≤ 100 ms |")
        rows.append(f"| the same, sticky flows off (entry by entry, by NAT address; {len(a['trials'])} trials) | "
                    f"median {a['after_switch_ms']['median']:.0f} ms, range {a['after_switch_ms']['min']:.0f}–"
                    f"{a['after_switch_ms']['max']:.0f} ms | (the old way) |")
    if "balance" in r:
        b = r["balance"]
        rows.append(f"| balance 3:1, 1,000 new flows × {len(b['trials'])} trials: share on wan1 | median "
                    f"{b['wan1_pct']['median']:.1f} %, range {b['wan1_pct']['min']:.1f}–{b['wan1_pct']['max']:.1f} % "
                    f"| 75 ± 5 % |")
        rows.append(f"| wan2 leaves the set: wan1's flows disturbed | {b['wan1_disturbed']} of {b['wan1_flows']} | 0 |")
    if "rules" in r:
        o = r["rules"]["outage_s"]
        rows.append(f"| a rule's uplink (wan2, not the active one) blackholed under a 50 packets/s call: the call's "
                    f"outage until it continues on the rule's next uplink ({o['n']} trials) | median "
                    f"{o['median'] * 1000:.0f} ms, range {o['min'] * 1000:.0f}–{o['max'] * 1000:.0f} ms "
                    f"| the blackhole numbers (≤ 0.35 s median) |")
    if "ptp" in r:
        o, p = r["ptp"]["outage_s"], r["ptp"]
        rows.append(f"| a point-to-point uplink's session drops (its interface vanishes) under a 100 packets/s flow: "
                    f"client outage ({o['n']} trials) | median {o['median'] * 1000:.0f} ms, range "
                    f"{o['min'] * 1000:.0f}–{o['max'] * 1000:.0f} ms | ≤ 0.2 s |")
        rows.append(f"| each reconnect with a new address taken back without a restart | {p['reconnects_followed']} "
                    f"of {p['trials']} | all |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="flush,balance,rules,ptp")
    ap.add_argument("--balance-trials", type=int, default=5)
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
    if "balance" in parts:
        overrides = {"policy": {"mode": "balance", "dampening": False},
                     "uplinks": {"wan1": {"weight": 3, "priority": 1}, "wan2": {"weight": 1, "priority": 1}}}
        with Lab("bbal", overrides=overrides) as spec:
            r["balance"] = balance_trials(spec, args.balance_trials, 1000)
    if "rules" in parts:
        with Lab("brule", overrides=NO_DAMPENING, extra_toml=RULES) as spec:
            r["rules"] = rule_trials(spec, args.trials)
    if "ptp" in parts:
        with Lab("bptp", overrides={"policy": {"dampening": False, "failback_hold": "2s"}},
                 extra_toml=tunlink.UPLINK_TOML) as spec:
            r["ptp"] = ptp_trials(spec, args.trials)
    print(table(r))
    out = REPO / "bench" / "results" / f"flows-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    print(f"\nraw figures: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
