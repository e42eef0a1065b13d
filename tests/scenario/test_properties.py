"""Property-based tests of the pure engine core (hypothesis): random configs, random sequences of
probe rounds, carrier changes, admin actions and waits, and the invariants that must hold after
every step whatever the sequence.

- Never an empty active set while an uplink exists that could carry traffic (routable, not
  disabled); never an active uplink that cannot be routed.
- A forced uplink carries all traffic while it works.
- A restart into a kernel that already routes through the uplinks the policy prefers never moves
  traffic; into any other routable set, not before the failback hold has passed.
- No traffic moves back and forth faster than the hold: traffic only moves to an uplink that has
  worked for failback_hold while the uplinks carrying it still work (unless an admin asked).
- The routing plan always routes through exactly the active uplinks; every traffic move is one
  ActiveChanged event from the previous active set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Scenario, active_gateways  # noqa: E402

from linkwatch.core.events import ActiveChanged  # noqa: E402
from linkwatch.core.inputs import AdminRequest, LinkFacts  # noqa: E402
from linkwatch.core.states import HEALTHY, USABLE, State  # noqa: E402
from linkwatch.core.uplink import link_verdict  # noqa: E402

NAMES = ("a", "b", "c", "d")
PROPERTY = settings(max_examples=int(os.environ.get("LW_PROPERTY_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def setups(draw, min_uplinks: int = 2):
    n = draw(st.integers(min_uplinks, 4))
    priorities = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    weights = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    mode = draw(st.sampled_from(["failover", "balance"]))
    hold = draw(st.sampled_from([1, 3, 10]))
    down_after = draw(st.integers(1, 3))
    up_after = draw(st.integers(1, 3))
    lines = [f'[policy]\nmode = "{mode}"\nfailback_hold = "{hold}s"',
             f'[health]\ndown_after = {down_after}\nup_after = {up_after}\nquality_window = "2s"\n'
             'loss_degraded = 60\nloss_recovered = 30\nquality_hold = "500ms"']
    facts = {}
    for i in range(n):
        name = NAMES[i]
        lines.append(f'[uplinks.{name}]\ninterface = "if{i}"\npriority = {priorities[i]}\nweight = {weights[i]}\n'
                     f'[[uplinks.{name}.probes]]\ntype = "icmp"\ntarget = "203.0.113.{i + 1}"\n'
                     f'[[uplinks.{name}.probes]]\ntype = "icmp"\ntarget = "203.0.113.{i + 101}"')
        facts[f"if{i}"] = LinkFacts(f"if{i}", 10 + i, True, f"198.51.100.{8 * i + 2}", 29, f"198.51.100.{8 * i + 1}")
    return "\n".join(lines) + "\n", facts, float(hold)


def actions(n_names: int):
    name = st.sampled_from(NAMES[:n_names])
    return st.lists(st.one_of(
        st.tuples(st.just("round"), name, st.integers(0, 2), st.floats(0.05, 0.5)),
        st.tuples(st.just("carrier"), name, st.booleans()),
        st.tuples(st.just("admin"), name, st.sampled_from(["disable", "enable", "force", "auto"])),
        st.tuples(st.just("wait"), st.floats(0.1, 12.0)),
    ), min_size=1, max_size=60)


def routable(s: Scenario, name: str) -> bool:
    u = s.state.uplink(name)
    return link_verdict(u.cfg, u.facts)[0]


def check_invariants(s: Scenario, hold: float, admin_step: bool, before_active: tuple, events: list) -> None:
    state = s.state
    usable_now = [u.name for u in state.uplinks if routable(s, u.name) and u.state != State.DISABLED]
    if usable_now:
        assert state.active, f"empty active set while {usable_now} could carry traffic"
    assert all(routable(s, n) for n in state.active), f"an unroutable uplink is active: {state.active}"
    if state.forced is not None:
        f = state.uplink(state.forced)
        if f.state in USABLE and routable(s, f.name):
            assert state.active == (f.name,), f"forced {f.name} works but active is {state.active}"
    # the plan routes through exactly the active uplinks
    want = sorted(state.uplink(n).facts.gateway for n in state.active)
    assert active_gateways(state.routing) == want
    # every move is one event from the previous set
    moves = [e for e in events if isinstance(e, ActiveChanged)]
    chain = before_active
    for move in moves:  # a wait may deliver several ticks, each with its move: one chain
        assert move.old == chain, f"{move} does not start where the last move ended ({chain})"
        chain = move.new
    assert chain == state.active
    # no flapping faster than the hold: traffic moves to an uplink only once it has worked for
    # failback_hold, while the uplinks carrying traffic still work (healthy), unless an admin asked
    if len(moves) == 1 and not admin_step:
        old_still_healthy = all(
            (u := state.uplink(n)) is not None and u.state in HEALTHY and not u.health.quality_bad
            and routable(s, n) for n in before_active)
        if before_active and old_still_healthy:
            for n in set(state.active) - set(before_active):
                if n == state.forced:
                    continue
                worked = s.t - state.uplink(n).working_since
                assert worked >= hold - 1e-6, f"moved to {n} after {worked:.2f}s of work (< hold {hold}s)"


def play(s: Scenario, steps, hold: float) -> None:
    for step in steps:
        before = s.state.active
        first = len(s.outputs)
        kind = step[0]
        if kind == "round":
            _, name, answered, dt = step
            s.round(name, answered, dt=dt)
        elif kind == "carrier":
            _, name, up = step
            s.set_facts(s.state.uplink(name).cfg.interface, carrier=up)
        elif kind == "admin":
            _, name, action = step
            assert s.feed(AdminRequest(name, action)).reply["ok"]
        else:
            s.wait(step[1])
        events = [e for out in s.outputs[first:] for e in out.events]
        check_invariants(s, hold, kind == "admin", before, events)


@PROPERTY
@given(data=st.data())
def test_invariants_hold_after_every_step(data):
    text, facts, hold = data.draw(setups())
    s = Scenario(text, facts=facts)
    check_invariants(s, hold, True, (), s.outputs[0].events)
    play(s, data.draw(actions(len(facts))), hold)


@PROPERTY
@given(data=st.data())
def test_a_restart_into_a_kernel_that_already_routes_never_moves_traffic(data):
    """The kernel routes through what the policy would choose with every uplink healthy (the
    normal state before a restart); every uplink keeps answering: no move, ever."""
    text, facts, hold = data.draw(setups())
    probe = Scenario(text, facts=facts)
    for u in probe.state.uplinks:  # what the policy chooses once everything is UP and settled
        probe.round(u.name, True, dt=0.01)
    probe.wait(hold + 1)
    preferred = probe.state.active
    kernel = tuple((facts[probe.state.uplink(n).cfg.interface].gateway, facts[probe.state.uplink(n).cfg.interface]
                    .ifindex) for n in preferred)
    s = Scenario(text, facts=facts, kernel_active=kernel)
    assert s.state.active == preferred and active_gateways(s.outputs[0].routing) == sorted(g for g, _ in kernel)
    names = [u.name for u in s.state.uplinks]
    # every prober starts with the engine: each uplink's first round ends within a timeout or so
    first = [(n, data.draw(st.floats(0.01, 0.3))) for n in data.draw(st.permutations(names))]
    order = first + data.draw(st.lists(st.tuples(st.sampled_from(names), st.floats(0.01, 0.6)), max_size=40))
    steady = [(name, 0.2) for _ in range(int(2 * hold / 0.2 / len(names)) + 1) for name in names]
    for name, dt in order + steady:  # then every uplink keeps answering for twice the hold
        s.round(name, True, dt=dt)
        s.wait(0)
        assert s.state.active == preferred, f"a restart moved traffic to {s.state.active}"
    assert s.active_events() == []


@PROPERTY
@given(data=st.data())
def test_a_restart_never_moves_traffic_before_the_hold(data):
    """Whatever routable set the kernel routes through (a failover was in force when the engine
    restarted), while every uplink answers: nothing changes before each uplink of that set has been
    probed, and no other uplink gets traffic before failback_hold has passed."""
    text, facts, hold = data.draw(setups())
    ifaces = sorted(facts)
    chosen = data.draw(st.lists(st.sampled_from(ifaces), min_size=1, max_size=len(ifaces), unique=True))
    s = Scenario(text, facts=facts, kernel_active=tuple((facts[i].gateway, facts[i].ifindex) for i in chosen))
    adopted = s.state.active
    assert sorted(s.state.uplink(n).cfg.interface for n in adopted) == sorted(chosen)
    start = s.t
    order = data.draw(st.lists(st.tuples(st.sampled_from([u.name for u in s.state.uplinks]), st.floats(0.01, 0.3)),
                               max_size=30))
    probed: set[str] = set()
    for name, dt in order:
        if s.t + dt - start >= hold:
            break
        s.round(name, True, dt=dt)
        probed.add(name)
        if not set(adopted) <= probed:
            assert s.state.active == adopted, f"changed to {s.state.active} before {adopted} were probed"
        assert set(s.state.active) <= set(adopted), f"moved to {s.state.active} {s.t - start:.2f}s after a restart"
