"""The machinery every probe kind shares: one round's bookkeeping (:class:`RoundTracker`), the
attempt schedule of a run (:class:`RoundProbe`), reading sockets and their error queues from the
event loop, and the small checks and texts around them. The kinds live in :mod:`.icmp` and
:mod:`.dns`; :func:`linkwatch.probes.make_probes` builds them.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from linkwatch.core.inputs import ProbeResult

KINDS = ("icmp", "dns")
ICMP_MODES = ("auto", "raw", "dgram")
IPV4_HEADER = 20  # bytes; the kernel adds no IP options to our probes
IPV6_HEADER = 40  # ... and no extension headers
UDP_HEADER = 8

# errno values after which a socket is still usable: the network said no, the socket is fine.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ECONNREFUSED,
        errno.EPERM,  # an nftables drop on output
        errno.EACCES,
        errno.ENOBUFS,
        errno.EMSGSIZE,
        errno.EADDRNOTAVAIL,  # our source address left; the bound socket works once it is back
        errno.ENOPROTOOPT,
        errno.EPROTO,
    }
)

# Linux IP_RECVERR (not exported by Python's socket module): ICMP errors go to the error queue.
IP_RECVERR = 11
IPV6_RECVERR = 25
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")


class ProbeError(Exception):
    """A probe was asked for something it cannot do (bad spec, mode, arguments, privileges)."""


class Probe(Protocol):
    """What the engine uses: one run per round, close when the probe goes away."""

    kind: str
    target: str

    async def run(self, timeout: float, attempts: int, late_window: float = 0.0) -> ProbeResult: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- pure helpers


def check_ip(value: str, what: str) -> str:
    """Return ``value`` in canonical form if it is an IPv4 or IPv6 address, else raise ProbeError.
    A link-local IPv6 address is refused: a probe target or source needs no interface scope."""
    try:
        address = ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise ProbeError(f"{what} must be an IPv4 or IPv6 address, got {value!r}") from None
    if address.version == 6 and (address.is_link_local or address.scope_id):
        raise ProbeError(f"{what} must not be a link-local or scoped IPv6 address, got {value!r}")
    return str(address)


def family_of(address: str) -> int:
    """4 or 6: the family of an address :func:`check_ip` accepted."""
    return 6 if ":" in address else 4


def ip_header(family: int) -> int:
    """Bytes of the IP header our probes carry in ``family``."""
    return IPV6_HEADER if family == 6 else IPV4_HEADER


def bind_to_device(sock: socket.socket, device: str | None) -> None:
    """Bind ``sock`` to the interface ``device`` (SO_BINDTODEVICE; nothing for None): its packets
    leave through that interface whatever the policy rules say, and only what arrives there reaches
    it. The kernel keeps the interface's index: a socket outlives a rename, not a new interface.
    Raises OSError with the interface's name in the text."""
    if device is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"cannot bind to interface {device}: {exc.strerror}") from None


def recverr_option(family: int) -> tuple[int, int]:
    """(level, option) that sends a socket's ICMP errors to its error queue."""
    return (socket.IPPROTO_IPV6, IPV6_RECVERR) if family == 6 else (socket.IPPROTO_IP, IP_RECVERR)


def check_run_args(timeout: float, attempts: int) -> None:
    """Raise ProbeError unless ``timeout`` > 0 and ``attempts`` is an integer >= 1."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ProbeError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ProbeError(f"attempts must be an integer >= 1, got {attempts!r}")


ICMP6_ERRORS = {1: "unreachable", 2: "packet too big", 3: "time exceeded", 4: "parameter problem"}


def icmp_error_text(icmp_type: int, icmp_code: int, family: int = 4) -> str:
    """Short error text for an ICMP (``family`` 4) or ICMPv6 (6) error message."""
    if family == 6:
        return ICMP6_ERRORS.get(icmp_type, f"icmpv6 type {icmp_type} code {icmp_code}")
    if icmp_type == 3:
        return "unreachable"
    if icmp_type == 11:
        return "time exceeded"
    if icmp_type == 12:
        return "parameter problem"
    return f"icmp type {icmp_type} code {icmp_code}"


def os_error_text(exc: BaseException) -> str:
    """Short text for a socket error: its strerror without the errno prefix, first letter lower."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def is_transient(exc: BaseException) -> bool:
    """True when the socket that raised ``exc`` is still usable."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


@dataclass(frozen=True)
class QueuedError:
    """One entry of a socket's error queue (IP_RECVERR): what failed and the quoted payload."""

    text: str
    payload: bytes  # the start of our own packet's payload (ICMP header, or UDP payload)
    size: int  # estimated IP-layer bytes of the error packet


def parse_queued_error(payload: bytes, ancillary: list[tuple[int, int, bytes]]) -> QueuedError | None:
    """Decode a ``recvmsg(..., MSG_ERRQUEUE)`` result; None if it carries no IP_RECVERR or
    IPV6_RECVERR data."""
    for level, kind, data in ancillary:
        if (level, kind) not in (recverr_option(4), recverr_option(6)) or len(data) < _SOCK_EXTENDED_ERR.size:
            continue
        ee_errno, origin, ee_type, ee_code, _pad, _info, _data = _SOCK_EXTENDED_ERR.unpack_from(data)
        if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
            family = 6 if origin == SO_EE_ORIGIN_ICMP6 else 4
            # outer IP + ICMP error header + quoted IP header + quoted payload
            return QueuedError(icmp_error_text(ee_type, ee_code, family), payload,
                               2 * ip_header(family) + 8 + len(payload))
        return QueuedError(os_error_text(OSError(ee_errno, os.strerror(ee_errno))), payload, 0)
    return None


def drain_error_queue(sock: socket.socket, limit: int = 64) -> list[QueuedError]:
    """Read every entry of ``sock``'s error queue (bounded), without blocking."""
    found: list[QueuedError] = []
    for _ in range(limit):
        try:
            payload, ancillary, _flags, _addr = sock.recvmsg(2048, 512, socket.MSG_ERRQUEUE)
        except OSError:  # BlockingIOError: the queue is empty
            break
        queued = parse_queued_error(payload, ancillary)
        if queued is not None:
            found.append(queued)
    return found


def pump(
    sock: socket.socket,
    on_packet: Callable[[bytes, tuple[str, int], float], None],
    on_queued: Callable[[QueuedError], None],
    limit: int = 16,
) -> OSError | None:
    """Read what a readable socket holds: up to ``limit`` datagrams, then its error queue.

    Called from an asyncio reader. The error queue (IP_RECVERR) is read only when the socket
    turns out to hold no datagram or reports an error, so the common case costs one or two
    recvfrom calls. Returns the OSError when the socket is dead (not a transient error).
    """
    for count in range(limit):
        try:
            data, addr = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            if count == 0:  # woken by EPOLLERR: the error queue holds something
                for queued in drain_error_queue(sock):
                    on_queued(queued)
            return None
        except OSError as exc:  # sk_err from an ICMP error: details are in the error queue
            for queued in drain_error_queue(sock):
                on_queued(queued)
            return None if is_transient(exc) else exc
        on_packet(data, addr, time.monotonic())
    return None


# --------------------------------------------------------------------------- one run's bookkeeping

PENDING = "pending"
ANSWERED = "answered"
FAILED = "failed"


class RoundTracker:
    """Bookkeeping of one run: which attempts went out, which got answered or failed.

    Pure (times are arguments). Keys identify attempts (ICMP sequence, DNS id); a key that this
    run did not send is unknown and never counts for it (a late reply is the probe's business).
    """

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.keys: dict[Hashable, int] = {}
        self.sent_at: list[float | None] = []
        self.fates: list[str] = []
        self.errors: list[str | None] = []
        self.answered: int | None = None
        self.rtt: float | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.refused = False  # an attempt got an explicit "no" (ICMP error, bad rcode)

    @property
    def made(self) -> int:
        """Attempts made so far (sent, or failed to send)."""
        return len(self.fates)

    @property
    def done(self) -> bool:
        """Answered, or every attempt made and failed: nothing left to wait for."""
        if self.answered is not None:
            return True
        return self.made == self.attempts and all(f == FAILED for f in self.fates)

    def sent(self, key: Hashable, now: float, nbytes: int) -> int:
        """Record an attempt that went out with ``key``; returns its index."""
        index = self.made
        self.keys[key] = index
        self.sent_at.append(now)
        self.fates.append(PENDING)
        self.errors.append(None)
        self.bytes_sent += nbytes
        return index

    def send_failed(self, error: str) -> int:
        """Record an attempt that could not be sent (socket error); it is lost at once."""
        index = self.made
        self.sent_at.append(None)
        self.fates.append(FAILED)
        self.errors.append(error)
        return index

    def owns(self, key: Hashable) -> bool:
        """True when ``key`` belongs to an attempt of this run."""
        return key in self.keys

    def answer(self, key: Hashable, now: float, nbytes: int) -> bool:
        """An answer for ``key`` arrived at ``now``; True if it is the run's answer."""
        index = self.keys.get(key)
        if index is None:
            return False
        self.bytes_received += nbytes
        if self.answered is not None or self.fates[index] != PENDING:
            return False
        sent_at = self.sent_at[index]
        assert sent_at is not None
        self.fates[index] = ANSWERED
        self.answered = index
        self.rtt = max(0.0, now - sent_at)
        return True

    def fail(self, key: Hashable, error: str, nbytes: int) -> bool:
        """An error (ICMP unreachable, bad rcode) came back for ``key``; True if it counted."""
        index = self.keys.get(key)
        if index is None:
            return False
        self.bytes_received += nbytes
        if self.fates[index] != PENDING:
            return False
        self.fates[index] = FAILED
        self.errors[index] = error
        self.refused = True
        return True

    def pending(self) -> list[tuple[Hashable, float]]:
        """(key, sent at) of the attempts still unanswered: when the run ends, their replies are late."""
        return [(key, self.sent_at[i]) for key, i in self.keys.items()  # type: ignore[misc]
                if self.fates[i] == PENDING and self.sent_at[i] is not None]

    def result(self, kind: str, target: str) -> ProbeResult:
        """The ProbeResult of this run as it stands (call when the run is over)."""
        if self.answered is None:
            counted = self.made
            lost = counted
            error = next((e for e in reversed(self.errors) if e), None) or "timeout"
            return ProbeResult(kind, target, False, None, counted, lost, self.bytes_sent, self.bytes_received, error)
        lost = 0
        for index, fate in enumerate(self.fates):
            # failed attempts are known lost; pending ones sent before the answered one were
            # given up on (that is why the next went out); later pending ones are in flight.
            if fate == FAILED or (fate == PENDING and index < self.answered):
                lost += 1
        return ProbeResult(
            kind, target, True, self.rtt, lost + 1, lost, self.bytes_sent, self.bytes_received, None
        )


# --------------------------------------------------------------------------- shared run() driver


class RoundProbe:
    """Base of the probe kinds: schedules attempts of a run and resolves it.

    Subclasses implement ``_ensure_open(loop)`` (raise OSError if the socket cannot be opened),
    ``_send(tracker, now)`` (send one attempt, record it with ``tracker.sent``; raise OSError on
    failure), ``_drop_socket()`` (close a dead socket; the next attempt reopens it) and
    ``_release()`` (close for good), and call ``_answer``/``_fail`` from their socket reader.
    """

    kind: str = ""

    def __init__(self, target: str) -> None:
        self.target = target
        # Runs in flight. Rounds may overlap (timeout > interval, or a faster interval while a
        # transition is pending): each run has its own tracker, and attempt keys (ICMP sequence,
        # DNS id) are unique across them, so an answer always finds the run that sent it.
        self._runs: dict[RoundTracker, asyncio.Future[None]] = {}
        self._closed = False
        # Attempts of finished runs that got no answer in time: a reply within the late window
        # still proves the path works (slow, not dead) and is reported with the next result.
        self._expired: dict[Hashable, float] = {}  # key -> sent at
        self._late: list[float] = []  # RTTs of late replies not reported yet
        self._late_bytes = 0
        self._late_window = 0.0

    async def run(self, timeout: float, attempts: int, late_window: float = 0.0) -> ProbeResult:
        """Run one round; never raises for network problems (they become ok=False results).
        ``late_window``: how long after sending a reply still counts as a late one."""
        check_run_args(timeout, attempts)
        self._late_window = max(late_window, 0.0)
        if self._closed:
            raise ProbeError(f"{self.kind} probe to {self.target} is closed")
        loop = asyncio.get_running_loop()
        tracker = RoundTracker(attempts)
        done: asyncio.Future[None] = loop.create_future()
        self._runs[tracker] = done
        handles: list[asyncio.TimerHandle] = []
        try:
            start = loop.time()
            horizon = time.monotonic() - self._late_window
            self._expired = {k: t for k, t in self._expired.items() if t >= horizon}
            self._attempt(loop, tracker)
            step = timeout / attempts
            for k in range(1, attempts):
                handles.append(loop.call_at(start + k * step, self._attempt, loop, tracker))
            handles.append(loop.call_at(start + timeout, _resolve, done))
            if not tracker.done:
                await done
        finally:
            for handle in handles:
                handle.cancel()
            self._runs.pop(tracker, None)
            if self._late_window:
                self._expired.update(tracker.pending())
        result = tracker.result(self.kind, self.target)
        late, self._late = self._late, []
        late_bytes, self._late_bytes = self._late_bytes, 0
        return replace(result, late=len(late), late_rtt=max(late) if late else None, refused=tracker.refused,
                       bytes_received=result.bytes_received + late_bytes)

    def close(self) -> None:
        """Release the probe's sockets; ends the running rounds."""
        if self._closed:
            return
        self._closed = True
        for done in list(self._runs.values()):
            _resolve(done)
        self._release()

    # -- hooks for subclasses

    def _ensure_open(self, loop: asyncio.AbstractEventLoop) -> None:
        raise NotImplementedError

    def _send(self, tracker: RoundTracker, now: float) -> None:
        raise NotImplementedError

    def _drop_socket(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    # -- called by the socket readers

    def _owner(self, key: Hashable) -> RoundTracker | None:
        for tracker in self._runs:
            if tracker.owns(key):
                return tracker
        return None

    def _answer(self, key: Hashable, now: float, nbytes: int) -> None:
        tracker = self._owner(key)
        if tracker is not None:
            if tracker.answer(key, now, nbytes):
                self._maybe_done(tracker)
            return
        sent_at = self._expired.pop(key, None)
        if sent_at is not None and now - sent_at <= self._late_window:
            self._late.append(now - sent_at)
            self._late_bytes += nbytes

    def _fail(self, key: Hashable, error: str, nbytes: int) -> None:
        tracker = self._owner(key)
        if tracker is not None and tracker.fail(key, error, nbytes):
            self._maybe_done(tracker)

    def _owns(self, key: Hashable) -> bool:
        """An attempt of a run in flight, or a late one still worth hearing about."""
        return self._owner(key) is not None or key in self._expired

    # -- internals

    def _attempt(self, loop: asyncio.AbstractEventLoop, tracker: RoundTracker) -> None:
        if tracker.done or tracker not in self._runs or tracker.made >= tracker.attempts:
            return
        try:
            self._ensure_open(loop)
            self._send(tracker, time.monotonic())
        except OSError as exc:
            tracker.send_failed(os_error_text(exc))
            if not is_transient(exc):
                self._drop_socket()
        self._maybe_done(tracker)

    def _maybe_done(self, tracker: RoundTracker) -> None:
        done = self._runs.get(tracker)
        if done is not None and tracker.done:
            _resolve(done)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LoopReader:
    """A non-blocking socket registered as an asyncio reader on whichever loop uses it."""

    def __init__(self, sock: socket.socket, callback: Callable[[], None]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._callback = callback
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure ``loop`` (and only it) watches the socket."""
        if self._loop is loop:
            return
        self.detach()
        loop.add_reader(self.sock.fileno(), self._callback)
        self._loop = loop

    def detach(self) -> None:
        """Stop watching the socket (call before closing it)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
        self._loop = None
