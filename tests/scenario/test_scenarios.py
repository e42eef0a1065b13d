"""Scenario tests: a config plus a sequence of netlink facts, probe rounds, admin requests and timer
ticks -> the events the core emits and the routing plan it hands to the kernel. The core is driven
through its public API only (linkwatch.core.engine.step); no kernel, no sockets, no clock."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CONFIG, FACTS, Scenario, results  # noqa: E402

from linkwatch.config import loads  # noqa: E402
from linkwatch.core.events import ActiveChanged, AdminAction, EngineEvent, UplinkSamples, UplinkStateChanged  # noqa: E402
from linkwatch.core.engine import Flush  # noqa: E402
from linkwatch.core.flows import flow_mark  # noqa: E402
from linkwatch.core.inputs import (  # noqa: E402
    LinkFacts,
    AdminRequest,
    PeriodEnd,
    ProbeResult,
    ProbeTrouble,
    Reload,
    ReloadFailed,
    RoundDone,
    Stop,
)


def test_start_blackhole_failover_and_failback_after_hold():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    assert s.state.active == ("fibre",)
    assert s.gateways() == ["198.51.100.1"]
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    assert s.state_of("fibre") == "DOWN"
    assert s.state.active == ("lte",)
    assert s.gateways() == ["198.51.100.9"]
    assert s.transitions("fibre")[-2:] == [("UP", "FALLING"), ("FALLING", "DOWN")]
    assert s.active_events()[-1] == (("fibre",), ("lte",))
    assert s.flushed == ["198.51.100.2"], "NAT entries of the failed uplink are flushed"
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    assert s.state_of("fibre") == "UP"
    assert s.state.active == ("lte",), "failback waits for failback_hold"
    assert s.outputs[-1].recheck_at is not None, "the core asks for a timer when the hold ends"
    s.wait(10.0)
    assert s.state.active == ("fibre",)
    assert s.gateways() == ["198.51.100.1"]
    assert s.flushed == ["198.51.100.2"], "a failback resets no flow: lte works, its flows stay on it"
    marks = sorted(r.table for r in s.state.routing.rules if r.fwmark)
    assert marks == [101, 102], "both work: each routes its own flows"


def test_without_sticky_flows_a_failback_resets_the_flows_of_the_uplink_it_leaves():
    s = Scenario(CONFIG.replace("[policy]\n", "[policy]\nsticky_flows = false\n"))
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    s.wait(10.0)
    assert s.state.active == ("fibre",)
    assert s.flushed == ["198.51.100.2", "198.51.100.10"]
    assert not any(r.fwmark for r in s.state.routing.rules) and s.state.routing.flows is None


def metered(grace: str = "5m") -> Scenario:
    """fibre failed over to lte (its flows reset), came back, took traffic back after the hold."""
    s = Scenario(CONFIG.replace("[uplinks.lte]\n", f'[uplinks.lte]\nmove_flows_after = "{grace}"\n'))
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    s.wait(10.0)
    assert s.state.active == ("fibre",) and s.flushed == ["198.51.100.2"], "the failback resets nothing"
    return s


def test_a_metered_backup_keeps_the_flows_left_on_it_only_for_move_flows_after():
    s = metered()
    left = s.state.uplink("lte").left_at
    assert left is not None and s.outputs[-1].recheck_at == left + 300, "the core asks for a timer at the end"
    s.wait(299.0)
    assert s.flushed == ["198.51.100.2"], "within the grace the calls stay on lte"
    s.wait(1.5)
    last = s.outputs[-1].flushes[-1]
    assert (last.uplink, last.mark, last.movable) == ("lte", flow_mark(102), True), \
        "only the movable ones: not flows that came in on lte, nor those a rule sends there"
    assert s.state.uplink("lte").left_at is None
    s.wait(600.0)
    assert len(s.flushed) == 2, "once: nothing is left behind after that"


THREE = CONFIG + """
[uplinks.dsl]
interface = "up3"
priority = 3
move_flows_after = "1m"
[[uplinks.dsl.probes]]
type = "icmp"
target = "203.0.113.3"

[[rules]]
name = "calls"
proto = "udp"
uplinks = ["lte", "dsl"]
"""


def test_flows_a_rule_fell_back_to_are_moved_after_its_first_choice_is_back():
    """Review finding 3: dsl never carries the default traffic; the calls rule falls back to it
    while lte is down and its calls are left there when lte is back (no left_at before)."""
    up3 = LinkFacts("up3", 13, True, "198.51.100.18", 29, "198.51.100.17")
    s = Scenario(THREE, facts={**FACTS, "up3": up3})
    s.rounds({"fibre": "g", "lte": "g", "dsl": "g"})
    assert s.state.active == ("fibre",) and [r.now for r in s.status().rules] == [("lte",)]
    assert "ct mark set ct mark and 0xfe00ffff or 0x00660000" in s.state.routing.flows, "lte: its home"
    s.rounds({"lte": "bbb"})
    assert [r.now for r in s.status().rules] == [("dsl",)]
    assert "ct mark set ct mark and 0xfe00ffff or 0x01670000" in s.state.routing.flows, "dsl: movable"
    assert s.state.uplink("dsl").left_at is None
    s.rounds({"lte": "ggggg"})
    assert s.state_of("lte") == "UP" and [r.now for r in s.status().rules] == [("dsl",)], \
        "review finding 6: the rule waits out failback_hold like the active set"
    s.wait(10.1)
    assert [r.now for r in s.status().rules] == [("lte",)] and s.state.active == ("fibre",)
    left = s.state.uplink("dsl").left_at
    assert left is not None and s.outputs[-1].recheck_at == left + 60
    s.wait(61.0)
    moved = [f for out in s.outputs for f in out.flushes if f.uplink == "dsl"]
    assert [(f.mark, f.movable) for f in moved] == [(flow_mark(103), True)]


def test_flows_left_behind_are_not_moved_when_traffic_comes_back_to_them_first():
    s = metered("30s")
    s.rounds({"fibre": "bbb", "lte": "ggg"})  # fibre dies again within the grace: lte carries traffic again
    assert s.state.active == ("lte",) and s.state.uplink("lte").left_at is None
    s.wait(60.0)
    assert s.flushed == ["198.51.100.2", "198.51.100.2"], "only fibre's flows, twice; lte's calls were never moved"


def test_without_move_flows_after_the_flows_left_behind_finish_where_they_started():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    s.wait(10.0)
    s.wait(3600.0)
    assert s.state.active == ("fibre",) and s.flushed == ["198.51.100.2"]
    assert s.outputs[-1].recheck_at is None, "no timer for it either"


def test_with_sticky_flows_an_uplink_that_stops_working_loses_its_rule_and_its_flows():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb", "lte": "ggg"})  # fibre dies: traffic moves, fibre's flows reset
    assert s.flushed == ["198.51.100.2"]
    assert sorted(r.table for r in s.state.routing.rules if r.fwmark) == [102]
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    s.wait(10.0)  # failback: lte's flows stay on lte ...
    s.rounds({"fibre": "g", "lte": "bbb"})  # ... until lte dies too, not carrying traffic: they reset then
    assert s.state_of("lte") == "DOWN" and s.state.active == ("fibre",)
    assert s.flushed == ["198.51.100.2", "198.51.100.10"]
    assert sorted(r.table for r in s.state.routing.rules if r.fwmark) == [101]
    assert 'oifname "up1"' in s.state.routing.flows and 'oifname "up2"' in s.state.routing.flows


def test_flows_begun_on_a_dead_last_resort_uplink_are_reset_when_traffic_leaves_it():
    """Both uplinks dead: fibre keeps the traffic as the last resort (its flows were reset when it
    stopped working, but the LAN's flows begin again through it and carry its mark). When lte works
    again and takes the traffic, those flows are reset too: else they stay on fibre (its rule comes
    back when it works again) or hang. The soak found a LAN flow stuck 9.8 s on a flapping uplink."""
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "g", "lte": "bbb"})  # lte dies first, not carrying traffic
    s.rounds({"fibre": "bbb"})  # then fibre: nothing works, fibre stays as the last resort
    assert s.state.active == ("fibre",) and s.state_of("fibre") == "DOWN"
    assert s.flushed == ["198.51.100.10", "198.51.100.2"]
    s.rounds({"lte": "ggggg"})  # lte works again: traffic moves there
    assert s.state.active == ("lte",)
    flushes = [f for o in s.outputs for f in o.flushes]
    assert flushes[2:] == [Flush("fibre", "198.51.100.2", flow_mark(101))], flushes


def test_events_come_in_the_order_the_shell_publishes_them():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    out = None
    for _ in range(3):
        out = s.round("fibre", False)
    kinds = [type(e).__name__ for e in out.events]
    assert kinds == ["UplinkStateChanged", "ActiveChanged"], "the state change first, then the traffic move"
    assert out.flushes == (Flush("fibre", "198.51.100.2", flow_mark(101)),), "all its flows, by their mark"


def test_carrier_loss_fails_over_without_waiting_for_rounds():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.set_facts("up1", carrier=False)
    assert s.state_of("fibre") == "DOWN"
    assert s.state.uplink("fibre").health.reason == "carrier lost"
    assert s.state.active == ("lte",)
    plan = s.state.routing
    assert not any(r.table == 101 and r.kind == "unicast" and r.dst == "0.0.0.0/0" for r in plan.routes), \
        "a dead uplink's table keeps only its unreachable default"
    out = s.set_facts("up1", carrier=True)
    assert out.forget_neighbours == ((11, "198.51.100.1"),), "stale gateway neighbour entry is dropped"
    assert s.state_of("fibre") == "DOWN", "carrier back is not enough: rounds must prove it"
    assert s.state.uplink("fibre").health.link_ok
    s.rounds({"fibre": "ggggg"})
    assert s.state_of("fibre") == "UP"


def test_random_single_misses_never_fail_over():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "gggbggggbbggggggggbgggg", "lte": "ggggggggggggggggggggggg"})
    assert s.state.active == ("fibre",)
    assert ("FALLING", "DOWN") not in s.transitions("fibre")
    assert s.active_events() == [((), ("fibre",))]


def test_all_down_keeps_a_route_and_first_back_takes_traffic_at_once():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb", "lte": "bbb"})
    assert s.state_of("fibre") == s.state_of("lte") == "DOWN"
    assert s.state.active in (("lte",), ("fibre",))
    assert s.gateways(), "with every uplink down a default route remains"
    assert "no uplink works" in s.state.decision.reason
    s.rounds({"lte": "ggggg"})
    assert s.state_of("lte") == "UP"
    assert s.state.active == ("lte",)


def test_gateway_change_is_followed():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.set_facts("up1", gateway="198.51.100.3", address="198.51.100.4")
    plan = s.state.routing
    assert s.gateways() == ["198.51.100.3"]
    assert any(r.src == "198.51.100.4/32" and r.table == 101 for r in plan.rules)
    assert not any(r.src == "198.51.100.2/32" for r in plan.rules)


def test_missing_gateway_is_down_with_that_reason():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.set_facts("up1", gateway=None)
    assert s.state_of("fibre") == "DOWN"
    assert "no gateway" in s.state.uplink("fibre").health.reason
    assert s.state.active == ("lte",)


def test_admin_force_disable_enable():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.t += 30.0  # fibre has been up long enough that failback_hold does not apply
    assert s.feed(AdminRequest("lte", "force")).reply["ok"]
    assert s.state.active == ("lte",)
    assert s.feed(AdminRequest("lte", "auto")).reply["ok"]
    assert s.state.active == ("fibre",)
    assert s.feed(AdminRequest("fibre", "disable")).reply["ok"]
    assert s.state_of("fibre") == "DISABLED" and s.state.active == ("lte",)
    assert not s.outputs[-1].probes["fibre"].running, "a disabled uplink is not probed"
    assert s.feed(AdminRequest("fibre", "enable")).reply["ok"]
    assert s.state_of("fibre") == "INIT"
    bad = s.feed(AdminRequest("nope", "force")).reply
    assert not bad["ok"] and "unknown uplink 'nope'" in bad["error"]
    bad = s.feed(AdminRequest("fibre", "explode")).reply
    assert not bad["ok"] and "unknown action" in bad["error"]


def test_bad_admin_requests_change_nothing():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    before = s.state
    for req in (AdminRequest("lte", "force", "x\n<y>"), AdminRequest("lte", "force", 7),
                AdminRequest("lte", "force", ""), AdminRequest("lte", "force", "a" * 101),
                AdminRequest(["lte"], "force"), AdminRequest(None, None), AdminRequest("lte", {"a": 1})):
        out = s.feed(req)
        assert out.reply["ok"] is False and out.reply["error"]
        assert out.events == () and s.state == before, f"{req} changed something"
    assert "source" in s.feed(AdminRequest("lte", "force", "x\n<y>")).reply["error"]


def degrade_fibre(s: Scenario) -> None:
    """~64 % of fibre's attempts lost but most rounds still answered by one target, lte fine: until
    the window says DEGRADED (60 rounds at most)."""
    for _ in range(60):
        s.t += 0.25
        s.seq += 1
        s.feed(RoundDone("fibre", (ProbeResult("icmp", "203.0.113.1", True, 0.02, 2, 1, 56, 28, None),
                                   ProbeResult("dns", "203.0.113.53", False, None, 2, 2, 114, 0, "timeout")), s.seq))
        s.round("lte", True, dt=0.0)
        if s.state_of("fibre") == "DEGRADED":
            break


def test_sustained_loss_degrades_and_moves_traffic():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    start = s.t
    degrade_fibre(s)
    assert s.state_of("fibre") == "DEGRADED"
    assert s.state.active == ("lte",)
    assert s.t - start < 10.0, "degraded within 10 s of sustained loss"


def test_status_lists_uplinks_for_the_cli():
    s = Scenario()
    s.rounds({"fibre": "gg", "lte": "gg"})
    st = s.status()
    assert [u.name for u in st.uplinks] == ["fibre", "lte"]
    fibre = st.uplinks[0]
    assert fibre.state == "UP" and fibre.active is True and fibre.usable is True
    assert fibre.rtt_ms == pytest.approx(12.0)
    assert fibre.loss_pct == 0.0
    assert fibre.probe_bytes_per_day > 0
    assert st.active == ("fibre",)
    assert (fibre.interval_ms, st.uplinks[1].interval_ms) == (250, 10000), "active and standby intervals"


def test_an_older_round_finishing_late_does_not_step_health_back():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    probes = s.state.uplink("fibre").cfg.probes
    s.t += 0.3
    s.feed(RoundDone("fibre", results(probes, 0), 10))
    assert s.state_of("fibre") == "FALLING"
    s.t += 0.1
    s.feed(RoundDone("fibre", results(probes, 2), 12))  # a newer round answered: back UP
    s.t += 0.05
    s.feed(RoundDone("fibre", results(probes, 0), 11))  # the older one timed out afterwards
    assert s.state_of("fibre") == "UP"
    assert s.transitions("fibre")[-1] == ("FALLING", "UP")


def test_link_loss_clears_stale_statistics():
    s = Scenario()
    s.rounds({"fibre": "ggg", "lte": "ggg"})
    s.set_facts("up1", carrier=False)
    fibre = s.status().uplink("fibre")
    assert fibre.loss_pct is None and fibre.rtt_ms is None and fibre.probes == ()
    down = [e for e in s.events if isinstance(e, UplinkStateChanged) and e.new == "DOWN"][-1]
    assert down.loss_pct is None and down.rtt_ms is None


def test_a_round_that_lands_after_the_link_went_away_is_ignored():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.set_facts("up1", carrier=False)
    rounds = s.state.uplink("fibre").rounds
    s.round("fibre", True)
    assert s.state.uplink("fibre").rounds == rounds and s.state_of("fibre") == "DOWN"


def test_renumbered_uplink_flushes_its_old_nat_entries():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    out = s.set_facts("up1", address="198.51.100.4")
    # by the old address: flows that start on the new one carry the same flow mark and must stay
    assert out.flushes == (Flush("fibre", "198.51.100.2", None),)
    assert out.probes["fibre"].source == "198.51.100.4", "the probes move to the new address"


def test_no_flush_when_flush_conntrack_is_off():
    s = Scenario("[policy]\nflush_conntrack = false\n" + CONFIG.replace("[policy]\n", ""))
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    assert s.state.active == ("lte",) and s.flushed == []


def test_auto_clears_whichever_force_is_set():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.t += 30
    s.feed(AdminRequest("lte", "force"))
    answer = s.feed(AdminRequest("fibre", "auto")).reply
    assert answer["message"] == "auto: force on lte cleared"
    assert s.state.forced is None and s.state.active == ("fibre",)


def test_reload_keeps_state_refuses_routing_changes_and_survives_renumbering():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb"})
    assert s.state_of("fibre") == "DOWN" and s.state.active == ("lte",)
    # A new uplink first in the file renumbers the others' tables: their state stays.
    renumbered = CONFIG.replace("[uplinks.fibre]", '[uplinks.dsl]\ninterface = "up3"\npriority = 3\n'
                                '[[uplinks.dsl.probes]]\ntype = "icmp"\ntarget = "203.0.113.3"\n'
                                "[uplinks.fibre]", 1)
    out = s.feed(Reload(loads(renumbered), dict(FACTS)))
    assert s.state_of("fibre") == "DOWN" and s.state_of("lte") == "UP"
    assert s.state.uplink("fibre").cfg.table == 102
    assert s.state_of("dsl") == "DOWN" and "interface up3 missing" in s.state.uplink("dsl").health.reason
    assert s.state.active == ("lte",), "a reload never fails over"
    assert out.events[-1].what == "reloaded" and "rebuilt=['dsl']" in out.events[-1].detail
    assert sorted(out.probes) == ["dsl", "fibre", "lte"]
    assert {r.table for r in s.state.routing.routes} >= {101, 102, 103}
    before = s.state
    out = s.feed(Reload(loads("[routing]\nrule_priority = 2000\n" + CONFIG), dict(FACTS)))
    assert s.state.config.routing.rule_priority == 1000 and s.state.config is before.config
    assert [(e.what, e.detail) for e in out.events] == [
        ("reload_failed", "[control] and [routing] changes need a restart")]
    out = s.feed(ReloadFailed("linkwatch.toml: [bogus]: unknown section"))
    assert out.events[-1].what == "reload_failed" and s.state.config is before.config


def test_reload_that_removes_the_active_uplink_moves_traffic_and_flushes_it():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    without_fibre = CONFIG.split("[uplinks.fibre]")[0] + "[uplinks.lte]" + CONFIG.split("[uplinks.lte]")[1]
    s.feed(AdminRequest("fibre", "force"))
    out = s.feed(Reload(loads(without_fibre), dict(FACTS)))
    assert s.state.active == ("lte",) and s.state.forced is None
    assert Flush("fibre", "198.51.100.2", flow_mark(101)) in out.flushes
    assert [u.name for u in s.state.uplinks] == ["lte"]


def marked_flushes(out) -> set[tuple[str, int]]:
    return {(f.uplink, f.mark) for f in out.flushes}


def test_a_reload_that_renumbers_tables_resets_the_flows_whose_mark_moved_to_another_uplink():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    # dsl above fibre: fibre 101 -> 102 (lte's old mark), lte 102 -> 103. A flow of fibre's would keep
    # mark 101, which no rule routes now, and lte's flows would carry fibre's new mark: both go.
    above = CONFIG.replace("[uplinks.fibre]", '[uplinks.dsl]\ninterface = "up3"\npriority = 3\n'
                           '[[uplinks.dsl.probes]]\ntype = "icmp"\ntarget = "203.0.113.3"\n[uplinks.fibre]', 1)
    out = s.feed(Reload(loads(above), dict(FACTS)))
    assert s.state.active == ("fibre",) and s.state_of("lte") == "UP"
    assert {("fibre", flow_mark(101)), ("lte", flow_mark(102))} <= marked_flushes(out)
    assert {f.mark for f in out.flushes} == {flow_mark(101), flow_mark(102)}  # (dsl, dead: 101 too)
    # the same file again: nothing moves, nothing is reset
    assert s.feed(Reload(loads(above), dict(FACTS))).flushes == ()


def test_a_reload_that_renames_an_uplink_on_the_same_interface_and_table_keeps_its_flows():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    renamed = CONFIG.replace("[uplinks.fibre]", "[uplinks.fiber]").replace("[[uplinks.fibre.", "[[uplinks.fiber.")
    renamed = renamed.replace("[uplinks.fibre.", "[uplinks.fiber.")
    out = s.feed(Reload(loads(renamed), dict(FACTS)))
    assert s.state.uplink("fiber") is not None and s.state.uplink("fibre") is None
    assert out.flushes == (), "its mark still routes its flows through up1"


def test_a_reload_that_removes_a_standby_or_sticky_flows_resets_the_flows_it_strands():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    without_lte = CONFIG.split("[uplinks.lte]")[0]  # lte held flows left behind by a failback
    assert marked_flushes(s.feed(Reload(loads(without_lte), dict(FACTS)))) == {("lte", flow_mark(102))}
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    plain = CONFIG.replace("[policy]\n", "[policy]\nsticky_flows = false\n")
    out = s.feed(Reload(loads(plain), dict(FACTS)))
    # no fwmark rule routes lte's flows now: they would leave through fibre with lte's address
    assert marked_flushes(out) == {("lte", flow_mark(102))} and s.state.routing.flows is None


def test_an_uplink_found_dead_after_a_restart_loses_the_flows_marked_before_it():
    s = Scenario()
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    assert s.state_of("fibre") == "DOWN" and s.state.active == ("lte",)
    assert ("fibre", flow_mark(101)) in {(f.uplink, f.mark) for out in s.outputs for f in out.flushes}
    gone = Scenario(facts={"up2": FACTS["up2"]})  # fibre's interface is missing at start: DOWN at once
    assert [(f.uplink, f.mark) for f in gone.outputs[0].flushes] == [("fibre", flow_mark(101))]


def test_admin_actions_are_events_with_their_source_before_the_traffic_move():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.t += 30.0
    out = s.feed(AdminRequest("lte", "force", "web:admin@198.51.100.7"))
    assert out.reply == {"ok": True, "message": "force lte", "active": ["lte"]}
    assert [type(e) for e in out.events] == [AdminAction, ActiveChanged], \
        "the traffic move follows the action that caused it"
    admin = out.events[0]
    assert (admin.action, admin.uplink, admin.source) == ("force", "lte", "web:admin@198.51.100.7")
    assert admin.result == "force lte; active: lte"
    assert out.events[1].reason.startswith("admin force lte: ")


def test_history_samples_sum_up_each_period_per_uplink():
    s = Scenario('[history]\npath = "/nonexistent/h.db"\n' + CONFIG)
    s.feed(PeriodEnd(4940.0, 5000.0))  # the period of the start
    s.rounds({"fibre": "gggg", "lte": "gggg"})
    s.round("fibre", 1)  # one of two targets answered
    out = s.feed(PeriodEnd(5000.0, 5060.0))
    got = {e.uplink: e for e in out.events if isinstance(e, UplinkSamples)}
    fibre, lte = got["fibre"], got["lte"]
    assert (fibre.start, fibre.at) == (5000.0, 5060.0)
    assert (fibre.sent, fibre.lost) == (10, 1) and fibre.loss_pct == pytest.approx(10.0)
    assert fibre.rtt_avg_ms == pytest.approx(12.0) and fibre.rtt_min_ms == pytest.approx(12.0)
    assert (lte.sent, lte.lost, lte.loss_pct) == (8, 0, 0.0)
    out = s.feed(PeriodEnd(5060.0, 5120.0))  # nothing since: an empty period, not the old one again
    assert [(e.sent, e.loss_pct, e.rtt_avg_ms) for e in out.events] == [(0, None, None)] * 2


def test_transitions_are_counted_in_status():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    before = {u.name: u.transitions for u in s.status().uplinks}
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    after = {u.name: u.transitions for u in s.status().uplinks}
    assert after["fibre"] - before["fibre"] == 2 == len(s.transitions("fibre")) - before["fibre"]  # FALLING, DOWN
    assert after["lte"] == before["lte"]
    assert s.status().uplink("fibre").downs == 1


def test_probe_trouble_shows_in_status_until_it_clears():
    s = Scenario()
    s.feed(ProbeTrouble("fibre", "no permission for ICMP sockets"))
    assert s.status().uplink("fibre").probe_error == "no permission for ICMP sockets"
    s.feed(ProbeTrouble("fibre", None))
    assert s.status().uplink("fibre").probe_error is None


def test_start_up_is_announced_as_such_not_as_an_outage():
    s = Scenario()
    first = s.outputs[0]
    assert [type(e) for e in first.events] == [EngineEvent, ActiveChanged]
    started, active = first.events
    assert started.what == "started"
    assert active.reason == "start: not probed yet; fibre (priority 1) until the probes answer"
    assert "no uplink works" not in active.reason
    assert first.routing is not None and first.probes["fibre"].running


def test_restart_adopts_the_kernels_active_uplink_without_a_move():
    s = Scenario(kernel_active=(("198.51.100.9", 12),))
    assert s.state.active == ("lte",) and s.active_events() == []
    assert s.gateways() == ["198.51.100.9"], "the plan keeps the route the kernel has"
    s.rounds({"lte": "g", "fibre": "g"})
    assert s.state.active == ("lte",), "fibre just came up: the failback hold applies"


def test_stop_is_an_event():
    s = Scenario()
    assert [(e.kind, e.what) for e in s.feed(Stop()).events] == [("engine", "stopped")]


def test_restart_waits_for_the_unprobed_preferred_uplink_on_a_real_clock():
    """The start-up grace counts from the engine's start, not from monotonic time 0: on a router
    up for days (monotonic time large) it used to be over before it began."""
    s = Scenario(kernel_active=(("198.51.100.9", 12),), t=400_000.0)
    s.round("fibre", True)  # the preferred uplink answers first
    assert s.state.active == ("lte",), "the kernel's lte is presumed to work until probed"
    s.round("lte", True)
    assert s.state.active == ("lte",) and "failback to fibre" in s.state.decision.reason
    s.wait(10.0)
    assert s.state.active == ("fibre",), "then the failback hold, as after any recovery"
    s2 = Scenario(kernel_active=(("198.51.100.9", 12),), t=400_000.0)
    s2.round("lte", True)
    assert s2.state.active == ("lte",) and "waiting for fibre to be probed" in s2.state.decision.reason


def test_a_policy_rule_follows_its_uplinks_health_in_the_plan_and_the_status():
    s = Scenario(CONFIG + '\n[[rules]]\nname = "calls"\nproto = "udp"\ndport = 5060\nuplinks = ["lte", "fibre"]\n'
                 '\n[[rules]]\nname = "nas"\nsrc = "192.168.1.20"\nuplinks = ["lte"]\nfallback = "drop"\n')
    s.rounds({"fibre": "g", "lte": "g"})
    assert [(r.name, r.now) for r in s.status().rules] == [("calls", ("lte",)), ("nas", ("lte",))]
    assert "udp dport { 5060 } ct mark set ct mark and 0xfe00ffff or 0x00660000" in s.state.routing.flows
    s.rounds({"fibre": "g", "lte": "bbb"})
    assert s.state_of("lte") == "DOWN"
    assert [(r.name, r.now) for r in s.status().rules] == [("calls", ("fibre",)), ("nas", ())]
    assert "udp dport { 5060 } ct mark set ct mark and 0xfe00ffff or 0x01650000" in s.state.routing.flows, \
        "fibre: the rule's fallback (movable: left there when lte is back)"
    assert "ip saddr { 192.168.1.20/32 } drop" in s.state.routing.flows
    assert s.state.active == ("fibre",), "rules do not change which uplink carries the rest"
    assert s.status().to_dict()["rules"][0] == {"name": "calls", "matches": "udp dport 5060",
                                                "uplinks": ["lte", "fibre"], "balance": False,
                                                "fallback": "default", "now": ["fibre"], "applied": True}


def test_an_uplink_a_rule_sends_flows_to_is_watched_like_the_active_one():
    """A standby uplink is probed every standby_interval (10 s): one that carries a rule's flows
    must be probed and read like the active one, or its death would strand them for many seconds."""
    s = Scenario(CONFIG + '\n[[rules]]\nproto = "udp"\ndport = 5060\nuplinks = ["lte", "fibre"]\n')
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    assert s.state.active == ("fibre",) and s.state.carrying == ("fibre", "lte")
    plan = s.outputs[-1].probes["lte"]
    assert plan.interval == s.state.uplink("lte").cfg.health.interval, "not the standby interval"
    assert not plan.rotate and plan.counter_interval <= 0.25
    without = Scenario()
    without.rounds({"fibre": "g", "lte": "g"})
    without.wait(12.0)
    assert without.outputs[-1].probes["lte"].interval == without.state.uplink("lte").cfg.health.standby_interval


def test_a_point_to_point_uplink_without_a_gateway_works_disappears_and_comes_back_renumbered():
    """LTE raw-IP, PPP, a VPN tun: no next hop to learn. It carries traffic with "default dev X";
    when the interface goes away traffic moves at once; it comes back with a new ifindex and
    address, and the engine follows without a restart."""
    ptp = LinkFacts("up1", 21, True, "10.64.0.2", 32, None, pointopoint=True)
    s = Scenario(facts={"up1": ptp, "up2": FACTS["up2"]})
    s.rounds({"fibre": "g", "lte": "g"})
    assert s.state_of("fibre") == "UP" and s.state.active == ("fibre",)
    default = [r for r in s.state.routing.routes if r.table == 100 and r.dst == "0.0.0.0/0"]
    assert [(r.gateway, r.ifindex, r.scope) for r in default] == [(None, 21, 253)], "default dev up1 scope link"
    s.set_facts("up1", ifindex=None, carrier=False, address=None, prefixlen=None)  # the session drops
    assert s.state_of("fibre") == "DOWN" and s.state.active == ("lte",)
    out = s.set_facts("up1", ifindex=22, carrier=True, address="10.64.0.6", prefixlen=32)
    assert Flush("fibre", "10.64.0.2", None) in out.flushes, "flows NATed to the old address are reset"
    assert out.probes["fibre"].source == "10.64.0.6" and out.probes["fibre"].running
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    s.wait(10.0)
    assert s.state.active == ("fibre",)
    assert [r.ifindex for r in s.state.routing.routes if r.table == 100 and r.dst == "0.0.0.0/0"] == [22]
    eth = LinkFacts("up1", 21, True, "10.64.0.2", 24, None)  # not point-to-point: it needs a gateway
    s2 = Scenario(facts={"up1": eth, "up2": FACTS["up2"]})
    s2.rounds({"fibre": "g", "lte": "g"})
    assert s2.state.uplink("fibre").health.reason.startswith("no gateway")


CALLS_VIA_FIBRE = CONFIG + '\n[[rules]]\nname = "calls"\nproto = "udp"\nuplinks = ["fibre", "lte"]\n'


def rule_now(s: Scenario) -> tuple[str, ...]:
    return s.status().rules[0].now


def test_a_rule_prefers_a_healthy_uplink_to_its_degraded_first_choice():
    """Review finding 6: a rule kept sending flows to a DEGRADED first choice (the active set had
    moved away from it)."""
    s = Scenario(CALLS_VIA_FIBRE)
    s.rounds({"fibre": "g", "lte": "g"})
    assert rule_now(s) == ("fibre",)
    degrade_fibre(s)  # most attempts lost: fibre is DEGRADED, still working
    assert s.state_of("fibre") == "DEGRADED" and s.state.active == ("lte",)
    assert rule_now(s) == ("lte",), "healthy before DEGRADED, as for the active set"
    assert "ct mark set ct mark and 0xfe00ffff or 0x01660000" in s.state.routing.flows.split("# rule calls")[1]


def test_a_rule_keeps_a_flapping_first_choice_out_like_the_active_set_does():
    s = Scenario(CALLS_VIA_FIBRE)
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    changes = []
    for _ in range(4):
        s.rounds({"fibre": "bbbb", "lte": "gggg"})
        s.rounds({"fibre": "ggggg", "lte": "ggggg"})
        s.wait(12.0)  # past failback_hold each time: only the dampening keeps fibre out
        changes.append(rule_now(s))
    assert s.state.uplink("fibre").penalty.dampened and s.state_of("fibre") == "UP"
    assert s.state.active == ("lte",) and rule_now(s) == ("lte",), changes


def test_a_rule_that_cannot_be_applied_says_so_in_the_status():
    """Without libnftables the engine runs with sticky flows off (daemon.engine.without_unavailable):
    the rules do nothing, and the status said their flows were dropped."""
    from dataclasses import replace

    s = Scenario(CALLS_VIA_FIBRE.replace('uplinks = ["fibre", "lte"]', 'uplinks = ["fibre"]\nfallback = "drop"'))
    s.rounds({"fibre": "g", "lte": "g"})
    assert [(r.now, r.applied) for r in s.status().rules] == [(("fibre",), True)]
    p = s.state.config.policy
    s.state = replace(s.state, config=replace(s.state.config, policy=replace(p, sticky_flows=False)))
    assert [(r.now, r.applied) for r in s.status().rules] == [((), False)]


def test_a_reload_that_rebuilds_a_rules_flapping_first_choice_does_not_pardon_it():
    """Review of the fixes: the rebuilt uplink (INIT) became the rule's choice, and once UP it was
    no failback to hold and no newcomer to dampen."""
    s = Scenario(CALLS_VIA_FIBRE)
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    for _ in range(4):
        s.rounds({"fibre": "bbbb", "lte": "gggg"})
        s.rounds({"fibre": "ggggg", "lte": "ggggg"})
        s.wait(12.0)
    assert s.state.uplink("fibre").penalty.dampened and rule_now(s) == ("lte",)
    heavier = CALLS_VIA_FIBRE.replace("priority = 1\n", "priority = 1\nweight = 2\n", 1)  # fibre rebuilt
    s.feed(Reload(loads(heavier), dict(FACTS)))
    assert rule_now(s) == ("lte",)
    s.rounds({"fibre": "ggg", "lte": "ggg"})
    assert s.state_of("fibre") == "UP" and s.state.active == ("lte",) and rule_now(s) == ("lte",)


def test_a_reload_that_rebuilds_a_metered_uplink_keeps_its_countdown():
    s = metered()
    left = s.state.uplink("lte").left_at
    shorter = CONFIG.replace("[uplinks.lte]\n", '[uplinks.lte]\nmove_flows_after = "1m"\n')
    s.feed(Reload(loads(shorter), dict(FACTS)))
    assert s.state.uplink("lte").left_at == left and s.outputs[-1].recheck_at == left + 60
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(61.0)
    assert [(f.uplink, f.movable) for out in s.outputs for f in out.flushes][-1] == ("lte", True)


def test_a_restart_with_renumbered_or_removed_uplinks_resets_the_flows_marked_by_the_previous_run():
    """Second review, finding 3: only a reload compared the marks; a restart with an edited config
    left flows whose mark now routes them through another uplink (or none)."""
    from linkwatch.core.inputs import Start

    s = Scenario()  # fibre up1 101, lte up2 102
    same = {"up1": flow_mark(101), "up2": flow_mark(102)}
    assert s.feed(Start(dict(FACTS), (), "restart", flow_marks=same)).flushes == (), "the same config: nothing"
    before = {"up1": flow_mark(102), "up2": flow_mark(103), "eth9": flow_mark(101)}  # a dsl above, since removed
    out = s.feed(Start(dict(FACTS), (), "restart", flow_marks=before))
    assert sorted((f.uplink, f.mark) for f in out.flushes) == [
        ("eth9", flow_mark(101)), ("fibre", flow_mark(102)), ("lte", flow_mark(103))]
