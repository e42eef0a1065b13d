"""The soak's short version (issue 14): bench/soak.py for 2.5 minutes with a fixed seed, every fault
kind once (blackhole, loss, carrier, flap, address and gateway changes, the interface deleted and
re-created, kill -9 of the engine and the web UI, good and broken reloads, floods of the control
socket, the web API and the SNMP agent, a full disk under the history with a blackhole meanwhile).

It fails on any violation the soak finds: a moment without a route for the LAN client, a client
outage over 2 s while an uplink works, a status answer slower than 100 ms outside floods and
restarts, a Traceback or dead task in a log, a state change of the log missing from the history
or the trap receiver (beyond those decided just before a kill -9), RSS growth over 5 MB or fds
that keep growing, an uplink not UP (or dampened) a minute after its fault, a fault kind not played.
The report (seed, figures) is printed; bench/results/ gets the raw JSON, the logs and the traps.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("snmptrapd") is None or shutil.which("snmpbulkwalk") is None,
                       reason="needs net-snmp (scripts/bootstrap.sh --test-tools)"),
    pytest.mark.root,
    pytest.mark.lab,
]

SEED = 14


def test_short_soak_finds_nothing():
    import soak

    args = soak.parse(["--minutes", "2.5", "--seed", str(SEED), "--lab", "skT", "--web-port", "18437"])
    result = soak.soak(args)
    print(soak.report(result))
    assert set(result["kinds_played"]) == set(soak.LINK_FAULTS + soak.OTHER_FAULTS), result["kinds_played"]
    assert result["client"]["flows"] >= 1 and result["client"]["received"] > 0.8 * result["client"]["sent"]
    assert result["delivery"]["logged"] > 0 and result["delivery"]["traps"] > 0
    assert result["violations"] == [], "\n".join(result["violations"])
