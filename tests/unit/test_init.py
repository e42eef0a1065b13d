"""`linkwatch init`: the pure generator of a first config (config/starter.py), the pure detection
of default routes (kernel/discover.py) and the command's file handling (refusal, mode, stdout).
The real kernel is read in tests/integration/test_init_netns.py."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from linkwatch.commands import init as init_cmd
from linkwatch.config import loads
from linkwatch.config.starter import DetectedUplink, StarterError, render_starter, starter_uplinks, uplink_names
from linkwatch.kernel.discover import detect_uplinks
from linkwatch.kernel.facts import IFF_LOOPBACK, IFF_LOWER_UP, IFF_NOARP, IFF_POINTOPOINT, IFF_UP, DefaultRoute, Link

ROOT = Path(__file__).resolve().parents[2]
PATH = "/etc/linkwatch/linkwatch.toml"
UP = IFF_UP | IFF_LOWER_UP


def render(*ups: DetectedUplink) -> tuple[str, object]:
    text = render_starter(ups, PATH)
    return text, loads(text, "init output")


def targets(uplink) -> list[tuple[str, str]]:
    return [(p.type, p.target) for p in (*uplink.probes, *uplink.probes6)]


IPV4_PROBES = [("icmp", "9.9.9.9"), ("dns", "1.1.1.1")]
IPV6_PROBES = [("icmp", "2620:fe::fe"), ("dns", "2606:4700:4700::1111")]


# --------------------------------------------------------------------------- the generator


def test_one_uplink_is_a_valid_config_with_ipv4_probes_to_two_operators():
    text, config = render(DetectedUplink("eth0", metric4=100, gateway="198.51.100.1"))
    [up] = config.uplinks
    assert (up.name, up.interface, up.priority, up.gateway) == ("eth0", "eth0", 1, None)  # None: "auto"
    assert targets(up) == IPV4_PROBES
    assert up.probes[1].query == "example.com"
    assert 'gateway = "auto"' in text and "gateway6" not in text
    assert "Found: IPv4 default via 198.51.100.1 metric 100." in text
    assert "1 = the primary" in text
    assert '# quota = "20GB"' in text  # a hint, commented out: no quota unless the user sets one
    assert up.quota is None


def test_two_dual_stack_uplinks_are_ordered_by_metric_not_by_input_order():
    text, config = render(
        DetectedUplink("wwan0", metric4=700, gateway="203.0.113.1", metric6=1024, gateway6="fe80::2"),
        DetectedUplink("eth0", metric4=100, gateway="198.51.100.1", metric6=1024, gateway6="fe80::1"),
    )
    assert [(u.name, u.priority) for u in config.uplinks] == [("eth0", 1), ("wwan0", 2)]
    for up in config.uplinks:
        assert targets(up) == IPV4_PROBES + IPV6_PROBES
        assert up.gateway6 is None  # "auto": learnt from the router advertisement
    assert text.count('gateway6 = "auto"') == 2
    assert "IPv6 default via fe80::1 metric 1024" in text
    assert "2 = a backup" in text
    assert '# move_flows_after = "5m"' in text  # offered to the backup only
    assert text.index("[uplinks.eth0]") < text.index("[uplinks.wwan0]")
    assert text.split("[uplinks.eth0]")[1].split("[uplinks.wwan0]")[0].count("move_flows_after") == 0


def test_ipv6_only_interface_gets_ipv6_probes_only_and_no_ipv4_gateway():
    text, config = render(DetectedUplink("eth1", metric6=1024, gateway6="fe80::1"))
    [up] = config.uplinks
    assert targets(up) == IPV6_PROBES
    assert "\ngateway =" not in text and 'gateway6 = "auto"' in text
    assert "IPv6 only" in text


def test_ppp_interface_needs_no_gateway_and_is_explained():
    text, config = render(DetectedUplink("ppp0", metric4=0, gateway=None, pointopoint=True),
                          DetectedUplink("eth0", metric4=100, gateway="198.51.100.1"))
    assert [(u.name, u.priority) for u in config.uplinks] == [("ppp0", 1), ("eth0", 2)]
    assert "Found: IPv4 default dev ppp0 metric 0." in text
    assert "Point-to-point" in text and "ifname wan-ppp" in text


def test_an_interface_without_carrier_is_listed_with_a_warning():
    text, config = render(DetectedUplink("eth0", metric4=100, gateway="198.51.100.1"),
                          DetectedUplink("eth1", metric4=200, gateway="203.0.113.1", up=False))
    assert [u.interface for u in config.uplinks] == ["eth0", "eth1"]
    warning = "was down or had no carrier"
    assert warning in text.split("[uplinks.eth1]")[1] and warning not in text.split("[uplinks.eth1]")[0]


def test_odd_interface_names_are_sanitized_and_quoted():
    text, config = render(DetectedUplink("eth0.100", metric4=100, gateway="198.51.100.1"),
                          DetectedUplink("wan@x+y", metric4=200, gateway="203.0.113.1"))
    assert [(u.name, u.interface) for u in config.uplinks] == [("eth0_100", "eth0.100"), ("wan_x_y", "wan@x+y")]
    assert 'interface = "eth0.100"' in text


def test_names_colliding_after_sanitizing_are_made_distinct():
    assert uplink_names(["eth0.100", "eth0_100", "eth0-100", "eth0:100"]) == ["eth0_100-2", "eth0_100", "eth0-100",
                                                                               "eth0_100-3"]
    long = "x" * 40
    names = uplink_names([long + ".a", long + ".b"])
    assert names == ["x" * 32, "x" * 30 + "-2"] and all(len(n) <= 32 for n in names)
    assert uplink_names(["ö"]) == ["_"]
    _, config = render(DetectedUplink("eth0.100", metric4=1, gateway="198.51.100.1"),
                       DetectedUplink("eth0_100", metric4=2, gateway="198.51.100.2"))
    assert [u.name for u in config.uplinks] == ["eth0_100-2", "eth0_100"]


def test_equal_metrics_are_ordered_by_name_and_get_distinct_priorities():
    ups = [DetectedUplink("eth1", metric4=100, gateway="203.0.113.1"),
           DetectedUplink("eth0", metric4=100, gateway="198.51.100.1")]
    assert [(name, up.interface) for name, up in starter_uplinks(ups)] == [("eth0", "eth0"), ("eth1", "eth1")]
    _, config = render(*ups)
    assert [u.priority for u in config.uplinks] == [1, 2]


def test_no_default_route_is_an_error():
    with pytest.raises(StarterError, match="no interface has a default route"):
        render_starter([], PATH)


def test_the_output_is_commented_for_a_first_time_user_and_tidy():
    text, config = render(DetectedUplink("eth0", metric4=100, gateway="198.51.100.1"),
                          DetectedUplink("wwan0", metric4=700, gateway="203.0.113.1"))
    for hint in ("linkwatch check-config /etc/linkwatch/linkwatch.toml", "priority decides which uplink is the primary",
                 "Metered", "linkwatch passwd", "anycast", "never names"):
        assert hint in text, hint
    assert config.history.path == "/var/lib/linkwatch/history.db"
    assert all(len(line) <= 100 for line in text.splitlines())
    assert tomllib.loads(text)  # plain TOML too
    assert render_starter([DetectedUplink("eth0", metric4=1, gateway="198.51.100.1")], "/x.toml", "on pi at noon") \
        .startswith("# linkwatch configuration, written by `linkwatch init` on pi at noon.")


# --------------------------------------------------------------------------- detection (pure)


def test_detection_takes_interfaces_with_a_main_table_default_route_only():
    links = [Link(1, "lo", IFF_UP | IFF_LOWER_UP | IFF_LOOPBACK), Link(2, "eth0", UP), Link(3, "lan0", UP),
             Link(4, "ppp0", UP | IFF_POINTOPOINT | IFF_NOARP), Link(5, "eth1", IFF_UP)]
    routes = [
        DefaultRoute(proto=16, metric=200, hops=(("198.51.100.7", 2),)),
        DefaultRoute(proto=16, metric=100, hops=(("198.51.100.1", 2),)),
        DefaultRoute(proto=9, metric=1024, hops=(("fe80::1", 2),), family=socket.AF_INET6),
        DefaultRoute(proto=3, metric=0, hops=((None, 4),)),
        DefaultRoute(proto=16, metric=300, hops=(("203.0.113.1", 5),)),
        DefaultRoute(proto=77, metric=1, hops=(("203.0.113.9", 3),)),  # linkwatch's own: not a fact
        DefaultRoute(proto=3, metric=5, hops=(("203.0.113.9", 1),)),  # loopback: never an uplink
    ]
    found = detect_uplinks(links, routes)
    assert found == [
        DetectedUplink("eth0", metric4=100, gateway="198.51.100.1", metric6=1024, gateway6="fe80::1"),
        DetectedUplink("ppp0", metric4=0, gateway=None, pointopoint=True),
        DetectedUplink("eth1", metric4=300, gateway="203.0.113.1", up=False),
    ]


def test_detection_splits_a_multipath_default_route_into_its_interfaces():
    links = [Link(2, "eth0", UP), Link(3, "eth1", UP)]
    routes = [DefaultRoute(proto=4, metric=10, hops=(("198.51.100.1", 2), ("203.0.113.1", 3)))]
    assert [(u.interface, u.gateway, u.metric4) for u in detect_uplinks(links, routes)] == [
        ("eth0", "198.51.100.1", 10), ("eth1", "203.0.113.1", 10)]


# --------------------------------------------------------------------------- the command's files


def test_write_new_is_mode_0640_and_never_overwrites(tmp_path):
    path = tmp_path / "sub" / "linkwatch.toml"
    init_cmd.write_new(str(path), "a = 1\n")
    assert path.read_text() == "a = 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with pytest.raises(init_cmd.ExistsError):
        init_cmd.write_new(str(path), "b = 2\n")
    assert path.read_text() == "a = 1\n"
    assert sorted(os.listdir(path.parent)) == ["linkwatch.toml"]  # no temporary file left behind


def test_write_new_refuses_a_dangling_symlink(tmp_path):
    path = tmp_path / "linkwatch.toml"
    path.symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(init_cmd.ExistsError):
        init_cmd.write_new(str(path), "a = 1\n")
    assert not (tmp_path / "elsewhere.toml").exists()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "linkwatch", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_cli_refuses_an_existing_file_with_exit_1_and_leaves_it(tmp_path):
    path = tmp_path / "linkwatch.toml"
    path.write_text("# mine\n")
    done = run_cli("init", "--output", str(path))
    assert done.returncode == 1
    assert "already exists, left unchanged" in done.stderr and str(path) in done.stderr
    assert path.read_text() == "# mine\n"


def test_cli_help_names_the_options():
    done = run_cli("init", "--help")
    assert done.returncode == 0 and "--output" in done.stdout and "never overwrites" in done.stdout
