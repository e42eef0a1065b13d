"""The history inside the running engine, in the lab: a history that cannot be written does not
delay a failover, and once the disk is usable again everything that happened is written.

Lab tH (namespaces lw-tH-*), torn down by name even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from linkwatch.history import HistoryReader
from linkwatch.lab import faults, topology
from linkwatch.lab.plan import STATE_ROOT, LabSpec
from linkwatch.lab.topology import EngineOptions
from tests.integration.labutil import status, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tH"




def test_an_unwritable_history_never_delays_failover_and_catches_up_later():
    spec = LabSpec(LAB, 2)
    try:
        topology.up(spec, engine=False)
        blocker = os.path.join(spec.state_dir, "db")
        with open(blocker, "w") as f:  # a file where the history's directory should be: ENOTDIR
            f.write("not a directory\n")
        path = os.path.join(blocker, "history.db")
        topology.start_engine(spec, EngineOptions(overrides={
            "history": {"path": path, "commit_interval": "1s", "event_delay": "500ms"},
            "policy": {"failback_hold": "2s"}}))
        wait_for(lambda: [u["state"] for u in status(spec)["uplinks"]] == ["UP", "UP"], 15, "both uplinks UP")
        history = wait_for(lambda: status(spec)["sinks"]["history"]["detail"].get("last_error"), 10,
                           "the history reporting its error")
        assert "directory" in history.lower() or "unable to open" in history.lower(), history

        t0 = time.monotonic()
        faults.apply_fault(LAB, "wan1", faults.Fault("blackhole"))
        wait_for(lambda: status(spec)["active"] == ["wan2"], 5, "failover to wan2")
        took = time.monotonic() - t0
        assert took < 2.5, f"failover took {took:.2f}s with a failing history"
        detail = status(spec)["sinks"]["history"]["detail"]
        assert detail["events_written"] == 0 and detail["pending_events"] >= 3

        os.unlink(blocker)  # the disk is back
        os.makedirs(blocker)
        wait_for(lambda: status(spec)["sinks"]["history"]["detail"]["pending_events"] == 0, 20,
                 "the history catching up")
        with HistoryReader(path) as r:
            events = r.events(since=0, limit=None)
        kinds = [(e["kind"], e.get("uplink"), e.get("new")) for e in reversed(events)]
        assert ("engine", None, None) in kinds  # started
        assert ("uplink_state", "wan1", "DOWN") in kinds
        assert any(k == "active_changed" and new == ["wan2"] for k, _, new in kinds)
        assert status(spec)["sinks"]["history"]["detail"]["last_error"] is None
    finally:
        topology.down(LAB)
        shutil.rmtree(os.path.join(STATE_ROOT, f"lab-{LAB}"), ignore_errors=True)
