"""Many NAT flows at once from the lab's LAN client: one one-way UDP datagram from each of ``count``
source ports to the echo server's one-way sink (no reply: the first packet makes the conntrack
entry, NATed and marked like any flow). What a busy router carries when its uplink dies: the
benchmark counts how fast those entries are reset.

Bounded (at most ``MAX_FLOWS`` datagrams, one each) and refuses to send outside a lab namespace.
Run as ``ip netns exec lw-N-client python -m linkwatch.lab.manyflows --count 10000``.
"""

from __future__ import annotations

import argparse
import errno
import re
import socket
import sys
from collections import Counter
from collections.abc import Mapping, Sequence

from linkwatch.core.flows import FLOW_MASK, flow_mark

from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import ECHO_PORT, ECHO_SERVER, LAN_ROUTER, LabError
from linkwatch.lab.processes import child_env, netns_exec, python_module_argv, run_command
from linkwatch.lab.safety import NotInLabError, require_lab_namespace
from linkwatch.lab.services import ONE_WAY

MAX_FLOWS = 30_000
FIRST_PORT = 20_000


def open_flows(count: int, first_port: int = FIRST_PORT, target: tuple[str, int] = (ECHO_SERVER, ECHO_PORT),
               allowed: tuple[str, ...] | None = None) -> int:
    """Send one datagram from each of ``count`` source ports (``first_port`` on, skipping ports in
    use); returns how many flows were started."""
    if not 0 < count <= MAX_FLOWS or not 1024 <= first_port <= 65535 - count:
        raise LabError(f"count={count} from port {first_port}: expected 1..{MAX_FLOWS} ports below 65536")
    require_lab_namespace(allowed)  # before any socket exists
    sent, port = 0, first_port
    while sent < count and port < 65536:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                port += 1
                continue
            s.sendto(ONE_WAY + b"many", target)
        sent, port = sent + 1, port + 1
    return sent


def run_in_lab(lab_name: str, count: int, first_port: int = FIRST_PORT, timeout: float = 60.0,
               to_router: bool = False) -> int:
    """Start ``count`` flows (from source port ``first_port`` on) from lab ``lab_name``'s client
    namespace, to the echo server (or to the router's LAN address: nothing listens there, the
    router answers port unreachable); how many were started."""
    import subprocess

    spec = discover(lab_name)
    if not namespace_exists(spec.client_ns):
        raise LabError(f"namespace {spec.client_ns} does not exist (is lab {lab_name!r} up?)")
    args = ["--count", str(count), "--first-port", str(first_port), "--lab", lab_name] + (
        ["--to-router"] if to_router else [])
    argv = python_module_argv(spec.client_ns, "linkwatch.lab.manyflows", args)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=child_env())
    if done.returncode != 0:
        raise LabError(f"manyflows failed: {done.stderr.strip()}")
    return int(done.stdout.strip())


_FLOW = re.compile(r"\bsport=(\d+)\b.*?\bmark=(\d+)")


def echo_flows(lab_name: str) -> list[tuple[int, int]]:
    """(source port, ct mark) of each of the router's UDP conntrack entries to the echo port (read
    with the conntrack tool in the lab's router namespace)."""
    spec = discover(lab_name)
    out = run_command(netns_exec(spec.router_ns, ["conntrack", "-L", "-p", "udp", "--dport", str(ECHO_PORT)]),
                      timeout=60.0)
    return [(int(m.group(1)), int(m.group(2))) for line in out.splitlines() if (m := _FLOW.search(line))]


def echo_flow_marks(lab_name: str) -> list[int]:
    """The ct mark of each of the router's UDP conntrack entries to the echo port."""
    return [mark for _, mark in echo_flows(lab_name)]


def flows_by_uplink(lab_name: str, uplinks: Sequence[Mapping], ports: range) -> Counter:
    """Uplink name -> how many of the client's echo flows from these source ports it carries, by
    their flow marks; ``uplinks`` as the status shows them (name, table)."""
    names = {flow_mark(u["table"]): u["name"] for u in uplinks}
    return Counter(names.get(m & FLOW_MASK, f"mark 0x{m:x}") for port, m in echo_flows(lab_name) if port in ports)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m linkwatch.lab.manyflows",
                                 description="Start many one-datagram UDP flows from the lab's LAN client.")
    ap.add_argument("--count", type=int, required=True, help=f"flows to start (1..{MAX_FLOWS})")
    ap.add_argument("--first-port", type=int, default=FIRST_PORT)
    ap.add_argument("--lab", default=None, help="accept only the client namespace of this lab")
    ap.add_argument("--to-router", action="store_true", help="to the router's LAN address, not the echo server")
    args = ap.parse_args(argv)
    target = (LAN_ROUTER, ECHO_PORT) if args.to_router else (ECHO_SERVER, ECHO_PORT)
    try:
        print(open_flows(args.count, args.first_port, target,
                         allowed=(f"lw-{args.lab}-client",) if args.lab else None))
    except (NotInLabError, LabError, OSError) as e:
        print(f"linkwatch lab manyflows: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
