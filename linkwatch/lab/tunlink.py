"""A point-to-point uplink for the lab: a tun device in the router namespace whose packets a relay
carries to a tun device in a provider namespace, which masquerades them to the internet. What a
PPPoE session, an LTE modem in raw-IP mode or a VPN looks like to the router: an interface with a
peer address and no gateway, that exists only while the session does.

Killing the relay is the session dropping: its tun devices are not persistent, so they vanish
with it (the engine sees the interface disappear). Starting it again with other addresses is the
reconnect with a new address. (This machine's kernel has no PPP or WireGuard: a real pppd cannot
run here; the tun relay shows the engine the same interface life cycle.)

    python -m linkwatch.lab.tunlink --lab N --provider 2 --local 10.64.0.2 --peer 10.64.0.1

Bounded (``--duration``, at most a day) and refuses namespaces that are not lab N's.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence

from linkwatch.lab.namespaces import discover, namespace_exists
from linkwatch.lab.plan import LabError, LabSpec
from linkwatch.lab.processes import child_env, forget_process, record_process, run_command, stop_pid

IFNAME = "ptp0"  # the router's side
# The engine's config for it: a preferred uplink (priority 0) with two probes
UPLINK_TOML = """
[uplinks.ptp]
interface = "ptp0"
priority = 0
[[uplinks.ptp.probes]]
type = "icmp"
target = "203.0.113.1"
[[uplinks.ptp.probes]]
type = "icmp"
target = "203.0.113.2"
"""
PROVIDER_IFNAME = "ptps"
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
MAX_DURATION = 86400.0
ROLE = "tunlink"


def _enter(ns: str) -> None:
    from linkwatch.kernel.reconciler import _enter_netns

    _enter_netns(ns)


def open_tun(name: str) -> int:
    """A non-persistent tun device ``name`` in this thread's namespace: gone when the fd closes."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def check_address(text: str) -> str:
    import ipaddress

    address = ipaddress.IPv4Address(text)
    if address not in ipaddress.IPv4Network("10.64.0.0/16"):
        raise LabError(f"{text}: the point-to-point link uses 10.64.0.0/16 only")
    return str(address)


def relay(spec: LabSpec, provider: int, local: str, peer: str, duration: float, stop=lambda: False) -> None:
    """Build both ends and carry packets between them until ``duration`` passes or ``stop()``."""
    if not 0 < duration <= MAX_DURATION:
        raise LabError(f"duration={duration}: expected 0 < duration <= {MAX_DURATION:g}")
    local, peer = check_address(local), check_address(peer)
    router_ns, provider_ns = spec.router_ns, spec.provider_ns(provider)
    for ns in (router_ns, provider_ns):
        if not namespace_exists(ns):
            raise LabError(f"namespace {ns} does not exist (is lab {spec.name!r} up?)")
    _enter(router_ns)
    a = open_tun(IFNAME)
    run_command(["ip", "addr", "add", local, "peer", peer, "dev", IFNAME])
    run_command(["ip", "link", "set", IFNAME, "up"])
    run_command(["nft", "-f", "-"], input_text=(
        f"table ip lwptp\ndelete table ip lwptp\ntable ip lwptp {{\n chain post {{\n"
        f"  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"{IFNAME}\" masquerade\n }}\n}}\n"))
    _enter(provider_ns)
    b = open_tun(PROVIDER_IFNAME)
    run_command(["ip", "addr", "add", peer, "peer", local, "dev", PROVIDER_IFNAME])
    run_command(["ip", "link", "set", PROVIDER_IFNAME, "up"])
    run_command(["nft", "-f", "-"], input_text=(
        "table ip lwptp\ndelete table ip lwptp\ntable ip lwptp {\n chain post {\n"
        "  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"in\" ip saddr 10.64.0.0/16 masquerade\n"
        " }\n}\n"))
    print("ready", flush=True)
    end = time.monotonic() + duration
    other = {a: b, b: a}
    while not stop() and time.monotonic() < end:
        ready, _, _ = select.select([a, b], [], [], 0.2)
        for fd in ready:
            try:
                os.write(other[fd], os.read(fd, 65535))
            except OSError:
                pass  # a packet the other side would not take: dropped, as on a wire


class TunLinkHandle:
    def __init__(self, proc: subprocess.Popen, state_dir: str, role: str, start_time: int | None):
        self.proc, self.state_dir, self.role, self.start_time = proc, state_dir, role, start_time

    def stop(self) -> None:
        """The session drops: the relay ends and both tun devices vanish with it."""
        stop_pid(self.proc.pid, self.start_time, timeout=5.0)
        self.proc.wait(timeout=5.0)
        forget_process(self.state_dir, self.role)


def start(lab_name: str, provider: int, local: str, peer: str, duration: float = 600.0) -> TunLinkHandle:
    """Start the relay for lab ``lab_name`` (from the root namespace); returns once both ends exist."""
    spec = discover(lab_name)
    args = ["--lab", lab_name, "--provider", str(provider), "--local", local, "--peer", peer,
            "--duration", f"{duration:g}"]
    argv = [sys.executable, "-m", "linkwatch.lab.tunlink", *args]  # it enters the lab's namespaces itself
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env(), start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        proc.kill()
        raise LabError(f"tunlink did not start: {(proc.stderr.read() if proc.stderr else '').strip()[:300]}")
    role = f"{ROLE}-{proc.pid}"
    rec = record_process(spec.state_dir, role, proc.pid, argv)
    return TunLinkHandle(proc, spec.state_dir, role, rec.start_time)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m linkwatch.lab.tunlink", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", required=True)
    ap.add_argument("--provider", type=int, required=True, help="the provider namespace p<k> it leads to")
    ap.add_argument("--local", required=True, help="the router's address (10.64.0.0/16)")
    ap.add_argument("--peer", required=True, help="the provider's address (10.64.0.0/16)")
    ap.add_argument("--duration", type=float, default=600.0)
    args = ap.parse_args(argv)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    try:
        relay(discover(args.lab), args.provider, args.local, args.peer, args.duration, lambda: bool(stopping))
    except (LabError, OSError, ValueError) as e:
        print(f"linkwatch lab tunlink: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
