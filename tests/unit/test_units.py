"""The systemd units pass `systemd-analyze verify` and score well in `systemd-analyze security`.

systemd is not PID 1 here, so both run offline against a scratch root holding the system's unit
directories, the two units and a stand-in /usr/bin/linkwatch (verify checks that ExecStart exists).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = ("linkwatch.service", "linkwatch-web.service")
MAX_EXPOSURE = 3.0  # systemd-analyze security: 0 = locked down, 10 = fully exposed

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


@pytest.fixture
def root(tmp_path):
    for d in ("/lib/systemd/system", "/usr/lib/systemd/system"):
        if Path(d).is_dir() and not Path(d).is_symlink():
            shutil.copytree(d, tmp_path / d.lstrip("/"), symlinks=True, dirs_exist_ok=True)
    (tmp_path / "usr/bin").mkdir(parents=True, exist_ok=True)
    (tmp_path / "bin").mkdir(exist_ok=True)
    stub = tmp_path / "usr/bin/linkwatch"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    shutil.copy("/bin/kill", tmp_path / "bin/kill")
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for u in UNITS:
        shutil.copy(PACKAGING / u, units / u)
    return tmp_path


def verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{unit}"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_cleanly(root, unit):
    done = verify(root, unit)
    assert done.returncode == 0 and done.stdout.strip() == "" and done.stderr.strip() == "", done.stderr


def test_verify_catches_a_broken_unit(root):
    unit = root / "etc/systemd/system/linkwatch.service"
    unit.write_text(unit.read_text().replace("ExecStart=/usr/bin/linkwatch", "ExecStart=/usr/bin/linkwatchh"))
    assert verify(root, "linkwatch.service").returncode != 0


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_low(root, unit):
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}", unit],
                          capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert score, done.stdout[-500:] + done.stderr[-500:]
    assert float(score.group(1)) <= MAX_EXPOSURE, done.stdout


def test_engine_unit_keeps_only_its_two_capabilities_and_is_a_notify_service():
    text = (PACKAGING / "linkwatch.service").read_text()
    assert "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW\n" in text
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n" in text
    assert "Type=notify\n" in text and re.search(r"^WatchdogSec=\d+", text, re.M)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    web = (PACKAGING / "linkwatch-web.service").read_text()
    assert "CapabilityBoundingSet=\n" in web and "AmbientCapabilities=\n" in web


def unit_settings(name: str) -> dict[str, str]:
    out = {}
    for line in (PACKAGING / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def test_the_web_ui_cannot_take_the_engines_memory():
    """A heavy request must end in the web UI's own cgroup (its OOM kill), never in the engine's."""
    web, engine = unit_settings("linkwatch-web.service"), unit_settings("linkwatch.service")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    size = re.fullmatch(r"(\d+)([KMG])", web.get("MemoryMax", ""))
    assert size, "linkwatch-web.service needs a MemoryMax"
    assert 64 << 20 <= int(size.group(1)) * units[size.group(2)] <= 256 << 20
    assert int(web.get("OOMScoreAdjust", "0")) > 0 > int(engine.get("OOMScoreAdjust", "0"))
    assert web.get("Environment") == "MALLOC_ARENA_MAX=1"  # waitress's threads would each keep an arena
