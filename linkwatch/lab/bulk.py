"""A bounded bulk TCP transfer through the lab: the LAN client downloads from (or uploads to) a
server in the internet namespace over ONE connection, for a set time, as a user's big download
or a backup upload would. Both ends use reno: in these namespaces only reno and bbr are allowed,
and bbr keeps queues short, hiding the bufferbloat a busy modem has.

``start_bulk(lab, "download", 60)`` starts the server (internet namespace) and the client (LAN
namespace) in the background; ``.result()`` gives a :class:`BulkReport`: bytes moved, the rate,
the longest stall without progress, whether the connection was reset, and the address the server
saw (which uplink NATed it). Every sender checks that it runs in the lab first, loops stop by
themselves (time and byte bounds) and processes are stopped by pid.
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
from linkwatch.lab.plan import ECHO_SERVER, LabError, uplink_for_address
from linkwatch.lab.processes import child_env, forget_process, python_module_argv, record_process, stop_pid
from linkwatch.lab.safety import NotInLabError, require_lab_namespace

CHUNK = 64 * 1024
MAX_DURATION = 600.0
MAX_BYTES = 20 * 10**9  # a bound whatever the rate
ACCEPT_TIMEOUT = 10.0
DIRECTIONS = ("download", "upload")


class BulkError(LabError):
    """A transfer could not be set up or run."""


@dataclass(frozen=True)
class BulkReport:
    direction: str
    bytes: int
    seconds: float
    rate_bps: float  # bits per second over the transfer
    longest_stall_s: float  # the longest time without a byte of progress
    reset: bool  # the connection was reset (or refused) before the end
    error: str | None
    seen: str | None = None  # the source address the server saw (which uplink NATed the flow)

    @property
    def uplink(self) -> str | None:
        u = uplink_for_address(self.seen) if self.seen else None
        return u.name if u else None

    def summary(self) -> str:
        return (f"{self.direction}: {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s = {self.rate_bps / 1e6:.2f} Mbit/s, "
                f"longest stall {self.longest_stall_s:.2f} s, via {self.uplink or '-'}"
                + (", RESET" if self.reset else "") + (f", error: {self.error}" if self.error else ""))


def _reno(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")


def check_duration(duration: float) -> None:
    if not 0 < duration <= MAX_DURATION:
        raise BulkError(f"duration {duration!r} out of range: expected 0 < duration <= {MAX_DURATION:g} s")


def serve(port: int, direction: str, duration: float, allowed: tuple[str, ...] | None = None) -> dict:
    """The server's side: accept one connection, then send (download) or receive (upload)."""
    check_duration(duration)
    require_lab_namespace(allowed)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((ECHO_SERVER, port))
        lsock.listen(1)
        lsock.settimeout(ACCEPT_TIMEOUT)
        conn, peer = lsock.accept()
    with conn:
        _reno(conn)
        moved, error = _pump(conn, direction == "download", duration + 5.0)[:2]
    return {"peer": peer[0], "bytes": moved, "error": error}


def _pump(sock: socket.socket, sending: bool, duration: float) -> tuple[int, str | None, float, float, bool]:
    """Send or receive for ``duration`` (bounded by MAX_BYTES): (bytes, error, seconds, longest
    stall, reset)."""
    data = random.randbytes(CHUNK)
    sock.settimeout(0.2)
    start = last = time.monotonic()
    end = start + duration
    moved, stall, error, reset = 0, 0.0, None, False
    while moved < MAX_BYTES:
        now = time.monotonic()
        if now >= end:
            break
        try:
            n = sock.send(data) if sending else len(sock.recv(CHUNK))
        except socket.timeout:
            stall = max(stall, time.monotonic() - last)
            continue
        except (ConnectionResetError, BrokenPipeError, ConnectionRefusedError) as e:
            error, reset = str(e) or type(e).__name__, True
            break
        except OSError as e:
            error = str(e)
            break
        if not sending and n == 0:
            break  # the sender finished
        now = time.monotonic()
        stall = max(stall, now - last)
        last = now
        moved += n
    return moved, error, time.monotonic() - start, stall, reset


def transfer(target: tuple[str, int], direction: str, duration: float,
             allowed: tuple[str, ...] | None = None) -> BulkReport:
    """The client's side (run in the LAN client's namespace): connect and move data for ``duration``."""
    check_duration(duration)
    if direction not in DIRECTIONS:
        raise BulkError(f"direction {direction!r}: expected download or upload")
    require_lab_namespace(allowed)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        _reno(sock)
        sock.settimeout(5.0)
        deadline = time.monotonic() + 5.0
        while True:  # the server may still be starting
            try:
                sock.connect(target)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise BulkError(f"no bulk server at {target[0]}:{target[1]}") from None
                time.sleep(0.05)
        moved, error, seconds, stall, reset = _pump(sock, direction == "upload", duration)
        if direction == "upload":
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
    return BulkReport(direction, moved, seconds, 8 * moved / seconds if seconds > 0 else 0.0, stall, reset, error)


class BulkHandle:
    """A transfer running in the background: the server and the client, recorded by pid."""

    def __init__(self, server: subprocess.Popen, client: subprocess.Popen, state_dir: str, roles: tuple[str, str]):
        self.server, self.client, self.state_dir, self.roles = server, client, state_dir, roles

    def result(self, timeout: float | None = None) -> BulkReport:
        try:
            out, err = self.client.communicate(timeout=timeout)
            sout, _ = self.server.communicate(timeout=10)
        finally:
            self.stop()
        if self.client.returncode != 0:
            raise BulkError(f"bulk client failed (exit {self.client.returncode}): {err.strip()[-300:]}")
        report = BulkReport(**json.loads(out.strip().splitlines()[-1]))
        try:
            seen = json.loads(sout.strip().splitlines()[-1]).get("peer")
        except (ValueError, IndexError):
            seen = None
        return BulkReport(**{**asdict(report), "seen": seen})

    def stop(self) -> None:
        for proc, role in ((self.client, self.roles[1]), (self.server, self.roles[0])):
            if proc.poll() is None:
                stop_pid(proc.pid, None)
            forget_process(self.state_dir, role)


def start_bulk(lab_name: str, direction: str, duration: float) -> BulkHandle:
    """Start a ``direction`` ("download" or "upload") of ``duration`` seconds in lab ``lab_name``."""
    check_duration(duration)
    if direction not in DIRECTIONS:
        raise BulkError(f"direction {direction!r}: expected download or upload")
    spec = discover(lab_name)
    for ns in (spec.inet_ns, spec.client_ns):
        if not namespace_exists(ns):
            raise BulkError(f"namespace {ns} does not exist (is lab {lab_name!r} up?)")
    port = random.randrange(20000, 30000)
    common = ["--direction", direction, "--duration", f"{duration:g}", "--lab", lab_name]
    procs = []
    for ns, args in ((spec.inet_ns, ["serve", "--port", str(port)]),
                     (spec.client_ns, ["get", "--target", f"{ECHO_SERVER}:{port}"])):
        argv = python_module_argv(ns, "linkwatch.lab.bulk", args + common)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=child_env(), start_new_session=True)
        record_process(spec.state_dir, f"bulk-{proc.pid}", proc.pid, argv)
        procs.append(proc)
    return BulkHandle(procs[0], procs[1], spec.state_dir, (f"bulk-{procs[0].pid}", f"bulk-{procs[1].pid}"))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m linkwatch.lab.bulk", description="bulk TCP through the lab")
    ap.add_argument("role", choices=("serve", "get"))
    ap.add_argument("--direction", choices=DIRECTIONS, default="download")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--target", default="")
    ap.add_argument("--lab", default=None)
    args = ap.parse_args(argv)
    try:
        if args.role == "serve":
            allowed = (f"lw-{args.lab}-inet",) if args.lab else None
            print(json.dumps(serve(args.port, args.direction, args.duration, allowed)), flush=True)
        else:
            host, _, port = args.target.rpartition(":")
            allowed = (f"lw-{args.lab}-client",) if args.lab else None
            print(json.dumps(asdict(transfer((host, int(port)), args.direction, args.duration, allowed))), flush=True)
    except (BulkError, NotInLabError, OSError) as e:
        print(f"linkwatch lab bulk: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
