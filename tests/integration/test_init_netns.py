"""`linkwatch init` against the real kernel, in throwaway namespaces (root).

    lw-ti-r (a router)                                  lw-ti-p (its providers' ends)
      wan1   198.51.100.2/26, 2001:db8:1::2/64  <-veth->  p1
             default via 198.51.100.1 metric 100; IPv6 default via fe80::1 metric 100
      wan2   198.51.100.66/26                    <-veth->  p2
             default via 198.51.100.65 metric 200
      wan.3  203.0.113.2/26                      <-veth->  p3 (set down: wan.3 loses carrier)
             default via 203.0.113.1 metric 250
      lwtun0 tun (point-to-point, no carrier: nothing attached), default dev lwtun0 metric 300
      lan0   10.99.0.1/24                        <-veth->  lan0p  no default route: left out (lo too)
    lw-ti-e: lo and a veth pair with an address, no default route at all (this kernel has no dummy)

No packet is sent: init only reads links and routes through netlink.
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nsutil  # noqa: E402

from linkwatch.config import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RT, PEER, EMPTY = "lw-ti-r", "lw-ti-p", "lw-ti-e"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.root,
]


def linkwatch_in(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m linkwatch ARGS`` inside ``ns``, importing this tree's linkwatch."""
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "linkwatch", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def build_router() -> None:
    nsutil.make_ns(RT)
    nsutil.make_ns(PEER)
    nsutil.veth(RT, "wan1", PEER, "p1", "198.51.100.2/26")
    nsutil.ip(RT, "-6", "addr", "add", "2001:db8:1::2/64", "dev", "wan1", "nodad")
    nsutil.veth(RT, "wan2", PEER, "p2", "198.51.100.66/26")
    nsutil.veth(RT, "wan.3", PEER, "p3", "203.0.113.2/26")
    nsutil.ip(RT, "tuntap", "add", "dev", "lwtun0", "mode", "tun")
    nsutil.ip(RT, "addr", "add", "203.0.113.65/32", "peer", "203.0.113.66", "dev", "lwtun0")
    nsutil.ip(RT, "link", "set", "lwtun0", "up")
    nsutil.veth(RT, "lan0", PEER, "lan0p", "10.99.0.1/24")
    nsutil.ip(RT, "route", "add", "default", "via", "198.51.100.1", "dev", "wan1", "proto", "dhcp", "metric", "100")
    nsutil.ip(RT, "-6", "route", "add", "default", "via", "fe80::1", "dev", "wan1", "metric", "100")
    nsutil.ip(RT, "route", "add", "default", "via", "198.51.100.65", "dev", "wan2", "proto", "dhcp", "metric", "200")
    nsutil.ip(RT, "route", "add", "default", "via", "203.0.113.1", "dev", "wan.3", "proto", "dhcp", "metric", "250")
    nsutil.ip(RT, "route", "add", "default", "dev", "lwtun0", "metric", "300")
    nsutil.ip(PEER, "link", "set", "p3", "down")  # the route stays, flagged linkdown


@pytest.fixture
def router():
    try:
        build_router()
        yield RT
    finally:
        nsutil.del_ns(RT)
        nsutil.del_ns(PEER)


@pytest.fixture
def empty():
    try:
        nsutil.make_ns(EMPTY)
        nsutil.ip(EMPTY, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")  # no dummy module here
        nsutil.ip(EMPTY, "addr", "add", "10.99.0.1/24", "dev", "lan0")
        nsutil.ip(EMPTY, "link", "set", "lan0", "up")
        nsutil.ip(EMPTY, "link", "set", "lan0p", "up")
        yield EMPTY
    finally:
        nsutil.del_ns(EMPTY)


def test_init_writes_the_detected_uplinks_and_check_config_passes(router, tmp_path):
    path = tmp_path / "etc" / "linkwatch.toml"
    done = linkwatch_in(router, "init", "--output", str(path))
    assert done.returncode == 0, done.stderr
    assert "wrote 4 uplinks" in done.stdout

    config = load(str(path))
    got = [(u.name, u.interface, u.priority, [p.target for p in u.probes], [p.target for p in u.probes6])
           for u in config.uplinks]
    assert got == [
        ("wan1", "wan1", 1, ["9.9.9.9", "1.1.1.1"], ["2620:fe::fe", "2606:4700:4700::1111"]),
        ("wan2", "wan2", 2, ["9.9.9.9", "1.1.1.1"], []),
        ("wan_3", "wan.3", 3, ["9.9.9.9", "1.1.1.1"], []),
        ("lwtun0", "lwtun0", 4, ["9.9.9.9", "1.1.1.1"], []),
    ]
    text = path.read_text()
    assert "Found: IPv4 default via 198.51.100.1 metric 100; IPv6 default via fe80::1 metric 100." in text
    assert "[uplinks.lan0]" not in text and '"lo"' not in text
    wan3 = text.split("[uplinks.wan_3]")[1].split("[uplinks.lwtun0]")[0]
    assert "was down or had no carrier" in wan3
    tun = text.split("[uplinks.lwtun0]")[1]
    assert "Found: IPv4 default dev lwtun0 metric 300." in tun and "Point-to-point" in tun

    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    try:
        assert st.st_gid == grp.getgrnam("linkwatch").gr_gid
    except KeyError:
        assert st.st_gid == os.getegid()
    assert sorted(os.listdir(path.parent)) == ["linkwatch.toml"]

    checked = linkwatch_in(router, "check-config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "OK: 4 uplinks" in checked.stdout

    # never overwrites: exit 1, the file as it was
    path.write_text(text + "# my edit\n")
    again = linkwatch_in(router, "init", "--output", str(path))
    assert again.returncode == 1
    assert "already exists, left unchanged" in again.stderr
    assert path.read_text() == text + "# my edit\n"

    # --output - prints the same config (its comments name the default path; the first line the time)
    printed = linkwatch_in(router, "init", "--output", "-")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[1:] == text.replace(str(path), "/etc/linkwatch/linkwatch.toml").splitlines()[1:]


def test_init_with_no_default_route_says_what_it_looked_for_and_writes_nothing(empty, tmp_path):
    path = tmp_path / "linkwatch.toml"
    done = linkwatch_in(empty, "init", "--output", str(path))
    assert done.returncode == 1
    assert "no default route in the main table" in done.stderr and "no file written" in done.stderr
    assert not path.exists() and os.listdir(tmp_path) == []
