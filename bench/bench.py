#!/usr/bin/env python3
"""linkwatch benchmark: the numbers of DESIGN.md, measured in the lab with the default health settings.

Run by hand, as root, from the repository (after scripts/bootstrap.sh):

    .venv/bin/python bench/bench.py                 # everything (about 20 minutes)
    .venv/bin/python bench/bench.py --only blackhole,carrier --trials 10
    .venv/bin/python bench/bench.py --loss-minutes 2  # a shorter false-failover run

Every measurement uses the engine's defaults (the lab config sets only interface, gateway = auto,
priority and the probes). Outages are measured from the LAN client's own packets (a UDP flow
every 5 ms to the echo server, one long-lived snat flow). Probe traffic is counted by nftables
counters in the provider namespaces (IP bytes both ways), not by the engine's own estimate.
It prints a Markdown table and writes the raw figures to bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from linkwatch.lab import client, topology  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from labbench import fault, log, report, settled, status, wait_for  # noqa: E402
from linkwatch.lab.plan import LabSpec  # noqa: E402
from linkwatch.lab.processes import run_command  # noqa: E402
from linkwatch.lab.topology import EngineOptions  # noqa: E402

FLOW_INTERVAL = 0.005
TICKS = os.sysconf("SC_CLK_TCK")


def clear_all(spec: LabSpec) -> None:
    for u in spec.uplink_list:
        fault(spec, u.name, "clear")


def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "values": [round(v, 4) for v in values]}


class Lab:
    def __init__(self, name: str, uplinks: int = 2, probe_targets: int = 2, overrides=None, extra_toml: str = ""):
        self.spec = LabSpec(name, uplinks)
        self.options = EngineOptions(probe_targets=probe_targets, overrides=overrides, extra_toml=extra_toml)

    def __enter__(self) -> LabSpec:
        topology.down(self.spec.name)
        topology.up(self.spec, engine=True, options=self.options)
        return self.spec

    def __exit__(self, *exc) -> None:
        topology.down(self.spec.name)


def outage_trials(spec: LabSpec, kind: str, trials: int) -> dict:
    """Fault wan1 (`blackhole` or `carrier-down`) while the client sends; the client's longest gap."""
    outages, detect = [], []
    for i in range(trials):
        clear_all(spec)
        wait_for(lambda: settled(spec), 40.0, "wan1 active, all UP")
        time.sleep(0.3 + (i * 0.071) % 0.4)  # spread the fault over the probe round phase
        flow = client.start_flow(spec.name, duration=4.0, interval=FLOW_INTERVAL)
        time.sleep(1.2)
        fault(spec, "wan1", kind)
        detect.append(wait_for(lambda: status(spec)["active"] == ["wan2"], 10.0, "failover"))
        report = flow.result(timeout=30)
        moved = [c.after for c in report.changes]
        if report.trailing_outage_s > 0 or moved[:1] != ["198.51.100.10"]:
            raise RuntimeError(f"trial {i}: the client did not move to wan2: {report.summary()}")
        outages.append(report.longest_outage_s)
        log(f"{kind} trial {i + 1}/{trials}: client outage {report.longest_outage_s * 1000:.0f} ms "
            f"(status showed wan2 active {detect[-1] * 1000:.0f} ms after the fault was in place)")
    clear_all(spec)
    return {"outage_s": summary(outages), "switch_seen_s": summary(detect)}


def loss_failover_trials(spec: LabSpec, pct: int, trials: int) -> dict:
    times = []
    for i in range(trials):
        clear_all(spec)
        wait_for(lambda: settled(spec), 60.0, "wan1 active, all UP")
        time.sleep(1.0)
        fault(spec, "wan1", "loss", str(pct))
        took = wait_for(lambda: status(spec)["active"] == ["wan2"], 30.0, f"failover under {pct}% loss", step=0.05)
        st = next(u for u in status(spec)["uplinks"] if u["name"] == "wan1")
        times.append(took)
        log(f"loss {pct}% trial {i + 1}/{trials}: failover after {took:.2f} s (wan1 {st['state']}: {st['reason']})")
    clear_all(spec)
    return {"failover_s": summary(times)}


def false_failovers(spec: LabSpec, pct: int, minutes: float) -> dict:
    clear_all(spec)
    wait_for(lambda: settled(spec), 40.0, "wan1 active, all UP")
    before = status(spec)
    for u in spec.uplink_list:
        fault(spec, u.name, "loss", str(pct))
    t_end = time.monotonic() + minutes * 60
    worst_loss = 0.0
    while time.monotonic() < t_end:
        time.sleep(5.0)
        st = status(spec)
        worst_loss = max([worst_loss] + [u["loss_pct"] or 0.0 for u in st["uplinks"]])
    after = status(spec)
    clear_all(spec)
    changes = after["active_changes"] - before["active_changes"]
    downs = {u["name"]: u["downs"] - b["downs"] for u, b in zip(after["uplinks"], before["uplinks"])}
    states = {u["name"]: u["state"] for u in after["uplinks"]}
    log(f"{pct}% loss each way on every uplink for {minutes:g} min: {changes} active changes, downs {downs}")
    return {"minutes": minutes, "loss_pct_each_way": pct, "false_failovers": changes, "downs": downs,
            "final_states": states, "worst_window_loss_pct": worst_loss}


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


COUNTERS = """
table inet lwbench {{
  chain count {{
    type filter hook forward priority -10; policy accept;
    ip saddr {addr} counter
    ip daddr {addr} counter
  }}
}}
"""


def nft_bytes(ns: str) -> int:
    out = run_command(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "lwbench"])
    total = 0
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    total += expr["counter"]["bytes"]
    return total


def cpu_memory_traffic(name: str, seconds: float) -> dict:
    """4 uplinks x 3 targets: engine CPU and RSS; probe bytes/day per uplink from nft counters."""
    with Lab(name, uplinks=4, probe_targets=3) as spec:
        wait_for(lambda: settled(spec), 40.0, "wan1 active, all UP")
        time.sleep(3.0)  # standby uplinks settle on their slower interval
        pid = status(spec)["pid"]
        for u in spec.uplink_list:
            run_command(["ip", "netns", "exec", spec.provider_ns(u.index), "nft", "-f", "-"],
                        input_text=COUNTERS.format(addr=u.address))
        cpu0, _ = proc_cpu_rss(pid)
        b0 = {u.name: nft_bytes(spec.provider_ns(u.index)) for u in spec.uplink_list}
        t0 = time.monotonic()
        rss_max = 0
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            rss_max = max(rss_max, proc_cpu_rss(pid)[1])
        elapsed = time.monotonic() - t0
        cpu1, rss = proc_cpu_rss(pid)
        b1 = {u.name: nft_bytes(spec.provider_ns(u.index)) for u in spec.uplink_list}
        st = status(spec)
        per_day = {n: (b1[n] - b0[n]) / elapsed * 86400 for n in b1}
        engine_estimate = {u["name"]: u["probe_bytes_per_day"] for u in st["uplinks"]}
        active = st["active"]
        res = {
            "uplinks": 4, "targets_per_uplink": 3, "seconds": round(elapsed, 1),
            "cpu_pct_of_one_core": 100.0 * (cpu1 - cpu0) / elapsed, "rss_bytes": rss, "rss_max_bytes": rss_max,
            "probe_bytes_per_day": per_day, "engine_estimate_bytes_per_day": engine_estimate, "active": active,
        }
        log(f"4x3: CPU {res['cpu_pct_of_one_core']:.2f}% of a core, RSS {rss / 1e6:.1f} MB; bytes/day "
            + ", ".join(f"{n} {v / 1e6:.1f} MB" for n, v in per_day.items()))
        return res


def two_probe_traffic(spec: LabSpec, seconds: float) -> dict:
    """The 2-uplink lab (1 ICMP + 1 DNS target per uplink): bytes/day active and standby."""
    clear_all(spec)
    wait_for(lambda: settled(spec), 40.0, "wan1 active, all UP")
    time.sleep(3.0)
    for u in spec.uplink_list:
        run_command(["ip", "netns", "exec", spec.provider_ns(u.index), "nft", "-f", "-"],
                    input_text=COUNTERS.format(addr=u.address))
    b0 = {u.name: nft_bytes(spec.provider_ns(u.index)) for u in spec.uplink_list}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    b1 = {u.name: nft_bytes(spec.provider_ns(u.index)) for u in spec.uplink_list}
    for u in spec.uplink_list:
        run_command(["ip", "netns", "exec", spec.provider_ns(u.index), "nft", "delete", "table", "inet",
                     "lwbench"])
    per_day = {n: (b1[n] - b0[n]) / elapsed * 86400 for n in b1}
    log("2 probes: bytes/day " + ", ".join(f"{n} {v / 1e6:.1f} MB" for n, v in per_day.items()))
    return {"targets_per_uplink": 2, "seconds": round(elapsed, 1), "probe_bytes_per_day": per_day}


def mb(v: float) -> str:
    return f"{v / 1e6:.1f} MB"


def table(results: dict) -> str:
    rows = ["| what | measured | target |", "|---|---|---|"]

    def outage_row(key: str, label: str, target: str) -> None:
        r = results.get(key)
        if r:
            o = r["outage_s"]
            rows.append(f"| {label} ({o['n']} trials) | median {o['median'] * 1000:.0f} ms, "
                        f"range {o['min'] * 1000:.0f}–{o['max'] * 1000:.0f} ms | {target} |")

    outage_row("blackhole", "client outage, blackholed uplink", "≤ 1.0 s median, ≤ 1.5 s worst")
    outage_row("carrier", "client outage, carrier loss", "≤ 0.2 s")
    if "false_failovers" in results:
        r = results["false_failovers"]
        rows.append(f"| false failovers, {r['loss_pct_each_way']} % loss each way on both uplinks, "
                    f"{r['minutes']:g} min | {r['false_failovers']} (DOWN transitions: "
                    f"{sum(r['downs'].values())}) | 0 |")
    if "loss40" in results:
        f = results["loss40"]["failover_s"]
        rows.append(f"| failover under 40 % loss each way ({f['n']} trials) | median {f['median']:.1f} s, "
                    f"range {f['min']:.1f}–{f['max']:.1f} s | ≤ 10 s |")
    if "cpu" in results:
        c = results["cpu"]
        rows.append(f"| engine CPU, 4 uplinks × 3 targets ({c['seconds']:.0f} s) | "
                    f"{c['cpu_pct_of_one_core']:.2f} % of one core | ≤ 2 % |")
        rows.append(f"| engine RSS, 4 uplinks × 3 targets | {c['rss_max_bytes'] / 1e6:.1f} MB (max) | ≤ 60 MB |")
        per = c["probe_bytes_per_day"]
        act = c["active"][0] if c["active"] else None
        standby = [v for n, v in per.items() if n != act]
        if act:
            rows.append(f"| probe traffic, 3 targets, active uplink | {mb(per[act])}/day | ≤ 100 MB/day |")
        if standby:
            rows.append(f"| probe traffic, 3 targets, standby uplink | {mb(max(standby))}/day (max of "
                        f"{len(standby)}) | ≤ 25 MB/day |")
    if "traffic2" in results:
        per = results["traffic2"]["probe_bytes_per_day"]
        rows.append(f"| probe traffic, 2 targets (ICMP + DNS), active / standby | {mb(per['wan1'])}/day / "
                    f"{mb(per['wan2'])}/day | ≤ 100 / ≤ 25 MB/day |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="blackhole,carrier,loss40,traffic2,cpu,falseloss",
                    help="comma-separated: blackhole, carrier, loss40, traffic2, cpu, falseloss")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--loss-trials", type=int, default=10)
    ap.add_argument("--loss-minutes", type=float, default=10.0)
    ap.add_argument("--cpu-seconds", type=float, default=120.0)
    ap.add_argument("--traffic-seconds", type=float, default=60.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": os.uname().release}
    # dampening off: ten outages in a few minutes would (rightly) dampen wan1 and stop the failbacks
    # the next trial waits for; the failover itself is what is measured here
    with Lab("bench", overrides={"policy": {"dampening": False}}) as spec:
        if "blackhole" in only:
            results["blackhole"] = outage_trials(spec, "blackhole", args.trials)
        if "carrier" in only:
            results["carrier"] = outage_trials(spec, "carrier-down", args.trials)
        if "loss40" in only:
            results["loss40"] = loss_failover_trials(spec, 40, args.loss_trials)
        if "traffic2" in only:
            results["traffic2"] = two_probe_traffic(spec, args.traffic_seconds)
        if "falseloss" in only:
            results["false_failovers"] = false_failovers(spec, 10, args.loss_minutes)
    if "cpu" in only:
        results["cpu"] = cpu_memory_traffic("benchcpu", args.cpu_seconds)
    report(results, table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
