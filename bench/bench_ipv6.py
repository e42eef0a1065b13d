#!/usr/bin/env python3
"""linkwatch benchmark for issue 12: dual-stack uplinks, measured in the dual-stack lab (`lab up
--ipv6`: NAT66 at the router, link-local gateways from the providers' router advertisements) with
the engine's defaults.

Run by hand, as root, from the repository (after scripts/bootstrap.sh):

    .venv/bin/python bench/bench_ipv6.py                           # everything (about 30 minutes)
    .venv/bin/python bench/bench_ipv6.py --only blackhole6,only6 --trials 10
    .venv/bin/python bench/bench_ipv6.py --only loss --loss-minutes 10

* blackhole6 / carrier6: wan1 blackholed (both families) or its carrier cut while the LAN client
  sends an IPv6 UDP flow (a datagram every 5 ms, one NAT66 flow): the client's longest outage.
* nora: wan1's provider stops advertising (radvd's last RA withdraws the router's IPv6 default
  route via up1) while the client sends IPv6: the client's longest outage.
* only6: IPv6 broken on wan1 (blackhole ipv6) while its IPv4 works, the client sending both
  families (50 packets/s each): IPv6's outage, and whether IPv4 moved at all.
* prefix: wan1's delegated prefix changes (its IPv6 address is replaced by one of a new /64 the
  provider routes): from the change to the first reply of the client's IPv6 flow with the new
  address.
* loss: 10 % loss each way on both uplinks (both families) for --loss-minutes: IPv4 and IPv6
  active-set changes.
* cpu: 4 dual-stack uplinks x 3 targets per family: engine CPU and RSS.

It prints a Markdown table and writes the raw figures to bench/results/ipv6-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import proc_cpu_rss, summary  # noqa: E402
from labbench import fault, log, report, status, wait_for  # noqa: E402

from linkwatch.lab import client, topology  # noqa: E402
from linkwatch.lab.plan import ECHO6_SERVER, ECHO_PORT, LabSpec  # noqa: E402
from linkwatch.lab.processes import netns_exec, run_command  # noqa: E402
from linkwatch.lab.topology import EngineOptions  # noqa: E402

TARGET6 = f"[{ECHO6_SERVER}]:{ECHO_PORT}"
WAN2_6 = "2001:db8:2::2"


class Lab6:
    def __init__(self, name: str, uplinks: int = 2, probe_targets: int = 2, overrides=None):
        self.spec = LabSpec(name, uplinks)
        self.options = EngineOptions(probe_targets=probe_targets, overrides=overrides, ipv6=True)

    def __enter__(self) -> LabSpec:
        topology.down(self.spec.name)
        topology.up(self.spec, engine=True, options=self.options)
        return self.spec

    def __exit__(self, *exc) -> None:
        topology.down(self.spec.name)


def settled6(spec: LabSpec) -> bool:
    st = status(spec)
    return (st["active"] == ["wan1"] and st["active_ipv6"] == ["wan1"]
            and all(u["state"] == "UP" and u["ipv6"] and u["ipv6"]["state"] == "UP" for u in st["uplinks"])
            and not any(u["dampened"] or u["ipv6"]["dampened"] for u in st["uplinks"]))


def clear_all(spec: LabSpec) -> None:
    for u in spec.uplink_list:
        fault(spec, u.name, "clear")


def ready(spec: LabSpec, i: int) -> None:
    clear_all(spec)
    wait_for(lambda: settled6(spec), 120.0, "wan1 active in both families, all UP")
    time.sleep(3.5 + (i * 0.071) % 0.4)  # past the late window; spread over the probe round phase


def outage6(spec: LabSpec, words: list[str], trials: int) -> dict:
    outages = []
    for i in range(trials):
        ready(spec, i)
        flow = client.start_flow(spec.name, duration=5.0, interval=0.005, target=TARGET6)
        time.sleep(1.5)
        fault(spec, "wan1", *words)
        report = flow.result(timeout=30)
        moves = [c for c in report.changes if c.after == WAN2_6]
        if not moves or report.trailing_outage_s > 0:
            raise RuntimeError(f"trial {i}: the IPv6 flow did not move to wan2: {report.summary()}")
        outages.append(report.longest_outage_s)
        log(f"{' '.join(words)} trial {i + 1}/{trials}: IPv6 client outage {report.longest_outage_s * 1000:.0f} ms")
    clear_all(spec)
    return summary(outages)


def only6(spec: LabSpec, trials: int) -> dict:
    outages, v4_moves, v4_worst = [], 0, 0.0
    for i in range(trials):
        ready(spec, i)
        before = status(spec)["active_changes"]
        flow6 = client.start_flow(spec.name, duration=6.0, interval=0.02, target=TARGET6)
        flow4 = client.start_flow(spec.name, duration=6.0, interval=0.02)
        time.sleep(2.0)
        fault(spec, "wan1", "blackhole", "ipv6")
        r6, r4 = flow6.result(timeout=30), flow4.result(timeout=30)
        moves = [c for c in r6.changes if c.after == WAN2_6]
        if not moves or r6.trailing_outage_s > 0:
            raise RuntimeError(f"trial {i}: the IPv6 flow did not move to wan2: {r6.summary()}")
        outages.append(moves[0].gap_s)
        changes = status(spec)["active_changes"] - before
        v4_moves += len(r4.changes) + changes
        v4_worst = max(v4_worst, r4.longest_outage_s)
        log(f"ipv6-only blackhole trial {i + 1}/{trials}: IPv6 outage {moves[0].gap_s * 1000:.0f} ms; IPv4: "
            f"{len(r4.changes)} address changes, {changes} active changes, longest gap {r4.longest_outage_s * 1000:.0f} ms")
    clear_all(spec)
    return {**summary(outages), "ipv4_moves": v4_moves, "ipv4_longest_gap_s": v4_worst}


def _renumber(spec: LabSpec, old: str, new: str) -> None:
    r = spec.router_ns
    run_command(netns_exec(r, ["ip", "-6", "addr", "add", f"{new}/64", "dev", "up1", "nodad"]))
    run_command(netns_exec(r, ["ip", "-6", "addr", "del", f"{old}/64", "dev", "up1"]))


def prefix_changes(spec: LabSpec, trials: int) -> dict:
    """Alternate wan1 between 2001:db8:1::2 and 2001:db8:1a::2 (the provider routes both /64s)."""
    p, i = spec.provider_ns(1), spec.inet_ns
    run_command(netns_exec(p, ["ip", "-6", "addr", "add", "2001:db8:1a::1/64", "dev", "dn", "nodad"]))
    run_command(netns_exec(i, ["ip", "-6", "route", "add", "2001:db8:1a::/64", "via", "2001:db8:f0:1::1", "dev", "p1"]))
    run_command(netns_exec(p, ["nft", "-f", "-"]), input_text=(
        "flush chain ip6 lwprovider forward\n"
        'add rule ip6 lwprovider forward iifname "dn" ip6 saddr != { 2001:db8:1::/64, 2001:db8:1a::/64 } drop\n'))
    times, follow = [], []
    current = "2001:db8:1::2"
    for k in range(trials):
        ready(spec, k)
        new = "2001:db8:1a::2" if current == "2001:db8:1::2" else "2001:db8:1::2"
        flow = client.start_flow(spec.name, duration=6.0, interval=0.01, target=TARGET6)
        time.sleep(1.5)
        t = time.monotonic()
        _renumber(spec, current, new)
        # the engine follows: its probes and the uplink's IPv6 rule use the new address
        follow.append(wait_for(lambda: f"from {new} lookup 101" in run_command(
            netns_exec(spec.router_ns, ["ip", "-6", "rule", "show"])), 10.0, "the rule of the new address"))
        report = flow.result(timeout=30)
        moved = [c for c in report.changes if c.after == new]
        if not moved:
            raise RuntimeError(f"trial {k}: no reply with {new}: {report.summary()}")
        times.append(moved[0].at - (t - report.origin))
        current = new
        log(f"prefix change trial {k + 1}/{trials}: LAN traffic with {new} after {times[-1] * 1000:.0f} ms, "
            f"the engine's rule after {follow[-1] * 1000:.0f} ms")
    if current != "2001:db8:1::2":
        _renumber(spec, current, "2001:db8:1::2")
    return {**summary(times), "engine_follow_s": summary(follow)}


def false_failovers(spec: LabSpec, minutes: float, pct: int = 10) -> dict:
    clear_all(spec)
    wait_for(lambda: settled6(spec), 120.0, "settled")
    before = status(spec)
    for u in spec.uplink_list:
        fault(spec, u.name, "loss", str(pct))
    time.sleep(minutes * 60)
    after = status(spec)
    clear_all(spec)
    downs = {u["name"]: (u["downs"] - b["downs"], u["ipv6"]["downs"] - b["ipv6"]["downs"])
             for u, b in zip(after["uplinks"], before["uplinks"])}
    res = {"minutes": minutes, "loss_pct_each_way": pct, "active_changes": after["active_changes"] - before["active_changes"],
           "active_ipv6": after["active_ipv6"], "downs_v4_v6": downs}
    log(f"{pct}% loss for {minutes:g} min: {res}")
    return res


def cpu(seconds: float) -> dict:
    with Lab6("b6cpu", uplinks=4, probe_targets=3) as spec:
        wait_for(lambda: settled6(spec), 120.0, "settled")
        time.sleep(12.0)
        pid = status(spec)["pid"]
        c0, t0 = proc_cpu_rss(pid)[0], time.monotonic()
        rss_max = 0
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            rss_max = max(rss_max, proc_cpu_rss(pid)[1])
        elapsed = time.monotonic() - t0
        pct = 100.0 * (proc_cpu_rss(pid)[0] - c0) / elapsed
        log(f"4 dual-stack uplinks x 3 targets per family: CPU {pct:.2f}% of a core, RSS max {rss_max / 1e6:.1f} MB")
        return {"cpu_pct_of_one_core": pct, "rss_max_bytes": rss_max, "seconds": round(elapsed, 1)}


def table(r: dict) -> str:
    rows = ["| what | measured | target |", "|---|---|---|"]

    def ms(o: dict) -> str:
        return f"median {o['median'] * 1000:.0f} ms, range {o['min'] * 1000:.0f}–{o['max'] * 1000:.0f} ms ({o['n']} trials)"

    if "blackhole6" in r:
        rows.append(f"| IPv6 client outage, wan1 blackholed (both families) | {ms(r['blackhole6'])} | ≤ 1.0 s median, ≤ 1.5 s worst |")
    if "carrier6" in r:
        rows.append(f"| IPv6 client outage, wan1 carrier lost | {ms(r['carrier6'])} | ≤ 0.2 s |")
    if "nora" in r:
        rows.append(f"| IPv6 client outage, wan1's provider stops advertising (RA lifetime 0) | {ms(r['nora'])} | "
                    "the carrier numbers (a netlink event) |")
    if "only6" in r:
        o = r["only6"]
        rows.append(f"| IPv6 broken on wan1, IPv4 working: IPv6 outage | {ms(o)} | the blackhole numbers |")
        rows.append(f"| ... IPv4 traffic moves | {o['ipv4_moves']} (longest IPv4 gap {o['ipv4_longest_gap_s'] * 1000:.0f} ms) | 0 |")
    if "prefix" in r:
        rows.append(f"| new delegated prefix: LAN traffic with the new address after | {ms(r['prefix'])} | ≤ 3 s |")
        rows.append(f"| ... the engine's rule for the new address in the kernel after | "
                    f"{ms(r['prefix']['engine_follow_s'])} | ≤ 3 s |")
    if "loss" in r:
        o = r["loss"]
        rows.append(f"| {o['loss_pct_each_way']} % loss each way, both families, {o['minutes']:g} min | "
                    f"{o['active_changes']} IPv4 moves; IPv6 active {o['active_ipv6']}; downs (v4, v6) {o['downs_v4_v6']} | 0 |")
    if "cpu" in r:
        o = r["cpu"]
        rows.append(f"| engine, 4 dual-stack uplinks x 3 targets per family ({o['seconds']:g} s) | CPU "
                    f"{o['cpu_pct_of_one_core']:.2f} % of a core, RSS {o['rss_max_bytes'] / 1e6:.1f} MB | ≤ 2 %, ≤ 60 MB |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="blackhole6,carrier6,nora,only6,prefix,loss,cpu")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--loss-minutes", type=float, default=10.0)
    ap.add_argument("--cpu-seconds", type=float, default=120.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    r: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": os.uname().release}
    nodamp = {"policy": {"dampening": False}}  # trials fail wan1 over and over on purpose
    if only & {"blackhole6", "carrier6", "nora", "only6", "prefix"}:
        with Lab6("b6", overrides=nodamp) as spec:
            if "blackhole6" in only:
                r["blackhole6"] = outage6(spec, ["blackhole"], args.trials)
            if "carrier6" in only:
                r["carrier6"] = outage6(spec, ["carrier-down"], args.trials)
            if "nora" in only:
                r["nora"] = outage6(spec, ["no-ra"], args.trials)
            if "only6" in only:
                r["only6"] = only6(spec, args.trials)
            if "prefix" in only:
                r["prefix"] = prefix_changes(spec, args.trials)
    if "loss" in only:
        with Lab6("b6loss") as spec:
            r["loss"] = false_failovers(spec, args.loss_minutes)
    if "cpu" in only:
        r["cpu"] = cpu(args.cpu_seconds)
    report(r, table(r), "ipv6-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
