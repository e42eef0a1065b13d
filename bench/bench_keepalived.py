#!/usr/bin/env python3
"""linkwatch benchmark: a router pair with keepalived (issue 15, docs/keepalived.md), in the lab.

Run by hand, as root, from the repository (after scripts/bootstrap.sh --test-tools):

    .venv/bin/python bench/bench_keepalived.py                 # both, 10 trials each (about 5 minutes)
    .venv/bin/python bench/bench_keepalived.py --only uplink --trials 12 --advert-int 0.2
    .venv/bin/python bench/bench_keepalived.py --only engine --engine-weight 0   # FAULT on a dead engine

The lab is ``linkwatch lab up --pair`` (lab name kpbench): routers ra (VRRP priority 150) and rb
(100), one uplink each (wan1, wan2), the engines with their defaults (only flap dampening is off:
ten outages in a few minutes would rightly dampen wan1), keepalived with VRRPv3 and the advert
interval given (default 0.2 s), track_file and track_process at weight -100.

(a) ``uplink``: the master's last uplink is blackholed while the LAN client sends a UDP datagram
    every 5 ms; measured from the moment the fault is in place: ra's engine writes 1 to its track
    file (``file``), the client's first reply through rb's uplink (``failover``, the target is
    <= 1.5 s) and the client's longest gap (``outage``). Then the fault is cleared: ra's engine
    proves the uplink and writes 0 (``file``), and the client's first reply through ra again
    (``failback``, which includes linkwatch holding the uplink back until it has proven itself).
(b) ``engine``: the master's engine is SIGKILLed: time until rb has the virtual address
    (``moved``, the target is within 3 advert intervals) and the client's first reply through rb;
    then the engine is restarted as systemd's Restart= would (``start_engine``): time from the
    restart until ra has the address again (``back``; includes the engine's start-up and its first
    uplink proven) and from the engine's first answer on its socket.

It prints a Markdown table and writes the raw figures to bench/results/keepalived-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from labbench import fault, log, report, wait_for  # noqa: E402
from linkwatch.lab import client, pairlab, topology  # noqa: E402
from linkwatch.lab.pair import PairSpec  # noqa: E402
from linkwatch.lab.topology import EngineOptions  # noqa: E402
from linkwatch.sinks.keepalived import read_value  # noqa: E402

NAME = "kpbench"
FLOW_INTERVAL = 0.005
OPTIONS = EngineOptions(overrides={"policy": {"dampening": False}})


def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "values": [round(v, 4) for v in values]}


class FileWatch:
    """Polls a track file every 2 ms in a thread: when did it first read ``value`` after ``since``?"""

    def __init__(self, path: str):
        self.path = path
        self.changes: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = object()
        while not self._stop.is_set():
            v = read_value(self.path)
            if v != last:
                self.changes.append((time.monotonic(), v))
                last = v
            time.sleep(0.002)

    def first(self, value: int, since: float) -> float | None:
        return next((t for t, v in self.changes if v == value and t >= since), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


def healthy(spec: PairSpec) -> None:
    ra = spec.router("ra")
    if pairlab.engine_record(spec, ra) is None:
        pairlab.start_engine(spec, ra, OPTIONS)
    for u in spec.lab.uplink_list:
        fault(spec.lab, u.name, "clear")
    wait_for(lambda: read_value(ra.track_file) == 0 and pairlab.holder(spec) == "ra", 30.0, "ra healthy and master")


def first_reply_via(report, uplink: str, after: float) -> float | None:
    """Monotonic time of the first reply through ``uplink`` that arrived after ``after``."""
    for r in report.replies:
        t = report.origin + r.received
        if t >= after and r.uplink == uplink:
            return t
    return None


def flowing(flow) -> None:
    wait_for(lambda: (flow.progress() or {}).get("received", 0) > 50, 5.0, "the client's flow answered")


def until_via(flow, uplink: str, timeout: float) -> None:
    """Let the flow run until its last reply came through ``uplink`` (then a little more), then stop it."""
    wait_for(lambda: (flow.progress() or {}).get("uplink") == uplink, timeout, f"the client's flow via {uplink}")
    time.sleep(0.2)
    flow.stop()


def uplink_trials(spec: PairSpec, trials: int) -> dict:
    ra = spec.router("ra")
    file1, failover, outage, file0, failback = [], [], [], [], []
    watch = FileWatch(ra.track_file)
    try:
        for i in range(trials):
            healthy(spec)
            time.sleep(0.5 + (i * 0.071) % 0.4)  # spread the fault over the probe and advert phases
            flow = client.start_flow(spec.name, duration=20.0, interval=FLOW_INTERVAL, progress=0.05)
            flowing(flow)
            fault(spec.lab, "wan1", "blackhole")
            t_fault = time.monotonic()
            until_via(flow, "wan2", 10.0)
            report = flow.result(timeout=30)
            t_switch = first_reply_via(report, "wan2", t_fault)
            t_file = watch.first(1, t_fault - 0.01)
            if t_switch is None or t_file is None or report.trailing_outage_s > 0:
                raise RuntimeError(f"trial {i}: the client did not move to rb: {report.summary()}")
            failover.append(t_switch - t_fault)
            file1.append(t_file - t_fault)
            outage.append(report.longest_outage_s)
            time.sleep(1.0)  # rb is master and ra's wan1 is DOWN: now it recovers
            flow = client.start_flow(spec.name, duration=30.0, interval=FLOW_INTERVAL, progress=0.05)
            flowing(flow)
            fault(spec.lab, "wan1", "clear")
            t_clear = time.monotonic()
            until_via(flow, "wan1", 25.0)
            report = flow.result(timeout=40)
            t_back = first_reply_via(report, "wan1", t_clear)
            t_file = watch.first(0, t_clear - 0.01)
            if t_back is None or t_file is None:
                raise RuntimeError(f"trial {i}: the client did not come back through ra: {report.summary()}")
            failback.append(t_back - t_clear)
            file0.append(t_file - t_clear)
            log(f"uplink trial {i + 1}/{trials}: track file 1 after {file1[-1] * 1000:.0f} ms, client via rb after "
                f"{failover[-1] * 1000:.0f} ms (outage {outage[-1] * 1000:.0f} ms); cleared: file 0 after "
                f"{file0[-1] * 1000:.0f} ms, client via ra after {failback[-1] * 1000:.0f} ms")
    finally:
        watch.close()
    return {"file_1_s": summary(file1), "failover_s": summary(failover), "outage_s": summary(outage),
            "file_0_s": summary(file0), "failback_s": summary(failback)}


def wait_holder(spec: PairSpec, role: str, timeout: float) -> float:
    """Monotonic time at which ``role`` was first seen holding the virtual gateway (polled)."""
    router = spec.router(role)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pairlab.holds_gateway(router):
            return time.monotonic()
        time.sleep(0.005)
    raise RuntimeError(f"{role} did not take the virtual gateway within {timeout}s")


def engine_trials(spec: PairSpec, trials: int) -> dict:
    ra = spec.router("ra")
    moved, client_moved, back, back_after_answer = [], [], [], []
    for i in range(trials):
        healthy(spec)
        time.sleep(0.5 + (i * 0.071) % 0.4)
        flow = client.start_flow(spec.name, duration=20.0, interval=FLOW_INTERVAL, progress=0.05)
        flowing(flow)
        t_kill = time.monotonic()
        pairlab.kill_engine(spec, ra)
        t_moved = wait_holder(spec, "rb", 10.0)
        until_via(flow, "wan2", 10.0)
        report = flow.result(timeout=30)
        t_client = first_reply_via(report, "wan2", t_kill)
        if t_client is None:
            raise RuntimeError(f"trial {i}: the client did not move to rb: {report.summary()}")
        moved.append(t_moved - t_kill)
        client_moved.append(t_client - t_kill)
        time.sleep(0.5)
        t_restart = time.monotonic()
        pairlab.start_engine(spec, ra, OPTIONS)
        t_answer = time.monotonic()
        t_back = wait_holder(spec, "ra", 30.0)
        back.append(t_back - t_restart)
        back_after_answer.append(t_back - t_answer)
        log(f"engine trial {i + 1}/{trials}: address on rb {moved[-1] * 1000:.0f} ms after the kill (client via rb "
            f"{client_moved[-1] * 1000:.0f} ms); restarted: address on ra after {back[-1] * 1000:.0f} ms "
            f"({back_after_answer[-1] * 1000:.0f} ms after the engine answered)")
    return {"moved_s": summary(moved), "client_moved_s": summary(client_moved), "back_s": summary(back),
            "back_after_engine_answers_s": summary(back_after_answer)}


def ms(r: dict) -> str:
    return f"median {r['median'] * 1000:.0f} ms, range {r['min'] * 1000:.0f}–{r['max'] * 1000:.0f} ms"


def table(results: dict) -> str:
    adv = results["advert_int_s"]
    rows = ["| what | measured | target |", "|---|---|---|"]
    if "uplink" in results:
        u = results["uplink"]
        n = u["failover_s"]["n"]
        rows += [
            f"| master's last uplink blackholed → its track file reads 1 ({n} trials) | {ms(u['file_1_s'])} | |",
            f"| … → the LAN client's traffic flows through the other router | {ms(u['failover_s'])} | ≤ 1.5 s |",
            f"| … the client's longest gap | {ms(u['outage_s'])} | |",
            f"| uplink back → its track file reads 0 (linkwatch proved it) | {ms(u['file_0_s'])} | |",
            f"| uplink back → the client's traffic flows through the master again | {ms(u['failback_s'])} | |",
        ]
    if "engine" in results:
        e = results["engine"]
        n = e["moved_s"]["n"]
        rows += [
            f"| master's engine SIGKILLed (track_process weight {results['engine_weight']}) → the virtual "
            f"address is on the other router ({n} trials) | "
            f"{ms(e['moved_s'])} | ≤ 3 adverts = {3 * adv * 1000:.0f} ms |",
            f"| … → the client's traffic flows through the other router | {ms(e['client_moved_s'])} | |",
            f"| engine restarted → the address is back on the master | {ms(e['back_s'])} | |",
            f"| … counted from the engine's first answer on its socket | {ms(e['back_after_engine_answers_s'])} | |",
        ]
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="uplink,engine", help="comma-separated: uplink, engine")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--advert-int", type=float, default=0.2, help="VRRP advert interval, seconds (default 0.2)")
    ap.add_argument("--engine-weight", type=int, default=-100,
                    help="weight of keepalived's track_process on the engine: -100 (default, the sample's) "
                         "or 0 (a dead engine puts its router in FAULT: the other trade-off of docs/keepalived.md)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_keepalived: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    if args.trials < 1:
        print("bench_keepalived: --trials must be >= 1", file=sys.stderr)
        return 2
    only = set(args.only.split(","))
    spec = PairSpec(NAME, 1, args.advert_int, args.engine_weight)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": os.uname().release,
                     "advert_int_s": args.advert_int, "engine_weight": args.engine_weight, "trials": args.trials}
    topology.down(NAME)
    pairlab.up(spec, OPTIONS)
    try:
        if "uplink" in only:
            results["uplink"] = uplink_trials(spec, args.trials)
        if "engine" in only:
            results["engine"] = engine_trials(spec, args.trials)
    finally:
        topology.down(NAME)
    report(results, table(results), "keepalived-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
