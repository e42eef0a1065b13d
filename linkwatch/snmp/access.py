"""Who may ask the SNMP agent, and how much an unauthenticated question may cost (pure).

An SNMP agent answers UDP, whose source address anyone can forge: an answer much bigger than its
request turns the agent into a reflection amplifier. So an answer to an unauthenticated request
(SNMPv2c, or an SNMPv3 user at noAuthNoPriv) holds at most :data:`UNAUTHENTICATED_BUDGET` bytes of
varbinds, which keeps the whole datagram within one Ethernet MTU; GETBULK is cut short to fit, as
RFC 3416 allows. An authenticated request cannot be forged without the key, so it may get up to
the manager's own limit. ``[snmp.agent] allow_from`` drops requests from other networks before
pysnmp decodes them.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

from linkwatch.config import SnmpConfig, parse_listen

NO_AUTH = 1  # pysnmp's securityLevel noAuthNoPriv (SNMPv2c requests have it too)
# bytes of varbinds in an answer to an unauthenticated request: with its headers and community the
# datagram stays below 1400 bytes (one Ethernet MTU less IP/UDP headers and room for tunnels)
UNAUTHENTICATED_BUDGET = 1200

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(texts: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def source_allowed(allowed: Sequence[Network], host: str) -> bool:
    """True when ``allowed`` is empty (anyone) or ``host`` is in one of its networks; an
    IPv4-mapped IPv6 source (a dual-stack socket) counts as its IPv4 address."""
    if not allowed:
        return True
    try:
        addr = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in allowed)


def response_budget(max_size: int, limit: int, security_level: int) -> int:
    """Bytes of varbinds an answer may hold: the manager's ``max_size`` within ``limit``, less 64
    for the PDU's headers, and at most UNAUTHENTICATED_BUDGET when the request was not authenticated."""
    budget = max(0, min(max_size, limit) - 64)
    return min(budget, UNAUTHENTICATED_BUDGET) if security_level <= NO_AUTH else budget


def exposure_warnings(cfg: SnmpConfig) -> list[str]:
    """What to warn about when the agent starts: v2c or noAuth users reachable beyond loopback."""
    agent = cfg.agent
    try:
        host, _ = parse_listen(agent.listen)
    except ValueError:
        return []
    if ipaddress.ip_address(host).is_loopback:
        return []
    weak = []
    if agent.community:
        weak.append("SNMPv2c (a community travels in clear text and answers cannot be authenticated)")
    no_auth = [name for name in agent.users if any(u.name == name and u.auth == "none" for u in cfg.users)]
    if no_auth:
        weak.append(f"SNMPv3 users without authentication ({', '.join(no_auth)})")
    if not weak:
        return []
    where = ("from " + ", ".join(agent.allow_from)) if agent.allow_from else \
        "from anywhere ([snmp.agent] allow_from is empty)"
    return [f"the snmp agent listens on {agent.listen} {where} and accepts {w}: prefer SNMPv3 authPriv users, "
            "a loopback listen address or an allow_from list" for w in weak]
