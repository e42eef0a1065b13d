"""`linkwatch lab demo`: watch a failover happen, from the engine's side and from a LAN client's.

It brings the lab up with the engine (unless it is up already), starts a client flow (one UDP
datagram every 10 ms, each from a new socket: a new NAT flow, as a browser opens new connections;
with sticky flows one long-lived flow would rightly stay on the backup after a failback) and
prints a line every 0.5 s: the time, the uplink the
engine says is active and the uplink the client's packets really take. Then it makes the active
uplink busy (shaped like a modem under load, a TCP download through it: the engine keeps it),
blackholes it (failover: the client's own traffic shows the silence at once), clears it (failback after the engine's failback hold), cuts
the same uplink's carrier (failover by link event), clears it, and prints what the client lived
through. Bounded: every wait has a timeout and the whole demo a budget of ``BUDGET`` seconds.
Unless ``keep`` is set, it tears down a lab it brought up itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from linkwatch.lab import faults, topology
from linkwatch.lab import web as lab_web
from linkwatch.lab.bulk import start_bulk
from linkwatch.lab.client import FlowHandle, FlowReport, check_bounds, start_flow
from linkwatch.lab.namespaces import discover, existing_lab_namespaces
from linkwatch.lab.plan import DEFAULT_NAME, ECHO6_SERVER, ECHO_PORT, LabError, LabSpec

TICK = 0.5
STEADY = 1.5  # seconds of steady state shown before each step
BUDGET = 110.0  # the failback hold (10 s by default) is waited out twice; the busy step takes 10 s
BUSY_SECONDS = 8.0
BLACKHOLE_TARGET = 1.0  # client outage targets of DESIGN.md
CARRIER_TARGET = 0.2
FLOW_INTERVAL = 0.010
FIRST_PORT = 20000  # the client's datagrams take source ports from here up (each its own NAT flow)


class DemoError(LabError):
    """The demo cannot run (a lab of the same name without a working engine, too few uplinks)."""


@dataclass(frozen=True)
class Snapshot:
    t: float  # seconds since the demo's flow started
    active: tuple[str, ...]
    states: tuple[tuple[str, str], ...]  # (uplink, state) as the engine reports
    client_uplink: str | None
    since_reply: float | None
    engine_error: str | None = None
    active6: tuple[str, ...] | None = None  # the IPv6 active set (None: IPv4 only)
    client6_uplink: str | None = None
    since_reply6: float | None = None


def snapshot_line(s: Snapshot) -> str:
    """One live line. Pure."""
    if s.engine_error:
        engine = f"engine: ({s.engine_error})"
    else:
        engine = f"engine active={','.join(s.active) or '-':5} " + " ".join(f"{n} {st}" for n, st in s.states)
    if s.client_uplink is None and s.since_reply is None:
        client = "client: starting"
    else:
        late = f", no reply for {s.since_reply:.2f}s" if s.since_reply and s.since_reply > 0.1 else ""
        client = f"client via {s.client_uplink or '-'}{late}"
    if s.active6 is not None:
        late6 = f", no reply for {s.since_reply6:.2f}s" if s.since_reply6 and s.since_reply6 > 0.1 else ""
        client += f" | IPv6 active={','.join(s.active6) or '-'}, client via {s.client6_uplink or '-'}{late6}"
    return f"{s.t:6.1f}s  {engine:40} | {client}"


@dataclass(frozen=True)
class Mark:
    at: float  # time.monotonic() when the fault was applied
    label: str
    target_s: float | None = None  # the outage DESIGN.md allows for the failover it causes


def label_changes(report: FlowReport, marks: list[Mark]) -> list[str]:
    """One line per change of the client's uplink, named after the step it happened in. Pure.

    Marks are on the monotonic clock, the report's times count from ``report.origin``; the first
    change after a mark with a target is compared with it.
    """
    lines = []
    judged: set[int] = set()
    for c in report.changes:
        step, index = None, -1
        for i, mark in enumerate(marks):
            if mark.at - report.origin <= c.at:
                step, index = mark, i
        line = (f"  {step.label if step else 'before any fault':20} client {c.before_uplink or c.before} -> "
                f"{c.after_uplink or c.after} at {c.at:5.1f}s, outage {c.gap_s * 1000:4.0f} ms")
        if step and step.target_s is not None and index not in judged:
            judged.add(index)
            verdict = "ok" if c.gap_s <= step.target_s else "MISSED"
            line += f"  (target <= {step.target_s * 1000:.0f} ms: {verdict})"
        lines.append(line)
    return lines


class Demo:
    def __init__(self, spec: LabSpec, flow: FlowHandle, out: TextIO, deadline: float,
                 flow6: FlowHandle | None = None):
        self.spec = spec
        self.flow = flow
        self.flow6 = flow6  # the client's IPv6 flow, in a dual-stack demo
        self.out = out
        self.t0 = time.monotonic()
        self.deadline = deadline
        self.marks: list[Mark] = []
        self.next_line = 0.0  # monotonic time the next live line is due

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def snap(self) -> Snapshot:
        status, err = topology.engine_status(self.spec, timeout=0.4)
        p = self.flow.progress() or {}
        active = status.active if status else ()
        states = tuple((u.name, u.state.value) for u in status.uplinks) if status else ()
        if self.flow6 is None:
            return Snapshot(self.now(), active, states, p.get("uplink"), p.get("since_reply"), err)
        p6 = self.flow6.progress() or {}
        return Snapshot(self.now(), active, states, p.get("uplink"), p.get("since_reply"), err,
                        status.active_ipv6 if status else (), p6.get("uplink"), p6.get("since_reply"))

    def watch(self, until: Callable[[Snapshot], bool], timeout: float, what: str) -> Snapshot | None:
        """Print a line per TICK until ``until`` holds (returns that snapshot) or time runs out."""
        end = min(time.monotonic() + timeout, self.deadline)
        while True:
            time.sleep(max(0.0, self.next_line - time.monotonic()))
            s = self.snap()
            self.say(snapshot_line(s))
            self.next_line = time.monotonic() + TICK
            if until(s):
                return s
            if time.monotonic() + TICK > end or not self.flow.running():
                self.say(f"  ... {what}: not seen within {timeout:g}s")
                return None

    def hold(self, seconds: float) -> None:
        """Keep printing lines for a while: the steady state between two steps."""
        end = time.monotonic() + seconds
        self.watch(lambda s: time.monotonic() + TICK > end, seconds + TICK, "steady state")

    def fault(self, uplink: str, kind: str, target_s: float | None) -> None:
        self.marks.append(Mark(time.monotonic(), f"{kind} {uplink}", target_s))
        self.say(f"--- {faults.apply_fault(self.spec.name, uplink, faults.parse_fault([kind]))}")


def busy_step(demo: Demo, name: str, primary: str) -> bool:
    """A busy uplink is not a dead one: shape it like a modem under load (10 Mbit/s, a 1 s queue),
    download through it for BUSY_SECONDS, and show that the engine keeps it (True when it did)."""
    demo.hold(STEADY)
    demo.say(f"--- {faults.apply_fault(name, primary, faults.parse_fault(['shape', '10mbit', '1s']))}; "
             f"a {BUSY_SECONDS:g} s TCP download through it")
    transfer = start_bulk(name, "download", BUSY_SECONDS)
    stayed = demo.watch(lambda s: bool(s.active) and s.active[0] != primary, BUSY_SECONDS, "a move") is None
    report = transfer.result(timeout=BUSY_SECONDS + 30)
    demo.say(f"--- {report.summary()}: the engine {'kept' if stayed else 'MOVED'} its traffic"
             f"{'' if report.reset else ', no flow reset'}")
    demo.say(f"--- {faults.apply_fault(name, primary, faults.Fault('clear'))}")
    return stayed and not report.reset


def _settled(s: Snapshot) -> bool:
    return bool(s.active) and s.client_uplink == s.active[0] and (s.since_reply or 0) < 0.1


def run_demo(name: str = DEFAULT_NAME, keep: bool = False, uplinks: int = 2, out: TextIO | None = None,
             web: str | None = None, pause: float = 0.0, ipv6: bool = False) -> int:
    """Run the demo; 0 when every failover and failback was seen, 1 when one was not.

    With ``web`` (address:port on loopback) the lab's web UI runs too, and its URL is printed;
    ``pause`` waits that many seconds before the first fault (time to open the dashboard). ``ipv6``:
    a dual-stack lab (a lab it brings up probes both families) and a second client flow over IPv6."""
    out = out or sys.stdout
    spec = LabSpec(name, uplinks)
    if spec.uplinks < 2:
        raise DemoError("the demo needs at least 2 uplinks")
    created = False
    if existing_lab_namespaces(name):
        spec = discover(name)
        _, err = topology.engine_status(spec)
        if err:
            raise DemoError(f"lab {name!r} is up but its engine does not answer ({err}); "
                            f"run `linkwatch lab down --name {name}` first")
        print(f"using the running lab {name!r}", file=out, flush=True)
    else:
        print(f"bringing lab {name!r} up with the engine{' and the web UI' if web else ''} ...", file=out, flush=True)
        topology.up(spec, engine=True, options=topology.EngineOptions(web=web, ipv6=ipv6))
        created = True
        if web:
            print(f"dashboard: {lab_web.url(web)} (controls: log in with password {lab_web.LAB_PASSWORD!r})",
                  file=out, flush=True)
    pause = min(max(pause, 0.0), 600.0)
    deadline = time.monotonic() + BUDGET + pause
    flow = flow6 = None
    seen_all = True
    try:
        duration = BUDGET + pause + 10
        # a source port of its own for each datagram, when they fit (an ephemeral one may hit an old flow)
        first = FIRST_PORT if FIRST_PORT <= 65535 - check_bounds(duration, FLOW_INTERVAL) else None
        flow = start_flow(name, duration=duration, interval=FLOW_INTERVAL, progress=TICK / 2, new_socket=True,
                          first_port=first)
        if ipv6:
            flow6 = start_flow(name, duration=duration, interval=FLOW_INTERVAL, progress=TICK / 2, new_socket=True,
                               first_port=first, target=f"[{ECHO6_SERVER}]:{ECHO_PORT}")
        demo = Demo(spec, flow, out, deadline, flow6)
        demo.say("time    engine (what it routes)                   | LAN client (where its packets go)")
        first = demo.watch(_settled, 15.0, "engine and client agreeing on an uplink")
        if first is None:
            raise DemoError("the engine never settled on an uplink the client uses; see "
                            f"{spec.engine_log}")
        primary = first.active[0]
        if pause > 0:
            demo.say(f"--- waiting {pause:g}s before the first fault")
            demo.hold(pause)

        def moved(s: Snapshot) -> bool:
            return bool(s.active) and s.active[0] != primary and _settled(s)

        def back(s: Snapshot) -> bool:
            return bool(s.active) and s.active[0] == primary and _settled(s)

        seen_all &= busy_step(demo, name, primary)
        steps = [("blackhole", BLACKHOLE_TARGET, moved, 10.0, "failover after the blackhole"),
                 ("clear", None, back, 30.0, "failback after the failback hold"),
                 ("carrier-down", CARRIER_TARGET, moved, 10.0, "failover on carrier loss"),
                 ("clear", None, back, 30.0, "failback after carrier returns")]
        for kind, target, until, timeout, what in steps:
            demo.hold(STEADY)
            demo.fault(primary, kind, target)
            seen_all &= demo.watch(until, timeout, what) is not None
        demo.hold(STEADY)
        flow.stop()
        report = flow.result()
        demo.say("")
        demo.say("summary (times from the flow's start):")
        for line in label_changes(report, demo.marks):
            demo.say(line)
        demo.say(f"  client: {report.sent} datagrams sent, {report.received} answered, "
                 f"longest outage {report.longest_outage_s * 1000:.0f} ms")
        if flow6 is not None:
            flow6.stop()
            report6 = flow6.result()
            demo.say("  IPv6:")
            for line in label_changes(report6, demo.marks):
                demo.say(line)
            demo.say(f"  IPv6 client: {report6.sent} datagrams sent, {report6.received} answered, "
                     f"longest outage {report6.longest_outage_s * 1000:.0f} ms")
        if not seen_all:
            demo.say("  some steps were not seen in time: see " + spec.engine_log)
    finally:
        for f in (flow, flow6):
            if f is not None and f.running():
                f.stop()
                try:
                    f.result(timeout=5.0)
                except LabError:
                    pass
        if not created or keep:
            for u in spec.uplink_list:  # leave a kept or borrowed lab without faults
                try:
                    faults.apply_fault(name, u.name, faults.Fault("clear"))
                except LabError:
                    pass
        if created and not keep:
            topology.down(name)
            print(f"lab {name!r} torn down", file=out, flush=True)
        elif created:
            print(f"lab {name!r} kept: `linkwatch lab down --name {name}` removes it", file=out, flush=True)
    return 0 if seen_all else 1
