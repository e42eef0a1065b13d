"""The log sink: every event as one line in the engine's log, in the STYLE.md form
(``uplink=wan1 UP -> DOWN loss=100% rtt=- reason=3 failed rounds``).

:func:`format_event` is pure and shared: ``linkwatch history`` prints past events the same way.
"""

from __future__ import annotations

import logging

from linkwatch.config.convert import format_size
from linkwatch.core.events import (ActiveChanged, AdminAction, EngineEvent, Event, Ipv6ActiveChanged,
                                   Ipv6StateChanged, QuotaReached, UplinkDampened, UplinkSamples, UplinkStateChanged)


def fmt_num(value: float | None, unit: str = "", missing: str = "-") -> str:
    """``64.53`` -> ``"64.5"`` + unit; ``None`` -> ``missing``."""
    if value is None:
        return missing
    return f"{round(value, 1):g}{unit}"


def _names(names: tuple[str, ...]) -> str:
    return ",".join(names) if names else "-"


def format_event(ev: Event) -> str:
    """One log line in the STYLE.md form, e.g.
    ``uplink=wan1 UP -> DOWN loss=100% rtt=- reason=3 failed rounds``."""
    if isinstance(ev, (UplinkStateChanged, Ipv6StateChanged)):
        jitter = f" jitter={fmt_num(ev.jitter_ms, 'ms')}" if ev.jitter_ms is not None else ""
        family = " ipv6" if isinstance(ev, Ipv6StateChanged) else ""
        return (
            f"uplink={ev.uplink}{family} {ev.old} -> {ev.new} loss={fmt_num(ev.loss_pct, '%')} "
            f"rtt={fmt_num(ev.rtt_ms, 'ms')}{jitter} reason={ev.reason}"
        )
    if isinstance(ev, (ActiveChanged, Ipv6ActiveChanged)):
        family = " ipv6" if isinstance(ev, Ipv6ActiveChanged) else ""
        return f"active{family} {_names(ev.old)} -> {_names(ev.new)} reason={ev.reason}"
    if isinstance(ev, EngineEvent):
        return f"engine {ev.what}" + (f" detail={ev.detail}" if ev.detail else "")
    if isinstance(ev, AdminAction):
        return f"admin {ev.action} uplink={ev.uplink} source={ev.source} result={ev.result}"
    if isinstance(ev, UplinkSamples):
        return (f"samples uplink={ev.uplink}{' family=6' if ev.family == 6 else ''} sent={ev.sent} lost={ev.lost} loss={fmt_num(ev.loss_pct, '%')} "
                f"rtt={fmt_num(ev.rtt_avg_ms, 'ms')} jitter={fmt_num(ev.jitter_ms, 'ms')}")
    if isinstance(ev, UplinkDampened):
        return f"uplink={ev.uplink} {'dampened' if ev.dampened else 'no longer dampened'} penalty={fmt_num(ev.penalty)}"
    if isinstance(ev, QuotaReached):
        return (f"uplink={ev.uplink} quota {ev.percent}% reached: {format_size(ev.used)} of "
                f"{format_size(ev.quota)}")
    return f"event {ev!r}"


class LogSink:
    """Logs every event in the STYLE.md form: at INFO, samples at DEBUG, a quota reached in full at WARNING."""

    def __init__(self, logger: logging.Logger | None = None):
        self.name = "log"
        self.timeout = 1.0
        self._log = logger or logging.getLogger("linkwatch.events")

    async def handle(self, event: Event) -> None:
        level = logging.DEBUG if isinstance(event, UplinkSamples) else logging.INFO
        if isinstance(event, QuotaReached) and event.percent >= 100:
            level = logging.WARNING  # a metered link over its quota costs money
        self._log.log(level, "%s", format_event(event))

    async def close(self) -> None:
        return None
