"""`pip install .` keeps working for people who do not use Debian: the wheel carries the web UI's
templates and static files and the licence, and the installed command runs from a fresh virtualenv."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the tracked files: an old build/ directory in the checkout would put
    # modules that no longer exist into the wheel (setuptools does not clean it).
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("linkwatch-*.whl")
    return path


def test_wheel_carries_every_package_and_the_web_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "linkwatch").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel (a package not listed in pyproject.toml?)"
    assert {n for n in names if n.startswith("linkwatch/") and n.endswith(".py")} - modules - {
        "linkwatch/web/__init__.py", "linkwatch/web/templates/__init__.py", "linkwatch/web/static/__init__.py"} == set()
    for expected in ("linkwatch/daemon/engine.py", "linkwatch/core/engine.py", "linkwatch/web/__init__.py",
                     "linkwatch/web/templates/dashboard.html", "linkwatch/web/static/app.js",
                     "linkwatch/web/static/style.css"):
        assert expected in names, f"{expected} missing from {wheel.name}"
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_wheel_carries_the_licence_and_declares_it(wheel):
    """PEP 639: the SPDX expression in the metadata and the LICENSE file, verbatim, in the dist-info."""
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    headers = archive.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers, headers
    assert "License-File: LICENSE" in headers, headers
    dist_info = metadata.rsplit("/", 1)[0]
    assert archive.read(f"{dist_info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n")


def test_installed_command_runs_from_a_fresh_venv(wheel, tmp_path):
    """Installed with the dependencies the test venv already has (no network needed), the command,
    check-config and the web UI's asset lookup work from the installed files, not from this tree."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True).stdout.strip()
    (Path(subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                         text=True).stdout.strip()) / "deps.pth").write_text(site + "\n")
    done = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lw = env_dir / "bin" / "linkwatch"
    run = lambda *a: subprocess.run([str(lw), *a], capture_output=True, text=True, timeout=60, cwd=tmp_path)  # noqa: E731
    assert run("--version").stdout.startswith("linkwatch 0.1.0")
    check = run("check-config", str(ROOT / "etc" / "linkwatch.toml"))
    assert check.returncode == 0, check.stderr
    web_dir = subprocess.run([str(py), "-c", "from linkwatch.webui import WEB_DIR; print(WEB_DIR)"],
                             capture_output=True, text=True, cwd=tmp_path).stdout.strip()
    assert web_dir.startswith(str(env_dir)) and (Path(web_dir) / "templates" / "dashboard.html").exists()
