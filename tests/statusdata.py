"""Status snapshots for the readers' tests (CLI, web UI, /metrics, SNMP): the same typed contract
the engine sends (linkwatch.core.status), built from plain values with defaults filled in."""

from __future__ import annotations

import copy
from typing import Any

from linkwatch.core.status import SCHEMA_VERSION, Status, status_from_dict


def uplink_dict(name: str = "wan1", **over: Any) -> dict[str, Any]:
    u = {"name": name, "interface": "eth1", "state": "UP", "usable": True, "reason": "5 good rounds", "active": True,
         "since": 1.7e9, "priority": 1, "weight": 1, "table": 101, "rtt_ms": 12.5, "loss_pct": 0.0,
         "jitter_ms": 0.4, "carrier": True, "address": "198.51.100.2", "gateway": "198.51.100.1",
         "forced": False, "interval_ms": 250, "probe_bytes_per_day": 1000, "rounds": 10, "downs": 0,
         "transitions": 1, "probe_error": None, "probes": [], "proven": False, "suspect": False, "slow_rounds": 0,
         "dampened": False, "flap_penalty": 0.0, "month_bytes": 0, "quota_bytes": None, "quota_pct": None}
    u.update(over)
    if "state" in over and "usable" not in over:
        u["usable"] = over["state"] in ("UP", "FALLING", "DEGRADED")
    return u


def status_dict(uplinks: list[dict] | None = None, **over: Any) -> dict[str, Any]:
    """A whole status document as the control socket sends it (two uplinks unless given)."""
    st = {"schema_version": SCHEMA_VERSION, "version": "0.1.0", "pid": 42, "started": 1.7e9, "mode": "failover",
          "active": ["wan1"], "forced": None, "previous_active": [], "reason": "best tier: wan1",
          "last_apply_ms": 0.6, "conntrack_flushes": [], "active_changes": 1, "sinks": {}, "snmp": None,
          "uplinks": uplinks if uplinks is not None else [
              uplink_dict("wan1"),
              uplink_dict("lte", interface="wwan0", state="DOWN", reason="3 failed rounds", active=False,
                          priority=2, table=102, rtt_ms=None, loss_pct=100.0, jitter_ms=None,
                          address="203.0.113.2", gateway="203.0.113.1", interval_ms=1000,
                          probe_bytes_per_day=None, rounds=4, downs=1, transitions=3)]}
    st.update(copy.deepcopy(over))
    return st


def make_status(uplinks: list[dict] | None = None, **over: Any) -> Status:
    return status_from_dict(status_dict(uplinks, **over))
