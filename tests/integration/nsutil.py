"""Small helpers for root tests that build throwaway network namespaces.

Generic on purpose (other integration tests may reuse them): every namespace name must carry
the caller's prefix, everything is built with iproute2 (allowed in tests, not in library code),
and teardown deletes namespaces by name and kills only the pids found inside them.

Network safety: nothing here touches the root namespace except creating veth pairs directly
inside named namespaces. Traffic helpers (:func:`send_udp`) first check, inside the target
namespace, that they really run there, and refuse otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Iterator, Sequence

NETNS_DIR = "/run/netns"
IS_ROOT = os.geteuid() == 0


class NsError(RuntimeError):
    """A namespace command failed; the message has the command and its stderr."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise NsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def ns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def ns_pids(name: str) -> list[int]:
    proc = _ip("netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def del_ns(name: str) -> None:
    """Kill the processes inside ``name`` (by pid) and delete it; a missing one is fine."""
    if not ns_exists(name):
        return
    for pid in ns_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _ip("netns", "del", name, check=False)


def make_ns(name: str, forward: bool = False) -> str:
    """Create a fresh namespace (a leftover of the same name is deleted first), lo up."""
    if "/" in name or not name:
        raise NsError(f"bad namespace name {name!r}")
    del_ns(name)
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    if forward:
        sysctl(name, "net.ipv4.ip_forward", "1")
    return name


def cleanup_prefix(prefix: str) -> None:
    """Delete every namespace whose name starts with ``prefix`` (leftovers of a crashed run)."""
    if len(prefix) < 3:
        raise NsError(f"prefix {prefix!r} is too short to be safe")
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NETNS_DIR):
            if name.startswith(prefix):
                del_ns(name)


def run_in(ns: str, *cmd: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside namespace ``ns`` (``ip netns exec``) and return the finished process."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise NsError(f"[{ns}] {' '.join(cmd)}: rc={proc.returncode} {proc.stderr.strip()}")
    return proc


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n ns ...``."""
    return _ip("-n", ns, *args, check=check)


def sysctl(ns: str, key: str, value: str) -> None:
    run_in(ns, "sysctl", "-qw", f"{key}={value}")


def veth(
    ns_a: str,
    if_a: str,
    ns_b: str,
    if_b: str,
    addr_a: str | None = None,
    addr_b: str | None = None,
    index_a: int | None = None,
    index_b: int | None = None,
) -> None:
    """A veth pair ``ns_a/if_a <-> ns_b/if_b``, both up; addresses as "a.b.c.d/len".

    Give the two ends different ifindexes (``index_a``/``index_b``) when a test times carrier
    events: the kernel treats a carrier change on a veth whose ifindex equals its peer's
    (iflink) as non-urgent, and its linkwatch then delays it by up to 1 s after any other link
    event.
    """
    side_a = ["name", if_a] + (["index", str(index_a)] if index_a else [])
    side_b = ["name", if_b] + (["index", str(index_b)] if index_b else [])
    _ip("-n", ns_a, "link", "add", *side_a, "type", "veth", "peer", *side_b, "netns", ns_b)
    for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
        if addr:
            _ip("-n", ns, "addr", "add", addr, "dev", ifname)
        _ip("-n", ns, "link", "set", ifname, "up")


def ifindex(ns: str, ifname: str) -> int:
    proc = _ip("-j", "-n", ns, "link", "show", "dev", ifname)
    return int(json.loads(proc.stdout)[0]["ifindex"])


def nft(ns: str, ruleset: str) -> None:
    """Load an nftables ruleset (text) inside ``ns``."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset, capture_output=True, text=True, timeout=20
    )
    if proc.returncode != 0:
        raise NsError(f"[{ns}] nft: {proc.stderr.strip()}")


# A guarded UDP sender, run inside the namespace by a fresh interpreter. It checks that its own
# network namespace is the named one before sending anything.
_SEND_UDP = r"""
import os, socket, sys
ns, dst, first, count, src = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if os.stat("/proc/self/ns/net").st_ino != os.stat("/run/netns/" + ns).st_ino:
    sys.exit("refusing to send: not inside namespace " + ns)
for port in range(first, first + count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if src:
        s.bind((src, 0))
    s.sendto(b"linkwatch-test", (dst, port))
    s.close()
"""


def send_udp(ns: str, dst: str, first_port: int, count: int, src: str | None = None) -> None:
    """Send one UDP datagram to each of ``count`` ports of ``dst`` from inside ``ns``
    (a new socket each, so each is its own conntrack flow)."""
    if not ns_exists(ns):
        raise NsError(f"no namespace {ns!r}")
    run_in(ns, sys.executable, "-c", _SEND_UDP, ns, dst, str(first_port), str(count), src or "")


@contextlib.contextmanager
def namespaces(*names: str) -> Iterator[Sequence[str]]:
    """Create fresh namespaces and delete them on exit, even on failure."""
    try:
        for name in names:
            make_ns(name)
        yield names
    finally:
        for name in reversed(names):
            del_ns(name)


def wait_until(predicate, timeout: float = 2.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` (test helper only) until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
