"""A bounded bulk TCP transfer through the lab: the LAN client downloads from (or uploads to) a
server in the internet namespace over ONE connection, for a set time, as a user's big download
or a backup upload would. Both ends use reno: in these namespaces only reno and bbr are allowed,
and bbr keeps queues short, hiding the bufferbloat a busy modem has.

``start_bulk(lab, "download", 60)`` starts the server (internet namespace; the client starts once
it listens) and the client (LAN namespace) in the background; ``.result()`` gives a
:class:`BulkReport`: bytes delivered, the rate, the longest stall without progress, whether the
connection was reset, and the address the server saw (which uplink NATed it). The receiving end
counts (the client for a download, the server for an upload), over the transfer's own time: a
sender would also count what still sits in its socket buffer and a deep queue. Every sender
checks that it runs in the lab first, loops stop by themselves (time and byte bounds) and
processes are recorded and stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import ECHO_SERVER, FORWARD_PORTS, LAN_CLIENT, LabError, uplink_for_address
from linkwatch.lab.processes import (
    child_env,
    forget_process,
    python_module_argv,
    record_process,
    stop_pid,
    tcp_listeners,
    wait_until,
)
from linkwatch.lab.safety import NotInLabError, require_lab_namespace

CHUNK = 64 * 1024
MAX_DURATION = 600.0
MAX_BYTES = 20 * 10**9  # a bound whatever the rate
ACCEPT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
DRAIN = 15.0  # the server's bound beyond the transfer: the rest of a deep queue and a full socket buffer
DIRECTIONS = ("download", "upload")


class BulkError(LabError):
    """A transfer could not be set up or run."""


@dataclass(frozen=True)
class BulkReport:
    """What a transfer did, as its receiving end measured it (the client for a download, the
    server for an upload: a sender's count would include what still sits in its socket buffer)."""

    direction: str
    bytes: int  # delivered within the transfer's time
    seconds: float
    rate_bps: float  # bits per second over the transfer
    longest_stall_s: float  # the longest time without a byte of progress (from the start)
    reset: bool  # the connection was reset (or refused) before the end
    error: str | None
    seen: str | None = None  # the source address the server saw (which uplink NATed the flow)
    written: int | None = None  # upload: bytes the client handed to its socket

    @property
    def uplink(self) -> str | None:
        u = uplink_for_address(self.seen) if self.seen else None
        return u.name if u else None

    def summary(self) -> str:
        return (f"{self.direction}: {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s = {self.rate_bps / 1e6:.2f} Mbit/s, "
                f"longest stall {self.longest_stall_s:.2f} s, via {self.uplink or '-'}"
                + (", RESET" if self.reset else "") + (f", error: {self.error}" if self.error else ""))


@dataclass(frozen=True)
class Pumped:
    """One end's count: everything moved, and what was moved within its window (the transfer's time)."""

    bytes: int
    seconds: float
    window_bytes: int
    window_seconds: float
    longest_stall_s: float  # within the window
    reset: bool  # reset within the window
    error: str | None  # an error within the window


def _reno(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")


def check_duration(duration: float) -> None:
    if not 0 < duration <= MAX_DURATION:
        raise BulkError(f"duration {duration!r} out of range: expected 0 < duration <= {MAX_DURATION:g} s")


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise BulkError(f"direction {direction!r}: expected download or upload")


def serve(port: int, direction: str, duration: float, allowed: tuple[str, ...] | None = None,
          host: str = ECHO_SERVER) -> dict:
    """The server's side: accept one connection, then send (download) or receive (upload).

    Sending, it goes on until the client closes (at most ``DRAIN`` beyond ``duration``); receiving,
    it counts what arrives within ``duration`` of the accept and drains the rest to the end of the
    stream (bounded the same way), so the client never sees a reset for data still on its way."""
    check_duration(duration)
    check_direction(direction)
    require_lab_namespace(allowed)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((host, port))
        lsock.listen(1)
        lsock.settimeout(ACCEPT_TIMEOUT)
        conn, peer = lsock.accept()
    with conn:
        _reno(conn)
        pumped = _pump(conn, direction == "download", duration + DRAIN, window=duration)
    return {"peer": peer[0], **asdict(pumped)}


def _pump(sock: socket.socket, sending: bool, duration: float, window: float | None = None) -> Pumped:
    """Send or receive for ``duration`` seconds at most (and MAX_BYTES), until the peer ends the
    stream; counts what moved within ``window`` seconds (default: all of it) apart."""
    data = random.randbytes(CHUNK)
    sock.settimeout(0.2)
    start = last = time.monotonic()
    end, window_end = start + duration, start + (duration if window is None else window)
    moved = window_moved = 0
    stall, error, reset = 0.0, None, False
    while moved < MAX_BYTES:
        now = time.monotonic()
        if now >= end:
            break
        try:
            n = sock.send(data) if sending else len(sock.recv(CHUNK))
        except socket.timeout:
            stall = max(stall, min(time.monotonic(), window_end) - last)
            continue
        except (ConnectionResetError, BrokenPipeError, ConnectionRefusedError) as e:
            if time.monotonic() < window_end:
                error, reset = str(e) or type(e).__name__, True
            break
        except OSError as e:
            if time.monotonic() < window_end:
                error = str(e)
            break
        if not sending and n == 0:
            break  # the sender finished
        now = time.monotonic()
        if now < window_end:
            stall = max(stall, now - last)
            window_moved += n
        last = now
        moved += n
    seconds = time.monotonic() - start
    return Pumped(moved, seconds, window_moved, min(seconds, window_end - start), stall, reset, error)


def _connect(target: tuple[str, int]) -> socket.socket:
    """A reno socket connected to ``target`` (retried while the server is starting; a refused
    socket is spent, so each try has its own)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _reno(sock)
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(target)
            return sock
        except ConnectionRefusedError:
            sock.close()
            if time.monotonic() > deadline:
                raise BulkError(f"no bulk server at {target[0]}:{target[1]}") from None
            time.sleep(0.05)
        except BaseException:
            sock.close()
            raise


def transfer(target: tuple[str, int], direction: str, duration: float,
             allowed: tuple[str, ...] | None = None) -> BulkReport:
    """The client's side (run in the LAN client's namespace): connect and move data for ``duration``.

    For an upload this is the sender's view (``bytes`` is what it wrote); :class:`BulkHandle`
    replaces it with the server's count."""
    check_duration(duration)
    check_direction(direction)
    require_lab_namespace(allowed)
    with _connect(target) as sock:
        p = _pump(sock, direction == "upload", duration)
        if direction == "upload":
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
    rate = 8 * p.window_bytes / p.window_seconds if p.window_seconds > 0 else 0.0
    return BulkReport(direction, p.window_bytes, p.window_seconds, rate, p.longest_stall_s, p.reset, p.error,
                      written=p.bytes if direction == "upload" else None)


def combine(client: BulkReport, server: dict) -> BulkReport:
    """The transfer's report from both ends: the receiver's count, a reset seen by either end within
    the transfer (the download server's own end-of-transfer reset does not count). Pure."""
    fields = {**asdict(client), "seen": server.get("peer")}
    if client.direction == "upload" and "window_bytes" in server:
        seconds = server["window_seconds"]
        fields.update(bytes=server["window_bytes"], seconds=seconds,
                      rate_bps=8 * server["window_bytes"] / seconds if seconds > 0 else 0.0,
                      longest_stall_s=server["longest_stall_s"], reset=client.reset or server["reset"],
                      error=client.error or server["error"], written=client.written)
    return BulkReport(**fields)


class BulkHandle:
    """A transfer running in the background: the server and the client, recorded by pid."""

    def __init__(self, server: subprocess.Popen, client: subprocess.Popen, state_dir: str, roles: tuple[str, str],
                 duration: float = MAX_DURATION):
        self.server, self.client, self.state_dir, self.roles = server, client, state_dir, roles
        self.duration = duration

    def running(self) -> bool:
        return self.client.poll() is None

    def result(self, timeout: float | None = None) -> BulkReport:
        """Wait for the transfer (bounded: ``timeout``, default its duration and a margin) and report."""
        limit = self.duration + CONNECT_TIMEOUT + 10.0 if timeout is None else timeout
        try:
            try:
                out, err = self.client.communicate(timeout=limit)
                sout, serr = self.server.communicate(timeout=DRAIN + 5.0)
            except subprocess.TimeoutExpired:
                raise BulkError(f"the bulk transfer did not end within {limit:g}s (stopped)") from None
        finally:
            self.stop()
        if self.client.returncode != 0:
            raise BulkError(f"bulk client failed (exit {self.client.returncode}): {err.strip()[-300:]}")
        report = BulkReport(**json.loads(out.strip().splitlines()[-1]))
        try:
            server = json.loads(sout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            server = {}  # the server failed: the client's view only (its stderr says why)
        return combine(report, server)

    def stop(self) -> None:
        for proc, role in ((self.client, self.roles[1]), (self.server, self.roles[0])):
            if proc.poll() is None:
                stop_pid(proc.pid, None)
            forget_process(self.state_dir, role)


def _listening(pid: int, host: str, port: int) -> bool:
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            return (host, port) in tcp_listeners(f.read())
    except OSError:
        return False


def start_bulk(lab_name: str, direction: str, duration: float, inbound_via: str | None = None) -> BulkHandle:
    """Start a ``direction`` ("download" or "upload") of ``duration`` seconds in lab ``lab_name``:
    the LAN client connects to a server in the internet; with ``inbound_via`` (an uplink's name,
    ``wan2``) the other way round: a host in the internet connects to that uplink's address, and
    the router's port forward takes it to a server on the LAN client (a download is then the
    LAN client sending)."""
    check_duration(duration)
    check_direction(direction)
    spec = discover(lab_name)
    for ns in (spec.inet_ns, spec.client_ns):
        if not namespace_exists(ns):
            raise BulkError(f"namespace {ns} does not exist (is lab {lab_name!r} up?)")
    common = ["--direction", direction, "--duration", f"{duration:g}", "--lab", lab_name]
    if inbound_via is None:
        port, host = random.randrange(20000, 30000), ECHO_SERVER
        ends = ((spec.inet_ns, host), (spec.client_ns, f"{host}:{port}"))
    else:
        via = next((u for u in spec.uplink_list if u.name == inbound_via), None)
        if via is None:
            raise BulkError(f"lab {lab_name!r} has no uplink {inbound_via!r}")
        port, host = random.randint(*FORWARD_PORTS), LAN_CLIENT
        ends = ((spec.client_ns, host), (spec.inet_ns, f"{via.address}:{port}"))
    procs = []
    for ns, args in ((ends[0][0], ["serve", "--port", str(port), "--bind", host]),
                     (ends[1][0], ["get", "--target", ends[1][1]])):
        argv = python_module_argv(ns, "linkwatch.lab.bulk", args + common)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=child_env(), start_new_session=True)
        record_process(spec.state_dir, f"bulk-{proc.pid}", proc.pid, argv)
        procs.append(proc)
        if len(procs) == 1 and not wait_until(lambda: _listening(proc.pid, host, port), CONNECT_TIMEOUT, proc):
            why = proc.stderr.read().strip()[-300:] if proc.poll() is not None else "no answer"
            stop_pid(proc.pid, None)
            forget_process(spec.state_dir, f"bulk-{proc.pid}")
            raise BulkError(f"the bulk server did not listen on {host}:{port} in {ns}: {why}")
    return BulkHandle(procs[0], procs[1], spec.state_dir, (f"bulk-{procs[0].pid}", f"bulk-{procs[1].pid}"), duration)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m linkwatch.lab.bulk", description="bulk TCP through the lab")
    ap.add_argument("role", choices=("serve", "get"))
    ap.add_argument("--direction", choices=DIRECTIONS, default="download")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--target", default="")
    ap.add_argument("--bind", default=ECHO_SERVER, help="the server's address (default: the internet's echo server)")
    ap.add_argument("--lab", default=None)
    args = ap.parse_args(argv)
    try:
        if args.role == "serve":
            allowed = (f"lw-{args.lab}-inet", f"lw-{args.lab}-client") if args.lab else None
            print(json.dumps(serve(args.port, args.direction, args.duration, allowed, args.bind)), flush=True)
        else:
            host, _, port = args.target.rpartition(":")
            allowed = (f"lw-{args.lab}-client", f"lw-{args.lab}-inet") if args.lab else None
            print(json.dumps(asdict(transfer((host, int(port)), args.direction, args.duration, allowed))), flush=True)
    except (BulkError, NotInLabError, OSError) as e:
        print(f"linkwatch lab bulk: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
