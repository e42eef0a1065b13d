"""The Debian package: built by scripts/build-deb.sh, installed into a clean Debian 12 chroot.

The chroot is a debootstrap'ed bookworm minbase (cached as a tarball under .cache/deb-test, with
the .debs apt downloads into it), so only what the package itself brings is there. It simulates
a systemd host for the maintainer scripts: /run/systemd/system exists and a stand-in systemctl
logs every call and answers "enabled" and "active", so a start or enable that the package must
not do would show up in the log instead of being skipped for lack of systemd. /proc and /dev are
mounted inside for the duration of the module and always unmounted before the tree is deleted.

Measured on the CI machine (amd64, 2 cores): 78 s cold (no chroot cache, no pip cache), 59 s
warm; the package build is about 40 s of either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.debutil import (CACHE, MIB_SOURCE, REPO, BuiltDeb, base_tarball, pids_in,
                                       remove_tree)
from tests.integration.debutil import run as _run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: debootstrap, chroot, mount"),
]

CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}
# Stand-in for systemctl in the chroot: logs its arguments, claims every unit is enabled and
# active (so deb-systemd-invoke would go ahead with any start it is asked for).
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> /var/log/fake-systemctl.log
case " $* " in
*" is-enabled "*) echo enabled ;;
esac
exit 0
"""


@dataclass(frozen=True)
class Chroot:
    root: Path
    deb: BuiltDeb
    install_output: str


def in_chroot(root: Path, script: str, check: bool = True, timeout: float = 600):
    """Run a shell script inside the chroot with a clean environment."""
    cmd = ["chroot", str(root), "/bin/sh", "-c", script]
    if check:
        return _run(cmd, timeout, env=CHROOT_ENV)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=CHROOT_ENV)


@pytest.fixture(scope="module")
def chroot(built_deb: BuiltDeb, tmp_path_factory):
    """A fresh chroot with the package installed by apt; unmounted and deleted afterwards."""
    tarball = base_tarball()
    root = tmp_path_factory.mktemp("chroot") / "root"
    root.mkdir()
    archives = CACHE / "archives"
    mounted: list[Path] = []
    try:
        _run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(tarball)], 600)
        shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
        # Downloads of earlier runs: apt takes them from its cache instead of the mirror.
        for deb in archives.glob("*.deb") if archives.is_dir() else []:
            shutil.copy2(deb, root / "var" / "cache" / "apt" / "archives" / deb.name)
        # A systemd host, as far as the maintainer scripts can tell.
        (root / "run" / "systemd" / "system").mkdir(parents=True)
        fake = root / "usr" / "bin" / "systemctl"
        fake.write_text(FAKE_SYSTEMCTL)
        fake.chmod(0o755)
        shutil.copy2(built_deb.path, root / "tmp" / built_deb.path.name)

        for target, cmd in (
            (root / "proc", ["mount", "-t", "proc", "proc"]),
            (root / "dev", ["mount", "--bind", "/dev"]),
        ):
            _run(cmd + [str(target)], 60)
            mounted.append(target)

        install = f"cd /tmp && apt-get install -y -q ./{built_deb.path.name}"
        proc = in_chroot(root, install, check=False)
        if proc.returncode != 0:  # the cached package lists went stale on the mirror
            in_chroot(root, "apt-get update -q")
            proc = in_chroot(root, install)
        archives.mkdir(parents=True, exist_ok=True)
        for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            if not (archives / deb.name).exists():
                shutil.copy2(deb, archives / deb.name)
        yield Chroot(root=root, deb=built_deb, install_output=proc.stdout + proc.stderr)
    finally:
        for pid in pids_in(root):  # nothing should run there; never leave it behind a mount
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for target in reversed(mounted):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
        remove_tree(root.parent)


def pyproject_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def systemctl_log(root: Path) -> list[str]:
    log = root / "var" / "log" / "fake-systemctl.log"
    return log.read_text().splitlines() if log.exists() else []


def test_deb_metadata(built_deb: BuiltDeb):
    fields = _run(["dpkg-deb", "-f", str(built_deb.path), "Package", "Version", "Architecture",
                   "Depends"], 30).stdout
    info = dict(line.split(": ", 1) for line in fields.splitlines())
    assert info["Package"] == "linkwatch"
    assert info["Version"] == f"{pyproject_version()}-1"
    assert info["Architecture"] == _run(["dpkg", "--print-architecture"], 30).stdout.strip()
    python = _run(["python3", "-c", "import sys; print('python%d.%d' % sys.version_info[:2])"],
                  30).stdout.strip()
    depends = [d.strip().split()[0] for d in info["Depends"].split(",")]
    assert python in depends and "adduser" in depends
    # linkwatch.service reloads with /bin/kill, which a minimal Debian 12 lacks (test_systemd.py)
    assert "procps" in depends


def test_manual_pages_and_licence_are_in_the_package(built_deb: BuiltDeb, tmp_path: Path):
    """dh_installman puts the committed pages (packaging/man/, generated from the code) where man
    finds them, compressed; the copyright file declares Apache-2.0 and points at the full text."""
    import gzip

    _run(["dpkg-deb", "-x", str(built_deb.path), str(tmp_path)], 120)
    for section, name in (("man8", "linkwatch.8"), ("man5", "linkwatch.toml.5")):
        page = tmp_path / "usr/share/man" / section / f"{name}.gz"
        assert page.is_file(), f"{page.relative_to(tmp_path)} is not in the package"
        assert gzip.decompress(page.read_bytes()) == (REPO / "packaging/man" / name).read_bytes()
    copyright_text = (tmp_path / "usr/share/doc/linkwatch/copyright").read_text()
    assert copyright_text == (REPO / "packaging/debian/copyright").read_text()
    stanzas = copyright_text.split("\n\n")
    files = next(s for s in stanzas if s.startswith("Files: *"))
    assert "License: Apache-2.0" in files.splitlines()
    assert any(s.startswith("License: Apache-2.0\n") and "/usr/share/common-licenses/Apache-2.0" in s
               for s in stanzas)
    assert "undeclared" not in copyright_text


def test_cli_runs_from_installed_files(chroot: Chroot):
    out = in_chroot(chroot.root, "linkwatch --version").stdout
    assert out.strip() == f"linkwatch {pyproject_version()}"
    assert os.readlink(chroot.root / "usr" / "bin" / "linkwatch") == \
        "/opt/venvs/linkwatch/bin/linkwatch"
    in_chroot(chroot.root, "linkwatch check-config /etc/linkwatch/linkwatch.toml")
    # The compiled and heavy dependencies load against the chroot's libraries, and pip agrees
    # that every requirement is met.
    in_chroot(chroot.root, "/opt/venvs/linkwatch/bin/python -c 'import cryptography.hazmat."
              "bindings._rust, markupsafe._speedups, pyroute2, pysnmp.hlapi.v3arch.asyncio, "
              "flask, waitress, sqlite_utils, icmplib, dns.resolver, linkwatch.webui.app'")
    in_chroot(chroot.root, "/opt/venvs/linkwatch/bin/python -m pip check")


def test_check_config_rejects_a_bad_file(chroot: Chroot):
    proc = in_chroot(chroot.root, "printf '[uplinks.a]\\ninterface = 7\\n' > /tmp/bad.toml && "
                     "linkwatch check-config /tmp/bad.toml", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr


def test_users_and_groups(chroot: Chroot):
    passwd = in_chroot(chroot.root, "getent passwd linkwatch linkwatch-web").stdout
    users = {line.split(":")[0]: line.split(":") for line in passwd.splitlines()}
    assert set(users) == {"linkwatch", "linkwatch-web"}
    for fields in users.values():
        assert int(fields[2]) < 1000 and fields[6] == "/usr/sbin/nologin"
    assert in_chroot(chroot.root, "id -nG linkwatch").stdout.split() == ["linkwatch"]
    assert sorted(in_chroot(chroot.root, "id -nG linkwatch-web").stdout.split()) == \
        ["linkwatch", "linkwatch-web"]


def test_config_is_a_protected_conffile(chroot: Chroot):
    conffiles = in_chroot(chroot.root, "dpkg-query -W -f='${Conffiles}' linkwatch").stdout
    listed = {line.split()[0] for line in conffiles.strip().splitlines()}
    assert {"/etc/linkwatch/linkwatch.toml", "/etc/linkwatch/hooks.d/10-log-example",
            "/etc/iproute2/rt_protos.d/linkwatch.conf"} <= listed
    assert (chroot.root / "etc/linkwatch/linkwatch.toml").read_bytes() == \
        (REPO / "etc/linkwatch.toml").read_bytes()
    stat = in_chroot(chroot.root, "stat -c '%U:%G %a' /etc/linkwatch/linkwatch.toml").stdout
    assert stat.split() == ["root:linkwatch", "640"]
    # Both service users can read it (the engine's ExecStartPre runs check-config as linkwatch).
    for user in ("linkwatch", "linkwatch-web"):
        in_chroot(chroot.root, f"setpriv --reuid={user} --regid={user} --init-groups "
                  "linkwatch check-config /etc/linkwatch/linkwatch.toml")
    hook = chroot.root / "etc/linkwatch/hooks.d/10-log-example"
    assert hook.read_bytes() == (REPO / "etc/hooks.d/10-log-example").read_bytes()
    assert hook.stat().st_mode & 0o111 == 0  # inert until the admin makes a copy executable


def test_mib_units_docs_and_protocol_name(chroot: Chroot):
    mib = chroot.root / "usr/share/snmp/mibs/LINKWATCH-MIB.txt"
    if chroot.deb.had_mib:
        assert mib.read_bytes() == chroot.deb.mib_text
    else:
        assert not mib.exists()
    for unit in ("linkwatch.service", "linkwatch-web.service"):
        assert (chroot.root / "lib/systemd/system" / unit).read_bytes() == \
            (REPO / "packaging" / unit).read_bytes()
    assert (chroot.root / "etc/iproute2/rt_protos.d/linkwatch.conf").read_bytes() == \
        (REPO / "packaging/iproute2/rt_protos.d/linkwatch.conf").read_bytes()
    # The units' Documentation= points at the uncompressed README.
    assert (chroot.root / "usr/share/doc/linkwatch/README.md").read_bytes() == \
        (REPO / "README.md").read_bytes()
    # The Prometheus rules, configs and Grafana dashboard, uncompressed (docs/prometheus.md).
    examples = chroot.root / "usr/share/doc/linkwatch/examples"
    for path in [*(REPO / "packaging/prometheus").glob("*.yml"), REPO / "packaging/grafana/linkwatch-dashboard.json"]:
        assert (examples / path.name).read_bytes() == path.read_bytes(), path.name


def test_install_neither_enables_nor_starts_anything(chroot: Chroot):
    calls = systemctl_log(chroot.root)
    assert any("daemon-reload" in c for c in calls), calls  # the simulated systemd was seen
    bad = [c for c in calls if "linkwatch" in c and any(
        verb in c.split() for verb in ("start", "restart", "try-restart", "enable", "reload"))]
    assert bad == []
    wants = chroot.root / "etc/systemd/system/multi-user.target.wants"
    assert not (wants / "linkwatch.service").exists()
    # the state directory is there before the engine ever ran: keepalived drops a track_file
    # whose directory is missing when it starts (docs/keepalived.md)
    state = in_chroot(chroot.root, "stat -c '%U:%G %a' /var/lib/linkwatch").stdout.split()
    assert state == ["linkwatch:linkwatch", "755"]
    assert not (wants / "linkwatch-web.service").exists()
    # No linkwatch process runs in the chroot (as the linkwatch user or anyone).
    running = []
    for pid in pids_in(chroot.root):
        try:
            running.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
        except OSError:
            continue
    assert [c for c in running if b"linkwatch" in c] == []


def test_upgrade_keeps_the_config_and_restarts_only_what_ran(chroot: Chroot):
    """Installing the package over itself runs the upgrade path of the maintainer scripts."""
    root = chroot.root
    config = root / "etc/linkwatch/linkwatch.toml"
    edited = config.read_text().replace('level = "info"', 'level = "debug"')
    assert edited != config.read_text()
    config.write_text(edited)
    before = len(systemctl_log(root))
    in_chroot(root, f"dpkg -i /tmp/{chroot.deb.path.name}")
    assert config.read_text() == edited
    stat = in_chroot(root, "stat -c '%U:%G %a' /etc/linkwatch/linkwatch.toml").stdout
    assert stat.split() == ["root:linkwatch", "640"]
    calls = [c.split() for c in systemctl_log(root)[before:]]
    # try-restart: restarts a unit only if it runs; never a plain start, no stop before unpacking.
    assert ["try-restart", "linkwatch-web.service", "linkwatch.service"] in calls, calls
    assert [c for c in calls if {"start", "enable", "stop"} & set(c)] == []


def test_purge_removes_everything_but_the_users(chroot: Chroot):
    """Runs last: it removes the package."""
    root = chroot.root
    (root / "var/lib/linkwatch").mkdir(exist_ok=True)  # the postinst made it (keepalived's track file)
    (root / "var/lib/linkwatch/history.db").write_bytes(b"x")
    in_chroot(root, "apt-get purge -y -q linkwatch")
    status = in_chroot(root, "dpkg-query -W -f='${db:Status-Abbrev}' linkwatch", check=False)
    assert status.returncode != 0 or status.stdout.strip() in ("", "un", "pn")
    for gone in ("opt/venvs/linkwatch", "usr/bin/linkwatch", "etc/linkwatch",
                 "lib/systemd/system/linkwatch.service", "usr/share/snmp/mibs/LINKWATCH-MIB.txt",
                 "etc/iproute2/rt_protos.d/linkwatch.conf", "var/lib/linkwatch"):
        assert not os.path.lexists(root / gone), gone
    assert in_chroot(root, "dpkg-statoverride --list /etc/linkwatch/linkwatch.toml",
                     check=False).stdout == ""
    calls = systemctl_log(root)
    stops = [c.split() for c in calls if c.split()[:1] == ["stop"]]
    assert any("linkwatch.service" in s and "linkwatch-web.service" in s for s in stops), calls
    in_chroot(root, "getent passwd linkwatch")  # system users stay (Debian practice)
