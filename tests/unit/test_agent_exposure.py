"""The SNMP agent as a LAN attacker sees it: no reflection amplifier, a source filter, and a
warning when weak access is reachable beyond loopback. On 127.0.0.1 only; no root needed."""

from __future__ import annotations

import logging

import pytest
from pysnmp.proto.api import v2c

from linkwatch.config import SnmpAgentConfig, SnmpConfig, SnmpUserConfig, loads
from linkwatch.config.loading import ConfigError
from linkwatch.snmp.access import exposure_warnings, networks, response_budget, source_allowed
from linkwatch.snmp.agent import SnmpAgent
from tests.unit.test_agent import (AUTH_KEY, BASE, COMMUNITY, client, exchange, free_port, oid_of, snmp_config,
                                   v2c_auth, v2c_packet, v3_auth)
from tests.unit.test_agent import agent, eng  # noqa: F401  (its fixtures: an engine and an agent, per module)

MTU_PAYLOAD = 1400  # one Ethernet MTU less IP/UDP headers, with room for a tunnel


def amplifying_bulk(repeaters: int = 8, max_repetitions: int = 20) -> bytes:
    """The attacker's packet: a small v2c GETBULK asking for many rows of several repeaters."""
    pdu = v2c.GetBulkRequestPDU()
    v2c.apiBulkPDU.set_defaults(pdu)
    v2c.apiBulkPDU.set_non_repeaters(pdu, 0)
    v2c.apiBulkPDU.set_max_repetitions(pdu, max_repetitions)
    v2c.apiBulkPDU.set_varbinds(pdu, [(oid_of(BASE), v2c.Null(""))] * repeaters)
    return v2c_packet(pdu)


def test_an_unauthenticated_getbulk_gets_at_most_one_mtu(agent):
    request = amplifying_bulk()
    answer = exchange(agent.port, request)
    assert answer is not None, "the agent must still answer a v2c GETBULK"
    assert len(answer) <= MTU_PAYLOAD, f"{len(request)}-byte request got {len(answer)} bytes"
    # it is cut short, not refused: a manager still gets rows to go on from
    err, status, _, vbs = client(agent.port, v2c_auth(), "bulk", [BASE] * 8, mr=20)
    assert err is None and int(status) == 0 and 8 <= len(vbs) < 8 * 20


def test_an_authenticated_getbulk_may_be_big(agent):
    err, status, _, vbs = client(agent.port, v3_auth(), "bulk", [BASE] * 8, mr=20)
    assert err is None and int(status) == 0 and len(vbs) == 8 * 20


def test_response_budget():
    assert response_budget(65507, 65000, 1) == 1200  # v2c, noAuthNoPriv
    assert response_budget(65507, 65000, 2) == 65000 - 64  # authNoPriv
    assert response_budget(484, 65000, 3) == 484 - 64  # the manager's own limit
    assert response_budget(10, 65000, 1) == 0


def test_source_allowed():
    nets = networks(["10.1.0.0/16", "fd00::/64"])
    assert source_allowed(nets, "10.1.2.3") and source_allowed(nets, "::ffff:10.1.2.3")
    assert source_allowed(nets, "fd00::1") and source_allowed(nets, "fd00::1%eth0")
    assert not source_allowed(nets, "10.2.0.1") and not source_allowed(nets, "fd00:0:0:1::1")
    assert not source_allowed(nets, "not-an-address")
    assert source_allowed((), "203.0.113.9")  # no list: anyone


def test_a_source_outside_allow_from_gets_no_answer(eng):
    cfg = snmp_config(free_port())
    for allowed, answered in ((("10.99.0.0/16", "fd00::/8"), False), (("127.0.0.0/8",), True)):
        port = free_port()
        cfg = SnmpConfig(base_oid=BASE, agent=SnmpAgentConfig(enabled=True, listen=f"127.0.0.1:{port}",
                                                              community=COMMUNITY, allow_from=allowed))
        a = SnmpAgent(cfg, eng.status, eng.loop, eng.suppressed)
        eng.run(a.start())
        try:
            got = exchange(port, amplifying_bulk(1, 1), timeout=0.3)
            assert (got is not None) == answered
            assert a.stats()["refused_source"] == (0 if answered else 1)
            assert a.stats()["bad_community"] == 0  # dropped before pysnmp looked at it
        finally:
            eng.run(a.close())


def agent_cfg(listen: str, community: str | None = None, users=(), allow=()) -> SnmpConfig:
    return SnmpConfig(agent=SnmpAgentConfig(enabled=True, listen=listen, community=community, users=tuple(users),
                                            allow_from=allow),
                      users=(SnmpUserConfig("secure", "sha256", AUTH_KEY, "aes", AUTH_KEY),
                             SnmpUserConfig("noauth", "none", None, "none", None)))


def test_exposure_warnings():
    assert exposure_warnings(agent_cfg("127.0.0.1:1161", COMMUNITY, ["noauth"])) == []
    assert exposure_warnings(agent_cfg("[::1]:1161", COMMUNITY)) == []
    assert exposure_warnings(agent_cfg("0.0.0.0:161", users=["secure"])) == []
    (v2,) = exposure_warnings(agent_cfg("0.0.0.0:161", COMMUNITY, ["secure"]))
    assert "SNMPv2c" in v2 and "from anywhere" in v2 and COMMUNITY not in v2
    (noauth,) = exposure_warnings(agent_cfg("[::]:161", users=["secure", "noauth"], allow=("10.0.0.0/8",)))
    assert "without authentication (noauth)" in noauth and "from 10.0.0.0/8" in noauth


def test_the_agent_logs_the_warnings_at_start(eng, caplog, monkeypatch):
    """Wiring only (the test binds loopback, never a wildcard address): what exposure_warnings says
    is logged at WARNING when the agent starts, and a loopback agent says nothing."""
    caplog.set_level(logging.WARNING, logger="linkwatch")
    for warned in (False, True):
        if warned:
            monkeypatch.setattr("linkwatch.snmp.agent.exposure_warnings", lambda cfg: ["exposed as a test says"])
        port = free_port()
        a = SnmpAgent(agent_cfg(f"127.0.0.1:{port}", COMMUNITY), eng.status, eng.loop, eng.suppressed)
        eng.run(a.start())
        eng.run(a.close())
        assert ("exposed as a test says" in caplog.text) == warned
        assert "snmp agent listens" not in caplog.text


UPLINK = '[uplinks.fibre]\ninterface = "eth1"\n[[uplinks.fibre.probes]]\ntype = "icmp"\ntarget = "198.51.100.10"\n'


def test_allow_from_in_the_config():
    cfg = loads(UPLINK + '[snmp.agent]\nallow_from = ["10.0.0.0/24", "fd00::1"]\n')
    assert cfg.snmp.agent.allow_from == ("10.0.0.0/24", "fd00::1/128")
    with pytest.raises(ConfigError) as e:
        loads(UPLINK + '[snmp.agent]\nallow_from = ["10.0.0.1/24"]\n')
    assert "snmp.agent.allow_from" in str(e.value) and "host bits" in str(e.value)
    with pytest.raises(ConfigError) as e:
        loads(UPLINK + '[snmp.agent]\nallow_from = "10.0.0.0/8"\n')
    assert "snmp.agent.allow_from" in str(e.value)
