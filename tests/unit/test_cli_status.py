"""`linkwatch status` text: the uplink table, the active line and the history's health."""

import time

from linkwatch.commands.status import format_status

STATUS = {
    "mode": "failover", "active": ["wan1"], "reason": "best tier: wan1",
    "uplinks": [{"name": "wan1", "interface": "eth1", "state": "UP", "active": True, "rtt_ms": 12.34,
                 "loss_pct": 0.0, "jitter_ms": 0.5, "since": time.time() - 30, "probe_bytes_per_day": 8.3e7,
                 "reason": "5 good rounds", "forced": False}],
    "sinks": {"log": {"handled": 3}},
}


def test_status_table_and_no_history_line_without_a_history():
    text = format_status(STATUS)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["UPLINK", "IF", "STATE", "ACTIVE"]
    assert lines[1].split()[:6] == ["wan1", "eth1", "UP", "yes", "12.3ms", "0%"]
    assert lines[2] == "active: wan1 (failover): best tier: wan1"
    assert "history" not in text


def test_history_line_shows_progress_and_failures():
    st = dict(STATUS, sinks={"history": {"detail": {
        "events_written": 7, "samples_written": 120, "pending_events": 1, "pending_samples": 2,
        "last_commit_at": time.time() - 5, "last_error": None}}})
    line = format_status(st).splitlines()[-1]
    assert line.startswith("history: 7 events, 120 samples written, last commit ") and line.endswith("3 pending")
    st["sinks"]["history"]["detail"]["last_error"] = "OperationalError: database or disk is full"
    assert format_status(st).splitlines()[-1].endswith("; FAILING: OperationalError: database or disk is full")


def test_snmp_lines_show_traps_and_the_agent_and_say_when_it_is_not_running():
    st = dict(STATUS, sinks={"snmp-traps": {"detail": {"sent": 8, "failed": 1, "suppressed": {"wan1": 2, "lte": 1}}}},
              snmp={"agent": {"answered": 40, "bad_community": 3, "bad_user_or_keys": 0, "malformed": 5},
                    "agent_listen": "10.77.0.1:1161", "agent_error": None})
    lines = format_status(st).splitlines()
    assert lines[-2] == "snmp traps: 8 sent, 1 failed, 3 held back by the storm limit"
    assert lines[-1] == ("snmp agent on 10.77.0.1:1161: 40 answered, 3 bad community, 0 bad v3 user/keys, "
                         "5 malformed")
    st["snmp"] = {"agent": None, "agent_error": "cannot listen on udp 10.77.0.1:161: Permission denied"}
    assert format_status(st).splitlines()[-1] == (
        "snmp agent: NOT RUNNING: cannot listen on udp 10.77.0.1:161: Permission denied")
