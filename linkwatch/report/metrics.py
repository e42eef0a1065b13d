"""Prometheus text exposition of the engine's status (pure: a Status in, text out)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from linkwatch.core.states import STATE_NAMES, usable
from linkwatch.core.status import Status, UplinkStatus


def _label(value: str) -> str:
    """Escape a label value as the text format requires (backslash, double quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value) -> str:
    return "NaN" if value is None else repr(float(value))


# name -> (type, help, value of an uplink's status)
_UPLINK_GAUGES = {
    "linkwatch_uplink_up": ("gauge", "1 when the uplink can carry traffic (UP, FALLING or DEGRADED), else 0",
                            lambda u: 1 if usable(u.state) else 0),
    "linkwatch_uplink_active": ("gauge", "1 when the uplink carries traffic", lambda u: 1 if u.active else 0),
    "linkwatch_uplink_rtt_ms": ("gauge", "mean RTT over the quality window, ms (NaN: unknown)", lambda u: u.rtt_ms),
    "linkwatch_uplink_loss_ratio": ("gauge", "probe loss over the quality window, 0..1 (NaN: unknown)",
                                    lambda u: None if u.loss_pct is None else u.loss_pct / 100.0),
    "linkwatch_uplink_jitter_ms": ("gauge", "mean RTT difference between successive probes, ms",
                                   lambda u: u.jitter_ms),
    "linkwatch_uplink_since_seconds": ("gauge", "wall-clock time of the last state change (epoch)",
                                       lambda u: u.since),
    "linkwatch_uplink_transitions_total": ("counter", "state changes since the engine started",
                                           lambda u: u.transitions),
    "linkwatch_uplink_down_total": ("counter", "times the uplink went DOWN since the engine started",
                                    lambda u: u.downs),
    "linkwatch_uplink_dampened": ("gauge", "1 while the uplink is dampened (flapping): it takes no traffic back "
                                  "until its flap penalty decays", lambda u: 1 if u.dampened else 0),
    "linkwatch_uplink_flap_penalty": ("gauge", "flap penalty now (each DOWN adds 1, each FALLING dip 0.5; halves "
                                      "every policy.flap_half_life)", lambda u: u.flap_penalty),
    "linkwatch_uplink_proven": ("gauge", "1 while the LAN's own traffic coming in proves the active uplink works "
                                "(probed less)", lambda u: 1 if u.proven else 0),
    "linkwatch_uplink_suspect": ("gauge", "1 while LAN packets leave with nothing coming back (a probe burst "
                                 "confirms)", lambda u: 1 if u.suspect else 0),
    "linkwatch_uplink_slow_rounds_total": ("counter", "probe rounds that timed out while the uplink showed it was "
                                           "alive (late replies, traffic): slow, not failed", lambda u: u.slow_rounds),
    "linkwatch_uplink_probe_bytes_per_day": ("gauge", "probe traffic at the current rate, bytes per day (NaN: too "
                                             "few rounds to tell)", lambda u: u.probe_bytes_per_day),
    "linkwatch_uplink_month_bytes": ("gauge", "bytes received + sent on the uplink's interface this calendar "
                                     "month (kept across restarts by the history)", lambda u: u.month_bytes),
    "linkwatch_uplink_quota_bytes": ("gauge", "the uplink's monthly quota in bytes (NaN: no quota)",
                                     lambda u: u.quota_bytes),
}


def _labels(u: UplinkStatus) -> str:
    return f'uplink="{_label(u.name)}",interface="{_label(u.interface)}"'


def render(status: Status | None) -> str:
    """The /metrics page. ``status`` is the engine's status; None when the engine did not answer."""
    out = ["# HELP linkwatch_engine_up 1 when the engine answered this scrape", "# TYPE linkwatch_engine_up gauge",
           f"linkwatch_engine_up {0 if status is None else 1}"]
    if status is None:
        return "\n".join(out) + "\n"
    out += ["# HELP linkwatch_engine_start_time_seconds when the engine started (epoch)",
            "# TYPE linkwatch_engine_start_time_seconds gauge",
            f"linkwatch_engine_start_time_seconds {_num(status.started)}",
            "# HELP linkwatch_active_changes_total times the set of active uplinks changed",
            "# TYPE linkwatch_active_changes_total counter",
            f"linkwatch_active_changes_total {_num(status.active_changes)}",
            "# HELP linkwatch_uplink_state 1 for the uplink's current state, 0 for the others",
            "# TYPE linkwatch_uplink_state gauge"]
    for u in status.uplinks:
        for state in STATE_NAMES:
            out.append(f'linkwatch_uplink_state{{uplink="{_label(u.name)}",state="{state}"}} '
                       f'{1 if u.state == state else 0}')
    for name, (kind, text, get) in _UPLINK_GAUGES.items():
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for u in status.uplinks:
            out.append(f"{name}{{{_labels(u)}}} {_num(get(u))}")
    sixes = [u for u in status.uplinks if u.ipv6 is not None]  # the IPv6 side of dual-stack uplinks
    if sixes:
        out += ["# HELP linkwatch_uplink_ipv6_state 1 for the state of the uplink's IPv6 side, 0 for the others",
                "# TYPE linkwatch_uplink_ipv6_state gauge"]
        out += [f'linkwatch_uplink_ipv6_state{{uplink="{_label(u.name)}",state="{state}"}} '
                f'{1 if u.ipv6.state == state else 0}' for u in sixes for state in STATE_NAMES]
    for name, (kind, text, get) in (_IPV6_GAUGES.items() if sixes else ()):
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        out += [f"{name}{{{_labels(u)}}} {_num(get(u.ipv6))}" for u in sixes]
    return "\n".join(out) + "\n"


_IPV6_GAUGES: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    "linkwatch_uplink_ipv6_active": ("gauge", "1 while the uplink carries IPv6 traffic", lambda s: 1 if s.active else 0),
    "linkwatch_uplink_ipv6_rtt_ms": ("gauge", "average RTT of the IPv6 probes, ms (NaN: unknown)", lambda s: s.rtt_ms),
    "linkwatch_uplink_ipv6_loss_pct": ("gauge", "loss of the IPv6 probes, percent (NaN: unknown)",
                                       lambda s: s.loss_pct),
    "linkwatch_uplink_ipv6_downs_total": ("counter", "times the IPv6 side went DOWN", lambda s: s.downs),
}
