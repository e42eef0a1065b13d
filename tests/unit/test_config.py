"""Unit tests for linkwatch.config: TOML -> frozen dataclasses, every error reported at once."""

from __future__ import annotations

import dataclasses
import math

import pytest

from linkwatch.config import (
    Config,
    ConfigError,
    ConfigIssue,
    ControlConfig,
    HealthConfig,
    HooksConfig,
    LogConfig,
    PolicyConfig,
    ProbeConfig,
    RoutingConfig,
    UplinkConfig,
    describe_keys,
    format_duration,
    load,
    loads,
    parse_duration,
    parse_listen,
)

PROBES = """
[[uplinks.fibre.probes]]
type = "icmp"
target = "198.51.100.10"

[[uplinks.fibre.probes]]
type = "dns"
target = "203.0.113.53"
"""


def doc(*, top: str = "", health: str = "", uplink: str = "", probes: str = PROBES, more: str = "") -> str:
    """A small valid config with pieces swapped in; each piece is plain TOML text."""
    return f"""
{top}
[health]
{health}

[uplinks.fibre]
interface = "eth1"
{uplink}
{probes}
{more}
"""


def probe(kind: str = "icmp", target: str = "198.51.100.10", extra: str = "", uplink: str = "fibre") -> str:
    """One [[uplinks.UPLINK.probes]] entry."""
    return f'[[uplinks.{uplink}.probes]]\ntype = "{kind}"\ntarget = "{target}"\n{extra}\n'


def lte(extra: str = 'interface = "wwan0"') -> str:
    """A second uplink "lte" with one probe."""
    return f"[uplinks.lte]\n{extra}\n" + probe(uplink="lte")


def errors(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        loads(text)
    return caught.value.issues


def only_issue(text: str) -> ConfigIssue:
    issues = errors(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


FULL = """
[control]
socket = "/run/lw/ctl.sock"
mode = "0640"

[health]
interval = "200ms"
fast_interval = "50ms"
standby_interval = "2s"
timeout = "180ms"
attempts = 3
down_after = 4
up_after = 6
min_targets = 2
quality_window = "30s"
loss_degraded = "35%"
loss_recovered = 15.5
rtt_degraded = "300ms"
rtt_recovered = 0.2
quality_hold = "1.5s"

[policy]
mode = "balance"
failback_hold = "1m"
flush_conntrack = false
on_stop = "withdraw"

[routing]
protocol = 99
active_table = 200
rule_priority = 2000

[hooks]
directory = "/etc/linkwatch/hooks.d"
timeout = "5s"

[log]
level = "debug"

[uplinks.fibre]
interface = "eth1"
gateway = "198.51.100.1"
priority = 1
weight = 3
table = 150

[[uplinks.fibre.probes]]
type = "icmp"
target = "198.51.100.10"

[[uplinks.fibre.probes]]
type = "dns"
target = "203.0.113.53"
query = "probe.example.net"

[uplinks.lte]
interface = "wwan0"
gateway = "auto"
priority = 2

[uplinks.lte.health]
standby_interval = "5s"
min_targets = 1

[[uplinks.lte.probes]]
type = "icmp"
target = "203.0.113.10"
"""


def test_full_config_round_trips_into_the_dataclasses():
    cfg = loads(FULL, source="full.toml")
    health = HealthConfig(
        interval=0.2, fast_interval=0.05, standby_interval=2.0, timeout=0.18, attempts=3,
        down_after=4, up_after=6, min_targets=2, quality_window=30.0, loss_degraded=35.0,
        loss_recovered=15.5, rtt_degraded=0.3, rtt_recovered=0.2, quality_hold=1.5,
    )
    expected = Config(
        control=ControlConfig(socket="/run/lw/ctl.sock", mode=0o640),
        health=health,
        policy=PolicyConfig(mode="balance", failback_hold=60.0, flush_conntrack=False, on_stop="withdraw"),
        routing=RoutingConfig(protocol=99, active_table=200, rule_priority=2000),
        hooks=HooksConfig(directory="/etc/linkwatch/hooks.d", timeout=5.0),
        log=LogConfig(level="debug"),
        uplinks=(
            UplinkConfig(
                "fibre", "eth1", "198.51.100.1", priority=1, weight=3, table=150, rule_priority=2001,
                health=health,
                probes=(ProbeConfig("icmp", "198.51.100.10"),
                        ProbeConfig("dns", "203.0.113.53", "probe.example.net")),
            ),
            UplinkConfig(
                "lte", "wwan0", None, priority=2, weight=1, table=101, rule_priority=2002,
                health=dataclasses.replace(health, standby_interval=5.0, min_targets=1),
                probes=(ProbeConfig("icmp", "203.0.113.10"),),
            ),
        ),
        source="full.toml",
    )
    assert cfg == expected
    assert cfg.uplink("lte").table == 101
    with pytest.raises(KeyError):
        cfg.uplink("dsl")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.health.interval = 1.0  # type: ignore[misc]


def test_minimal_config_gets_every_default():
    cfg = loads(doc())
    assert (cfg.control, cfg.health, cfg.policy, cfg.routing, cfg.hooks, cfg.log) == (
        ControlConfig(), HealthConfig(), PolicyConfig(), RoutingConfig(), HooksConfig(), LogConfig())
    assert cfg.control.mode == 0o660 and cfg.health.interval == 0.25 and cfg.hooks.directory is None
    fibre = cfg.uplink("fibre")
    assert (fibre.gateway, fibre.priority, fibre.weight, fibre.table, fibre.rule_priority) == (
        None, 1, 1, 101, 1001)
    assert fibre.health == cfg.health
    assert fibre.probes[1] == ProbeConfig("dns", "203.0.113.53", "example.com")
    assert cfg.source == "<string>"


def test_per_uplink_health_overrides_only_its_keys():
    cfg = loads(doc(
        health='interval = "500ms"\ndown_after = 4\nquality_window = "20s"',
        more='[uplinks.fibre.health]\ninterval = "100ms"\nloss_degraded = "60%"\nrtt_degraded = "400ms"\n'
             'rtt_recovered = "250ms"',
    ))
    fibre = cfg.uplink("fibre").health
    assert (fibre.interval, fibre.loss_degraded) == (0.1, 60.0)
    assert (fibre.rtt_degraded, fibre.rtt_recovered) == (0.4, 0.25)
    assert (fibre.down_after, fibre.quality_window) == (4, 20.0)  # inherited from [health]
    assert cfg.health.interval == 0.5 and cfg.health.rtt_degraded is None  # the global one is untouched


def test_auto_tables_skip_explicit_tables_and_the_active_table():
    more = ""
    for name, iface, table in [("b", "eth2", "table = 102"), ("c", "eth3", ""), ("d", "eth4", ""),
                               ("e", "eth5", "table = 101")]:
        more += f'[uplinks.{name}]\ninterface = "{iface}"\n{table}\n' + probe(uplink=name)
    cfg = loads(doc(top="[routing]\nactive_table = 103\nrule_priority = 500", more=more))
    tables = {u.name: u.table for u in cfg.uplinks}
    assert tables == {"fibre": 104, "b": 102, "c": 105, "d": 106, "e": 101}
    assert [u.rule_priority for u in cfg.uplinks] == [501, 502, 503, 504, 505]
    assert [u.name for u in cfg.uplinks] == ["fibre", "b", "c", "d", "e"]  # file order


@pytest.mark.parametrize("text, seconds", [
    ("200ms", 0.2), ("1s", 1.0), ("2m", 120.0), ("1.5s", 1.5), ("1h", 3600.0), ("1m30s", 90.0),
    (" 250 ms ", 0.25), (".5s", 0.5), (3, 3.0), (0.25, 0.25),
])
def test_parse_duration_accepts(text, seconds):
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("text", ["fast", "1.5", "", "-1s", "1w", "1 s s", "ms", True, -1, math.inf, math.nan,
                                  None, [1]])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds, text", [
    (0.2, "200ms"), (0.1, "100ms"), (0.0005, "0.5ms"), (1.0, "1s"), (1.5, "1.5s"), (90, "90s"),
    (120.0, "2m"), (3600, "1h"), (0, "0s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("raw, value", [("40", 40.0), ("40.0", 40.0), ('"40%"', 40.0), ('"12.5%"', 12.5)])
def test_percent_forms(raw, value):
    cfg = loads(doc(health=f"loss_degraded = {raw}\nloss_recovered = 0"))
    assert cfg.health.loss_degraded == value


@pytest.mark.parametrize("raw, mode", [('"0660"', 0o660), ('"600"', 0o600), ('"0o640"', 0o640)])
def test_control_mode_is_an_octal_string(raw, mode):
    assert loads(doc(top=f"[control]\nmode = {raw}")).control.mode == mode


# One case per error class: (TOML, path, fragments that must all appear in the message).
ERROR_CASES = {
    "unknown top-level key": (doc(top="[uplink]\nx = 1"), "uplink", ['"uplink"', "uplinks", "policy"]),
    "unknown section key": (doc(health="intervall = 1"), "health.intervall",
                            ['"intervall"', "fast_interval", 'did you mean "interval"']),
    "unknown uplink key": (doc(uplink="iface = 1"), "uplinks.fibre.iface", ["interface", "gateway", "probes"]),
    "unknown per-uplink health key": (doc(more="[uplinks.fibre.health]\nmode = 1"), "uplinks.fibre.health.mode",
                                      ['"mode"', "interval", "quality_hold"]),
    "unknown probe key": (doc(probes=PROBES + 'port = 53'), "uplinks.fibre.probes[1].port",
                          ['"port"', "query", "target", "type"]),
    "section is not a table": (doc(top='policy = "balance"'), "policy", ['got "balance"', "a table [policy]"]),
    "duration unparsable": (doc(more='[uplinks.fibre.health]\ninterval = "fast"'),
                            "uplinks.fibre.health.interval",
                            ['got "fast", expected a duration like "200ms", "1s" or "2m"']),
    "duration not positive": (doc(top='[policy]\nfailback_hold = "0s"'), "policy.failback_hold",
                              ['got "0s"', "greater than 0"]),
    "interval below 10ms": (doc(health='interval = "5ms"'), "health.interval", ['got "5ms"', "at least 10ms"]),
    "wrong type for integer": (doc(health='attempts = "2"'), "health.attempts", ['got "2"', "an integer 1..5"]),
    "float for integer": (doc(health="down_after = 2.0"), "health.down_after",
                          ["got 2.0", "an integer 1..100"]),
    "attempts out of range": (doc(health="attempts = 6"), "health.attempts", ["got 6", "1..5"]),
    "up_after out of range": (doc(health="up_after = 101"), "health.up_after", ["got 101", "1..100"]),
    "min_targets below 1": (doc(health="min_targets = 0"), "health.min_targets", ["got 0", "1.."]),
    "min_targets above the probes of an uplink": (
        doc(health="min_targets = 3"), "health.min_targets",  # where it was written (the property test)
        ["got 3", "at most 2", "uplink fibre has only 2 probes", "or set uplinks.fibre.health.min_targets"]),
    "min_targets override above the probes": (
        doc(more="[uplinks.fibre.health]\nmin_targets = 5"), "uplinks.fibre.health.min_targets",
        ["got 5", "at most 2"]),
    "percentage out of range": (doc(health="loss_degraded = 140"), "health.loss_degraded",
                                ["got 140", "a percentage 0..100"]),
    "percentage bad string": (doc(health='loss_degraded = "forty"'), "health.loss_degraded",
                              ['got "forty"', '"40%"']),
    "weight out of range": (doc(uplink="weight = 257"), "uplinks.fibre.weight", ["got 257", "1..256"]),
    "boolean": (doc(top='[policy]\nflush_conntrack = "yes"'), "policy.flush_conntrack",
                ['got "yes"', "true or false"]),
    "policy mode": (doc(top='[policy]\nmode = "roundrobin"'), "policy.mode",
                    ['got "roundrobin"', '"failover"', '"balance"']),
    "on_stop": (doc(top='[policy]\non_stop = "kill"'), "policy.on_stop",
                ['got "kill"', '"keep"', '"withdraw"']),
    "log level": (doc(top='[log]\nlevel = "verbose"'), "log.level", ['got "verbose"', '"debug"', '"error"']),
    "control mode integer": (doc(top="[control]\nmode = 660"), "control.mode", ["got 660", '"0660"', "quote"]),
    "control mode not octal": (doc(top='[control]\nmode = "0689"'), "control.mode", ['got "0689"', "octal"]),
    "control socket relative": (doc(top='[control]\nsocket = "ctl.sock"'), "control.socket",
                                ['got "ctl.sock"', "absolute path"]),
    "control socket too long": (doc(top=f'[control]\nsocket = "/{"s" * 110}"'), "control.socket",
                                ["107 bytes"]),
    "hooks directory relative": (doc(top='[hooks]\ndirectory = "hooks.d"'), "hooks.directory",
                                 ['got "hooks.d"', "absolute path"]),
    "routing protocol reserved": (doc(top="[routing]\nprotocol = 4"), "routing.protocol",
                                  ["got 4", "5..255", "reserved by the kernel"]),
    "active table reserved": (doc(top="[routing]\nactive_table = 254"), "routing.active_table",
                              ["got 254", "254 (main)"]),
    "rule priority after main": (doc(top="[routing]\nrule_priority = 32700"), "routing.rule_priority",
                                 ["got 32700", "1..32665"]),
    "fast_interval above interval": (doc(health='fast_interval = "500ms"'), "health.fast_interval",
                                     ["got 500ms", "at most health.interval (250ms)"]),
    "interval above standby_interval": (
        doc(health='interval = "20s"\nfast_interval = "1s"\nquality_window = "2m"\ntimeout = "1s"\n'
                   'proven_interval = "20s"'),
        "health.standby_interval", ["got 10s", "at least health.interval (20s)"]),
    "loss_recovered not below loss_degraded": (doc(health="loss_degraded = 30\nloss_recovered = 30"),
                                               "health.loss_recovered",
                                               ["got 30%", "less than health.loss_degraded (30%)", "flap"]),
    "rtt_recovered not below rtt_degraded": (
        doc(health='rtt_degraded = "200ms"\nrtt_recovered = "300ms"'), "health.rtt_recovered",
        ["got 300ms", "less than health.rtt_degraded (200ms)"]),
    "rtt only one set": (doc(health='rtt_degraded = "200ms"'), "health.rtt_recovered",
                         ['got "off"', "health.rtt_degraded (200ms)", "both"]),
    "rtt only recovered set": (doc(health='rtt_recovered = "200ms"'), "health.rtt_degraded",
                               ['got "off"', "health.rtt_recovered (200ms)", "both"]),
    "rtt bad value": (doc(health='rtt_degraded = "slow"'), "health.rtt_degraded", ['got "slow"', '"off"']),
    "quality_window below 4 intervals": (doc(health='quality_window = "900ms"'), "health.quality_window",
                                         ["got 900ms", "4 × health.interval = 1s", "250ms", "too few rounds"]),
    "timeout above 10 intervals": (doc(health='timeout = "3s"'), "health.timeout",
                                   ["got 3s", "10 × health.interval = 2.5s", "detection"]),
    "retransmits too close": (doc(health='timeout = "20ms"\nattempts = 3'), "health.attempts",
                              ["got 3", "at most 2", "20ms"]),
    "cross check of an override names both sources": (
        doc(more='[uplinks.fibre.health]\ninterval = "50ms"'), "uplinks.fibre.health.fast_interval",
        ["got 100ms (inherited from health.fast_interval)", "at most uplinks.fibre.health.interval (50ms)"]),
    "uplink name": (doc(more='[uplinks."my link"]\ninterface = "eth2"\n' + probe(uplink='"my link"')),
                    'uplinks."my link"', ['got "my link"', "1..32 letters"]),
    "uplink not a table": (doc(more='[uplinks]\nlte = "wwan0"'), "uplinks.lte", ['got "wwan0"', "a table"]),
    "interface name with slash": (doc(uplink="").replace('"eth1"', '"eth/1"'), "uplinks.fibre.interface",
                                  ['got "eth/1"', "Linux interface name"]),
    "interface name too long": (doc().replace('"eth1"', '"enp0s31f6-uplink"'), "uplinks.fibre.interface",
                                ['got "enp0s31f6-uplink"', "1..15 characters"]),
    "interface name dots": (doc().replace('"eth1"', '".."'), "uplinks.fibre.interface", ['got ".."']),
    "interface missing": (doc().replace('interface = "eth1"', ""), "uplinks.fibre.interface",
                          ["missing", "interface name"]),
    "interface shared": (doc(more=lte('interface = "eth1"')),
                         "uplinks.lte.interface", ['got "eth1"', "uplinks.fibre.interface"]),
    "table shared": (doc(uplink="table = 120", more=lte('interface = "wwan0"\ntable = 120')),
                     "uplinks.lte.table", ["got 120", "uplinks.fibre.table is 120"]),
    "table reserved": (doc(uplink="table = 255"), "uplinks.fibre.table", ["got 255", "255 (local)"]),
    "table zero": (doc(uplink="table = 0"), "uplinks.fibre.table", ["got 0", "1..4294967295"]),
    "table too big": (doc(uplink="table = 4294967296"), "uplinks.fibre.table",
                      ["got 4294967296", "4294967295"]),
    "table is the active table": (doc(uplink="table = 100"), "uplinks.fibre.table",
                                  ["got 100", "routing.active_table (100)"]),
    "no uplinks": ("[health]\ninterval = 1", "uplinks", ["missing", "at least one [uplinks.NAME]"]),
    "empty uplinks": ("[uplinks]", "uplinks", ["got no uplinks", "at least one"]),
    "no probes": (doc(probes=""), "uplinks.fibre.probes", ["missing", "[[uplinks.fibre.probes]]"]),
    "probes not an array of tables": (doc(probes='[uplinks.fibre.probes]\ntype = "icmp"'),
                                      "uplinks.fibre.probes",
                                      ["got a table", "an array of tables [[uplinks.fibre.probes]]"]),
    "probe type": (doc(probes=probe("http", "198.51.100.10")),
                   "uplinks.fibre.probes[0].type", ['got "http"', '"icmp"', '"dns"']),
    "probe target missing": (doc(probes='[[uplinks.fibre.probes]]\ntype = "icmp"'),
                             "uplinks.fibre.probes[0].target", ["missing", "IPv4 address"]),
    "probe target hostname": (doc(probes=probe("icmp", "dns.quad9.net")),
                              "uplinks.fibre.probes[0].target", ['got "dns.quad9.net"', "IPv4 address", "DNS"]),
    "probe target unspecified": (doc(probes=probe("icmp", "0.0.0.0")),
                                 "uplinks.fibre.probes[0].target", ['got "0.0.0.0"', "unspecified"]),
    "probe target multicast": (doc(probes=probe("icmp", "239.1.2.3")),
                               "uplinks.fibre.probes[0].target", ['got "239.1.2.3"', "multicast"]),
    "probe target broadcast": (doc(probes=probe("icmp", "255.255.255.255")),
                               "uplinks.fibre.probes[0].target", ['got "255.255.255.255"', "broadcast"]),
    "probe target IPv6 link-local": (doc(probes=probe("icmp", "fe80::1")),
                                     "uplinks.fibre.probes[0].target", ['got "fe80::1"', "link-local"]),
    "probe target IPv6 multicast": (doc(probes=probe("icmp", "ff02::1")),
                                    "uplinks.fibre.probes[0].target", ['got "ff02::1"', "multicast"]),
    "query on icmp probe": (doc(probes=probe("icmp", "198.51.100.10", 'query = "example.org"')),
                            "uplinks.fibre.probes[0].query",
                            ['got "example.org"', "only to dns probes", '"icmp"']),
    "query not a DNS name": (doc(probes=probe("dns", "198.51.100.10", 'query = "a..example"')),
                             "uplinks.fibre.probes[0].query", ['got "a..example"', "a DNS name"]),
    "query label too long": (doc(probes=probe("dns", "198.51.100.10", f'query = "{"a" * 64}.example"')),
                             "uplinks.fibre.probes[0].query", ["a DNS name"]),
    "duplicate probe": (doc(probes=PROBES + probe("icmp", "198.51.100.10")),
                        "uplinks.fibre.probes[2]", ["198.51.100.10", "uplinks.fibre.probes[0]"]),
    "gateway hostname": (doc(uplink='gateway = "router.lan"'), "uplinks.fibre.gateway",
                         ['got "router.lan"', '"auto" or a unicast IPv4 address']),
    "gateway broadcast": (doc(uplink='gateway = "255.255.255.255"'), "uplinks.fibre.gateway",
                          ['got "255.255.255.255"', "broadcast"]),
    "priority negative": (doc(uplink="priority = -1"), "uplinks.fibre.priority", ["got -1", "an integer 0.."]),
    "control group not a name": (doc(top='[control]\ngroup = "wheel; rm"'), "control.group",
                                 ['got "wheel; rm"', "a group name"]),
    "history path relative": (doc(top='[history]\npath = "history.db"'), "history.path",
                              ['got "history.db"', "absolute path"]),
    "history sample period too short": (doc(top='[history]\nsample_period = "5s"'), "history.sample_period",
                                        ['got "5s"', "at least 10s"]),
    "history retention in days": (doc(top='[history]\nkeep_samples = "10m"'), "history.keep_samples",
                                  ['got "10m"', "at least 1h"]),
    "history event delay above the commit interval": (
        doc(top='[history]\nevent_delay = "20s"'), "history.event_delay",
        ["got 20s", "at most history.commit_interval (10s)"]),
    "web listen hostname": (doc(top='[web]\nlisten = "router.lan:8080"'), "web.listen",
                            ['got "router.lan:8080"', '"127.0.0.1:8080"', "hostnames"]),
    "web listen port": (doc(top='[web]\nlisten = "127.0.0.1:80800"'), "web.listen", ['got "127.0.0.1:80800"']),
    "web listen bad port": (doc(top='[web]\nlisten = "127.0.0.1:0"'), "web.listen", ["1..65535"]),
    "web listen bad address": (doc(top='[web]\nlisten = "300.1.1.1:80"'), "web.listen",
                               ["'300.1.1.1' is not an IP address"]),
    "web password in clear": (doc(top='[web]\npassword_hash = "hunter2"'), "web.password_hash",
                              ["linkwatch passwd", "never put the password itself here"]),
}


@pytest.mark.parametrize("text, path, fragments", ERROR_CASES.values(), ids=list(ERROR_CASES))
def test_each_error_class_names_path_value_and_expectation(text, path, fragments):
    issue = only_issue(text)
    assert issue.path == path, str(issue)
    for fragment in fragments:
        assert fragment in issue.message, f"{fragment!r} not in {issue}"


def test_every_error_is_reported_at_once_in_file_order():
    text = doc(
        top='[policy]\nmode = "roundrobin"\n[control]\nmode = 660\n[log]\nlevel = "INFO"',
        health='interval = "fast"\nattempts = 0\nloss_degraded = 10\nloss_recovered = 50\nbogus = 1',
        uplink='weight = 0\ngateway = "gw"\ntable = 254',
        probes=probe("icmp", "example.com", 'query = "x"'),
        more='[uplinks.lte]\ninterface = "eth1"\n[uplinks."bad name!"]\ninterface = "a b"',
    )
    with pytest.raises(ConfigError) as caught:
        loads(text, source="many.toml")
    err = caught.value
    paths = [issue.path for issue in err.issues]
    assert paths == [
        "control.mode", "health.bogus", "health.interval", "health.attempts", "policy.mode", "log.level",
        "health.loss_recovered",
        "uplinks.fibre.gateway", "uplinks.fibre.weight", "uplinks.fibre.table",
        "uplinks.fibre.probes[0].target", "uplinks.fibre.probes[0].query",
        "uplinks.lte.probes", "uplinks.lte.interface",
        'uplinks."bad name!"', 'uplinks."bad name!".interface', 'uplinks."bad name!".probes',
    ]
    assert err.source == "many.toml"
    assert str(err).splitlines() == [f"{issue.path}: {issue.message}" for issue in err.issues]


def test_toml_syntax_error_names_line_and_column():
    with pytest.raises(ConfigError) as caught:
        loads('[health]\ninterval = "1s"\ntimeout = \n', source="broken.toml")
    (issue,) = caught.value.issues
    assert issue.path == "line 3, column 11"
    assert "invalid TOML" in issue.message
    assert caught.value.source == "broken.toml"


def test_load_reads_a_file_and_names_it(tmp_path):
    path = tmp_path / "linkwatch.toml"
    path.write_text(doc(health="down_after = 7"))
    cfg = load(str(path))
    assert cfg.health.down_after == 7 and cfg.source == str(path)
    path.write_text(doc(health="down_after = 0"))
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert caught.value.source == str(path) and caught.value.issues[0].path == "health.down_after"


def test_load_turns_os_and_encoding_errors_into_config_errors(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load(str(missing))
    assert caught.value.issues == [ConfigIssue(str(missing), "cannot read the file: No such file or directory")]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[health]\ninterval = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(str(binary))


@pytest.mark.parametrize("listen, host, port", [
    ("127.0.0.1:8080", "127.0.0.1", 8080), ("0.0.0.0:80", "0.0.0.0", 80), ("[::1]:8443", "::1", 8443),
    ("[::]:8080", "::", 8080)])
def test_web_listen_forms(listen, host, port):
    cfg = loads(doc(top=f'[web]\nlisten = "{listen}"'))
    assert parse_listen(cfg.web.listen) == (host, port)


def test_history_and_web_keys_parse():
    h = 'scrypt:32768:8:1$abcDEF12$' + "0a" * 32
    cfg = loads(doc(top=f'[history]\npath = "/var/lib/lw/h.db"\nkeep_samples = "7d"\nsample_period = "30s"\n'
                        f'[web]\npassword_hash = "{h}"\npublic_read = true\nrefresh = "500ms"'))
    assert (cfg.history.path, cfg.history.keep_samples, cfg.history.sample_period) == ("/var/lib/lw/h.db", 7 * 86400, 30)
    assert (cfg.web.password_hash, cfg.web.public_read, cfg.web.refresh) == (h, True, 0.5)
    assert loads(doc()).history.path is None and loads(doc()).web.password_hash is None


def test_describe_keys_follows_the_dataclasses():
    keys = describe_keys()
    for cls, section in [(HealthConfig, "health"), (PolicyConfig, "policy"), (RoutingConfig, "routing"),
                         (ControlConfig, "control"), (HooksConfig, "hooks"), (LogConfig, "log")]:
        assert [k for k in keys if k.startswith(section + ".")] == [
            f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    assert [k for k in keys if k.startswith("uplinks.")] == [
        "uplinks.*.interface", "uplinks.*.gateway", "uplinks.*.priority", "uplinks.*.weight", "uplinks.*.quota",
        "uplinks.*.quota_warn", "uplinks.*.move_flows_after", "uplinks.*.gateway6", "uplinks.*.ipv6_prefixes", "uplinks.*.table",
        "uplinks.*.probes.*.type", "uplinks.*.probes.*.target", "uplinks.*.probes.*.query"]
    overrides = set(describe_keys(per_uplink_health=True)) - set(keys)
    assert overrides == {f"uplinks.*.health.{f.name}" for f in dataclasses.fields(HealthConfig)}


SNMP_GOOD = """
[snmp]
engine_id = "0x80001f8880aabbccdd"
[snmp.agent]
enabled = true
listen = "10.77.0.1:161"
community = "s3cret-ro"
users = ["monitor"]
[snmp.users.monitor]
auth = "sha256"
auth_key = "authpass123"
priv = "aes"
priv_key = "privpass123"
[[snmp.traps]]
host = "10.77.0.2"
community = "trapcomm"
[[snmp.traps]]
host = "10.77.0.2"
port = 1162
version = "3"
user = "monitor"
kind = "inform"
"""


def test_snmp_section_parses_and_hides_its_secrets():
    cfg = loads(doc(top=SNMP_GOOD))
    s = cfg.snmp
    assert s.engine_id == "80001f8880aabbccdd" and s.base_oid == "1.3.6.1.4.1.8072.9999.9999.7745"
    assert (s.agent.enabled, s.agent.listen, s.agent.community, s.agent.users) == (
        True, "10.77.0.1:161", "s3cret-ro", ("monitor",))
    assert s.user("monitor").auth_key == "authpass123" and s.user("monitor").priv == "aes"
    assert [(t.version, t.kind, t.port) for t in s.traps] == [("2c", "trap", 162), ("3", "inform", 1162)]
    text = repr(cfg)
    for secret in ("s3cret-ro", "authpass123", "privpass123", "trapcomm"):
        assert secret not in text


SNMP_BAD = """
[snmp]
base_oid = "1.2.3"
[snmp.agent]
enabled = true
users = ["ghost"]
[snmp.users.weak]
auth = "none"
priv = "aes"
priv_key = "short"
[snmp.users.nokey]
auth = "sha"
[snmp.users.authonly]
auth = "sha"
auth_key = "12345678"
priv = "none"
[[snmp.traps]]
host = "trap.example"
[[snmp.traps]]
host = "10.0.0.1"
version = "3"
user = "nobody-here"
[[snmp.traps]]
host = "10.0.0.1"
version = "3"
user = "authonly"
"""


def test_snmp_errors_are_all_reported_and_never_echo_a_secret():
    issues = {i.path: i.message for i in errors(doc(top=SNMP_BAD))}
    assert "under 1.3.6.1" in issues["snmp.base_oid"]
    assert issues["snmp.users.weak.priv_key"].startswith("got a secret of 5 characters")
    assert "privacy needs authentication" in issues["snmp.users.weak.priv"]
    assert issues["snmp.users.nokey.auth_key"] == 'missing, expected a passphrase for auth = "sha"'
    assert "ghost" in issues["snmp.agent.users"]
    assert "no hostnames" in issues["snmp.traps[0].host"]
    assert "for version 2c" in issues["snmp.traps[0].community"]
    assert "nobody-here" in issues["snmp.traps[1].user"]
    assert 'its priv is "none"' in issues["snmp.traps[2].level"]
    assert "short" not in " ".join(issues.values())


def test_an_enabled_agent_needs_someone_who_may_read_it():
    issue = only_issue(doc(top="[snmp.agent]\nenabled = true"))
    assert issue.path == "snmp.agent.enabled" and "community or users" in issue.message


def test_ipv6_probe_targets_are_ipv6_probes_kept_apart_from_the_ipv4_ones():
    cfg = loads(doc(probes=probe("icmp", "198.51.100.10") + probe("icmp", "2001:DB8::1")
                    + probe("dns", "2001:db8::53")))
    (u,) = cfg.uplinks
    assert [p.target for p in u.probes] == ["198.51.100.10"], "the IPv4 side is what it was"
    assert [(p.type, p.target) for p in u.probes6] == [("icmp", "2001:db8::1"), ("dns", "2001:db8::53")]
    assert loads(doc()).uplinks[0].probes6 == (), "an IPv4-only config has no IPv6 side"
    only6 = loads(doc(probes=probe("icmp", "2001:db8::1"), health="min_targets = 1")).uplinks[0]
    assert only6.probes == () and [p.target for p in only6.probes6] == ["2001:db8::1"], "an IPv6-only uplink"


def test_ipv6_prefixes_are_checked_and_need_an_ipv6_side():
    six = probe("icmp", "198.51.100.10") + probe("icmp", "2001:db8::1")
    cfg = loads(doc(uplink='ipv6_prefixes = ["2001:DB8:100::/56"]', probes=six))
    assert cfg.uplinks[0].ipv6_prefixes == ("2001:db8:100::/56",)
    for bad, why in (('["2001:db8:100::1/56"]', "host bits"), ('["fe80::/64"]', "not a LAN prefix"),
                     ('"2001:db8:100::/56"', "a list"), ('["2000::/16"]', "not a LAN prefix"),
                     ('["::ffff:0:0/96"]', "not a LAN prefix"), ('["::/8"]', "not a LAN prefix"),
                     ('["fd00:1::/48"]', "unique local")):
        with pytest.raises(ConfigError) as e:
            loads(doc(uplink=f"ipv6_prefixes = {bad}", probes=six))
        assert "uplinks.fibre.ipv6_prefixes" in str(e.value) and why in str(e.value)
    with pytest.raises(ConfigError, match="IPv6 probe targets too"):
        loads(doc(uplink='ipv6_prefixes = ["2001:db8:100::/56"]'))
    two = doc(uplink='ipv6_prefixes = ["2001:db8:100::/56"]', probes=six,
              more='[uplinks.lte]\ninterface = "wwan0"\nipv6_prefixes = ["2001:db8:100:80::/57"]\n'
                   + probe("icmp", "198.51.100.10", uplink="lte") + probe("icmp", "2001:db8::1", uplink="lte"))
    with pytest.raises(ConfigError) as e:
        loads(two)
    assert "uplinks.lte.ipv6_prefixes" in str(e.value) and "overlaps 2001:db8:100::/56 of uplink fibre" in str(e.value)


def test_gateway6_is_auto_or_an_ipv6_next_hop():
    assert loads(doc()).uplinks[0].gateway6 is None
    assert loads(doc(uplink='gateway6 = "FE80::1"')).uplinks[0].gateway6 == "fe80::1"
    for bad in ('"198.51.100.1"', '"ff02::1"', '"::"', "1"):
        with pytest.raises(ConfigError, match="uplinks.fibre.gateway6"):
            loads(doc(uplink=f"gateway6 = {bad}"))


def test_scoped_ipv6_addresses_are_refused_with_why():
    """Review finding 1: Python reads "fe80::1%up1" as an address; the kernel never takes one."""
    six = probe("icmp", "198.51.100.10") + probe("icmp", "2001:db8::1")
    with pytest.raises(ConfigError, match="uplinks.fibre.gateway6.*%zone"):
        loads(doc(uplink='gateway6 = "fe80::1%up1"', probes=six))
    with pytest.raises(ConfigError, match=r"uplinks.fibre.probes\[1\].target.*%zone"):
        loads(doc(probes=probe("icmp", "198.51.100.10") + probe("icmp", "2001:db8::1%up1")))
