"""How to probe each uplink now: the core's :class:`~linkwatch.core.uplink.ProbePlan` for every
uplink of one family (the IPv4 uplinks, or the IPv6 side: :mod:`linkwatch.core.family6`). Pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from linkwatch.core.uplink import ProbePlan, UplinkState, probe_plan


def plans(uplinks: Sequence[UplinkState], active: Sequence[str], carries: Callable[[str], bool], doubt: bool,
          balance: bool, family: int = 4, others: Mapping[str, ProbePlan] | None = None) -> dict[str, ProbePlan]:
    """``doubt``: an uplink that carries traffic is in doubt (every uplink probed at full rate).
    An uplink better than the active ones (or any, in balance mode) is watched at ``interval``.
    ``others``: the other family's plans (their probes share the interfaces' counters)."""
    best = min((u.cfg.priority for u in uplinks if u.name in active), default=None)
    rates = {name: plan.packet_rate for name, plan in (others or {}).items()}
    return {u.name: _plan_of(u, carries(u.name), doubt, balance or best is None or u.cfg.priority < best, family,
                             rates.get(u.name, 0.0))
            for u in uplinks}


# The last plan of each uplink, with what it was made from. Uplink states are immutable and a step
# replaces only those it changes: a counter read of the active uplink (17 a second) re-plans that
# one, not all of them. A memo of a pure function: the same arguments, the same plan.
_last_plans: dict[tuple[str, int], tuple[UplinkState, bool, bool, bool, float, ProbePlan]] = {}


def _plan_of(u: UplinkState, active: bool, doubt: bool, better: bool, family: int, other: float) -> ProbePlan:
    last = _last_plans.get((u.name, family))
    if last is not None and last[0] is u and last[1:5] == (active, doubt, better, other):
        return last[5]
    plan = probe_plan(u, active, doubt, better, other)
    _last_plans[(u.name, family)] = (u, active, doubt, better, other, plan)
    return plan
