"""SNMP: LINKWATCH-MIB (:mod:`.mib`, pure; its text :mod:`.mibtext`), traps
(:mod:`linkwatch.sinks.snmp_traps`, a sink, sending through :mod:`.sender`) and the agent
(:mod:`.agent`, the server in the engine, off by default, answering from :mod:`.view`, pure).
pysnmp is imported only when one of them runs."""

from __future__ import annotations

import functools
import hashlib

NET_SNMP_ENTERPRISE = 8072  # RFC 3411 engine IDs start with an enterprise number; ours has none


class SnmpError(RuntimeError):
    """The SNMP agent or trap sender cannot work (address in use, bad key material, ...)."""


@functools.lru_cache(maxsize=8)
def engine_id(configured: str | None, machine_id_path: str = "/etc/machine-id") -> bytes:
    """The SNMPv3 engine ID: ``[snmp] engine_id`` when set, else derived from the machine ID so it
    stays the same across restarts (a v3 trap receiver is configured with it). Cached: the engine's
    status (polled every second by the web UI and the agent) shows it without reading the file."""
    if configured:
        return bytes.fromhex(configured)
    try:
        with open(machine_id_path, "rb") as f:
            seed = f.read().strip()
    except OSError:
        seed = b"linkwatch"
    digest = hashlib.sha256(b"linkwatch snmp engine " + seed).digest()[:12]
    # RFC 3411: enterprise number with the top bit set, format 5 (octets), then the octets
    return (0x80000000 | NET_SNMP_ENTERPRISE).to_bytes(4, "big") + b"\x05" + digest
