"""A LAN client's UDP flow through the lab: how long it was cut off and which uplink carried it.

The client (in ``lw-N-client``) sends a datagram ``"<seq>|<token>"`` every ``interval`` to the echo
server 203.0.113.7:7007, from ONE socket by default, so the whole run is one long-lived NAT flow
(``--new-socket`` uses a fresh socket, hence a fresh flow, per datagram). The server answers
``"<address:port it saw>|<seq>|<token>"``; the address tells which uplink's NAT the packet took.

Outage, precisely (all times in seconds from the flow's start, ``origin`` on the system-wide
monotonic clock, so other processes can line their events up with the flow's):

* between two replies received one after the other at r1 < r2 the outage is
  ``max(0, r2 - r1 - interval)``: replies normally arrive one interval apart, so this is the
  time the gap exceeds that spacing, ≈ (datagrams lost in a row) × interval;
* a run that starts without replies has a leading outage ``s(first answered) - s(first sent)``,
  one that ends without replies a trailing outage ``s(last sent) - s(last answered)``, where
  s(x) is the send time of datagram x (replies arriving up to ``GRACE`` after the last send count);
* with no reply at all the outage is the whole sending time plus one interval.

``longest_outage_s`` is the largest of these. An address change is reported at the first reply
whose seen address (IP only; ports differ per flow) differs from the previous reply's, with the
gap between those two replies computed as above.

A packet rate is an interval: ``rate=50`` (``--rate 50``) is one datagram every 20 ms, 50 packets a
second each way (a video call). ``one_way`` (``--one-way``) sends datagrams the echo server does not
answer (an upload with no replies: nothing comes back through the uplink); once it has stopped
sending, the client asks the server how many arrived and from which address (``delivered``,
``delivered_via``), so a one-way run still tells whether its packets got through and which uplink
NATed them.

Everything is bounded: at most ``MAX_DURATION`` seconds and ``MAX_DATAGRAMS`` datagrams. The flow
calls :func:`~linkwatch.lab.safety.require_lab_namespace` before it creates any socket.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from linkwatch.lab.safety import NotInLabError, require_lab_namespace
from linkwatch.lab.services import ONE_WAY, ONE_WAY_QUERY, parse_tally_answer
from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import ECHO_PORT, ECHO_SERVER, LabError, uplink_for_address
from linkwatch.lab.processes import child_env, forget_process, python_module_argv, record_process, stop_pid

DEFAULT_INTERVAL = 0.010
MIN_INTERVAL = 0.001
MAX_INTERVAL = 10.0
MAX_DURATION = 600.0
MAX_DATAGRAMS = 200_000
GRACE = 0.3  # keep receiving this long after the last send
NEW_SOCKET_KEEP = 1.0  # --new-socket: a socket waits this long for its reply
MAX_OPEN_SOCKETS = 256
TALLY_TRIES = 5  # one-way: count questions asked, TALLY_WAIT apart, until one is answered
TALLY_WAIT = 0.2


class FlowError(LabError):
    """The client flow was asked for something out of bounds, or failed to run."""


@dataclass(frozen=True)
class Reply:
    seq: int
    sent: float  # seconds from the first send
    received: float
    seen: str  # "address:port" as the echo server saw the datagram

    @property
    def address(self) -> str:
        return self.seen.rsplit(":", 1)[0]

    @property
    def uplink(self) -> str | None:
        u = uplink_for_address(self.address)
        return u.name if u else None


@dataclass(frozen=True)
class AddressChange:
    seq: int  # first datagram answered through the new address
    at: float  # when its reply arrived
    before: str
    after: str
    gap_s: float  # outage between the last reply via `before` and this one

    @property
    def before_uplink(self) -> str | None:
        u = uplink_for_address(self.before)
        return u.name if u else None

    @property
    def after_uplink(self) -> str | None:
        u = uplink_for_address(self.after)
        return u.name if u else None


@dataclass(frozen=True)
class FlowReport:
    sent: int
    received: int
    interval_s: float
    duration_s: float  # first to last send
    longest_outage_s: float
    trailing_outage_s: float  # > 0: the run ended without replies (not recovered)
    changes: tuple[AddressChange, ...] = ()
    replies: tuple[Reply, ...] = field(default=(), repr=False)
    new_socket: bool = False
    origin: float = 0.0  # time.monotonic() (system-wide) of time 0, to line the flow up with other events
    one_way: bool = False  # datagrams the echo server did not answer (received is 0 by design)
    delivered: int | None = None  # one-way: datagrams the server counted (None: it did not say)
    delivered_via: str | None = None  # one-way: "address:port" the last of them came from

    @property
    def loss_pct(self) -> float:
        """Datagrams without an echo; for a one-way run, those the server did not count."""
        if self.one_way:
            return 100.0 * (self.sent - (self.delivered or 0)) / self.sent if self.sent else 100.0
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0

    @property
    def rate_pps(self) -> float:
        """Datagrams sent per second (each way, unless one-way)."""
        return (self.sent - 1) / self.duration_s if self.sent > 1 and self.duration_s > 0 else 0.0

    @property
    def rtts_s(self) -> list[float]:
        """Round-trip time of each answered datagram, in send order."""
        return [r.received - r.sent for r in self.replies]

    @property
    def median_rtt_s(self) -> float | None:
        rtts = sorted(self.rtts_s)
        return rtts[len(rtts) // 2] if rtts else None

    @property
    def delivered_uplink(self) -> str | None:
        u = uplink_for_address(self.delivered_via) if self.delivered_via else None
        return u.name if u else None

    @property
    def seen_addresses(self) -> list[str]:
        """Distinct seen addresses (IP only), in order of first appearance."""
        return list(dict.fromkeys(r.address for r in self.replies))

    @property
    def uplinks(self) -> list[str | None]:
        return list(dict.fromkeys(r.uplink for r in self.replies))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["replies"] = [[r.seq, round(r.sent, 6), round(r.received, 6), r.seen] for r in self.replies]
        d["loss_pct"] = round(self.loss_pct, 3)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FlowReport:
        return cls(
            sent=d["sent"], received=d["received"], interval_s=d["interval_s"], duration_s=d["duration_s"],
            longest_outage_s=d["longest_outage_s"], trailing_outage_s=d["trailing_outage_s"],
            changes=tuple(AddressChange(**c) for c in d.get("changes", ())),
            replies=tuple(Reply(int(s), float(t), float(r), str(a)) for s, t, r, a in d.get("replies", ())),
            new_socket=bool(d.get("new_socket", False)), origin=float(d.get("origin", 0.0)),
            one_way=bool(d.get("one_way", False)), delivered=d.get("delivered"), delivered_via=d.get("delivered_via"),
        )

    def summary(self) -> str:
        if self.one_way:
            got = "not counted" if self.delivered is None else f"{self.delivered} arrived ({self.loss_pct:.1f}% lost)"
            via = f", via {self.delivered_via} ({uplink_name(self.delivered_via)})" if self.delivered_via else ""
            return f"one-way: sent {self.sent} at {self.rate_pps:.0f}/s, {got}{via}, {self.received} answered"
        lines = [f"sent {self.sent}, received {self.received} ({self.loss_pct:.1f}% lost), "
                 f"longest outage {self.longest_outage_s * 1000:.0f} ms"
                 + (f", still cut off at the end ({self.trailing_outage_s * 1000:.0f} ms)"
                    if self.trailing_outage_s > 0 else ""),
                 f"seen as: {', '.join(f'{a} ({uplink_name(a)})' for a in self.seen_addresses) or '-'}"]
        for c in self.changes:
            lines.append(f"  at {c.at:7.3f}s {c.before} ({uplink_name(c.before)}) -> {c.after} "
                         f"({uplink_name(c.after)}), gap {c.gap_s * 1000:.0f} ms")
        return "\n".join(lines)


def uplink_name(address: str) -> str:
    u = uplink_for_address(address)
    return u.name if u else "?"


def interval_for(rate: float | None, interval: float) -> float:
    """The interval of a flow asked for as ``rate`` packets a second (when given), else ``interval``."""
    if rate is None:
        return interval
    if not 1 / MAX_INTERVAL <= rate <= 1 / MIN_INTERVAL:
        raise FlowError(f"rate {rate:g} packets/s is out of range: expected {1 / MAX_INTERVAL:g} to {1 / MIN_INTERVAL:g}")
    return 1.0 / rate


def check_bounds(duration: float, interval: float) -> int:
    """Number of datagrams for ``duration``/``interval``, or FlowError naming the bad value."""
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise FlowError(f"interval {interval * 1000:g} ms is out of range: expected "
                        f"{MIN_INTERVAL * 1000:g} to {MAX_INTERVAL * 1000:g} ms")
    if not 0 < duration <= MAX_DURATION:
        raise FlowError(f"duration {duration:g}s is out of range: expected more than 0 up to {MAX_DURATION:g}s")
    count = max(1, int(duration / interval + 1e-9))
    if count > MAX_DATAGRAMS:
        raise FlowError(f"{count} datagrams ({duration:g}s every {interval * 1000:g} ms) is more than "
                        f"{MAX_DATAGRAMS}: lengthen the interval or shorten the run")
    return count


def summarize(sent_times: Sequence[float], replies: Sequence[Reply], interval: float,
              new_socket: bool = False, origin: float = 0.0) -> FlowReport:
    """Turn send times (index = seq) and replies into a FlowReport (see the module doc). Pure."""
    first: dict[int, Reply] = {}
    for r in replies:
        if 0 <= r.seq < len(sent_times):
            first.setdefault(r.seq, r)
    ordered = sorted(first.values(), key=lambda r: (r.received, r.seq))
    sent = len(sent_times)
    duration = sent_times[-1] - sent_times[0] if sent else 0.0
    changes: list[AddressChange] = []
    if not ordered:
        outage = duration + interval if sent else 0.0
        return FlowReport(sent, 0, interval, duration, outage, outage, (), (), new_socket, origin)
    answered = sorted(first)
    leading = sent_times[answered[0]] - sent_times[0]
    trailing = sent_times[-1] - sent_times[answered[-1]]
    longest = max(leading, trailing)
    for a, b in zip(ordered, ordered[1:]):
        gap = max(0.0, b.received - a.received - interval)
        longest = max(longest, gap)
        if b.address != a.address:
            changes.append(AddressChange(b.seq, b.received, a.address, b.address, gap))
    return FlowReport(sent, len(ordered), interval, duration, longest, trailing, tuple(changes),
                      tuple(sorted(ordered, key=lambda r: r.seq)), new_socket, origin)


def parse_target(text: str) -> tuple[str, int]:
    """``"203.0.113.7:7007"`` or ``"[2001:db8:ff::7]:7007"`` -> (host, port)."""
    host, _, port = text.rpartition(":")
    try:
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            socket.inet_pton(socket.AF_INET6, host)
        else:
            socket.inet_pton(socket.AF_INET, host)
        port_n = int(port)
    except (OSError, ValueError):
        raise FlowError(f"target {text!r} is not IPv4:port or [IPv6]:port") from None
    if not 0 < port_n < 65536:
        raise FlowError(f"target port {port_n} is out of range")
    return host, port_n


def parse_reply(data: bytes, token: str) -> tuple[int, str] | None:
    """(seq, seen address) from an echo reply of this run, else None. Pure."""
    seen, _, rest = data.decode("ascii", errors="replace").partition("|")
    seq, _, tok = rest.partition("|")
    if tok != token or not seq.isdigit():
        return None
    return int(seq), seen


def run_flow(duration: float, interval: float = DEFAULT_INTERVAL, target: tuple[str, int] = (ECHO_SERVER, ECHO_PORT),
             new_socket: bool = False, progress: float | None = None,
             on_progress: Callable[[dict], None] | None = None, allowed: tuple[str, ...] | None = None,
             should_stop: Callable[[], bool] = lambda: False,
             clock: Callable[[], float] = time.monotonic, one_way: bool = False,
             first_port: int | None = None) -> FlowReport:
    """Send the flow from this process (which must be in a lab namespace) and measure it.
    ``one_way``: datagrams the echo server does not answer (an upload with no replies).
    ``first_port`` (with ``new_socket``): bind each new socket to the next source port from there,
    so no datagram reuses a port, hence an old conntrack entry (an ephemeral port may)."""
    count = check_bounds(duration, interval)
    if first_port is not None and not (new_socket and 1024 <= first_port <= 65535 - count):
        raise FlowError(f"first_port={first_port}: needs new_socket and {count} free ports above 1024 below 65536")
    next_port = [first_port]
    require_lab_namespace(allowed)  # before any socket exists
    if on_progress is None:
        progress = None
    token = os.urandom(4).hex()
    sel = selectors.DefaultSelector()
    open_socks: collections.deque[tuple[float, socket.socket]] = collections.deque()
    sent_times: list[float] = []
    replies: list[Reply] = []
    fixed: socket.socket | None = None

    v6 = ":" in target[0]

    def new_sock() -> socket.socket:
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        while next_port[0] is not None and next_port[0] < 65536:
            try:
                s.bind(("::" if v6 else "0.0.0.0", next_port[0]))
                break
            except OSError:
                pass  # in use: the next one
            finally:
                next_port[0] += 1
        s.connect(target)
        sel.register(s, selectors.EVENT_READ)
        return s

    def close(s: socket.socket) -> None:
        sel.unregister(s)
        s.close()

    def drain(timeout: float) -> None:
        for key, _ in sel.select(max(0.0, timeout)):
            s = key.fileobj
            for _ in range(1000):
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue  # ICMP unreachable for an earlier datagram: no echo server there
                parsed = parse_reply(data, token)
                if parsed and parsed[0] < len(sent_times):
                    seq, seen = parsed
                    replies.append(Reply(seq, sent_times[seq], clock() - t0, seen))

    t0 = clock()
    next_send = next_progress = t0
    try:
        if not new_socket:
            fixed = new_sock()
        while len(sent_times) < count and not should_stop():
            now = clock()
            if now >= next_send:
                s = fixed
                if new_socket:
                    s = new_sock()
                    open_socks.append((now, s))
                    while open_socks and (len(open_socks) > MAX_OPEN_SOCKETS
                                          or now - open_socks[0][0] > NEW_SOCKET_KEEP):
                        close(open_socks.popleft()[1])
                sent_times.append(now - t0)
                try:
                    s.send((ONE_WAY if one_way else b"") + f"{len(sent_times) - 1}|{token}".encode())
                except (BlockingIOError, ConnectionRefusedError):
                    pass  # counts as lost
                next_send += interval
                if next_send <= now:
                    next_send = now + interval  # a whole interval late: skip, never burst
            if progress and on_progress and now >= next_progress:
                next_progress = now + progress
                last = replies[-1] if replies else None
                on_progress({"origin": t0, "t": round(now - t0, 3), "sent": len(sent_times), "received": len(replies),
                             "seen": last.address if last else None, "uplink": last.uplink if last else None,
                             "since_reply": round(now - t0 - (last.received if last else 0.0), 3)})
            drain(min(next_send, next_progress if progress else next_send) - clock())
        end = clock() + GRACE
        while clock() < end and len(replies) < len(sent_times):
            drain(end - clock())
        tally = _ask_tally(target, token) if one_way and sent_times else None
    finally:
        for s in [fixed] + [s for _, s in open_socks]:
            if s is not None:
                close(s)
        sel.close()
    report = summarize(sent_times, replies, interval, new_socket, t0)
    if not one_way:
        return report
    delivered, via = tally if tally else (None, None)
    return dataclasses.replace(report, one_way=True, delivered=delivered, delivered_via=via)


def _ask_tally(target: tuple[str, int], token: str) -> tuple[int, str | None] | None:
    """One-way: ask the echo server how many datagrams of ``token`` arrived and from where (bounded)."""
    with socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(target)
        s.settimeout(TALLY_WAIT)
        for _ in range(TALLY_TRIES):
            try:
                s.send(ONE_WAY_QUERY + token.encode())
                deadline = time.monotonic() + TALLY_WAIT
                while time.monotonic() < deadline:
                    answer = parse_tally_answer(s.recv(2048), token)
                    if answer is not None:
                        return answer
            except (socket.timeout, ConnectionRefusedError):
                continue
    return None


# --- running it in the client namespace --------------------------------------------------------


class FlowHandle:
    """A client flow running as a subprocess in ``lw-N-client``; recorded by pid until it ends."""

    def __init__(self, proc: subprocess.Popen, state_dir: str, role: str, duration: float):
        self._proc = proc
        self._state_dir = state_dir
        self._role = role
        self._duration = duration
        self._progress: dict | None = None
        self._report: dict | None = None
        self._stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._readers:
            t.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read_stdout(self) -> None:
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "progress" in msg:
                self._progress = msg["progress"]
            elif "report" in msg:
                self._report = msg["report"]

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            if len(self._stderr) < 100:
                self._stderr.append(line.rstrip())

    def progress(self) -> dict | None:
        """The latest progress line: t, sent, received, seen, uplink, since_reply."""
        return self._progress

    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> None:
        """Ask the flow to end now (it still reports what it measured)."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def result(self, timeout: float | None = None) -> FlowReport:
        """Wait for the flow to end (bounded) and return its report."""
        limit = self._duration + GRACE + 15.0 if timeout is None else timeout
        try:
            self._proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.stop()
            try:
                self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                stop_pid(self._proc.pid, None, timeout=1.0)
                self._proc.wait(5.0)
        for t in self._readers:
            t.join(5.0)
        forget_process(self._state_dir, self._role)
        if self._report is None:
            why = self._stderr[-1] if self._stderr else f"exit {self._proc.returncode}"
            raise FlowError(f"client flow (pid {self.pid}) gave no report: {why}")
        return FlowReport.from_dict(self._report)

    def __enter__(self) -> FlowHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.poll() is None:
            self.stop()
            try:
                self.result(timeout=5.0)
            except FlowError:
                pass


def start_flow(lab_name: str, duration: float, interval: float = DEFAULT_INTERVAL, new_socket: bool = False,
               progress: float | None = None, one_way: bool = False, rate: float | None = None,
               first_port: int | None = None, target: str | None = None) -> FlowHandle:
    """Start a flow of ``duration`` seconds, one datagram per ``interval`` seconds, in lab ``lab_name``
    (``interval`` 0.02, or ``rate=50``: 50 packets a second each way, a video call). ``one_way``: no
    replies; the report's ``delivered``/``delivered_uplink`` say what arrived and through which uplink.
    ``target``: the echo server as ``"ip:port"`` or ``"[ip6]:port"`` (default the IPv4 one)."""
    interval = interval_for(rate, interval)
    check_bounds(duration, interval)
    spec = discover(lab_name)
    if not namespace_exists(spec.client_ns):
        raise FlowError(f"namespace {spec.client_ns} does not exist (is lab {lab_name!r} up?)")
    args = ["--duration", f"{duration:g}", "--interval", f"{interval * 1000:g}", "--json", "--lab", lab_name]
    if new_socket:
        args.append("--new-socket")
    if first_port is not None:
        args += ["--first-port", str(first_port)]
    if one_way:
        args.append("--one-way")
    if target is not None:
        parse_target(target)
        args += ["--target", target]
    if progress:
        args += ["--progress", f"{progress:g}"]
    argv = python_module_argv(spec.client_ns, "linkwatch.lab.client", args)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env(), start_new_session=True)
    role = f"flow-{proc.pid}"
    try:
        record_process(spec.state_dir, role, proc.pid, argv)
    except LabError:
        pass  # already gone; result() reports why
    return FlowHandle(proc, spec.state_dir, role, duration)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m linkwatch.lab.client",
                                 description="UDP flow from the lab's LAN client to the echo server.")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds to send (default 10)")
    ap.add_argument("--interval", type=float, default=DEFAULT_INTERVAL * 1000, help="ms between datagrams (default 10)")
    ap.add_argument("--rate", type=float, default=None, metavar="PPS",
                    help="packets per second each way, instead of --interval (50: a video call)")
    ap.add_argument("--target", default=f"{ECHO_SERVER}:{ECHO_PORT}", help="echo server IPv4:port or [IPv6]:port")
    ap.add_argument("--new-socket", action="store_true", help="a fresh socket (a new NAT flow) per datagram")
    ap.add_argument("--first-port", type=int, default=None,
                    help="with --new-socket: source ports from this one up (never an old flow's port)")
    ap.add_argument("--one-way", action="store_true", help="datagrams the echo server does not answer")
    ap.add_argument("--progress", type=float, default=None, help="print a progress line every this many seconds")
    ap.add_argument("--lab", default=None, help="accept only the client namespace of this lab")
    ap.add_argument("--json", action="store_true", help="JSON lines: progress lines, then the report")
    args = ap.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def show(p: dict) -> None:
        if args.json:
            print(json.dumps({"progress": p}), flush=True)
        else:
            print(f"t={p['t']:7.2f}s sent={p['sent']} received={p['received']} via={p['uplink'] or '-'} "
                  f"since_reply={p['since_reply']:.2f}s", flush=True)

    try:
        interval = interval_for(args.rate, args.interval / 1000.0)
        report = run_flow(args.duration, interval, parse_target(args.target), args.new_socket,
                          args.progress, show, (f"lw-{args.lab}-client",) if args.lab else None, stop.is_set,
                          one_way=args.one_way, first_port=args.first_port)
    except (NotInLabError, FlowError) as e:
        print(f"linkwatch lab client: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"report": report.to_dict()}), flush=True)
    else:
        print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
