"""Pure tests of the policy: states + config -> active uplinks."""

from linkwatch.core.health import State
from linkwatch.core.policy import PolicyParams, UplinkView, decide

FAILOVER = PolicyParams("failover", failback_hold=10.0)
BALANCE = PolicyParams("balance", failback_hold=10.0)


def v(name, state, prio, since=0.0, routable=True, weight=1):
    return UplinkView(name, State(state), prio, weight, routable, since)


def test_failover_picks_best_priority_healthy():
    d = decide([v("wan1", "UP", 1), v("wan2", "UP", 2)], FAILOVER, (), 100.0)
    assert d.active == ("wan1",)


def test_falling_active_keeps_traffic_until_down():
    d = decide([v("wan1", "FALLING", 1), v("wan2", "UP", 2)], FAILOVER, ("wan1",), 100.0)
    assert d.active == ("wan1",)


def test_down_active_fails_over_at_once():
    d = decide([v("wan1", "DOWN", 1), v("wan2", "UP", 2)], FAILOVER, ("wan1",), 100.0)
    assert d.active == ("wan2",)


def test_failback_waits_for_hold_then_happens():
    ups = [v("wan1", "UP", 1, since=95.0), v("wan2", "UP", 2)]
    d = decide(ups, FAILOVER, ("wan2",), 100.0)
    assert d.active == ("wan2",)
    assert d.recheck_at == 105.0
    assert "failback to wan1" in d.reason
    d = decide(ups, FAILOVER, ("wan2",), 105.0)
    assert d.active == ("wan1",)


def test_healthy_beats_degraded_even_with_worse_priority():
    d = decide([v("wan1", "DEGRADED", 1), v("wan2", "UP", 2)], FAILOVER, ("wan1",), 100.0)
    assert d.active == ("wan2",)
    d = decide([v("wan1", "DEGRADED", 1), v("wan2", "DOWN", 2)], FAILOVER, ("wan1",), 100.0)
    assert d.active == ("wan1",) and "degraded" in d.reason


def test_equal_priority_tier_shares_traffic_with_weights():
    d = decide([v("a", "UP", 1, weight=3), v("b", "UP", 1), v("c", "UP", 2)], FAILOVER, (), 100.0)
    assert d.active == ("a", "b")
    assert dict(d.weights) == {"a": 3, "b": 1}


def test_balance_uses_every_healthy_uplink_and_holds_newcomers():
    d = decide([v("a", "UP", 1), v("b", "UP", 2), v("c", "DOWN", 3)], BALANCE, (), 100.0)
    assert d.active == ("a", "b")
    d = decide([v("a", "UP", 1), v("b", "UP", 2), v("c", "UP", 3, since=99.0)], BALANCE, ("a", "b"), 100.0)
    assert d.active == ("a", "b") and d.recheck_at == 109.0
    d = decide([v("a", "UP", 1), v("b", "UP", 2), v("c", "UP", 3, since=99.0)], BALANCE, ("a", "b"), 109.5)
    assert d.active == ("a", "b", "c")


def test_force_and_its_limits():
    ups = [v("wan1", "UP", 1), v("wan2", "UP", 2)]
    assert decide(ups, FAILOVER, ("wan1",), 1.0, forced="wan2").active == ("wan2",)
    downs = [v("wan1", "UP", 1), v("wan2", "DOWN", 2)]
    d = decide(downs, FAILOVER, ("wan2",), 1.0, forced="wan2")
    assert d.active == ("wan1",)
    assert "forced uplink wan2 is not usable" in d.reason


def test_disabled_uplink_is_never_chosen():
    d = decide([v("wan1", "DISABLED", 1), v("wan2", "UP", 2)], FAILOVER, ("wan1",), 1.0)
    assert d.active == ("wan2",)


def test_all_down_keeps_a_route_and_follows_the_first_to_return():
    downs = [v("wan1", "DOWN", 1), v("wan2", "DOWN", 2)]
    d = decide(downs, FAILOVER, ("wan2",), 1.0)
    assert d.active == ("wan2",) and "fail-static" in d.reason
    d = decide([v("wan1", "DOWN", 1, routable=False), v("wan2", "DOWN", 2, routable=False)], FAILOVER, ("wan2",), 1.0)
    assert d.active == () and "main table" in d.reason
    d = decide([v("wan1", "DOWN", 1), v("wan2", "DOWN", 2, routable=False)], FAILOVER, ("wan2",), 1.0)
    assert d.active == ("wan1",) and "last resort" in d.reason
    # wan1 comes back after everything was down: traffic follows at once, no failback hold
    d = decide([v("wan1", "UP", 1, since=50.0), v("wan2", "DOWN", 2)], FAILOVER, ("wan2",), 50.1)
    assert d.active == ("wan1",)


def test_restart_keeps_kernel_choice_while_preferred_is_init():
    d = decide([v("wan1", "INIT", 1), v("wan2", "UP", 2)], FAILOVER, ("wan2",), 1.0)
    assert d.active == ("wan2",)
    d = decide([v("wan1", "INIT", 1), v("wan2", "UP", 2)], FAILOVER, (), 1.0)
    assert d.active == ("wan2",), "with nothing to keep, a working uplink is used at once (never an empty set)"
    d = decide([v("wan1", "UP", 1, since=1.0), v("wan2", "INIT", 2)], FAILOVER, ("wan1",), 1.0)
    assert d.active == ("wan1",)


def test_unroutable_uplink_cannot_be_active():
    d = decide([v("wan1", "UP", 1, routable=False), v("wan2", "UP", 2)], FAILOVER, ("wan1",), 1.0)
    assert d.active == ("wan2",)


def test_degraded_uplink_that_misses_a_round_does_not_take_traffic_back():
    falling_degraded = UplinkView("wan1", State.FALLING, 1, 1, True, 0.0, degraded=True)
    d = decide([falling_degraded, v("wan2", "UP", 2)], FAILOVER, ("wan2",), 100.0)
    assert d.active == ("wan2",)


def test_disabled_active_uplink_is_not_kept_when_everything_else_is_down():
    d = decide([v("wan1", "DISABLED", 1), v("wan2", "DOWN", 2)], FAILOVER, ("wan1",), 1.0)
    assert d.active == ("wan2",) and "last resort" in d.reason


def test_waiting_for_an_init_uplink_is_bounded():
    init = UplinkView("wan1", State.INIT, 1, 1, True, 0.0, since=0.0)
    d = decide([init, v("wan2", "UP", 2)], FAILOVER, ("wan1",), 1.0)
    assert d.active == ("wan1",) and d.recheck_at == 5.0 and "waiting for wan1" in d.reason
    d = decide([init, v("wan2", "UP", 2)], FAILOVER, ("wan1",), 6.0)
    assert d.active == ("wan2",), "an uplink stuck in INIT does not hold traffic back forever"


def test_start_up_says_not_probed_yet_rather_than_an_outage():
    d = decide([v("wan1", "INIT", 1), v("wan2", "INIT", 2)], FAILOVER, (), 0.0)
    assert d.active == ("wan1",)
    assert d.reason == "not probed yet; wan1 (priority 1) until the probes answer"
    assert "no uplink works" not in d.reason
    d = decide([v("wan1", "INIT", 1), v("wan2", "INIT", 2)], FAILOVER, ("wan2",), 0.0)
    assert d.active == ("wan2",) and d.reason == "not probed yet; keeping wan2 until the probes answer"


def test_an_outage_is_still_called_one():
    d = decide([v("wan1", "DOWN", 1), v("wan2", "INIT", 2)], FAILOVER, (), 0.0)
    assert d.active == ("wan1",) and d.reason == "no uplink works (wan2 not probed yet); last resort wan1"
    d = decide([v("wan1", "DOWN", 1), v("wan2", "DOWN", 2)], FAILOVER, ("wan2",), 0.0)
    assert d.reason == "no uplink works; keeping wan2 (fail-static)"
