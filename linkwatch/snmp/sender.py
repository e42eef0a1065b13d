"""Putting LINKWATCH-MIB notifications on the wire: the :class:`Sender` interface the trap sink
(:mod:`linkwatch.sinks.snmp_traps`) sends through, and :class:`PysnmpSender`, the real one.

One pysnmp engine (this engine's ID, :func:`linkwatch.snmp.engine_id`) serves every
``[[snmp.traps]]`` receiver: v2c with the receiver's community, v3 with the USM user of
``[snmp.users]`` at the receiver's security level. pysnmp is imported (off the event loop) only
when the first notification is sent. The sink bounds how long a send may take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from linkwatch.config import SnmpConfig, TrapReceiverConfig
from linkwatch.snmp import SnmpError, engine_id
from linkwatch.snmp.mib import OID, Notification

SYS_UPTIME: OID = (1, 3, 6, 1, 2, 1, 1, 3, 0)  # SNMPv2-MIB::sysUpTime.0
SNMP_TRAP_OID: OID = (1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0)  # SNMPv2-MIB::snmpTrapOID.0


class TrapError(SnmpError):
    """Bad storm settings, or a notification that could not be sent (the message says to where)."""


def notification_varbinds(notification: Notification, ticks: int) -> list[tuple[OID, tuple[str, Any]]]:
    """What goes on the wire: sysUpTime.0, snmpTrapOID.0, then the notification's objects."""
    return [(SYS_UPTIME, ("TimeTicks", ticks)), (SNMP_TRAP_OID, ("ObjectIdentifier", notification.oid)),
            *notification.varbinds]


def describe(r: TrapReceiverConfig) -> str:
    """``10.77.0.2:162 (v3 authPriv inform)``: how logs name a receiver (no secrets)."""
    how = f"v3 {r.level}" if r.version == "3" else "v2c"
    return f"{r.host}:{r.port} ({how} {r.kind})"


class Sender(Protocol):
    """Puts one notification on the wire to receiver number ``receiver`` (its position in
    ``[[snmp.traps]]``); returns when a trap was handed over or an inform acknowledged, raises
    TrapError when it failed. The sink bounds the time it may take."""

    async def send(self, receiver: int, notification: Notification, ticks: int) -> None: ...

    async def close(self) -> None: ...


class PysnmpSender:
    """The real sender: one pysnmp engine (this engine's ID) for every receiver, set up on first use."""

    def __init__(self, cfg: SnmpConfig):
        self.cfg = cfg
        self._setup: asyncio.Task | None = None
        self._engine: Any = None
        self._targets: list[str] = []  # pysnmp notification target name per receiver
        self._originator: Any = None
        self._types: dict[str, Callable[[Any], Any]] = {}
        self._closed = False

    async def send(self, receiver: int, notification: Notification, ticks: int) -> None:
        if self._setup is None:
            self._setup = asyncio.create_task(self._set_up(), name="snmp-traps-setup")
        await asyncio.shield(self._setup)
        if self._closed:
            raise TrapError("the trap sender is closed")
        rx = self.cfg.traps[receiver]
        binds = [(oid, self._types[syntax](value))
                 for oid, (syntax, value) in notification_varbinds(notification, ticks)]
        loop = asyncio.get_running_loop()
        answered: asyncio.Future = loop.create_future()

        def done(_engine, _handle, error, status, index, _binds, _ctx) -> None:
            if not answered.done():
                answered.set_result((error, status, index))

        try:
            self._originator.send_varbinds(self._engine, self._targets[receiver], None, b"", binds,
                                           done if rx.kind == "inform" else None, None)
        except Exception as e:
            raise TrapError(f"pysnmp refused to send: {type(e).__name__}: {e}") from None
        if rx.kind == "trap":
            return
        error, status, index = await answered
        if error:
            raise TrapError(str(error))
        if status:
            raise TrapError(f"the receiver answered with error status {status} at index {index}")

    async def _set_up(self) -> None:
        """Import pysnmp and build its engine off the loop (about 0.15 s of CPU here), then configure
        every receiver (the first takes about 30 ms; a v3 user's key localization 3-40 ms)."""
        self._engine = await asyncio.to_thread(_new_engine, engine_id(self.cfg.engine_id))
        from pysnmp.entity.rfc3413 import ntforg
        from pysnmp.hlapi.v3arch.asyncio import UdpTransportTarget
        from pysnmp.hlapi.v3arch.asyncio.lcd import NotificationOriginatorLcdConfigurator
        from pysnmp.proto.api import v2c

        self._types = {"Integer32": v2c.Integer32, "OctetString": v2c.OctetString, "Counter32": v2c.Counter32,
                       "Gauge32": v2c.Gauge32, "TimeTicks": v2c.TimeTicks,
                       "ObjectIdentifier": v2c.ObjectIdentifier}
        lcd = NotificationOriginatorLcdConfigurator()
        for i, rx in enumerate(self.cfg.traps):
            tag = f"lw{i}"  # one tag per receiver: two receivers never share a pysnmp target
            target = await UdpTransportTarget.create((rx.host, rx.port), timeout=rx.timeout, retries=rx.retries,
                                                     tagList=tag)
            self._targets.append(lcd.configure(self._engine, _auth_data(self.cfg, rx, tag), target, rx.kind, b""))
        informs = [rx.timeout for rx in self.cfg.traps if rx.kind == "inform"]
        if informs and self._engine.transport_dispatcher is not None:  # retries on time even for short timeouts
            self._engine.transport_dispatcher.set_timer_resolution(max(0.02, min(0.5, min(informs) / 5)))
        self._originator = ntforg.NotificationOriginator()

    async def close(self) -> None:
        self._closed = True
        if self._setup is not None and not self._setup.done():
            self._setup.cancel()
        if self._engine is not None and self._engine.transport_dispatcher is not None:
            self._engine.close_dispatcher()


def _new_engine(local_id: bytes) -> Any:
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine
    from pysnmp.proto.rfc1902 import OctetString

    return SnmpEngine(OctetString(local_id))


AUTH_PROTOCOLS = {"none": "USM_AUTH_NONE", "md5": "USM_AUTH_HMAC96_MD5", "sha": "USM_AUTH_HMAC96_SHA",
                  "sha224": "USM_AUTH_HMAC128_SHA224", "sha256": "USM_AUTH_HMAC192_SHA256",
                  "sha384": "USM_AUTH_HMAC256_SHA384", "sha512": "USM_AUTH_HMAC384_SHA512"}
# AES-192/256 with Blumenthal key extension: what net-snmp (and tools built on it) call AES192/AES256
PRIV_PROTOCOLS = {"none": "USM_PRIV_NONE", "des": "USM_PRIV_CBC56_DES", "aes": "USM_PRIV_CFB128_AES",
                  "aes192": "USM_PRIV_CFB192_AES_BLUMENTHAL", "aes256": "USM_PRIV_CFB256_AES_BLUMENTHAL"}


def _auth_data(cfg: SnmpConfig, rx: TrapReceiverConfig, tag: str) -> Any:
    from pysnmp.hlapi.v3arch.asyncio import CommunityData, UsmUserData
    from pysnmp.hlapi.v3arch.asyncio import auth as pysnmp_auth

    if rx.version == "2c":
        return CommunityData(tag, rx.community, mpModel=1, tag=tag)
    try:
        user = cfg.user(rx.user or "")
    except KeyError:
        raise TrapError(f"{describe(rx)}: user {rx.user!r} is not in [snmp.users]") from None
    data = UsmUserData(
        user.name,
        authKey=user.auth_key if user.auth != "none" else None,
        privKey=user.priv_key if user.priv != "none" and user.auth != "none" else None,
        authProtocol=getattr(pysnmp_auth, AUTH_PROTOCOLS[user.auth]),
        privProtocol=getattr(pysnmp_auth, PRIV_PROTOCOLS[user.priv]),
    )
    # The user keeps all its keys (pysnmp has one entry per user name); the receiver's level may be lower.
    data.security_level = rx.level
    return data
