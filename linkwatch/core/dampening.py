"""Flap dampening, as BGP does it for routes (RFC 2439). Pure: penalties and ``now`` in, verdicts out.

Every failure adds to an uplink's penalty (DOWN: 1; a FALLING dip or a recovery that fails again:
0.5); the penalty halves every
``half_life``. Past ``suppress`` the uplink is *dampened*: it does not take traffic back, however
good its rounds look, until the penalty has decayed below ``reuse`` (that is: it has been stable
for a while). A dampened uplink still carries traffic when no other uplink can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from linkwatch.core.states import USABLE, State

DOWN_PENALTY = 1.0
DIP_PENALTY = 0.5


@dataclass(frozen=True)
class DampeningParams:
    enabled: bool = True
    half_life: float = 60.0
    suppress: float = 3.0
    reuse: float = 1.0


def params_of(policy) -> DampeningParams:
    """The dampening parameters of a [policy] config."""
    return DampeningParams(policy.dampening, policy.flap_half_life, policy.flap_suppress, policy.flap_reuse)


@dataclass(frozen=True)
class Penalty:
    value: float = 0.0  # as of ``at``
    at: float = 0.0
    dampened: bool = False


def current(p: Penalty, now: float, params: DampeningParams) -> float:
    """The penalty decayed to ``now``."""
    if p.value <= 0.0:
        return 0.0
    return p.value * 0.5 ** (max(now - p.at, 0.0) / params.half_life)


def add(p: Penalty, amount: float, now: float, params: DampeningParams) -> Penalty:
    """A failure: the penalty grows; past ``suppress`` the uplink is dampened."""
    value = current(p, now, params) + amount
    return Penalty(value, now, p.dampened or (params.enabled and value >= params.suppress))


def settle(p: Penalty, now: float, params: DampeningParams) -> Penalty:
    """Lift the dampening once the penalty has decayed below ``reuse`` (or dampening is off)."""
    if p.dampened and (not params.enabled or current(p, now, params) < params.reuse):
        return replace(p, value=current(p, now, params), at=now, dampened=False)
    return p


def reuse_at(p: Penalty, params: DampeningParams) -> float | None:
    """When a dampened uplink's penalty falls below ``reuse`` (None: it is not dampened)."""
    if not p.dampened or p.value <= params.reuse:
        return None if not p.dampened else p.at
    return p.at + params.half_life * math.log2(p.value / params.reuse)


def flap_penalty(old: State, new: State) -> float:
    """What a transition adds to the flap penalty: failing while working (DOWN: 1 in all, the
    FALLING on the way included), a FALLING dip, or a recovery that failed again (RISING -> DOWN)."""
    if new == State.DOWN and old == State.FALLING:
        return DOWN_PENALTY - DIP_PENALTY  # the dip that led here already counted
    if new == State.DOWN and old in USABLE:
        return DOWN_PENALTY
    if (new == State.FALLING and old in USABLE) or (new == State.DOWN and old == State.RISING):
        return DIP_PENALTY
    return 0.0
