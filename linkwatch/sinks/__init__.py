"""Where the engine's events go: the log, hook scripts, the history database, SNMP traps,
keepalived's track file, MQTT.

Every event goes to every sink through :class:`linkwatch.sinks.runner.SinkRunner`, which never
blocks the engine: a dead trap receiver or a slow SD card cannot delay a failover.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from linkwatch.config import Config


def build_sinks(config: Config, status: Callable[[], Any] | None = None) -> list:
    """The sinks ``config`` asks for; the log sink always. Heavy libraries load only when used.
    ``status``: the engine's current :class:`~linkwatch.core.status.Status` (a cheap, pure read),
    for sinks that publish the whole state rather than each event (a reconnect, a start)."""
    from linkwatch.sinks.log import LogSink

    sinks: list = [LogSink(logging.getLogger("linkwatch.events"))]
    if config.hooks.directory:
        from linkwatch.sinks.hooks import HookSink

        sinks.append(HookSink(config.hooks.directory, config.hooks.timeout,
                              {u.name: u.interface for u in config.uplinks}))
    if config.history.path:
        from linkwatch.sinks.history import HistorySink  # sqlite-utils only when a history is kept

        sinks.append(HistorySink(config.history, group=config.control.group))
    if config.snmp.traps:
        from linkwatch.sinks.snmp_traps import TrapSink  # pysnmp only when traps are sent

        sinks.append(TrapSink(config.snmp, [u.name for u in config.uplinks]))
    if config.keepalived.track_file:
        from linkwatch.sinks.keepalived import KeepalivedTrackSink

        if status is None:
            raise ValueError("[keepalived] track_file needs the engine's status reader")
        sinks.append(KeepalivedTrackSink(config.keepalived.track_file, status))
    if config.mqtt.host:
        from linkwatch.sinks.mqtt import MqttSink  # paho-mqtt only when MQTT is configured

        if status is None:
            raise ValueError("[mqtt] needs the engine's status reader")
        sinks.append(MqttSink(config.mqtt, status, [u.name for u in config.uplinks]))
    return sinks
