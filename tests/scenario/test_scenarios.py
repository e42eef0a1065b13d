"""Scenario tests: a config plus a sequence of netlink facts and probe results -> the events the
engine publishes and the routing plan it hands to the reconciler. No kernel, no sockets, no clock:
the engine runs with a fake clock, a recording reconciler, a recording sink and no conntrack."""

import asyncio

import pytest

from linkwatch.config import loads
from linkwatch.daemon.engine import Engine
from linkwatch.core.events import ActiveChanged, AdminAction, UplinkSamples, UplinkStateChanged
from linkwatch.kernel.facts import LinkFacts
from linkwatch.probes import ProbeResult
from linkwatch.kernel.routing import Desired

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


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class RecordingReconciler:
    def __init__(self):
        self.applied: list[Desired] = []
        self.neighbours: list[tuple[int, str]] = []

    def apply(self, desired):
        from linkwatch.kernel.routing import ApplyReport

        changed = not self.applied or self.applied[-1] != desired
        self.applied.append(desired)
        return ApplyReport(added=["x"] if changed else [], replaced=[], removed=[], errors=[])

    def forget_neighbour(self, ifindex, address):
        self.neighbours.append((ifindex, address))


class RecordingSinks:
    def __init__(self):
        self.events = []

    def publish(self, ev):
        self.events.append(ev)

    def stats(self):
        return {"recording": {"handled": len(self.events)}}

    async def start(self):
        pass

    async def stop(self, drain_timeout=5.0):
        self.stopped = True


def active_gateways(desired: Desired, table: int = 100) -> list[str]:
    out = []
    for r in desired.routes:
        if r.table == table and r.dst in ("0.0.0.0/0", "default") and r.kind == "unicast":
            out += [h.gateway for h in r.nexthops] if r.nexthops else [r.gateway]
    return sorted(out)


class Scenario:
    def __init__(self, text=CONFIG):
        self.clock = FakeClock()
        self.engine = Engine(loads(text), clock=self.clock)
        self.rec = RecordingReconciler()
        self.sinks = RecordingSinks()
        self.flushed: list[str] = []
        self.engine.reconciler = self.rec
        self.engine.sinks = self.sinks
        self.engine._flush_conntrack = lambda name, address: self.flushed.append(address)
        for u in self.engine.uplinks.values():
            self.engine._apply_facts(u, FACTS[u.cfg.interface], self.clock(), initial=True)

    def round(self, name, ok, dt=0.25):
        """One round on uplink `name`: ok=True all targets answer, False none, or an int count."""
        self.clock.t += dt
        u = self.engine.uplinks[name]
        n = len(u.cfg.probes)
        answered = n if ok is True else 0 if ok is False else ok
        results = [
            ProbeResult(p.type, p.target, i < answered, 0.012 if i < answered else None, 1, 0 if i < answered else 1,
                        28, 28 if i < answered else 0, None if i < answered else "timeout")
            for i, p in enumerate(u.cfg.probes)
        ]
        self.engine.on_round(u, results, self.clock())

    def rounds(self, pattern: dict[str, str], dt=0.25):
        length = max(len(p) for p in pattern.values())
        for i in range(length):
            for name, p in pattern.items():
                if i < len(p):
                    self.round(name, p[i] == "g", dt=dt / len(pattern))

    def facts(self, ifname, **changes):
        from dataclasses import replace

        snap = {f.ifname: f for f in (u.facts for u in self.engine.uplinks.values())}
        snap[ifname] = replace(snap[ifname], **changes)
        self.engine._on_facts(snap)

    def state(self, name):
        return self.engine.uplinks[name].health.state.value

    def gateways(self):
        return active_gateways(self.rec.applied[-1])

    def transitions(self, name):
        return [(e.old, e.new) for e in self.sinks.events if isinstance(e, UplinkStateChanged) and e.uplink == name]

    def active_events(self):
        return [(e.old, e.new) for e in self.sinks.events if isinstance(e, ActiveChanged)]


def run(coro_fn):
    """The engine schedules timers on the running loop: run each scenario inside one."""
    async def wrapper():
        return coro_fn()
    return asyncio.run(wrapper())


def test_start_blackhole_failover_and_failback_after_hold():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        assert s.engine.active == ("fibre",)
        assert s.gateways() == ["198.51.100.1"]
        s.rounds({"fibre": "bbb", "lte": "ggg"})
        assert s.state("fibre") == "DOWN"
        assert s.engine.active == ("lte",)
        assert s.gateways() == ["198.51.100.9"]
        assert s.transitions("fibre")[-2:] == [("UP", "FALLING"), ("FALLING", "DOWN")]
        assert s.active_events()[-1] == (("fibre",), ("lte",))
        assert s.flushed == ["198.51.100.2"], "NAT entries of the failed uplink are flushed"
        s.rounds({"fibre": "ggggg", "lte": "ggggg"})
        assert s.state("fibre") == "UP"
        assert s.engine.active == ("lte",), "failback waits for failback_hold"
        s.clock.t += 10.0
        s.engine.tick(s.clock())
        assert s.engine.active == ("fibre",)
        assert s.gateways() == ["198.51.100.1"]
        assert s.flushed == ["198.51.100.2", "198.51.100.10"]
    run(scenario)


def test_carrier_loss_fails_over_without_waiting_for_rounds():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.facts("up1", carrier=False)
        assert s.state("fibre") == "DOWN"
        assert s.engine.uplinks["fibre"].health.reason == "carrier lost"
        assert s.engine.active == ("lte",)
        plan = s.rec.applied[-1]
        assert not any(r.table == 101 and r.kind == "unicast" and r.dst == "0.0.0.0/0" for r in plan.routes), \
            "a dead uplink's table keeps only its unreachable default"
        s.facts("up1", carrier=True)
        assert s.rec.neighbours == [(11, "198.51.100.1")], "stale gateway neighbour entry is dropped"
        assert s.state("fibre") == "DOWN", "carrier back is not enough: rounds must prove it"
    run(scenario)


def test_random_single_misses_never_fail_over():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.rounds({"fibre": "gggbggggbbggggggggbgggg", "lte": "ggggggggggggggggggggggg"})
        assert s.engine.active == ("fibre",)
        assert ("FALLING", "DOWN") not in s.transitions("fibre")
        assert s.active_events() == [((), ("fibre",))]
    run(scenario)


def test_all_down_keeps_a_route_and_first_back_takes_traffic_at_once():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.rounds({"fibre": "bbb", "lte": "bbb"})
        assert s.state("fibre") == s.state("lte") == "DOWN"
        assert s.engine.active == ("lte",) or s.engine.active == ("fibre",)
        assert s.gateways(), "with every uplink down a default route remains"
        s.rounds({"lte": "ggggg"})
        assert s.state("lte") == "UP"
        assert s.engine.active == ("lte",)
    run(scenario)


def test_gateway_change_is_followed():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.facts("up1", gateway="198.51.100.3", address="198.51.100.4")
        plan = s.rec.applied[-1]
        assert s.gateways() == ["198.51.100.3"]
        assert any(r.src == "198.51.100.4/32" and r.table == 101 for r in plan.rules)
        assert not any(r.src == "198.51.100.2/32" for r in plan.rules)
    run(scenario)


def test_missing_gateway_is_down_with_that_reason():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.facts("up1", gateway=None)
        assert s.state("fibre") == "DOWN"
        assert "no gateway" in s.engine.uplinks["fibre"].health.reason
        assert s.engine.active == ("lte",)
    run(scenario)


def test_admin_force_disable_enable():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.clock.t += 30.0  # fibre has been up long enough that failback_hold does not apply
        assert s.engine.admin("lte", "force")["ok"]
        assert s.engine.active == ("lte",)
        assert s.engine.admin("lte", "auto")["ok"]
        assert s.engine.active == ("fibre",)
        assert s.engine.admin("fibre", "disable")["ok"]
        assert s.state("fibre") == "DISABLED" and s.engine.active == ("lte",)
        assert s.engine.admin("fibre", "enable")["ok"]
        assert s.state("fibre") == "INIT"
        bad = s.engine.admin("nope", "force")
        assert not bad["ok"] and "unknown uplink 'nope'" in bad["error"]
        bad = s.engine.admin("fibre", "explode")
        assert not bad["ok"] and "unknown action" in bad["error"]
    run(scenario)


def test_sustained_loss_degrades_and_moves_traffic():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        # ~64 % of attempts lost but most rounds still answered by one target: the window says DEGRADED.
        u = s.engine.uplinks["fibre"]
        for i in range(60):
            s.clock.t += 0.25
            results = [ProbeResult("icmp", "203.0.113.1", True, 0.02, 2, 1, 56, 28, None),
                       ProbeResult("dns", "203.0.113.53", False, None, 2, 2, 114, 0, "timeout")]
            s.engine.on_round(u, results, s.clock())
            s.round("lte", True, dt=0.0)
            if s.state("fibre") == "DEGRADED":
                break
        assert s.state("fibre") == "DEGRADED"
        assert s.engine.active == ("lte",)
        assert (s.clock.t - 1000.0) < 10.0, "degraded within 10 s of sustained loss"
    run(scenario)


def test_status_lists_uplinks_for_the_cli():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "gg", "lte": "gg"})
        st = s.engine.status()
        names = [u["name"] for u in st["uplinks"]]
        assert names == ["fibre", "lte"]
        fibre = st["uplinks"][0]
        assert fibre["state"] == "UP" and fibre["active"] is True
        assert fibre["rtt_ms"] == pytest.approx(12.0)
        assert fibre["loss_pct"] == 0.0
        assert fibre["probe_bytes_per_day"] > 0
        assert st["active"] == ["fibre"]
    run(scenario)


def test_an_older_round_finishing_late_does_not_step_health_back():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        u = s.engine.uplinks["fibre"]
        ok = [ProbeResult(p.type, p.target, True, 0.01, 1, 0, 28, 28, None) for p in u.cfg.probes]
        bad = [ProbeResult(p.type, p.target, False, None, 1, 1, 28, 0, "timeout") for p in u.cfg.probes]
        s.clock.t += 0.3
        s.engine.on_round(u, bad, s.clock(), seq=10)
        assert s.state("fibre") == "FALLING"
        s.clock.t += 0.1
        s.engine.on_round(u, ok, s.clock(), seq=12)  # a newer round answered: back UP
        s.clock.t += 0.05
        s.engine.on_round(u, bad, s.clock(), seq=11)  # the older one timed out afterwards
        assert s.state("fibre") == "UP"
        assert s.transitions("fibre")[-1] == ("FALLING", "UP")
    run(scenario)


def test_neighbour_cleanup_failure_does_not_keep_the_uplink_down():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})

        def boom(ifindex, address):
            raise OSError("netlink said no")
        s.rec.forget_neighbour = boom
        s.facts("up1", carrier=False)
        s.facts("up1", carrier=True)
        assert s.engine.uplinks["fibre"].health.link_ok
        s.rounds({"fibre": "ggggg"})
        assert s.state("fibre") == "UP"
    run(scenario)


def test_link_loss_clears_stale_statistics():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "ggg", "lte": "ggg"})
        s.facts("up1", carrier=False)
        st = next(u for u in s.engine.status()["uplinks"] if u["name"] == "fibre")
        assert st["loss_pct"] is None and st["rtt_ms"] is None and st["probes"] == []
        down = [e for e in s.sinks.events if isinstance(e, UplinkStateChanged) and e.new == "DOWN"][-1]
        assert down.loss_pct is None and down.rtt_ms is None
    run(scenario)


def test_renumbered_uplink_flushes_its_old_nat_entries():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.facts("up1", address="198.51.100.4")
        s.engine.reconcile()
        assert s.flushed == ["198.51.100.2"]
    run(scenario)


def test_auto_clears_whichever_force_is_set():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.clock.t += 30
        s.engine.admin("lte", "force")
        answer = s.engine.admin("fibre", "auto")
        assert answer["message"] == "auto: force on lte cleared"
        assert s.engine.forced is None and s.engine.active == ("fibre",)
    run(scenario)


def test_reload_keeps_state_refuses_routing_changes_and_survives_renumbering(tmp_path, monkeypatch):
    import linkwatch.daemon.engine as engine_mod

    class FakeMonitor:
        def __init__(self, *a, **k):
            pass

        async def run(self, on_change):
            await asyncio.Event().wait()

        def close(self):
            pass

    monkeypatch.setattr(engine_mod, "read_facts", lambda names, protocol=77: {n: FACTS[n] for n in names if n in FACTS})
    monkeypatch.setattr(engine_mod, "LinkMonitor", FakeMonitor)
    path = tmp_path / "linkwatch.toml"

    async def scenario():
        path.write_text(CONFIG)
        s = Scenario()
        monkeypatch.setattr(engine_mod, "SinkRunner", lambda sinks: s.sinks)  # hooks changed: same recorder
        s.engine.config_path = str(path)
        s.engine._start_prober = lambda u: None  # no real probes in a scenario
        s.engine._tasks["monitor"] = asyncio.ensure_future(asyncio.sleep(3600))
        s.rounds({"fibre": "g", "lte": "g"})
        s.rounds({"fibre": "bbb"})
        assert s.state("fibre") == "DOWN" and s.engine.active == ("lte",)
        # A new uplink first in the file renumbers the others' tables: their state stays.
        path.write_text(CONFIG.replace("[uplinks.fibre]", '[uplinks.dsl]\ninterface = "up3"\npriority = 3\n'
                                       '[[uplinks.dsl.probes]]\ntype = "icmp"\ntarget = "203.0.113.3"\n'
                                       "[uplinks.fibre]", 1))
        await s.engine.reload()
        assert s.state("fibre") == "DOWN" and s.state("lte") == "UP"
        assert s.engine.uplinks["fibre"].cfg.table == 102
        assert s.engine.active == ("lte",), "a reload never fails over"
        events = len(s.sinks.events)
        path.write_text("[routing]\nrule_priority = 2000\n" + CONFIG)
        await s.engine.reload()
        assert s.engine.config.routing.rule_priority == 1000
        assert s.sinks.events[-1].what == "reload_failed" and len(s.sinks.events) == events + 1
        path.write_text(CONFIG + "\n[bogus]\n")
        await s.engine.reload()
        assert s.sinks.events[-1].what == "reload_failed"
        s.engine._tasks["monitor"].cancel()

    asyncio.run(scenario())


def test_admin_actions_are_events_with_their_source_before_the_traffic_move():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        s.clock.t += 30.0
        assert s.engine.admin("lte", "force", source="web:admin@198.51.100.7")["ok"]
        kinds = [e.kind for e in s.sinks.events]
        admin = [e for e in s.sinks.events if isinstance(e, AdminAction)]
        assert [(a.action, a.uplink, a.source) for a in admin] == [("force", "lte", "web:admin@198.51.100.7")]
        assert admin[0].result == "force lte; active: lte"
        last_admin = len(kinds) - 1 - kinds[::-1].index("admin")
        assert kinds[last_admin + 1:] == ["active_changed"], "the traffic move follows the action that caused it"
    run(scenario)


def test_control_set_checks_the_source_field():
    async def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        bad = await s.engine.handle_request({"cmd": "set", "uplink": "lte", "action": "force", "source": "x\n<y>"})
        assert not bad["ok"] and "source" in bad["error"]
        bad = await s.engine.handle_request({"cmd": "set", "uplink": "lte", "action": "force", "source": 7})
        assert not bad["ok"]
        assert s.engine.forced is None, "a refused request changes nothing"
        ok = await s.engine.handle_request({"cmd": "set", "uplink": "lte", "action": "disable"})
        assert ok["ok"] and [e.source for e in s.sinks.events if isinstance(e, AdminAction)] == ["cli"]
    asyncio.run(scenario())


def test_history_samples_sum_up_each_period_per_uplink():
    def scenario():
        s = Scenario('[history]\npath = "/nonexistent/h.db"\n' + CONFIG)
        s.rounds({"fibre": "gggg", "lte": "gggg"})
        s.round("fibre", 1)  # one of two targets answered
        end = s.engine.publish_samples(5000.0, 5060.0)
        assert end == 5060.0
        got = {e.uplink: e for e in s.sinks.events if isinstance(e, UplinkSamples)}
        fibre, lte = got["fibre"], got["lte"]
        assert (fibre.start, fibre.at) == (5000.0, 5060.0)
        assert (fibre.sent, fibre.lost) == (10, 1) and fibre.loss_pct == pytest.approx(10.0)
        assert fibre.rtt_avg_ms == pytest.approx(12.0) and fibre.rtt_min_ms == pytest.approx(12.0)
        assert (lte.sent, lte.lost, lte.loss_pct) == (8, 0, 0.0)
        s.engine.publish_samples(5060.0, 5120.0)  # nothing since: an empty period, not the old one again
        empty = [e for e in s.sinks.events if isinstance(e, UplinkSamples) and e.start == 5060.0]
        assert [(e.sent, e.loss_pct, e.rtt_avg_ms) for e in empty] == [(0, None, None)] * 2
    run(scenario)


def test_transitions_are_counted_in_status():
    def scenario():
        s = Scenario()
        s.rounds({"fibre": "g", "lte": "g"})
        before = {u["name"]: u["transitions"] for u in s.engine.status()["uplinks"]}
        s.rounds({"fibre": "bbb", "lte": "ggg"})
        after = {u["name"]: u["transitions"] for u in s.engine.status()["uplinks"]}
        assert after["fibre"] - before["fibre"] == len(s.transitions("fibre")) - before["fibre"] == 2  # FALLING, DOWN
        assert after["lte"] == before["lte"]
    run(scenario)


def test_an_snmp_agent_that_cannot_listen_is_reported_and_the_engine_goes_on():
    import socket

    async def scenario():
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        try:
            s = Scenario(f'[snmp.agent]\nenabled = true\nlisten = "127.0.0.1:{port}"\ncommunity = "s3cret-ro"\n'
                         + CONFIG)
            await s.engine._start_agent()
            st = s.engine.status()["snmp"]
            assert s.engine.agent is None and "127.0.0.1" in st["agent_error"]
            assert "s3cret-ro" not in repr(s.engine.status())
            s.rounds({"fibre": "g", "lte": "g"})
            assert s.engine.active == ("fibre",), "failover decisions go on without the agent"
        finally:
            busy.close()
    asyncio.run(scenario())
