"""Drive the engine core through its public API: a config, then a sequence of inputs with made-up
time -> the events, routing plans and flushes it returns. No kernel, no sockets, no clock."""

from __future__ import annotations

from dataclasses import replace

from linkwatch.config import loads
from linkwatch.core.engine import EngineState, Outputs, initial_state, step
from linkwatch.core.events import ActiveChanged, UplinkStateChanged
from linkwatch.core.inputs import FactsChanged, LinkFacts, Now, ProbeResult, RoundDone, Start, Tick
from linkwatch.core.routing import RouteSet
from linkwatch.core.status import ShellReport, Status, build_status

CONFIG = """
[policy]
failback_hold = "10s"
[uplinks.fibre]
interface = "up1"
priority = 1
[[uplinks.fibre.probes]]
type = "icmp"
target = "203.0.113.1"
[[uplinks.fibre.probes]]
type = "dns"
target = "203.0.113.53"
[uplinks.lte]
interface = "up2"
priority = 2
[[uplinks.lte.probes]]
type = "icmp"
target = "203.0.113.1"
[[uplinks.lte.probes]]
type = "icmp"
target = "203.0.113.2"
"""

FACTS = {
    "up1": LinkFacts("up1", 11, True, "198.51.100.2", 29, "198.51.100.1"),
    "up2": LinkFacts("up2", 12, True, "198.51.100.10", 29, "198.51.100.9"),
}
GATEWAY = {"fibre": "198.51.100.1", "lte": "198.51.100.9"}
WALL = 1_764_000_000.0  # wall clock = WALL + monotonic time


def active_gateways(routes: RouteSet | None, table: int = 100) -> list[str]:
    out: list[str] = []
    for r in (routes.routes if routes else ()):
        if r.table == table and r.dst == "0.0.0.0/0" and r.kind == "unicast":
            out += [h.gateway for h in r.nexthops] if r.nexthops else [r.gateway]
    return sorted(out)


def results(cfg_probes, answered: int, rtt: float = 0.012) -> tuple[ProbeResult, ...]:
    return tuple(
        ProbeResult(p.type, p.target, i < answered, rtt if i < answered else None, 1, 0 if i < answered else 1,
                    28, 28 if i < answered else 0, None if i < answered else "timeout")
        for i, p in enumerate(cfg_probes))


class Scenario:
    def __init__(self, text: str = CONFIG, facts: dict | None = None, kernel_active: tuple = (), t: float = 1000.0,
                 month_bytes: dict | None = None):
        self.t = t
        self.state: EngineState = initial_state(loads(text))
        self.outputs: list[Outputs] = []
        self.facts_now = dict(FACTS if facts is None else facts)
        self.seq = 0
        self.feed(Start(self.facts_now, kernel_active, "scenario", month_bytes=month_bytes or {}))

    def now(self) -> Now:
        return Now(self.t, WALL + self.t)

    def feed(self, inp) -> Outputs:
        self.state, out = step(self.state, inp, self.now())
        self.outputs.append(out)
        return out

    # -- inputs

    def round(self, name: str, ok, dt: float = 0.25, rtt: float = 0.012, seq: int | None = None) -> Outputs:
        """One round on uplink ``name``: ok=True all targets answer, False none, or an int count."""
        self.t += dt
        probes = self.state.uplink(name).cfg.probes
        answered = len(probes) if ok is True else 0 if ok is False else ok
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.feed(RoundDone(name, results(probes, answered, rtt), seq))

    def rounds(self, pattern: dict[str, str], dt: float = 0.25) -> None:
        """Rounds in turn: ``{"fibre": "ggb", "lte": "ggg"}`` (g good, b bad)."""
        length = max(len(p) for p in pattern.values())
        for i in range(length):
            for name, p in pattern.items():
                if i < len(p):
                    self.round(name, p[i] == "g", dt=dt / len(pattern))

    def set_facts(self, ifname: str, **changes) -> Outputs:
        self.facts_now[ifname] = replace(self.facts_now[ifname], **changes)
        return self.feed(FactsChanged(dict(self.facts_now)))

    def wait(self, seconds: float) -> None:
        """Let time pass, delivering the Ticks the core asked for on the way."""
        end = self.t + seconds
        while True:
            due = self.outputs[-1].recheck_at
            if due is None or due > end:
                break
            self.t = max(self.t, due + 0.01)
            self.feed(Tick())
        self.t = end

    # -- what came out

    @property
    def events(self) -> list:
        return [e for out in self.outputs for e in out.events]

    @property
    def flushed(self) -> list[str]:
        return [f.address for out in self.outputs for f in out.flushes]

    def state_of(self, name: str) -> str:
        return self.state.uplink(name).health.state.value

    def gateways(self) -> list[str]:
        return active_gateways(self.state.routing)

    def transitions(self, name: str) -> list[tuple[str, str]]:
        return [(e.old, e.new) for e in self.events if isinstance(e, UplinkStateChanged) and e.uplink == name]

    def active_events(self) -> list[tuple[tuple, tuple]]:
        return [(e.old, e.new) for e in self.events if isinstance(e, ActiveChanged)]

    def status(self) -> Status:
        return build_status(self.state, self.now(), ShellReport(version="test", pid=1))
