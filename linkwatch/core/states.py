"""The names every part of linkwatch shares, defined once: uplink states, which of them carry
traffic, and the admin's actions.

The engine, the policy, the status, the CLI, the web UI, /metrics, the SNMP MIB, hooks and the
history all import these; none spells a state name or an action out again.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    """An uplink's health state (per uplink; DESIGN.md)."""

    INIT = "INIT"  # just started or enabled: not probed yet
    UP = "UP"  # probes answer, quality fine
    FALLING = "FALLING"  # rounds failing, not yet down_after of them: still carries traffic
    DOWN = "DOWN"  # no sign of life (or no carrier, address or gateway)
    RISING = "RISING"  # answering again, not yet up_after rounds in a row
    DEGRADED = "DEGRADED"  # works, but loss or RTT past the thresholds
    DISABLED = "DISABLED"  # the admin took it out

    def __str__(self) -> str:  # log lines read "UP -> DOWN", not "State.UP -> State.DOWN"
        return self.value


STATE_NAMES: tuple[str, ...] = tuple(s.value for s in State)
"""Every state name, in the order above (the order /metrics and the MIB list them)."""

USABLE: frozenset[State] = frozenset({State.UP, State.FALLING, State.DEGRADED})
"""States in which an uplink can carry traffic. FALLING still does until it is proven DOWN: the
policy keeps it, /metrics reports it as up, hooks call it usable."""

HEALTHY: frozenset[State] = frozenset({State.UP, State.FALLING})
"""Usable and not known to be bad: the policy prefers these to DEGRADED ones."""

PENDING: frozenset[State] = frozenset({State.FALLING, State.RISING})
"""A transition is pending: the engine probes faster to settle it."""


def usable(state: State | str) -> bool:
    """True when an uplink in ``state`` (a State or its name) can carry traffic."""
    try:
        return State(state) in USABLE
    except ValueError:
        return False


ADMIN_ACTIONS: tuple[str, ...] = ("disable", "enable", "force", "auto")
"""What an admin can do to an uplink (control socket ``set``, ``linkwatch set``, the web UI)."""
