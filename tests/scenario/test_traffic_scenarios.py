"""Scenarios of issue 10 through the core's public API, with made-up time: a busy uplink stays put,
the LAN's traffic detects a blackhole fast, a flapping uplink gets traffic back at most once, a
metered standby uplink is probed on a budget, quotas raise events once a month."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CONFIG, FACTS, Scenario, results  # noqa: E402

from linkwatch.core.events import ActiveChanged, QuotaReached, UplinkDampened, UplinkStateChanged  # noqa: E402
from linkwatch.core.states import State  # noqa: E402
from linkwatch.core.inputs import Counters, LinkCounters, ProbeResult, RoundDone  # noqa: E402


class Wire:
    """Interface counters that grow as the test says, read every ``step`` seconds."""

    def __init__(self, s: Scenario):
        self.s = s
        self.c = {name: [0, 0, 0, 0] for name in FACTS}

    def run(self, seconds: float, step: float = 0.05, rx=None, tx=None, rounds: dict | None = None) -> None:
        """Advance ``seconds``: each read adds rx[iface]/tx[iface] packets (1000 bytes each);
        ``rounds``: {uplink: (every, answered)} probe rounds fed on the way."""
        rx, tx, rounds = rx or {}, tx or {}, rounds or {}
        next_round = {u: self.s.t + every for u, (every, _) in rounds.items()}
        end = self.s.t + seconds
        while self.s.t < end - 1e-9:
            self.s.t = round(self.s.t + step, 6)
            for iface in self.c:
                self.c[iface][0] += rx.get(iface, 0)
                self.c[iface][1] += tx.get(iface, 0)
                self.c[iface][2] += 1000 * rx.get(iface, 0)
                self.c[iface][3] += 1000 * tx.get(iface, 0)
            self.s.feed(Counters({i: LinkCounters(*v) for i, v in self.c.items()}))
            for uplink, (every, answered) in rounds.items():
                if self.s.t >= next_round[uplink] - 1e-9:
                    next_round[uplink] += every
                    started = self.s.t - 0.25
                    self.s.seq += 1
                    probes = self.s.state.uplink(uplink).cfg.probes
                    got = answered(self.s.t) if callable(answered) else answered
                    res = got if isinstance(got, tuple) else results(probes, got)
                    self.s.feed(RoundDone(uplink, res, self.s.seq, started=started))
            due = self.s.outputs[-1].recheck_at
            if due is not None and due <= self.s.t:
                self.s.wait(0)


def settled() -> tuple[Scenario, Wire]:
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    w = Wire(s)
    w.run(1.0, rx={"up1": 5}, tx={"up1": 5}, rounds={"fibre": (0.25, 2)})  # baseline: reads and good rounds
    assert s.state.active == ("fibre",)
    return s, w


def slow_replies(queue: float):
    """Rounds on a link whose replies wait ``queue`` seconds in a modem queue: none in time, and a
    late one for the round sent ``queue`` seconds before (every probe answers, late)."""
    seen: list[float] = []

    def rounds(t: float):
        seen.append(t)
        late = 1 if any(abs(t - queue - x) < 0.13 for x in seen) else 0
        return tuple(ProbeResult("icmp", target, False, None, 2, 2, 56, 0, "timeout", late=late,
                                 late_rtt=queue if late else None) for target in ("203.0.113.1", "203.0.113.53"))
    return rounds


@pytest.mark.parametrize("queue", [0.4, 1.0, 2.0])
def test_a_busy_uplink_whose_probes_time_out_stays_up_while_traffic_comes_in(queue):
    s, w = settled()
    # a saturated download: thousands of packets come in, the probes' replies sit in the modem's queue
    w.run(30.0, rx={"up1": 400}, tx={"up1": 200}, rounds={"fibre": (0.25, slow_replies(queue)), "lte": (10.0, 2)})
    assert s.state_of("fibre") == "UP" and s.state.active == ("fibre",)
    assert ("UP", "FALLING") not in s.transitions("fibre")[-3:]
    assert s.state.uplink("fibre").slow_rounds > 100
    assert s.flushed == []


def test_the_lans_traffic_detects_a_blackhole_in_a_fraction_of_a_second():
    s, w = settled()
    w.run(2.0, rx={"up1": 3}, tx={"up1": 3}, rounds={"fibre": (0.25, 2)})  # a video call both ways
    start = s.t
    w.run(0.3, rx={"up1": 0}, tx={"up1": 3})  # blackhole: the call goes on sending, nothing back
    plan = s.outputs[-1].probes["fibre"]
    assert plan.burst == 1, "suspect: the core asked for a burst"
    assert s.outputs[-1].probes["lte"].interval == 0.1, "the standby uplink is probed at full rate now"
    s.t += 0.15  # the burst's timeout
    s.seq += 1
    s.feed(RoundDone("fibre", results(s.state.uplink("fibre").cfg.probes, 0), s.seq, burst=True))
    assert s.state_of("fibre") == "DOWN" and s.state.active == ("lte",)
    down = [e for e in s.events if isinstance(e, UplinkStateChanged) and e.new == "DOWN"][-1]
    assert "nothing came in for" in down.reason
    assert s.t - start < 0.5


def test_one_way_traffic_is_not_a_failure():
    s, w = settled()
    # an upload-only UDP stream (no replies) on a working uplink: suspicion, a burst that is answered
    w.run(0.3, rx={"up1": 0}, tx={"up1": 10})
    assert s.outputs[-1].probes["fibre"].burst == 1
    s.seq += 1
    s.feed(RoundDone("fibre", results(s.state.uplink("fibre").cfg.probes, 2), s.seq, burst=True))
    w.run(10.0, rx={"up1": 0}, tx={"up1": 10}, rounds={"fibre": (0.25, 2)})
    assert s.state_of("fibre") == "UP" and s.state.active == ("fibre",)
    assert s.outputs[-1].probes["fibre"].burst <= 11, "at most one burst a second on one-way traffic"


def test_a_minute_of_one_way_traffic_costs_few_bursts_and_little_standby_probing():
    """Review: an upload with no replies raised a suspicion (and a burst, and full-rate rounds on
    the standby) about once a second: 54 a minute, ~25 MB/day on a metered standby. Answered bursts
    in a row back off (1, 2, 4 ... 60 s of quiet)."""
    s, w = settled()
    c = w.c["up1"]
    asked = s.outputs[-1].probes["fibre"].burst
    doubt_reads = reads = 0
    next_round = s.t + 0.25
    while reads < 1200:  # 60 s of reads every 50 ms
        s.t = round(s.t + 0.05, 6)
        reads += 1
        c[1] += 10  # the upload: 200 packets/s out, nothing back but the probes' replies
        if s.t >= next_round - 1e-9:
            next_round += 0.25
            c[0] += 2
            s.seq += 1
            s.feed(RoundDone("fibre", results(s.state.uplink("fibre").cfg.probes, 2), s.seq, started=s.t - 0.25))
        s.feed(Counters({i: LinkCounters(*v) for i, v in w.c.items()}))
        plan = s.outputs[-1].probes
        if plan["fibre"].burst != asked:  # the shell sends the burst; it is answered
            asked = plan["fibre"].burst
            c[0] += 2
            s.seq += 1
            s.feed(RoundDone("fibre", results(s.state.uplink("fibre").cfg.probes, 2), s.seq, burst=True))
        doubt_reads += s.outputs[-1].probes["lte"].interval < 1.0
    bursts = s.state.uplink("fibre").bursts
    assert s.state_of("fibre") == "UP" and s.state.active == ("fibre",)
    assert bursts <= 8, f"{bursts} bursts in a minute of one-way traffic"
    assert doubt_reads * 0.05 <= 3.0, f"the standby was probed at full rate for {doubt_reads * 0.05:.1f} s"


def test_while_the_lans_traffic_proves_the_active_uplink_it_is_probed_less():
    s, w = settled()
    w.run(3.0, rx={"up1": 5}, tx={"up1": 5})
    assert s.outputs[-1].probes["fibre"].interval == 2.0
    assert s.status().uplink("fibre").proven
    w.run(3.0, rx={"up1": 0}, tx={"up1": 0})  # the LAN goes idle
    assert s.outputs[-1].probes["fibre"].interval == 0.25 and not s.status().uplink("fibre").proven


def test_flapping_one_second_down_one_up_for_a_minute_moves_traffic_at_most_twice():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    start = s.t
    before = len(s.active_events())
    while s.t - start < 60.0:
        down = int((s.t - start) // 1.0) % 2 == 0
        s.round("fibre", not down, dt=0.1)
        s.round("lte", True, dt=0.0)
        s.wait(0)
    moves = s.active_events()[before:]
    assert len(moves) <= 2, moves
    damp = [e for e in s.events if isinstance(e, UplinkDampened)]
    assert damp and damp[0].uplink == "fibre" and damp[0].dampened
    assert s.status().uplink("fibre").dampened
    s.rounds({"fibre": "g" * 200, "lte": "g" * 200}, dt=1.0)  # 100 s of calm: the penalty decays ...
    s.wait(300.0)
    assert not s.state.uplink("fibre").penalty.dampened
    assert s.state.active == ("fibre",), "... and fibre gets its traffic back"
    damp = [(e.uplink, e.dampened) for e in s.events if isinstance(e, UplinkDampened)]
    assert damp == [("fibre", True), ("fibre", False)], "the release is told too (log, hooks, trap, history)"


def flapped() -> Scenario:
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    for _ in range(4):
        s.rounds({"fibre": "bbbb", "lte": "gggg"})
        s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    assert s.state.uplink("fibre").penalty.dampened
    return s


def test_one_outage_adds_one_to_the_flap_penalty():
    """Review: UP -> FALLING added 0.5 and FALLING -> DOWN 1 more: an outage counted 1.5."""
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    s.rounds({"fibre": "bbbb", "lte": "gggg"}, dt=0.001)
    assert s.state_of("fibre") == "DOWN"
    assert s.state.uplink("fibre").penalty.value == pytest.approx(1.0, abs=0.01)


def test_a_reload_that_switches_dampening_off_releases_a_dampened_uplink_at_once():
    from linkwatch.config import loads
    from linkwatch.core.inputs import Reload

    s = flapped()
    s.feed(Reload(loads(CONFIG.replace("[policy]\n", "[policy]\ndampening = false\n")), dict(FACTS)))
    assert not s.state.uplink("fibre").penalty.dampened
    assert [(e.uplink, e.dampened) for e in s.events if isinstance(e, UplinkDampened)][-1] == ("fibre", False)


def test_a_reload_that_rebuilds_a_dampened_uplink_keeps_it_dampened():
    from linkwatch.config import loads
    from linkwatch.core.inputs import Reload

    s = flapped()
    s.feed(Reload(loads(CONFIG.replace('interface = "up1"', 'interface = "up1"\nweight = 3', 1)), dict(FACTS)))
    assert s.state.uplink("fibre").cfg.weight == 3, "rebuilt"
    assert s.state.uplink("fibre").penalty.dampened


def test_a_standby_uplink_rotates_its_targets_at_the_standby_interval():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    plan = s.outputs[-1].probes["lte"]
    assert plan.rotate and plan.interval == 10.0
    assert not s.outputs[-1].probes["fibre"].rotate


def test_a_rotating_standby_with_one_dead_target_does_not_dip():
    """Review: one target per round, one of two targets dead: every second round failed, a dip
    (UP -> FALLING -> UP) each time, 40 state changes in 10 minutes and a growing flap penalty."""
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    before = len([e for e in s.events if isinstance(e, UplinkStateChanged) and e.uplink == "lte"])
    probes = s.state.uplink("lte").cfg.probes
    for i in range(60):  # 10 minutes at the 10 s standby interval, the targets in turn
        s.t += 10.0
        s.seq += 1
        target = probes[i % 2]
        ok = i % 2 == 0  # the second target is dead
        res = (ProbeResult(target.type, target.target, ok, 0.02 if ok else None, 1, 0 if ok else 1, 28,
                           28 if ok else 0, None if ok else "timeout"),)
        s.feed(RoundDone("lte", res, s.seq, started=s.t - 0.25))
        s.wait(0)
    changes = [e for e in s.events if isinstance(e, UplinkStateChanged) and e.uplink == "lte"][before:]
    assert changes == [] and s.state_of("lte") == "UP"
    assert s.state.uplink("lte").penalty.value == 0.0
    # both targets dead: it does go DOWN, a rotation or two later
    for i in range(6):
        s.t += 10.0
        s.seq += 1
        target = probes[i % 2]
        s.feed(RoundDone("lte", (ProbeResult(target.type, target.target, False, None, 1, 1, 28, 0, "timeout"),),
                         s.seq, started=s.t - 0.25))
    assert s.state_of("lte") in ("FALLING", "DOWN")


def test_an_active_degraded_uplink_does_not_keep_the_standby_at_full_rate():
    from linkwatch.core.engine import in_doubt

    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    fibre = s.state.uplink("fibre")
    for state in (State.DEGRADED, State.RISING, State.INIT):
        st = replace(s.state, uplinks=tuple(replace(u, health=replace(u.health, state=state)) if u is fibre else u
                                            for u in s.state.uplinks))
        assert not in_doubt(st), state
    for state in (State.FALLING, State.DOWN):
        st = replace(s.state, uplinks=tuple(replace(u, health=replace(u.health, state=state)) if u is fibre else u
                                            for u in s.state.uplinks))
        assert in_doubt(st), state
    assert in_doubt(replace(s.state, uplinks=tuple(replace(u, suspect_since=s.t) if u is fibre else u
                                                   for u in s.state.uplinks)))


def test_quota_thresholds_are_raised_once_each():
    text = CONFIG.replace('[uplinks.lte]\ninterface = "up2"', '[uplinks.lte]\ninterface = "up2"\nquota = "1MB"\n'
                          'quota_warn = [50, 100]')
    s = Scenario(text)
    w = Wire(s)
    for _ in range(12):
        w.run(0.1, step=0.1, rx={"up2": 100})  # 100 kB a read
    got = [(e.uplink, e.percent) for e in s.events if isinstance(e, QuotaReached)]
    assert got == [("lte", 50), ("lte", 100)]
    st = s.status().uplink("lte")
    assert st.quota_bytes == 1_000_000 and st.month_bytes >= 1_000_000 and st.quota_pct >= 100


def test_a_restart_does_not_raise_the_quota_thresholds_the_month_had_passed_again():
    text = CONFIG.replace('[uplinks.lte]\ninterface = "up2"', '[uplinks.lte]\ninterface = "up2"\nquota = "1MB"\n'
                          'quota_warn = [50, 100]')
    s = Scenario(text, month_bytes={"lte": 700_000})  # 70 % before the restart (from the history)
    w = Wire(s)
    w.run(0.2, step=0.1, rx={"up2": 10})
    assert [e.percent for e in s.events if isinstance(e, QuotaReached)] == []
    assert s.status().uplink("lte").month_bytes >= 700_000
    w.run(0.4, step=0.1, rx={"up2": 100})
    assert [e.percent for e in s.events if isinstance(e, QuotaReached)] == [100]


def test_a_reload_that_rebuilds_an_uplink_keeps_its_month_its_quota_and_its_penalty():
    """Review: adding a quota (or changing [health]) rebuilt the uplink with a zero month, so the
    quota's 100 % event never came, and a dampened uplink was pardoned without an event."""
    from linkwatch.config import loads
    from linkwatch.core.inputs import Reload

    text = CONFIG.replace('[uplinks.lte]\ninterface = "up2"', '[uplinks.lte]\ninterface = "up2"\nquota = "1MB"\n'
                          'quota_warn = [80, 100]')
    s = Scenario(text)
    w = Wire(s)
    for _ in range(9):
        w.run(0.1, step=0.1, rx={"up2": 100})  # 800 kB
    assert [e.percent for e in s.events if isinstance(e, QuotaReached)] == [80]
    before = s.status().uplink("lte").month_bytes
    s.feed(Reload(loads(text.replace("[health]", '[health]\nlate_window = "2s"', 1)
                        if "[health]" in text else '[health]\nlate_window = "2s"\n' + text), dict(FACTS)))
    assert s.status().uplink("lte").month_bytes == before, "the month survives the rebuild"
    for _ in range(3):
        w.run(0.1, step=0.1, rx={"up2": 100})
    assert [e.percent for e in s.events if isinstance(e, QuotaReached)] == [80, 100], "raised once each"


def test_a_reload_that_changes_the_quota_judges_the_thresholds_afresh():
    from linkwatch.config import loads
    from linkwatch.core.inputs import Reload

    text = CONFIG.replace('[uplinks.lte]\ninterface = "up2"', '[uplinks.lte]\ninterface = "up2"\nquota = "1MB"\n'
                          'quota_warn = [50, 100]')
    s = Scenario(text)
    w = Wire(s)
    for _ in range(6):
        w.run(0.1, step=0.1, rx={"up2": 100})  # 600 kB: 50 % of 1 MB
    assert [e.percent for e in s.events if isinstance(e, QuotaReached)] == [50]
    s.feed(Reload(loads(text.replace('quota = "1MB"', 'quota = "2MB"')), dict(FACTS)))
    for _ in range(5):
        w.run(0.1, step=0.1, rx={"up2": 100})  # 1.1 MB: 50 % of the new 2 MB
    assert [e.percent for e in s.events if isinstance(e, QuotaReached)] == [50, 50]


def test_a_dead_better_uplink_is_watched_at_the_interval_a_dead_backup_at_the_standby_interval():
    """A failback must not wait for a 10 s standby round: the better uplink's recovery is probed at
    `interval` (every target); a backup on a data budget stays at standby_interval, rotating."""
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    assert s.state.active == ("lte",) and s.state_of("fibre") == "DOWN"
    fibre = s.outputs[-1].probes["fibre"]
    assert fibre.interval == 0.25 and not fibre.rotate
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    s.wait(10.0)
    assert s.state.active == ("fibre",)
    s.rounds({"fibre": "g", "lte": "bbb"})
    assert s.state_of("lte") == "DOWN"
    lte = s.outputs[-1].probes["lte"]
    assert lte.interval == 10.0 and lte.rotate


def test_a_backup_whose_link_comes_back_is_probed_at_once_not_at_the_standby_interval():
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.wait(12.0)
    s.set_facts("up2", carrier=False)
    assert s.state_of("lte") == "DOWN"
    s.set_facts("up2", carrier=True)
    plan = s.outputs[-1].probes["lte"]
    assert plan.interval == 0.1 and not plan.rotate, "the kernel says it is back: probe it now"
    s.rounds({"lte": "bbbbb"})
    plan = s.outputs[-1].probes["lte"]
    assert s.state_of("lte") == "DOWN" and plan.interval == 10.0, "a few rounds, then the budget again"


def test_remembered_probe_plans_are_the_plans_of_the_state_as_it_is():
    """The core re-plans only the uplinks a step changed: at every step of a busy, a blackholed and a
    recovering uplink, its plans are the ones a fresh computation from the state gives."""
    from linkwatch.core.engine import in_doubt
    from linkwatch.core.uplink import probe_plan

    s, w = settled()
    feed = s.feed

    def checked(inp):
        out = feed(inp)
        st, doubt = s.state, in_doubt(s.state)
        best = min(u.cfg.priority for u in st.uplinks if u.name in st.active)
        fresh = {u.name: probe_plan(u, u.name in st.active, doubt, u.cfg.priority < best) for u in st.uplinks}
        assert out.probes == fresh
        return out

    s.feed = checked
    w.run(3.0, rx={"up1": 3}, tx={"up1": 3}, rounds={"fibre": (0.25, 2), "lte": (1.0, 2)})
    w.run(1.0, rx={"up1": 0}, tx={"up1": 3}, rounds={"fibre": (0.25, 0), "lte": (0.1, 2)})
    w.run(20.0, rx={"up1": 3, "up2": 3}, tx={"up1": 3, "up2": 3}, rounds={"fibre": (0.25, 2), "lte": (0.25, 2)})
    assert [n for _, n in s.active_events()][-2:] == [("lte",), ("fibre",)], "it failed over and back on the way"


def test_flows_left_on_a_standby_uplink_are_watched_by_their_traffic_like_an_active_ones():
    """Issue 14's 30-minute soak: after a failback the client's flow stayed on lte (sticky flows,
    no move_flows_after), lte was then blackholed, and as a standby it was noticed only at its
    standby pace: a 15 s outage for the flow. The LAN's packets that still leave through it are
    evidence like an active uplink's: a silence makes it suspect, a burst confirms, its flows reset."""
    s = Scenario()
    s.rounds({"fibre": "g", "lte": "g"})
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    s.rounds({"fibre": "ggggg", "lte": "ggggg"})
    s.wait(10.0)
    assert s.state.active == ("fibre",) and s.state.uplink("lte").left_at is not None, "the flow stayed on lte"
    w = Wire(s)
    w.run(2.0, rx={"up1": 3, "up2": 3}, tx={"up1": 3, "up2": 3}, rounds={"fibre": (0.25, 2)})
    assert s.outputs[-1].probes["lte"].counter_interval < 1.0, "its counters are read as fast as the active one's"
    assert s.outputs[-1].probes["lte"].interval == s.state.uplink("lte").cfg.health.standby_interval, \
        "but it is not probed more: a metered backup pays for every probe"
    flushed = len(s.flushed)
    start = s.t
    w.run(0.3, rx={"up1": 3, "up2": 0}, tx={"up1": 3, "up2": 3})  # lte blackholed: the flow sends, nothing back
    assert s.outputs[-1].probes["lte"].burst == 1, "suspect: the core asked for a burst"
    s.t += 0.15
    s.seq += 1
    s.feed(RoundDone("lte", results(s.state.uplink("lte").cfg.probes, 0), s.seq, burst=True))
    assert s.state_of("lte") == "DOWN" and s.state.active == ("fibre",)
    assert s.flushed[flushed:] == ["198.51.100.10"], "its flows reset: they start again through fibre"
    assert s.t - start < 0.5


def test_a_standby_uplink_without_flows_left_on_it_is_not_watched_by_counters():
    """The other side of the test above: an uplink that never carried traffic is read for its month's
    bytes only, and its idle counters raise no suspicion."""
    s, w = settled()
    assert s.state.uplink("lte").left_at is None
    w.run(2.0, rx={"up1": 3}, tx={"up1": 3, "up2": 3}, rounds={"fibre": (0.25, 2)})
    assert s.outputs[-1].probes["lte"].counter_interval >= 1.0
    assert s.outputs[-1].probes["lte"].burst == 0
