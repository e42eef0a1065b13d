"""`linkwatch status` text: the uplink table, the active line and the history's health."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from statusdata import make_status, uplink_dict  # noqa: E402

from linkwatch.commands.status import format_status  # noqa: E402


def status(**over):
    one = [uplink_dict("wan1", rtt_ms=12.34, loss_pct=0.0, jitter_ms=0.5, since=time.time() - 30,
                       probe_bytes_per_day=83_000_000)]
    return make_status(one, **over)


def test_status_table_and_no_history_line_without_a_history():
    text = format_status(status(sinks={"log": {"handled": 3, "failed": 0, "timed_out": 0, "dropped": 0,
                                               "last_error": None, "queued": 0}}))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["UPLINK", "IF", "STATE", "ACTIVE"]
    assert lines[1].split()[:9] == ["wan1", "eth1", "UP", "yes", "12.3ms", "0%", "0.5ms", "30s", "83.0MB"]
    assert lines[2] == "active: wan1 (failover): best tier: wan1"
    assert "history" not in text


def sink(detail):
    return {"handled": 1, "failed": 0, "timed_out": 0, "dropped": 0, "last_error": None, "queued": 0, "detail": detail}


def test_history_line_shows_progress_and_failures():
    detail = {"events_written": 7, "samples_written": 120, "pending_events": 1, "pending_samples": 2,
              "last_commit_at": time.time() - 5, "last_error": None}
    line = format_status(status(sinks={"history": sink(detail)})).splitlines()[-1]
    assert line.startswith("history: 7 events, 120 samples written, last commit ") and line.endswith("3 pending")
    detail["last_error"] = "OperationalError: database or disk is full"
    assert format_status(status(sinks={"history": sink(detail)})).splitlines()[-1].endswith(
        "; FAILING: OperationalError: database or disk is full")


def test_snmp_lines_show_traps_and_the_agent_and_say_when_it_is_not_running():
    snmp = {"engine_id": "80001f88", "base_oid": "1.3.6.1.4.1.8072.9999.9999.7745",
            "agent": {"answered": 40, "bad_community": 3, "bad_user_or_keys": 0, "malformed": 5},
            "agent_listen": "10.77.0.1:1161", "agent_error": None}
    st = status(sinks={"snmp-traps": sink({"sent": 8, "failed": 1, "suppressed": {"wan1": 2, "lte": 1}})}, snmp=snmp)
    lines = format_status(st).splitlines()
    assert lines[-2] == "snmp traps: 8 sent, 1 failed, 3 held back by the storm limit"
    assert lines[-1] == ("snmp agent on 10.77.0.1:1161: 40 answered, 3 bad community, 0 bad v3 user/keys, "
                         "5 malformed")
    snmp = dict(snmp, agent=None, agent_error="cannot listen on udp 10.77.0.1:161: Permission denied")
    assert format_status(status(snmp=snmp)).splitlines()[-1] == (
        "snmp agent: NOT RUNNING: cannot listen on udp 10.77.0.1:161: Permission denied")


def test_mqtt_line_shows_the_broker_and_why_it_is_not_connected():
    detail = {"broker": "broker.lan:8883", "tls": True, "connected": True, "error": None, "published": 42,
              "topic_prefix": "linkwatch/gw"}
    line = format_status(status(sinks={"mqtt": sink(detail)})).splitlines()[-1]
    assert line == "mqtt broker.lan:8883 (tls): connected; 42 messages published under linkwatch/gw/"
    detail.update(connected=False, error="the broker broker.lan:8883 refused the connection: Not authorized")
    assert format_status(status(sinks={"mqtt": sink(detail)})).splitlines()[-1].startswith(
        "mqtt broker.lan:8883 (tls): NOT CONNECTED: the broker broker.lan:8883 refused the connection: Not authorized;")


def test_flapping_marker_probe_traffic_and_the_month_against_the_quota():
    st = make_status([
        uplink_dict("wan1", since=time.time() - 30, probe_bytes_per_day=24_000_000, month_bytes=312_000_000_000),
        uplink_dict("lte", interface="wwan0", state="DOWN", active=False, reason="3 failed rounds", rtt_ms=None,
                    loss_pct=100.0, jitter_ms=None, since=time.time() - 90, probe_bytes_per_day=None,
                    dampened=True, flap_penalty=3.5, month_bytes=12_345_000_000, quota_bytes=20_000_000_000,
                    quota_pct=61.73),
        uplink_dict("dsl", interface="eth2", active=False, forced=True, dampened=True, since=time.time() - 5,
                    probe_bytes_per_day=450_000, month_bytes=0, quota_bytes=500_000_000, quota_pct=0.0),
    ])
    lines = format_status(st).splitlines()
    head = lines[0].split()
    assert head[8:] == ["PROBES/DAY", "MONTH", "REASON"]
    assert lines[1].split()[8:10] == ["24.0MB", "312.0GB"]  # no quota: the month's traffic alone
    assert lines[2].split()[:3] == ["lte", "FLAPPING", "wwan0"]
    assert "  -  " in lines[2] and lines[2].split()[9:12] == ["-", "12.3GB/20.0GB", "(62%)"]
    assert lines[3].split()[:4] == ["dsl", "(forced)", "FLAPPING", "eth2"]
    assert lines[3].split()[10:13] == ["450.0kB", "0B/500.0MB", "(0%)"]
    # the columns line up: each value starts where its header does
    col = lines[0].index("MONTH")
    assert lines[2][col:].startswith("12.3GB/20.0GB (62%)") and lines[1][col:].startswith("312.0GB ")


def test_policy_rules_the_moving_flows_and_the_last_reset_each_get_a_line():
    rules = [{"name": "calls", "matches": "udp dport 5060", "uplinks": ["lte", "wan1"], "balance": False,
              "fallback": "default", "now": ["wan1"], "applied": True},
             {"name": "nas", "matches": "src 192.168.1.20/32", "uplinks": ["lte"], "balance": False,
              "fallback": "drop", "now": []},
             {"name": "off", "matches": "tcp", "uplinks": ["lte"], "balance": False, "fallback": "drop", "now": [],
              "applied": False}]
    flushes = [{"uplink": "lte", "address": "198.51.100.10", "deleted": 312, "ms": 4.2, "mark": 0x660000,
                "after_switch_ms": 5.1}]
    st = make_status([uplink_dict("wan1", since=time.time() - 30),
                      uplink_dict("lte", interface="wwan0", active=False, flows_move_in_s=42.4)],
                     rules=rules, conntrack_flushes=flushes)
    lines = format_status(st).splitlines()
    assert "rule calls: udp dport 5060 via lte -> wan1: new flows go to wan1" in lines
    assert "rule nas: src 192.168.1.20/32 via lte: none works: new flows are dropped" in lines
    # review finding 9: without libnftables a rule does nothing; it said "dropped"
    assert "rule off: tcp via lte: not applied (sticky flows are off)" in lines
    assert "flows left on lte: reset in 42s (move_flows_after)" in lines
    assert "last flow reset: lte, 312 entries by flow mark 0x660000 in 4ms, 5ms after the route switch" in lines
