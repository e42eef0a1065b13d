"""ICMP echo probes over icmplib sockets.

Cheap on purpose (probe traffic costs money on metered LTE): echo requests carry no payload
(28 IP-layer bytes), each probe keeps one fixed ICMP identifier with an increasing sequence number
(one conntrack entry per probe), and sockets stay open between rounds.

Two socket kinds, both opened through icmplib:

- raw (``privileged=True``, needs CAP_NET_RAW): a raw ICMP socket sees every ICMP packet sent to
  its bound address, so the ICMP probes of one uplink share one socket and are told apart by
  their identifier; an ICMP_FILTER keeps echo requests and other noise out in the kernel.
  ICMP errors (destination unreachable) arrive as ordinary packets that quote our request.
- dgram (``privileged=False``, allowed by net.ipv4.ping_group_range): the kernel picks the
  identifier (the socket's "port") and hands each socket only its own replies, so each probe has
  its own socket and replies are matched by sequence number. ICMP errors arrive through the
  socket's error queue (IP_RECVERR).

ICMPv6 works the same way from an IPv6 source (echo request 128, reply 129; ICMP6_FILTER; the
kernel computes the checksum and hands raw sockets no IPv6 header: the sender comes from
recvfrom; IPV6_RECVERR for dgram sockets).
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct
from dataclasses import dataclass

from icmplib import ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPSocketError, SocketAddressError, SocketPermissionError

from linkwatch.probes.base import (
    IPV4_HEADER,
    IPV6_HEADER,
    LoopReader,
    ProbeError,
    QueuedError,
    RoundProbe,
    RoundTracker,
    bind_to_device,
    family_of,
    icmp_error_text,
    pump,
    recverr_option,
)

ECHO_REPLY = 0
ECHO_REQUEST = 8
ERROR_TYPES = frozenset({3, 11, 12})  # destination unreachable, time exceeded, parameter problem
ICMP_HEADER = 8
ECHO_BYTES = IPV4_HEADER + ICMP_HEADER  # an echo request without payload, at the IP layer

SOL_RAW = 255
ICMP_FILTER = 1  # Linux raw ICMP socket option: bit n set = drop ICMP type n

ECHO6_REQUEST = 128
ECHO6_REPLY = 129
ERROR6_TYPES = frozenset({1, 2, 3, 4})  # unreachable, packet too big, time exceeded, parameter problem
ECHO6_BYTES = IPV6_HEADER + ICMP_HEADER
ICMP6_FILTER = 1  # level IPPROTO_ICMPV6: 256 bits, bit n set = block ICMPv6 type n (RFC 3542)


def icmp_filter_mask(allowed: frozenset[int] = ERROR_TYPES | {ECHO_REPLY}) -> int:
    """ICMP_FILTER value that lets only ``allowed`` types reach a raw socket."""
    mask = 0xFFFFFFFF
    for icmp_type in allowed:
        mask &= ~(1 << icmp_type)
    return mask


def icmp6_filter(allowed: frozenset[int] = ERROR6_TYPES | {ECHO6_REPLY}) -> bytes:
    """ICMP6_FILTER value that lets only ``allowed`` types reach a raw ICMPv6 socket."""
    words = [0xFFFFFFFF] * 8
    for icmp_type in allowed:
        words[icmp_type >> 5] &= ~(1 << (icmp_type & 31))
    return struct.pack("=8I", *words)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"", family: int = 4) -> bytes:
    """An ICMP echo request (header + payload) with a valid checksum; for ICMPv6 (``family`` 6)
    the checksum covers a pseudo-header the kernel knows: it fills it in."""
    if family == 6:
        return struct.pack("!BBHHH", ECHO6_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + payload), ident & 0xFFFF, seq & 0xFFFF) + payload


@dataclass(frozen=True)
class IcmpMessage:
    """What a probe needs from a received ICMP packet.

    For an echo reply, ``ident``/``seq`` are the reply's; for an error they are those of the
    echo request it quotes, and ``quoted_dst`` is that request's destination.
    """

    type: int
    code: int
    ident: int
    seq: int
    source: str | None  # sender of the packet (from the IP header), None when unknown
    quoted_dst: str | None
    size: int  # IP-layer bytes


def parse_icmp(data: bytes, with_ip_header: bool) -> IcmpMessage | None:
    """Parse an echo reply, or an ICMP error quoting an echo request; None for anything else.

    Raw sockets deliver the IP header, datagram ICMP sockets do not (``with_ip_header``).
    """
    source = None
    offset = 0
    size = len(data) + (0 if with_ip_header else IPV4_HEADER)
    if with_ip_header:
        if len(data) < IPV4_HEADER or data[0] >> 4 != 4:
            return None
        offset = (data[0] & 0x0F) * 4
        source = socket.inet_ntoa(data[12:16])
    if len(data) < offset + ICMP_HEADER:
        return None
    icmp_type, code = data[offset], data[offset + 1]
    if icmp_type == ECHO_REPLY:
        ident, seq = struct.unpack_from("!HH", data, offset + 4)
        return IcmpMessage(icmp_type, code, ident, seq, source, None, size)
    if icmp_type not in ERROR_TYPES:
        return None
    inner = offset + ICMP_HEADER
    if len(data) < inner + IPV4_HEADER or data[inner] >> 4 != 4 or data[inner + 9] != socket.IPPROTO_ICMP:
        return None
    quoted_dst = socket.inet_ntoa(data[inner + 16 : inner + 20])
    quoted = inner + (data[inner] & 0x0F) * 4
    if len(data) < quoted + ICMP_HEADER or data[quoted] != ECHO_REQUEST:
        return None
    ident, seq = struct.unpack_from("!HH", data, quoted + 4)
    return IcmpMessage(icmp_type, code, ident, seq, source, quoted_dst, size)


def parse_icmp6(data: bytes, sender: str | None) -> IcmpMessage | None:
    """Parse an ICMPv6 echo reply, or an ICMPv6 error quoting an echo request; None for anything
    else. Neither raw nor datagram ICMPv6 sockets deliver the IPv6 header: ``sender`` is the
    address recvfrom gave."""
    if len(data) < ICMP_HEADER:
        return None
    size = len(data) + IPV6_HEADER
    icmp_type, code = data[0], data[1]
    if icmp_type == ECHO6_REPLY:
        ident, seq = struct.unpack_from("!HH", data, 4)
        return IcmpMessage(icmp_type, code, ident, seq, sender, None, size)
    if icmp_type not in ERROR6_TYPES:
        return None
    inner = ICMP_HEADER
    quoted = inner + IPV6_HEADER
    if (len(data) < quoted + ICMP_HEADER or data[inner] >> 4 != 6 or data[inner + 6] != socket.IPPROTO_ICMPV6
            or data[quoted] != ECHO6_REQUEST):
        return None
    quoted_dst = socket.inet_ntop(socket.AF_INET6, data[inner + 24 : inner + 40])
    ident, seq = struct.unpack_from("!HH", data, quoted + 4)
    return IcmpMessage(icmp_type, code, ident, seq, sender, quoted_dst, size)


def quoted_echo_seq(payload: bytes, family: int = 4) -> int | None:
    """Sequence number of the echo request an error-queue entry quotes (dgram sockets)."""
    if len(payload) < ICMP_HEADER or payload[0] != (ECHO6_REQUEST if family == 6 else ECHO_REQUEST):
        return None
    return struct.unpack_from("!H", payload, 6)[0]


def _open_icmp_socket(source: str, privileged: bool, device: str | None = None) -> ICMPv4Socket | ICMPv6Socket:
    """Open an icmplib socket bound to ``source`` (and ``device``); failures become OSError with a
    clear text."""
    kind = "raw" if privileged else "datagram"
    try:
        icmp = (ICMPv6Socket if family_of(source) == 6 else ICMPv4Socket)(address=source, privileged=privileged)
    except SocketAddressError:
        raise OSError(errno.EADDRNOTAVAIL, f"source address {source} not available") from None
    except SocketPermissionError:
        raise OSError(errno.EPERM, f"no permission for a {kind} ICMP socket") from None
    except ICMPSocketError as exc:
        cause = exc.__context__
        code = cause.errno if isinstance(cause, OSError) and cause.errno else errno.EIO
        raise OSError(code, f"cannot open {kind} ICMP socket on {source}: {exc}") from None
    try:
        bind_to_device(icmp.sock, device)
    except OSError:
        icmp.close()
        raise
    return icmp


def _may_open(privileged: bool) -> bool:
    try:
        ICMPv4Socket(privileged=privileged).close()
    except SocketPermissionError:
        return False
    except ICMPSocketError as exc:
        raise ProbeError(f"cannot open an ICMP socket: {exc}") from None
    return True


def resolve_privileged(mode: str) -> bool:
    """True for raw sockets, False for datagram ones, as ``mode`` and our privileges allow.

    "auto" tries raw and falls back to datagram on a permission error; "raw"/"dgram" force one.
    """
    if mode in ("auto", "raw") and _may_open(True):
        return True
    if mode == "raw":
        raise ProbeError("icmp_mode 'raw' needs CAP_NET_RAW, which this process does not have")
    if _may_open(False):
        return False
    raise ProbeError(
        f"icmp_mode {mode!r}: no ICMP socket allowed; grant CAP_NET_RAW or put the process's "
        "group in net.ipv4.ping_group_range"
    )


class IcmpChannel:
    """One ICMP socket on ``source`` (and ``device``) and the probes that use it (several for raw,
    one for dgram)."""

    def __init__(self, source: str, privileged: bool, device: str | None = None) -> None:
        self.source = source
        self.device = device
        self.privileged = privileged
        self.family = family_of(source)
        self._icmp: ICMPv4Socket | ICMPv6Socket | None = None
        self._reader: LoopReader | None = None
        self._probes: dict[int, IcmpProbe] = {}  # raw: by our identifier; dgram: the one probe

    @property
    def in_use(self) -> bool:
        """True while some probe still uses this channel."""
        return bool(self._probes)

    def add(self, probe: IcmpProbe) -> int:
        """Register ``probe``; returns its key, which in raw mode is its ICMP identifier (unique
        on this socket). In dgram mode the kernel picks the identifier on the wire."""
        ident = random.randrange(1, 0x10000)
        while ident in self._probes:
            ident = random.randrange(1, 0x10000)
        self._probes[ident] = probe
        return ident

    def wire_ident(self, key: int) -> int | None:
        """The identifier the probe registered as ``key`` uses on the wire."""
        if self.privileged:
            return key
        if self._reader is None:
            return None
        return int(self._reader.sock.getsockname()[1])

    def remove(self, ident: int) -> None:
        """Forget a probe; the socket closes with the last one."""
        self._probes.pop(ident, None)
        if not self._probes:
            self.close()

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the socket if needed and let ``loop`` watch it; raises OSError."""
        if self._reader is None:
            icmp = _open_icmp_socket(self.source, self.privileged, self.device)
            sock = icmp.sock
            try:
                if self.privileged and self.family == 6:
                    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter())
                elif self.privileged:
                    sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", icmp_filter_mask()))
                else:
                    sock.setsockopt(*recverr_option(self.family), 1)
                self._reader = LoopReader(sock, self._on_readable)
            except OSError:
                icmp.close()
                raise
            self._icmp = icmp
        if loop is not None:
            self._reader.attach(loop)

    def close(self) -> None:
        """Close the socket (a later ``open`` makes a new one)."""
        if self._reader is not None:
            self._reader.detach()
            self._reader = None
        if self._icmp is not None:
            self._icmp.close()
            self._icmp = None

    def send(self, ident: int, seq: int, target: str) -> None:
        """Send one echo request without payload; raises OSError."""
        if self._reader is None:
            raise OSError(errno.EBADF, "ICMP socket is closed")
        # The kernel rewrites the identifier (and checksum) of datagram ICMP sockets.
        self._reader.sock.sendto(echo_request(ident, seq, family=self.family), (target, 0))

    def _on_readable(self) -> None:
        reader = self._reader
        if reader is None:
            return
        dead = pump(reader.sock, self._on_packet, self._on_queued)
        if dead is not None:
            self.close()

    def _on_packet(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if self.family == 6:
            message = parse_icmp6(data, addr[0] if addr else None)
        else:
            message = parse_icmp(data, self.privileged)
        if message is None:
            return
        if self.privileged:
            probe = self._probes.get(message.ident)
        else:  # one probe per socket; the kernel already matched the identifier
            probe = next(iter(self._probes.values()), None)
        if probe is not None:
            probe.on_message(message, addr[0], now)

    def _on_queued(self, queued: QueuedError) -> None:
        seq = quoted_echo_seq(queued.payload, self.family)
        if seq is None:
            return
        for probe in list(self._probes.values()):
            probe.on_queued_error(seq, queued)


class IcmpChannelFactory:
    """Hands out the ICMP probes of one make_probes() call: one shared raw socket, or one
    datagram socket per probe."""

    def __init__(self, source: str, mode: str, device: str | None = None) -> None:
        self.source = source
        self.device = device
        self.privileged = resolve_privileged(mode)
        self._shared: IcmpChannel | None = None

    def probe(self, target: str) -> IcmpProbe:
        if self.privileged:
            if self._shared is None or not self._shared.in_use:
                self._shared = IcmpChannel(self.source, True, self.device)
            channel = self._shared
        else:
            channel = IcmpChannel(self.source, False, self.device)
        probe = IcmpProbe(target, channel)
        try:
            channel.open()  # now, in the caller's namespace; retried at each attempt if it fails
        except OSError:
            pass
        return probe


class IcmpProbe(RoundProbe):
    """ICMP echo to ``target`` through an IcmpChannel; one fixed identifier, rising sequence."""

    kind = "icmp"

    def __init__(self, target: str, channel: IcmpChannel) -> None:
        super().__init__(target)
        self._channel = channel
        self._key = channel.add(self)  # raw: the identifier on the wire
        self._seq = random.randrange(0x10000)

    @property
    def mode(self) -> str:
        """"raw" or "dgram": the kind of ICMP socket this probe uses."""
        return "raw" if self._channel.privileged else "dgram"

    @property
    def ident(self) -> int | None:
        """The ICMP identifier on the wire (dgram: the kernel's choice; None while closed)."""
        return self._channel.wire_ident(self._key)

    def on_message(self, message: IcmpMessage, sender: str, now: float) -> None:
        """A reply or ICMP error addressed to this probe's identifier (or socket)."""
        if message.type in (ECHO_REPLY, ECHO6_REPLY):
            if (message.source or sender) == self.target:
                self._answer(message.seq, now, message.size)
        elif message.quoted_dst in (None, self.target):
            self._fail(message.seq, icmp_error_text(message.type, message.code, self._channel.family), message.size)

    def on_queued_error(self, seq: int, queued: QueuedError) -> None:
        """An error-queue entry (dgram sockets) that quotes echo request ``seq``."""
        self._fail(seq, queued.text, queued.size)

    def _ensure_open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._channel.open(loop)

    def _send(self, tracker: RoundTracker, now: float) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        self._channel.send(self._key, self._seq, self.target)
        tracker.sent(self._seq, now, ECHO6_BYTES if self._channel.family == 6 else ECHO_BYTES)

    def _drop_socket(self) -> None:
        self._channel.close()

    def _release(self) -> None:
        self._channel.remove(self._key)
