"""The web UI in a real browser: headless Debian Chromium against a running lab.

The lab's engine runs in the router namespace; its web UI runs there too, as user nobody, on the
router's LAN address; the browser runs in the lab's client namespace (a LAN user). The scenario
itself is tests/integration/browser_scenario.py (see its docstring); here we start it, read its
JSON lines, and check them against what the engine itself says.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linkwatch.lab import topology
from linkwatch.lab.plan import LAN_ROUTER, LabSpec
from linkwatch.lab.processes import child_env, netns_exec, read_records
from linkwatch.lab.topology import EngineOptions
from linkwatch.lab.web import LAB_PASSWORD

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.root,
    pytest.mark.lab,
]

LAB = "tB"
LISTEN = f"{LAN_ROUTER}:8088"
SCENARIO = Path(__file__).with_name("browser_scenario.py")


def run_scenario(spec: LabSpec, screenshot: Path) -> list[dict]:
    env = child_env()
    env["SE_OFFLINE"] = "true"  # Selenium must not look for drivers on the internet
    argv = netns_exec(spec.client_ns, [sys.executable, str(SCENARIO), "--lab", LAB,
                                       "--url", f"http://{LISTEN}/", "--password", LAB_PASSWORD,
                                       "--screenshot", str(screenshot)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    errors = [s for s in steps if s["step"] == "error"]
    assert done.returncode == 0 and not errors, f"{errors or steps}\n{done.stderr[-3000:]}"
    return steps


def admin_events(spec: LabSpec, want: int = 2, timeout: float = 10.0) -> list[tuple[str, str, str]]:
    """(action, uplink, source without the address) of the admin events in the history, read with
    `linkwatch history --json`; waits until ``want`` are there (events are written within 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run([sys.executable, "-m", "linkwatch", "history", "--db", spec.history_path,
                               "--since", "10m", "--kind", "admin", "--json"], capture_output=True, text=True,
                              env=child_env(), timeout=30)
        assert done.returncode == 0, done.stderr
        found = [(e["action"], e["uplink"], e["source"].split("@")[0]) for e in json.loads(done.stdout)]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (scripts/bootstrap.sh --test-tools)")
def test_dashboard_follows_a_failover_live_and_controls_work(tmp_path):
    spec = LabSpec(LAB, 2)
    screenshot = Path(os.environ.get("LINKWATCH_SCREENSHOT", tmp_path / "dashboard.png"))
    options = EngineOptions(web=LISTEN, overrides={"policy": {"failback_hold": "2s"}})
    with topology.running(spec, options=options):
        web = next(r for r in read_records(spec.state_dir) if r.role == "web")
        uid = os.stat(f"/proc/{web.pid}").st_uid
        assert pwd.getpwuid(uid).pw_name == "nobody", "the web UI runs unprivileged"
        steps = {s["step"]: s for s in run_scenario(spec, screenshot)}
        st, err = topology.engine_status(spec)
        assert st is not None, err
        admin = admin_events(spec)

    both = steps["both_up"]["cards"]
    assert set(both) == {"wan1", "wan2"} and all(c["state"] == "UP" for c in both.values())
    assert [n for n, c in both.items() if c["active"]] == ["wan1"] and both["wan1"]["marker"] == "ACTIVE"
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    fail = steps["failover_seen"]
    assert fail["same_document"] is True, "the page changed without a reload"
    assert fail["cards"]["wan1"]["state"] in ("FALLING", "DOWN") and fail["cards"]["wan2"]["active"]
    assert fail["seconds"] < 5.0, "a failover shows on the page within a few seconds"
    assert any(item.startswith("wan1: ") and "DOWN" in item for item in steps["timeline"]["items"])

    assert steps["logged_in"]["has_logout"] is True
    assert steps["forced"]["cards"]["wan2"]["active"] and "force wan2" in steps["forced"]["message"]
    assert steps["auto"]["cards"]["wan1"]["active"]
    assert st.forced is None and st.active == ("wan1",), "the engine agrees with the page"

    phone = steps["phone"]
    assert phone["page"] <= phone["viewport"] and phone["widest"] <= phone["viewport"], phone
    assert phone["stacked"] is True, "on a phone the uplink cards stack"

    # the actions made through the page are in the history, with who made them
    assert admin == [("force", "wan2", "web:admin"), ("auto", "wan2", "web:admin")]
