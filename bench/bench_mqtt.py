#!/usr/bin/env python3
"""linkwatch MQTT benchmark: how soon a state change is at the broker, and what a broker that is
away costs the engine.

Run by hand, as root, from the repository (after scripts/bootstrap.sh --test-tools):

    .venv/bin/python bench/bench_mqtt.py                   # about 12 minutes
    .venv/bin/python bench/bench_mqtt.py --trials 10 --down-minutes 5 --cpu-seconds 60
    .venv/bin/python bench/bench_mqtt.py --cpu-rounds 4 --cpu-seconds 30  # only CPU, up and down in turn

It builds lab ``mq1`` (2 uplinks, the default health settings; flap dampening off, as in bench.py's
outage lab, or ten blackholes in three minutes would dampen wan1) whose engine publishes to a
mosquitto broker in the lab's client (LAN) namespace (10.77.0.2:18830, no persistence: a restart
starts empty); mosquitto_sub there records every message with its receipt time (``%U``).

1. Broker up: the engine's CPU over ``--cpu-seconds`` of quiet, then ``--trials`` blackhole
   failovers of wan1 measured from the LAN client's own packets (bench.py's outage trials). Per
   trial the delay from the state change to the broker: the subscriber's receipt of
   ``PREFIX/uplink/wan1/state = DOWN`` minus ``at`` of the engine's UplinkStateChanged, and of
   ``PREFIX/active = wan2`` minus ``at`` of its ActiveChanged (events read from the lab's
   history; the namespaces share one clock). Target: <= 100 ms median.
2. Broker down for ``--down-minutes``: the same CPU window and failover trials, then wan1 is
   left blackholed, so the state at the broker's return differs from anything it ever held.
3. Broker back (empty): the time from its first accepted connection to the whole current state
   (every state topic with wan1 DOWN and wan2 active, the discovery configs, ``online``) at a new
   subscriber. Target: within 2 s.

It prints Markdown tables and writes every figure to bench/results/mqtt-<time>.json. The lab and
the broker are torn down at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Lab, outage_trials, proc_cpu_rss  # noqa: E402
from labbench import fault, log, settled, status, wait_for  # noqa: E402
from linkwatch.history import HistoryReader  # noqa: E402
from tests.integration.mqttutil import Broker, Subscriber  # noqa: E402

LAB = "mq1"
BROKER, PORT = "10.77.0.2", 18830  # the lab's client namespace
PREFIX = "linkwatch/mq"
TARGET_MS = 100.0
RETURN_TARGET_S = 2.0
MQTT_TOML = f'[mqtt]\nhost = "{BROKER}"\nport = {PORT}\ntopic_prefix = "{PREFIX}"\n'
STATE_TOPICS = [f"{PREFIX}/active", f"{PREFIX}/status"] + [
    f"{PREFIX}/uplink/{n}/{w}" for n in ("wan1", "wan2") for w in ("state", "usable", "active", "rtt_ms", "loss_pct")]
DISCOVERY = 9


def summary(values: list[float]) -> dict:
    return ({"n": len(values), "median": round(statistics.median(values), 2), "min": round(min(values), 2),
             "max": round(max(values), 2), "values": [round(v, 2) for v in values]} if values else {"n": 0})


def whole(wan1: str, active: str):
    def check(m: dict[str, str]) -> bool:
        disc = [t for t in m if t.startswith("homeassistant/")]
        return (all(t in m for t in STATE_TOPICS) and len(disc) == DISCOVERY and m[f"{PREFIX}/status"] == "online"
                and m[f"{PREFIX}/uplink/wan1/state"] == wan1 and m[f"{PREFIX}/active"] == active)
    return check


def cpu_window(pid: int, seconds: float) -> float:
    """The engine's CPU, % of one core, over ``seconds`` of quiet (wan1 active, all UP)."""
    cpu0, _ = proc_cpu_rss(pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1, _ = proc_cpu_rss(pid)
    return round(100.0 * (cpu1 - cpu0) / (time.monotonic() - t0), 3)


def failover_phase(spec, pid: int, trials: int) -> dict:
    cpu0, _ = proc_cpu_rss(pid)
    t0, m0 = time.time(), time.monotonic()
    res = outage_trials(spec, "blackhole", trials)
    cpu1, _ = proc_cpu_rss(pid)
    res["cpu_pct_during_trials"] = round(100.0 * (cpu1 - cpu0) / (time.monotonic() - m0), 3)
    res["span"] = (t0, time.time())
    return res


def latencies(events: list[dict], messages: list[tuple], span: tuple[float, float]) -> dict:
    """ms from each wan1 DOWN and each move to wan2 in ``span`` to the first matching message after it."""
    def first(topic: str, payload: str, after: float) -> float | None:
        return next((t for t, _, top, p in messages if top == topic and p == payload and t >= after), None)

    out: dict[str, list[float]] = {"wan1 DOWN": [], "active wan2": []}
    for e in sorted(events, key=lambda e: e["at"]):
        if not span[0] <= e["at"] <= span[1]:
            continue
        if e["kind"] == "uplink_state" and e["uplink"] == "wan1" and e["new"] == "DOWN":
            got = first(f"{PREFIX}/uplink/wan1/state", "DOWN", e["at"] - 0.05)
            key = "wan1 DOWN"
        elif e["kind"] == "active_changed" and list(e["new"]) == ["wan2"]:
            got = first(f"{PREFIX}/active", "wan2", e["at"] - 0.05)
            key = "active wan2"
        else:
            continue
        if got is not None:
            out[key].append((got - e["at"]) * 1000)
    return {k: summary(v) for k, v in out.items()}


def downs(spec, span: tuple[float, float]) -> list[dict]:
    try:
        with HistoryReader(spec.history_path) as reader:
            return [e for e in reader.events(uplink="wan1", kinds=["uplink_state"], since=span[0], limit=None)
                    if e["new"] == "DOWN"]
    except Exception:  # not written yet
        return []


def cpu_alternating(rounds: int, seconds: float) -> dict:
    """The engine's quiet CPU with the broker up and stopped in turn (``rounds`` windows of each),
    so the machine's other load falls on both alike."""
    work = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    up, down = [], []
    with Lab(LAB, overrides={"policy": {"dampening": False}}, extra_toml=MQTT_TOML) as spec:
        broker = Broker(work, PORT, address=BROKER, ns=spec.client_ns)
        try:
            wait_for(lambda: settled(spec), 40.0, "wan1 active, all UP")
            pid = status(spec)["pid"]
            for i in range(rounds):
                broker.start()
                wait_for(lambda: status(spec)["sinks"]["mqtt"]["detail"]["connected"], 10.0, "connected")
                up.append(cpu_window(pid, seconds))
                broker.stop()
                wait_for(lambda: not status(spec)["sinks"]["mqtt"]["detail"]["connected"], 10.0, "disconnected")
                down.append(cpu_window(pid, seconds))
                log(f"round {i + 1}/{rounds}: CPU broker up {up[-1]:.2f} %, stopped {down[-1]:.2f} %")
        finally:
            broker.stop()
    return {"rounds": rounds, "seconds": seconds, "cpu_pct_up": summary(up), "cpu_pct_down": summary(down)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--down-minutes", type=float, default=5.0)
    ap.add_argument("--cpu-seconds", type=float, default=60.0)
    ap.add_argument("--cpu-rounds", type=int, default=0,
                    help="only the engine's CPU: this many windows with the broker up and stopped in turn")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    if args.cpu_rounds:
        res = cpu_alternating(args.cpu_rounds, args.cpu_seconds)
        print(json.dumps(res, indent=2))
        out_dir = REPO / "bench" / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / time.strftime("mqtt-cpu-%Y%m%d-%H%M%S.json")).write_text(json.dumps(res, indent=2))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "kernel": os.uname().release,
                     "trials": args.trials, "down_minutes": args.down_minutes, "cpu_seconds": args.cpu_seconds}
    broker = None
    # dampening off, as in bench.py's outage lab: ten blackholes in three minutes would dampen wan1
    with Lab(LAB, overrides={"policy": {"dampening": False}}, extra_toml=MQTT_TOML) as spec:
        try:
            broker = Broker(work, PORT, address=BROKER, ns=spec.client_ns).start()
            with Subscriber(PORT, [f"{PREFIX}/#", "homeassistant/#"], work, address=BROKER, ns=spec.client_ns) as sub:
                wait_for(lambda: settled(spec), 40.0, "wan1 active, all UP")
                sub.wait_for(whole("UP", "wan1"), 10.0, "the whole state at the broker")
                pid = status(spec)["pid"]
                log(f"broker up: engine CPU over {args.cpu_seconds:g} s")
                results["cpu_pct_broker_up"] = cpu_window(pid, args.cpu_seconds)
                log(f"broker up: {args.trials} blackhole failovers")
                up = failover_phase(spec, pid, args.trials)
                wait_for(lambda: len(downs(spec, up["span"])) >= args.trials, 20.0, "every DOWN in the history",
                         step=0.2)
                with HistoryReader(spec.history_path) as reader:
                    events = reader.events(kinds=["uplink_state", "active_changed"], limit=None)
                results["broker_up"] = up
                results["latency_ms"] = latencies(events, sub.messages(), up["span"])
                results["mqtt_stats_up"] = status(spec)["sinks"]["mqtt"]["detail"]

            broker.stop()
            gone = time.time()
            log(f"broker stopped for {args.down_minutes:g} min: engine CPU over {args.cpu_seconds:g} s")
            fault(spec, "wan1", "clear")
            wait_for(lambda: settled(spec), 40.0, "wan1 active, all UP")
            results["cpu_pct_broker_down"] = cpu_window(pid, args.cpu_seconds)
            log(f"broker down: {args.trials} blackhole failovers")
            results["broker_down"] = failover_phase(spec, pid, args.trials)
            fault(spec, "wan1", "blackhole")  # the state the broker never saw
            wait_for(lambda: status(spec)["active"] == ["wan2"], 10.0, "failover to wan2")
            results["mqtt_stats_down"] = status(spec)["sinks"]["mqtt"]["detail"]
            time.sleep(max(0.0, args.down_minutes * 60 - (time.time() - gone)))
            results["broker_down_s"] = round(time.time() - gone, 1)

            log("broker back, empty")
            broker.start()
            with Subscriber(PORT, [f"{PREFIX}/#", "homeassistant/#"], work, address=BROKER, ns=spec.client_ns,
                            name="back") as sub:
                done = sub.wait_for(whole("DOWN", "wan2"), 30.0, "the whole state after the broker's return")
            results["whole_state_after_return_s"] = round(done - broker.started_at, 3)
            results["mqtt_stats_back"] = status(spec)["sinks"]["mqtt"]["detail"]
        finally:
            if broker is not None:
                broker.stop()
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / time.strftime("mqtt-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=2))
    print(report(results, path))
    return 0


def report(r: dict, path: Path) -> str:
    lat = r["latency_ms"]
    up, down = r["broker_up"]["outage_s"], r["broker_down"]["outage_s"]
    lines = [f"## MQTT: state change -> message at the broker ({r['trials']} blackhole failovers of wan1)", "",
             "| message | n | median | min | max | target |", "|---|---|---|---|---|---|"]
    for name, s in lat.items():
        if s["n"]:
            verdict = "met" if s["median"] <= TARGET_MS else "MISSED"
            lines.append(f"| {name} | {s['n']} | {s['median']:.1f} ms | {s['min']:.1f} ms | {s['max']:.1f} ms | "
                         f"<= {TARGET_MS:g} ms median: {verdict} |")
        else:
            lines.append(f"| {name} | 0 | - | - | - | <= {TARGET_MS:g} ms median |")
    ret = r["whole_state_after_return_s"]
    lines += ["", f"## The broker away ({r['broker_down_s']:g} s, then back empty)", "",
              "| what | broker up | broker down |", "|---|---|---|",
              f"| client outage, blackholed wan1 (n={up['n']}/{down['n']}) | median {up['median'] * 1000:.0f} ms, "
              f"{up['min'] * 1000:.0f}-{up['max'] * 1000:.0f} ms | median {down['median'] * 1000:.0f} ms, "
              f"{down['min'] * 1000:.0f}-{down['max'] * 1000:.0f} ms |",
              f"| engine CPU, quiet ({r['cpu_seconds']:g} s) | {r['cpu_pct_broker_up']:.2f} % | "
              f"{r['cpu_pct_broker_down']:.2f} % |",
              f"| engine CPU during the failover trials | {r['broker_up']['cpu_pct_during_trials']:.2f} % | "
              f"{r['broker_down']['cpu_pct_during_trials']:.2f} % |", "",
              f"whole current state at the broker {ret:.2f} s after its return (target <= {RETURN_TARGET_S:g} s: "
              f"{'met' if ret <= RETURN_TARGET_S else 'MISSED'})",
              f"sink while the broker was away: {r['mqtt_stats_down'].get('error')}",
              f"\nraw figures: {path.relative_to(REPO)}"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
