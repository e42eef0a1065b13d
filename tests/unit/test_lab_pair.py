"""The router pair's plan (issue 15), pure: names, addresses, the keepalived config per router."""

from __future__ import annotations

import pytest

from linkwatch.lab.engine_config import engine_config
from linkwatch.lab.pair import PairSpec, build_pair_plan, keepalived_argv, keepalived_config, pair_sysctls
from linkwatch.lab.plan import LabError, lab_role, router_nat_ruleset


def test_the_pair_has_two_routers_with_their_own_uplinks_and_one_lan():
    spec = PairSpec("kpu", uplinks=2)
    ra, rb = spec.routers
    assert [u.name for u in ra.uplink_list] == ["wan1", "wan2"] and [u.name for u in rb.uplink_list] == ["wan3", "wan4"]
    assert spec.router_of_uplink("wan3") == "rb" and spec.router_of_uplink("wan9") is None
    assert spec.namespaces == ["lw-kpu-ra", "lw-kpu-rb", "lw-kpu-p1", "lw-kpu-p2", "lw-kpu-p3", "lw-kpu-p4",
                               "lw-kpu-inet", "lw-kpu-client", "lw-kpu-lan"]
    assert all(lab_role("kpu", ns) for ns in spec.namespaces)  # `lab down` finds every one of them
    plan = [" ".join(c) for c in build_pair_plan(spec)]
    assert "ip -n lw-kpu-client route add default via 10.77.0.1 dev eth0" in plan
    assert "ip -n lw-kpu-ra addr add 10.77.0.3/24 dev lan0" in plan and "ip -n lw-kpu-rb addr add 10.77.0.4/24 dev lan0" in plan
    assert not any("10.77.0.1/" in c for c in plan), "the virtual gateway is keepalived's to add"
    assert "ip -n lw-kpu-rb link add up3 type veth peer name dn netns lw-kpu-p3" in plan
    assert 'oifname "up3" snat to 198.51.100.18' in router_nat_ruleset(rb)
    assert "net.ipv4.ip_forward=1" in pair_sysctls(spec)["lw-kpu-rb"]
    assert "net.ipv4.ip_forward=1" not in pair_sysctls(spec)["lw-kpu-lan"]


def test_each_router_tracks_its_own_file_and_its_own_engine():
    spec = PairSpec("kpu", advert_int=0.2)
    for r in spec.routers:
        conf = keepalived_config(spec, r)
        other = next(o for o in spec.routers if o.role != r.role)
        assert f'file "{r.track_file}"' in conf and other.track_file not in conf
        assert f'"{r.config_path}"' in conf and other.config_path not in conf
        assert "full_command" in conf and conf.count("weight -100") == 2
        assert f"priority {r.priority}" in conf and "advert_int 0.2" in conf and "version 3" in conf
        assert "nopreempt" not in conf
        assert f"--namespace={r.ns}" in keepalived_argv(r)
        toml = engine_config(r, extra_toml=f'[keepalived]\ntrack_file = "{r.track_file}"\n')
        assert r.control_socket in toml and f'track_file = "{r.track_file}"' in toml
    assert [r.priority for r in spec.routers] == [150, 100]


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "kp-1"}, "lab name"), ({"name": "kp", "uplinks": 3}, "uplinks per router"),
    ({"name": "kp", "advert_int": 0.001}, "advert_int"),
])
def test_bad_pairs_are_refused(kwargs, message):
    with pytest.raises(LabError, match=message):
        PairSpec(**kwargs)
