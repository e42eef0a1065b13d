"""The minimum versions in pyproject.toml exclude releases with known vulnerabilities, and the
installed packages satisfy them (issue 14, item 12)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# the first release with the fix, and why
FIXED = {
    "waitress": ("3.0.1", "CVE-2024-49768 (a race in pipelined requests), CVE-2024-49769 (DoS by closed sockets)"),
    "cryptography": ("44.0.1", "GHSA-79v4-65xg-pq4g / CVE-2024-12797: the OpenSSL in its wheels; earlier "
                                "CVE-2024-26130, CVE-2023-50782"),
    "dnspython": ("2.6.1", "CVE-2023-29483 (TuDoor: a forged bad UDP answer stops a resolution)"),
    # Flask only asks for werkzeug>=3.1 since Flask 3.1: with flask>=3.0 an older one could come in
    "werkzeug": ("3.0.6", "CVE-2024-49767 (multipart/form-data parsing exhausts memory), and before it "
                          "CVE-2023-46136 (multipart parsing takes CPU without end)"),
}


def requirements() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def floor(req: Requirement) -> Version | None:
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(lows) if lows else None


def test_no_floor_lets_a_vulnerable_release_in():
    reqs = requirements()
    for name, (fixed, why) in FIXED.items():
        assert name in reqs, f"{name} has no floor in pyproject.toml: releases with {why} may be installed"
        low = floor(reqs[name])
        assert low is not None and low >= Version(fixed), f"{name}: {reqs[name]} allows releases with {why}"


def test_the_installed_packages_satisfy_the_floors():
    for name, req in requirements().items():
        installed = importlib.metadata.version(re.sub(r"[-_.]+", "-", name))
        assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} does not satisfy {req}"
