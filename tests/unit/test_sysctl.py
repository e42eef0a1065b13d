"""Review finding 7: strict reverse-path filtering silently drops the replies of sticky flows on a
non-active uplink; the engine says so at start."""

from __future__ import annotations

import logging

from linkwatch.config import loads
from linkwatch.daemon.engine import warn_strict_rp_filter
from linkwatch.kernel.sysctl import strict_rp_filter

CONFIG = """
[uplinks.fibre]
interface = "eth1"
[[uplinks.fibre.probes]]
type = "icmp"
target = "203.0.113.1"
[uplinks.lte]
interface = "wwan0"
[[uplinks.lte.probes]]
type = "icmp"
target = "203.0.113.1"
"""


def conf(tmp_path, **values):
    """A /proc/sys/net/ipv4/conf look-alike: values like all_rp_filter=1, eth1_rp_filter=0."""
    for ifname in ("all", "eth1", "wwan0"):
        for key in ("rp_filter", "src_valid_mark"):
            (tmp_path / ifname).mkdir(exist_ok=True)
            (tmp_path / ifname / key).write_text(f"{values.get(f'{ifname}_{key}', 0)}\n")
    return tmp_path


def test_strict_rp_filter_is_found_from_all_or_the_interface_unless_src_valid_mark_is_on(tmp_path):
    assert strict_rp_filter(["eth1", "wwan0"], conf(tmp_path)) == []
    assert strict_rp_filter(["eth1", "wwan0"], conf(tmp_path, wwan0_rp_filter=1)) == ["wwan0"]
    assert strict_rp_filter(["eth1", "wwan0"], conf(tmp_path, all_rp_filter=1)) == ["eth1", "wwan0"]
    assert strict_rp_filter(["eth1", "wwan0"], conf(tmp_path, all_rp_filter=1, eth1_rp_filter=2)) == ["wwan0"], \
        "the larger of all and the interface's: loose wins"
    assert strict_rp_filter(["eth1", "wwan0"], conf(tmp_path, all_rp_filter=1, all_src_valid_mark=1)) == []
    assert strict_rp_filter(["eth1", "wwan0"], conf(tmp_path, all_rp_filter=1, eth1_src_valid_mark=1)) == ["wwan0"]
    assert strict_rp_filter(["ppp0"], conf(tmp_path, all_rp_filter=1)) == [], "not there yet: not judged"


def test_the_engine_logs_an_error_naming_the_interfaces_and_the_fix(tmp_path, caplog):
    strict = conf(tmp_path, all_rp_filter=1)
    with caplog.at_level(logging.ERROR):
        assert warn_strict_rp_filter(loads(CONFIG), strict) == ["eth1", "wwan0"]
    assert "rp_filter=1) on eth1, wwan0" in caplog.text and "src_valid_mark=1" in caplog.text
    caplog.clear()
    off = loads("[policy]\nsticky_flows = false\n" + CONFIG)
    assert warn_strict_rp_filter(off, strict) == [] and not caplog.text, "without sticky flows nothing is marked"
