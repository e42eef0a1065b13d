"""What the MQTT sink publishes, as pure functions of the config and the status snapshot.

Topics (``P`` is ``[mqtt] topic_prefix``, ``linkwatch/HOSTNAME`` by default), every one retained:

- ``P/status``: ``online`` while the engine is connected, ``offline`` after it stopped (or its last
  will, when the broker loses it): Home Assistant's availability topic;
- ``P/active``: the uplinks carrying traffic, comma-separated in policy order (``none``: none);
- ``P/uplink/NAME/state``: its state (``UP``, ``DOWN``, ... as ``linkwatch status`` shows it);
- ``P/uplink/NAME/usable``: ``true`` while the state can carry traffic, else ``false``;
- ``P/uplink/NAME/active``: ``true`` while it carries traffic;
- ``P/uplink/NAME/rtt_ms``, ``.../loss_pct``, ``.../jitter_ms``: the window's numbers, one decimal
  (``None`` while unknown: Home Assistant shows "unknown");
- ``P/uplink/NAME/attributes``: JSON with the state, reason, since (wall clock of the last state
  change), interface, carrier, flap penalty and IPv6 state.

Home Assistant discovery (``D`` is ``discovery_prefix``): ``D/binary_sensor/NODE/NAME_usable/config``
(device_class connectivity), ``D/sensor/NODE/NAME_state/config``, ``.../NAME_rtt/config``,
``.../NAME_loss/config`` per uplink and ``D/sensor/NODE/active/config``, every one with the
availability topic and one device block (the router). ``NODE`` and the unique ids derive from the
topic prefix, so they stay the same across restarts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from linkwatch.config import MqttConfig
from linkwatch.core.status import Status, UplinkStatus

ONLINE, OFFLINE = "online", "offline"
UNKNOWN = "None"  # Home Assistant's payload for "unknown" on a sensor


@dataclass(frozen=True)
class Topics:
    """Where things go: the topic prefix, the discovery prefix and the names derived from them."""

    prefix: str
    client_id: str
    hostname: str
    discovery_prefix: str | None  # None: no discovery

    @property
    def availability(self) -> str:
        return f"{self.prefix}/status"

    @property
    def node_id(self) -> str:
        """The device's id at Home Assistant (and the start of every unique_id)."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.prefix)

    def uplink(self, name: str, what: str) -> str:
        return f"{self.prefix}/uplink/{name}/{what}"


def layout(cfg: MqttConfig, hostname: str) -> Topics:
    """The layout of ``cfg``, with the defaults that name this machine filled in."""
    short = re.sub(r"[^A-Za-z0-9_.-]", "_", hostname.split(".")[0] or "router")[:48]
    return Topics(prefix=cfg.topic_prefix or f"linkwatch/{short}", client_id=cfg.client_id or f"linkwatch-{short}",
                  hostname=hostname, discovery_prefix=cfg.discovery_prefix if cfg.discovery else None)


def _number(value: float | None) -> str:
    return UNKNOWN if value is None else f"{round(value, 1):g}"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def uplink_messages(lay: Topics, u: UplinkStatus) -> dict[str, str]:
    attributes = {
        "state": u.state.value, "reason": u.reason, "since": round(u.since, 3), "interface": u.interface,
        "carrier": u.carrier, "priority": u.priority, "dampened": u.dampened, "flap_penalty": u.flap_penalty,
        "ipv6_state": u.ipv6.state.value if u.ipv6 else None, "ipv6_active": bool(u.ipv6 and u.ipv6.active),
    }
    return {
        lay.uplink(u.name, "state"): u.state.value,
        lay.uplink(u.name, "usable"): _flag(u.usable),
        lay.uplink(u.name, "active"): _flag(u.active),
        lay.uplink(u.name, "rtt_ms"): _number(u.rtt_ms),
        lay.uplink(u.name, "loss_pct"): _number(u.loss_pct),
        lay.uplink(u.name, "jitter_ms"): _number(u.jitter_ms),
        lay.uplink(u.name, "attributes"): json.dumps(attributes, sort_keys=True),
    }


def state_messages(lay: Topics, status: Status) -> dict[str, str]:
    """Every state topic and its payload, from one status snapshot (in a stable order: the active
    uplinks first, then each uplink)."""
    out = {f"{lay.prefix}/active": ",".join(status.active) or "none"}
    for u in status.uplinks:
        out.update(uplink_messages(lay, u))
    return out


def _device(lay: Topics, version: str) -> dict[str, Any]:
    return {"identifiers": [lay.node_id], "name": f"linkwatch {lay.hostname}", "manufacturer": "linkwatch",
            "model": "multi-uplink failover", "sw_version": version}


def discovery_messages(lay: Topics, uplinks: Iterable[str], version: str) -> dict[str, str]:
    """Home Assistant's discovery config of every entity (empty when discovery is off)."""
    if lay.discovery_prefix is None:
        return {}
    common = {"availability_topic": lay.availability, "payload_available": ONLINE,
              "payload_not_available": OFFLINE, "device": _device(lay, version)}
    out: dict[str, str] = {}

    def entity(component: str, object_id: str, **config: Any) -> None:
        unique = f"{lay.node_id}_{object_id}"
        body = {"unique_id": unique, "default_entity_id": f"{component}.{unique}", **config, **common}
        out[f"{lay.discovery_prefix}/{component}/{lay.node_id}/{object_id}/config"] = json.dumps(body, sort_keys=True)

    entity("sensor", "active", name="Active uplink", state_topic=f"{lay.prefix}/active", icon="mdi:router-network")
    for name in uplinks:
        entity("binary_sensor", f"{name}_usable", name=f"Uplink {name}", device_class="connectivity",
               state_topic=lay.uplink(name, "usable"), payload_on="true", payload_off="false",
               json_attributes_topic=lay.uplink(name, "attributes"))
        entity("sensor", f"{name}_state", name=f"Uplink {name} state", state_topic=lay.uplink(name, "state"),
               icon="mdi:wan")
        entity("sensor", f"{name}_rtt", name=f"Uplink {name} RTT", state_topic=lay.uplink(name, "rtt_ms"),
               unit_of_measurement="ms", state_class="measurement", icon="mdi:timer-outline")
        entity("sensor", f"{name}_loss", name=f"Uplink {name} loss", state_topic=lay.uplink(name, "loss_pct"),
               unit_of_measurement="%", state_class="measurement", icon="mdi:lan-disconnect")
    return out


def changed(messages: dict[str, str], sent: dict[str, str]) -> dict[str, str]:
    """The messages whose payload differs from what was last sent on their topic."""
    return {topic: payload for topic, payload in messages.items() if sent.get(topic) != payload}
