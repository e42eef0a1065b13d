#!/usr/bin/env python3
"""linkwatch benchmark for issue 10: busy, flapping and metered uplinks, and evidence from the
traffic itself. Measured in the lab with the engine's defaults (unless a row says otherwise).

Run by hand, as root, from the repository (after scripts/bootstrap.sh):

    .venv/bin/python bench/bench_traffic.py                     # everything (about 25 minutes)
    .venv/bin/python bench/bench_traffic.py --only busy --busy-seconds 20

* busy: wan1 shaped to 10 Mbit/s with a 400 ms, 1 s and 2 s queue (tbf, both ways), a 60 s TCP
  download and a 60 s TCP upload (reno) through it: traffic moves, flows reset (conntrack
  flushes), the rate reached.
* lanblackhole: a LAN flow of 50 packets/s each way (a video call) and a blackhole on wan1: the
  client's longest outage, 10 trials. idleblackhole: the same with an 8 packets/s measuring flow,
  below what proves an uplink or makes it suspect (an idle LAN: probes only).
* busyblackhole: the demo's sequence: a LAN flow of 50 packets/s, wan1 shaped to 10 Mbit/s with a
  1 s queue and an 8 s TCP download through it, the shaping cleared, and 1.5 s later a blackhole:
  the client's longest outage, 10 trials (the late replies of the busy spell must not make the
  engine wait out its late window).
* failback: sticky flows: 20 UDP calls and a TCP download on the backup across a failback (3
  trials): calls broken, downloads reset, the uplink of a flow started after the failback.
* flap: wan1 blackholed 1 s / clear 1 s for 60 s: traffic moves in the minute, at the defaults and
  with the old 1 s standby interval (a DOWN uplink is probed at the standby interval).
* budget: probe bytes a day counted by nftables in the provider namespace (only packets to or from
  the probe targets): a standby uplink, the active uplink while the LAN sends 50 packets/s both
  ways, the active uplink with an idle LAN.
* counters: engine CPU with 4 uplinks x 3 targets with the counters read (defaults) and without
  (suspect_after off, counters every 10 s): what reading them costs.

It prints a Markdown table and writes the raw figures to bench/results/traffic-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Lab, proc_cpu_rss, summary  # noqa: E402
from labbench import fault, log, report, status, wait_for  # noqa: E402

from linkwatch.lab import client  # noqa: E402
from linkwatch.lab.bulk import start_bulk  # noqa: E402
from linkwatch.lab.plan import DNS_SERVER, ECHO_PORT, ICMP_TARGETS, LabSpec  # noqa: E402
from linkwatch.lab.processes import run_command  # noqa: E402

QUEUES = ("400ms", "1s", "2s")
RATE = "10mbit"
RATE_BPS = 10e6


def uplink(st: dict, name: str) -> dict:
    return next(u for u in st["uplinks"] if u["name"] == name)


def settle(spec: LabSpec, timeout: float = 300.0) -> None:
    for u in spec.uplink_list:
        fault(spec, u.name, "clear")
    wait_for(lambda: (st := status(spec))["active"] == ["wan1"] and all(u["state"] == "UP" for u in st["uplinks"])
             and not any(u["dampened"] for u in st["uplinks"]), timeout, "wan1 active, all UP, none dampened")


def busy(spec: LabSpec, seconds: float) -> list[dict]:
    rows = []
    for queue in QUEUES:
        for direction in ("download", "upload"):
            settle(spec)
            time.sleep(3.5)  # older than late_window: nothing left of the previous run
            before = status(spec)
            fault(spec, "wan1", "shape", RATE, queue)
            report = start_bulk(spec.name, direction, seconds).result(timeout=seconds + 60)
            after = status(spec)
            fault(spec, "wan1", "clear")
            row = {"queue": queue, "direction": direction, "seconds": seconds, "bytes": report.bytes, "rate_bps": report.rate_bps,
                   "rate_pct": 100.0 * report.rate_bps / RATE_BPS, "reset": report.reset, "error": report.error,
                   "via": report.uplink, "longest_stall_s": report.longest_stall_s,
                   "traffic_moves": after["active_changes"] - before["active_changes"],
                   "flushes": len(after["conntrack_flushes"]) - len(before["conntrack_flushes"]),
                   "wan1_downs": uplink(after, "wan1")["downs"] - uplink(before, "wan1")["downs"],
                   "slow_rounds": uplink(after, "wan1")["slow_rounds"] - uplink(before, "wan1")["slow_rounds"]}
            rows.append(row)
            log(f"busy {queue} {direction}: {report.summary()}; moves {row['traffic_moves']}, flushes "
                f"{row['flushes']}, slow rounds {row['slow_rounds']}")
    return rows


def blackhole_trials(spec: LabSpec, trials: int, interval: float) -> dict:
    outages = []
    for i in range(trials):
        settle(spec)
        time.sleep(3.5 + (i * 0.071) % 0.4)
        flow = client.start_flow(spec.name, duration=7.0, interval=interval)
        time.sleep(3.0)  # long enough for the LAN's traffic to prove wan1 (fewer probes)
        fault(spec, "wan1", "blackhole")
        report = flow.result(timeout=30)
        if report.trailing_outage_s > 0 or [c.after for c in report.changes][:1] != ["198.51.100.10"]:
            raise RuntimeError(f"trial {i}: the client did not move to wan2: {report.summary()}")
        outages.append(report.longest_outage_s)
        reason = uplink(status(spec), "wan1")["reason"]
        log(f"blackhole at {1 / interval:.0f} packets/s, trial {i + 1}/{trials}: outage "
            f"{report.longest_outage_s * 1000:.0f} ms ({reason})")
    return summary(outages)


def busy_then_blackhole(spec: LabSpec, trials: int, busy_s: float = 8.0, gap: float = 1.5) -> dict:
    outages, reasons = [], []
    for i in range(trials):
        settle(spec)
        time.sleep(3.5 + (i * 0.071) % 0.4)
        flow = client.start_flow(spec.name, duration=busy_s + gap + 7.0, interval=0.02)
        fault(spec, "wan1", "shape", RATE, "1s")
        transfer = start_bulk(spec.name, "download", busy_s).result(timeout=busy_s + 60)
        fault(spec, "wan1", "clear")
        time.sleep(gap)
        fault(spec, "wan1", "blackhole")
        report = flow.result(timeout=60)
        st = status(spec)
        if transfer.reset or st["active"] != ["wan2"]:
            raise RuntimeError(f"trial {i}: download {transfer.summary()}, active {st['active']}")
        moves = [c for c in report.changes if c.after == "198.51.100.10"]
        if not moves or report.trailing_outage_s > 0:
            raise RuntimeError(f"trial {i}: the client did not move to wan2: {report.summary()}")
        outages.append(moves[0].gap_s)  # the gap at the move: the blackhole's outage, not a busy stall
        reasons.append(uplink(st, "wan1")["reason"])
        log(f"busy then blackhole, trial {i + 1}/{trials}: outage {moves[0].gap_s * 1000:.0f} ms, longest "
            f"{report.longest_outage_s * 1000:.0f} ms ({reasons[-1]})")
    return {**summary(outages), "reasons": reasons}


WAN1_NAT, WAN2_NAT = "198.51.100.2", "198.51.100.10"


def new_flows_switch(report) -> dict:
    """From a flow of a fresh socket and port (a new NAT flow) per datagram across a failback: how
    many went via wan2 after the first one via wan1 (0: every new flow after the switch took wan1),
    and the time between the last one sent via wan2 and the first via wan1 (resolution: the interval)."""
    replies = sorted(report.replies, key=lambda r: r.seq)
    first = next((r for r in replies if r.address == WAN1_NAT), None)
    if first is None:
        return {"fresh_via_wan2_after_switch": None, "switch_window_ms": float("nan")}
    last_wan2 = max((r for r in replies if r.address == WAN2_NAT and r.seq < first.seq), key=lambda r: r.seq,
                    default=None)
    late = sum(1 for r in replies if r.seq > first.seq and r.address != WAN1_NAT)
    window = (first.sent - last_wan2.sent) * 1000 if last_wan2 else float("nan")
    return {"fresh_via_wan2_after_switch": late, "switch_window_ms": window}


def failback(spec: LabSpec, trials: int, flows: int = 20) -> dict:
    """Sticky flows: wan1 blackholed, ``flows`` UDP calls (20 packets/s each) and a TCP download
    (wan2 shaped to 10 Mbit/s, 200 ms) start on wan2; wan1 clears and takes traffic back after the
    hold (10 s): a flow is broken when it changed address, had a gap over 0.5 s or ended unanswered,
    the download when it was reset or stalled over 1 s. A flow started after the failback: its uplink."""
    out = []
    for i in range(trials):
        settle(spec)
        fault(spec, "wan1", "blackhole")
        wait_for(lambda: status(spec)["active"] == ["wan2"], 10.0, "failover to wan2")
        fault(spec, "wan2", "shape", "10mbit", "200ms")
        before = status(spec)
        calls = [client.start_flow(spec.name, duration=20.0, interval=0.05) for _ in range(flows)]
        download = start_bulk(spec.name, "download", 20.0)
        # a new flow every 10 ms, each from a port of its own (no datagram hits an old flow's entry)
        fresh = client.start_flow(spec.name, duration=22.0, interval=0.01, new_socket=True,
                                  first_port=20000 + 2500 * (i % 4))
        time.sleep(2.0)
        fault(spec, "wan1", "clear")
        wait_for(lambda: status(spec)["active"] == ["wan1"], 30.0, "failback to wan1")
        after = status(spec)
        new = client.start_flow(spec.name, duration=1.0, interval=0.02).result(timeout=30)
        reports, dl = [c.result(timeout=60) for c in calls], download.result()
        switch = new_flows_switch(fresh.result(timeout=60))
        broken = sum(1 for r in reports if r.changes or r.longest_outage_s > 0.5 or r.trailing_outage_s > 0
                     or {x.address for x in r.replies} != {WAN2_NAT})
        row = {"flows": flows, "broken": broken, "download_reset": dl.reset or dl.error is not None,
               "download_stall_s": dl.longest_stall_s, "download_via": dl.seen,
               "flushes_at_failback": sum(f["uplink"] == "wan2" and f not in before["conntrack_flushes"]
                                          for f in after["conntrack_flushes"]),
               "new_flow_via": sorted({x.address for x in new.replies}), **switch}
        out.append(row)
        log(f"failback trial {i + 1}/{trials}: {broken}/{flows} calls broken, download "
            f"{'RESET' if row['download_reset'] else 'kept'} via {dl.seen} (longest stall {dl.longest_stall_s:.2f} s), "
            f"{row['flushes_at_failback']} flushes, a new flow via {row['new_flow_via']}; fresh flows: "
            f"{row['fresh_via_wan2_after_switch']} via wan2 after the first via wan1, switch window "
            f"{row['switch_window_ms']:.0f} ms")
    fault(spec, "wan2", "clear")
    return {"trials": out, "broken": sum(t["broken"] for t in out), "flows": flows * trials,
            "downloads_reset": sum(t["download_reset"] for t in out),
            "new_flows_home": sum(t["new_flow_via"] == [WAN1_NAT] for t in out),
            "fresh_via_wan2_after_switch": sum(t["fresh_via_wan2_after_switch"] or 0 for t in out),
            "switch_window_ms": [round(t["switch_window_ms"], 1) for t in out]}


def flap(spec: LabSpec, seconds: float) -> dict:
    settle(spec)
    before = status(spec)
    fault(spec, "wan1", "flap", "1s", "1s", f"{seconds:g}s")
    time.sleep(seconds + 1.0)
    after = status(spec)
    w = uplink(after, "wan1")
    res = {"seconds": seconds, "traffic_moves": after["active_changes"] - before["active_changes"],
           "dampened": w["dampened"], "flap_penalty": w["flap_penalty"],
           "downs": w["downs"] - uplink(before, "wan1")["downs"]}
    log(f"flap 1s/1s for {seconds:g}s: {res}")
    return res


PROBES_ONLY = """
table inet lwbudget {{
  chain count {{
    type filter hook forward priority -10; policy accept;
    ip saddr {addr} ip daddr {{ {targets} }} udp dport != {echo} counter
    ip daddr {addr} ip saddr {{ {targets} }} udp sport != {echo} counter
    ip saddr {addr} ip daddr {{ {targets} }} meta l4proto != udp counter
    ip daddr {addr} ip saddr {{ {targets} }} meta l4proto != udp counter
  }}
}}
"""


def _counted(ns: str) -> int:
    out = run_command(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "lwbudget"])
    return sum(e["counter"]["bytes"] for item in json.loads(out)["nftables"] if "rule" in item
               for e in item["rule"]["expr"] if "counter" in e)


def probe_bytes_per_day(spec: LabSpec, k: int, seconds: float, lan_interval: float | None) -> float:
    """Bytes/day of probes (to or from the probe targets, not the LAN's echo flow) through uplink k."""
    ns = spec.provider_ns(k)
    u = spec.uplink_list[k - 1]
    targets = ", ".join(dict.fromkeys((*ICMP_TARGETS[:2], DNS_SERVER)))
    run_command(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input_text=PROBES_ONLY.format(addr=u.address, targets=targets, echo=ECHO_PORT))
    try:
        flow = client.start_flow(spec.name, duration=seconds + 5, interval=lan_interval) if lan_interval else None
        time.sleep(5.0 if flow else 0.0)  # the flow proves the uplink first
        b0, t0 = _counted(ns), time.monotonic()
        time.sleep(seconds)
        b1, t1 = _counted(ns), time.monotonic()
        if flow:
            flow.result(timeout=30)
    finally:
        run_command(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "lwbudget"])
    return (b1 - b0) / (t1 - t0) * 86400


def budget(spec: LabSpec, seconds: float) -> dict:
    settle(spec)
    time.sleep(12.0)  # the standby uplink settles on its interval
    res = {"standby": probe_bytes_per_day(spec, 2, seconds, None),
           "active_lan_50pps": probe_bytes_per_day(spec, 1, seconds, 0.02),
           "active_idle": probe_bytes_per_day(spec, 1, seconds, None)}
    log("probe bytes/day: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in res.items()))
    return res


def engine_cpu(name: str, seconds: float, overrides: dict | None) -> tuple[float, float]:
    """Engine CPU (% of one core) with an idle LAN, then while the LAN sends 50 packets/s each way."""
    with Lab(name, uplinks=4, probe_targets=3, overrides=overrides) as spec:
        wait_for(lambda: all(u["state"] == "UP" for u in status(spec)["uplinks"]), 60.0, "all UP")
        time.sleep(12.0)
        pid = status(spec)["pid"]
        out = []
        for lan in (False, True):
            flow = client.start_flow(spec.name, duration=seconds + 8, interval=0.02) if lan else None
            time.sleep(5.0 if lan else 0.0)
            c0, t0 = proc_cpu_rss(pid)[0], time.monotonic()
            time.sleep(seconds)
            out.append(100.0 * (proc_cpu_rss(pid)[0] - c0) / (time.monotonic() - t0))
            if flow:
                flow.result(timeout=30)
        return out[0], out[1]


def counters_cost(seconds: float) -> dict:
    off = {"health": {"suspect_after": "off", "counter_interval": "10s"}}
    (idle_on, lan_on), (idle_off, lan_off) = engine_cpu("bcnt1", seconds, None), engine_cpu("bcnt0", seconds, off)
    res = {"with_counters_pct": idle_on, "without_pct": idle_off, "cost_pct": idle_on - idle_off,
           "lan_with_counters_pct": lan_on, "lan_without_pct": lan_off, "lan_cost_pct": lan_on - lan_off}
    log(f"counters: CPU idle LAN {idle_on:.2f}% with, {idle_off:.2f}% without; LAN 50/s {lan_on:.2f}% with, "
        f"{lan_off:.2f}% without")
    return res


def table(r: dict) -> str:
    rows = ["| what | measured | target |", "|---|---|---|"]
    for b in r.get("busy", []):
        rows.append(f"| busy uplink, {RATE} + {b['queue']} queue, {b.get('seconds', 60):g} s TCP {b['direction']} | {b['traffic_moves']} "
                    f"moves, {b['flushes']} flows reset, {b['rate_pct']:.0f} % of the rate"
                    f"{', RESET' if b['reset'] else ''} ({b['slow_rounds']} slow rounds) | 0, 0, ≥ 90 % |")
    for key, label, target in (("lanblackhole", "blackhole while the LAN sends 50 packets/s", "≤ 0.35 s median, ≤ 0.5 s worst"),
                               ("idleblackhole", "blackhole, idle LAN (an 8 packets/s measuring flow, 125 ms resolution)",
                                "≤ 1.0 s median, ≤ 1.5 s worst")):
        if key in r:
            o = r[key]
            rows.append(f"| {label} ({o['n']} trials) | median {o['median'] * 1000:.0f} ms, range "
                        f"{o['min'] * 1000:.0f}–{o['max'] * 1000:.0f} ms | {target} |")
    if "busyblackhole" in r:
        o = r["busyblackhole"]
        rows.append(f"| blackhole 1.5 s after a busy spell (1 s queue, 8 s download), LAN 50 packets/s "
                    f"({o['n']} trials) | median {o['median'] * 1000:.0f} ms, range {o['min'] * 1000:.0f}–"
                    f"{o['max'] * 1000:.0f} ms | ≤ 1.0 s median, ≤ 1.5 s worst |")
    if "failback" in r:
        f = r["failback"]
        n = len(f["trials"])
        rows.append(f"| failback with {f['flows'] // n} UDP calls and a TCP download on the backup ({n} trials) | "
                    f"{f['broken']} of {f['flows']} calls broken, {f['downloads_reset']} of {n} downloads reset; "
                    f"new flows via the preferred uplink in {f['new_flows_home']} of {n} | 0 broken |")
        rows.append(f"| the same: a fresh flow every 10 ms across the failback | {f['fresh_via_wan2_after_switch']} "
                    f"went via the backup after the first via the preferred uplink; last via the backup to first "
                    f"via the preferred: {', '.join(f'{w:.0f}' for w in f['switch_window_ms'])} ms | new flows "
                    f"within 0.1 s |")
    for key, label in (("flap", "defaults"), ("flap_standby1s", "standby_interval 1 s")):
        if key in r:
            f = r[key]
            rows.append(f"| flapping 1 s down / 1 s up, {f['seconds']:g} s ({label}) | {f['traffic_moves']} moves, "
                        f"dampened: {f['dampened']} (penalty {f['flap_penalty']}) | ≤ 2 moves |")
    if "budget" in r:
        b = r["budget"]
        rows.append(f"| probe traffic, standby uplink | {b['standby'] / 1e6:.2f} MB/day | ≤ 1 MB/day |")
        rows.append(f"| probe traffic, active uplink, LAN 50 packets/s both ways | {b['active_lan_50pps'] / 1e6:.1f} "
                    f"MB/day | ≤ 25 MB/day |")
        rows.append(f"| probe traffic, active uplink, idle LAN | {b['active_idle'] / 1e6:.1f} MB/day | ≤ 100 MB/day |")
    if "counters" in r:
        c = r["counters"]
        rows.append(f"| reading the counters, 4 uplinks × 3 targets, idle LAN | {c['cost_pct']:+.2f} % of one core "
                    f"({c['with_counters_pct']:.2f} % with, {c['without_pct']:.2f} % without) | ≤ 1 % |")
        rows.append(f"| reading the counters, 4 uplinks × 3 targets, LAN 50 packets/s each way | "
                    f"{c['lan_cost_pct']:+.2f} % of one core ({c['lan_with_counters_pct']:.2f} % with, "
                    f"{c['lan_without_pct']:.2f} % without) | ≤ 1 % |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="busy,lanblackhole,idleblackhole,busyblackhole,failback,flap,budget,counters")
    ap.add_argument("--failback-trials", type=int, default=3)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--busy-seconds", type=float, default=60.0)
    ap.add_argument("--flap-seconds", type=float, default=60.0)
    ap.add_argument("--budget-seconds", type=float, default=120.0)
    ap.add_argument("--cpu-seconds", type=float, default=120.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    r: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": os.uname().release}
    with Lab("btraf") as spec:
        if "busy" in only:
            r["busy"] = busy(spec, args.busy_seconds)
        if "lanblackhole" in only:
            r["lanblackhole"] = blackhole_trials(spec, args.trials, 0.02)
        if "idleblackhole" in only:
            r["idleblackhole"] = blackhole_trials(spec, args.trials, 0.125)
        if "busyblackhole" in only:
            r["busyblackhole"] = busy_then_blackhole(spec, args.trials)
        if "flap" in only:
            r["flap"] = flap(spec, args.flap_seconds)
        if "budget" in only:
            r["budget"] = budget(spec, args.budget_seconds)
    if "failback" in only:  # a lab of its own: the blackhole trials above leave wan1 a flap penalty
        with Lab("btfb") as spec:
            r["failback"] = failback(spec, args.failback_trials)
    if "flap" in only:
        with Lab("btrf1", overrides={"health": {"standby_interval": "1s"}}) as spec:
            r["flap_standby1s"] = flap(spec, args.flap_seconds)
    if "counters" in only:
        r["counters"] = counters_cost(args.cpu_seconds)
    report(r, table(r), "traffic-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
