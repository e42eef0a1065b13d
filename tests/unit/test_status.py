"""The status snapshot is one typed contract (linkwatch.core.status): what the core builds, what the
control socket sends, what every reader parses, and the JSON schema published in docs/, all agree.
Outside tools read `uplinks[].name/state/active/rtt_ms/loss_pct`: those keys never go away."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "scenario"))
from harness import Scenario  # noqa: E402

from linkwatch.core.inputs import AdminRequest  # noqa: E402
from linkwatch.core.status import (  # noqa: E402
    SCHEMA_VERSION,
    FlushReport,
    ShellReport,
    SinkStats,
    SnmpStatus,
    StatusError,
    build_status,
    json_schema,
    status_from_dict,
)

SCHEMA = json.loads((ROOT / "docs" / "status.schema.json").read_text())

# Every key `linkwatch status --json` had before the status became typed: outside tools may read any.
KEYS_BEFORE = {"version", "pid", "started", "mode", "active", "forced", "previous_active", "reason", "last_apply_ms",
               "conntrack_flushes", "active_changes", "uplinks", "sinks", "snmp"}
UPLINK_KEYS_BEFORE = {"name", "interface", "state", "reason", "active", "since", "priority", "weight", "table",
                      "rtt_ms", "loss_pct", "jitter_ms", "carrier", "address", "gateway", "forced", "interval_ms",
                      "probe_bytes_per_day", "rounds", "downs", "transitions", "probe_error", "probes"}


def busy_status():
    """A status with every part filled in: rounds, a failover, a flush, sinks and SNMP."""
    s = Scenario()
    s.rounds({"fibre": "gg", "lte": "gg"})
    s.rounds({"fibre": "bbb", "lte": "ggg"})
    s.feed(AdminRequest("lte", "force", "web:admin@10.0.0.2"))
    shell = ShellReport(
        version="0.1.0", pid=4242, last_apply_ms=0.61, conntrack_flushes=(FlushReport("fibre", "198.51.100.2", 3, 2.5),),
        sinks={"log": SinkStats(5, 0, 0, 0, None, 0),
               "history": SinkStats(5, 0, 0, 0, None, 1, {"events_written": 5, "last_error": None})},
        snmp=SnmpStatus("80001f8804", "1.3.6.1.4.1.8072.9999.9999.7745", {"answered": 3}, None, "127.0.0.1:1161"))
    return build_status(s.state, s.now(), shell)


def test_the_published_schema_is_the_one_the_code_describes():
    assert SCHEMA == json_schema(), "regenerate docs/status.schema.json: python scripts/gen-status-schema.py"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-status-schema.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_what_the_core_builds_matches_the_schema_and_round_trips():
    st = busy_status()
    doc = json.loads(json.dumps(st.to_dict()))  # what goes over the control socket
    jsonschema.validate(doc, SCHEMA)
    assert status_from_dict(doc) == st
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["uplinks"][0]["state"] == "DOWN" and doc["forced"] == "lte"


def test_every_key_of_before_is_still_there_and_the_contract_keys_keep_their_types():
    doc = busy_status().to_dict()
    assert KEYS_BEFORE | {"schema_version"} <= set(doc)
    for u in doc["uplinks"]:
        assert UPLINK_KEYS_BEFORE <= set(u)
        assert isinstance(u["name"], str) and u["state"] in {"INIT", "UP", "FALLING", "DOWN", "RISING", "DEGRADED",
                                                              "DISABLED"}
        assert isinstance(u["active"], bool)
        assert u["rtt_ms"] is None or isinstance(u["rtt_ms"], float)
        assert u["loss_pct"] is None or isinstance(u["loss_pct"], float)
    for key in ("name", "state", "active", "rtt_ms", "loss_pct"):
        assert key in SCHEMA["properties"]["uplinks"]["items"]["required"]


def test_the_schema_rejects_what_readers_would_choke_on():
    doc = busy_status().to_dict()
    for broken in (dict(doc, uplinks=[dict(doc["uplinks"][0], state="EXPLODED")]),
                   dict(doc, active="fibre"), {k: v for k, v in doc.items() if k != "uplinks"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("change, where", [
    (lambda d: d["uplinks"][1].update(state="EXPLODED"), "status.uplinks[1].state"),
    (lambda d: d["uplinks"][0].pop("loss_pct"), "status.uplinks[0].loss_pct"),
    (lambda d: d.update(active="fibre"), "status.active"),
    (lambda d: d.update(pid="42"), "status.pid"),
    (lambda d: d["uplinks"][0].update(active=1), "status.uplinks[0].active"),
    (lambda d: d["uplinks"][0].update(rtt_ms=float("nan")), "status.uplinks[0].rtt_ms"),
    (lambda d: d.pop("mode"), "status.mode"),
])
def test_a_bad_document_is_refused_naming_the_field(change, where):
    doc = json.loads(json.dumps(busy_status().to_dict()))
    change(doc)
    with pytest.raises(StatusError, match=where.replace("[", r"\[").replace("]", r"\]")):
        status_from_dict(doc)
    with pytest.raises(StatusError):
        status_from_dict("not a status")


def test_unknown_keys_from_a_newer_engine_are_ignored():
    doc = busy_status().to_dict()
    doc["something_new"] = {"x": 1}
    doc["uplinks"][0]["also_new"] = 2
    assert status_from_dict(doc) == busy_status()
    jsonschema.validate(doc, SCHEMA)  # the published schema says the same: new fields may come


def test_usable_says_what_the_policy_does():
    st = busy_status()
    assert {u.name: (u.state.value, u.usable) for u in st.uplinks} == {"fibre": ("DOWN", False), "lte": ("UP", True)}
    assert dataclasses.is_dataclass(st) and dataclasses.fields(st)[0].name == "schema_version"
