"""DNS probes: an A query over UDP from the uplink's source address (dnspython), over IPv4 or,
from an IPv6 source to an IPv6 server, over IPv6 (the query is an A query either way).

One UDP socket per probe, bound to the source address and kept open between rounds (one
conntrack entry). Every attempt uses a fresh random DNS id, never one of the last few, so a late
reply of an earlier round cannot match. No EDNS: the query stays small (about 57 IP-layer bytes
for example.com). A well-formed matching response with rcode NOERROR or NXDOMAIN is an answer;
any other rcode fails that attempt ("rcode SERVFAIL"). ICMP errors (port or host unreachable)
arrive through the socket's error queue (IP_RECVERR) and fail the attempt they quote.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import deque

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from linkwatch.probes.base import (
    UDP_HEADER,
    LoopReader,
    ProbeError,
    QueuedError,
    RoundProbe,
    RoundTracker,
    bind_to_device,
    family_of,
    ip_header,
    pump,
    recverr_option,
)

DNS_PORT = 53
OK_RCODES = frozenset({dns.rcode.NOERROR, dns.rcode.NXDOMAIN})
RECENT_IDS = 64  # ids not reused for this many attempts


def query_template(query: str) -> dns.message.Message:
    """The A query for ``query`` without EDNS; raises ProbeError for a bad name."""
    if not isinstance(query, str) or not query.strip(".").strip():
        raise ProbeError(f"dns probe query must be a domain name, got {query!r}")
    try:
        name = dns.name.from_text(query)
    except dns.exception.DNSException as exc:
        raise ProbeError(f"dns probe query {query!r} is not a valid name: {exc}") from None
    return dns.message.make_query(name, dns.rdatatype.A, use_edns=False)


def with_id(wire: bytes, qid: int) -> bytes:
    """``wire`` (a DNS message) with its id replaced by ``qid``."""
    return struct.pack("!H", qid) + wire[2:]


def fresh_id(recent: deque[int], rng: random.Random) -> int:
    """A random 16-bit DNS id not in ``recent``; appends it there."""
    qid = rng.randrange(0x10000)
    while qid in recent:
        qid = rng.randrange(0x10000)
    recent.append(qid)
    return qid


def classify_response(template: dns.message.Message, qid: int, data: bytes) -> str | None:
    """Check ``data`` against our query with id ``qid``.

    Returns "" for an answer, an error text ("rcode SERVFAIL") for a matching response with a bad
    rcode, or None when ``data`` is malformed or not a response to this query.
    """
    try:
        response = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError, struct.error):
        return None
    template.id = qid
    if not template.is_response(response):
        return None
    rcode = response.rcode()
    if rcode in OK_RCODES:
        return ""
    return f"rcode {dns.rcode.to_text(rcode)}"


class DnsProbe(RoundProbe):
    """A-record query for ``query`` to ``target``:53, sent from ``source``."""

    kind = "dns"

    def __init__(self, target: str, source: str, query: str = "example.com", device: str | None = None) -> None:
        super().__init__(target)
        self.source = source
        self.device = device
        self.family = family_of(source)
        self._ip_header = ip_header(self.family)
        self.query = query
        self._template = query_template(query)
        self._wire = self._template.to_wire()
        self._recent: deque[int] = deque(maxlen=RECENT_IDS)
        self._rng = random.SystemRandom()
        self._reader: LoopReader | None = None
        try:
            self._open()  # now, in the caller's namespace; retried at each attempt if it fails
        except OSError:
            pass

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET6 if self.family == 6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(*recverr_option(self.family), 1)
            bind_to_device(sock, self.device)
            try:
                sock.bind((self.source, 0))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot bind to source address {self.source}: {exc.strerror}") from None
            self._reader = LoopReader(sock, self._on_readable)
        except OSError:
            sock.close()
            raise

    def _ensure_open(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._reader is None:
            self._open()
        assert self._reader is not None
        self._reader.attach(loop)

    def _send(self, tracker: RoundTracker, now: float) -> None:
        assert self._reader is not None
        qid = fresh_id(self._recent, self._rng)
        wire = with_id(self._wire, qid)
        self._reader.sock.sendto(wire, (self.target, DNS_PORT))
        tracker.sent(qid, now, self._ip_header + UDP_HEADER + len(wire))

    def _on_readable(self) -> None:
        reader = self._reader
        if reader is None:
            return
        dead = pump(reader.sock, self._on_packet, self._on_queued)
        if dead is not None:
            self._drop_socket()

    def _on_packet(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if addr[0] != self.target or addr[1] != DNS_PORT or len(data) < 12:
            return
        qid = struct.unpack_from("!H", data)[0]
        if not self._owns(qid):  # late reply of an earlier round, or noise: skip the parse
            return
        verdict = classify_response(self._template, qid, data)
        if verdict is None:
            return
        size = self._ip_header + UDP_HEADER + len(data)
        if verdict:
            self._fail(qid, verdict, size)
        else:
            self._answer(qid, now, size)

    def _on_queued(self, queued: QueuedError) -> None:
        if len(queued.payload) >= 2:
            # the quoted packet also holds our UDP header, which the error queue strips
            size = queued.size + UDP_HEADER if queued.size else 0
            self._fail(struct.unpack_from("!H", queued.payload)[0], queued.text, size)

    def _drop_socket(self) -> None:
        if self._reader is not None:
            self._reader.detach()
            self._reader.sock.close()
            self._reader = None

    def _release(self) -> None:
        self._drop_socket()
