"""Shared by the Debian package tests (test_deb.py: a chroot; test_systemd.py: a container booted
with systemd): building the .deb once, and a cached debootstrap'ed Debian 12 tree as a tarball.

The tarballs live under .cache/deb-test (``LINKWATCH_DEB_CACHE``): ``bookworm-minbase-<arch>.tar``
(minbase only) and ``bookworm-systemd-<hash>-<arch>.tar`` (minbase plus systemd as init and what the
package depends on), each made once with debootstrap from the Debian mirror.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LINKWATCH_DEB_CACHE", REPO / ".cache" / "deb-test"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
MIB_SOURCE = REPO / "packaging" / "mibs" / "LINKWATCH-MIB.txt"


@dataclass(frozen=True)
class BuiltDeb:
    path: Path
    had_mib: bool  # packaging/mibs/LINKWATCH-MIB.txt was in the tree at build time
    mib_text: bytes


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; a non-zero exit fails with the command and the tails of its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-5000:]}"
        )
    return proc


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == prefix or target.startswith(prefix + "/"):
                found.append(target)
    return found


def remove_tree(path: Path) -> None:
    """rm -rf a root tree, but never while anything is mounted inside it."""
    if not path.exists():
        return
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"refusing to delete {path}: still mounted: {left}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True, timeout=300)


def pids_in(root: Path) -> list[int]:
    """Processes whose root directory is ``root``."""
    want = str(root.resolve())
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root") == want:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def ensure_debootstrap() -> None:
    if shutil.which("debootstrap"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], env=env,
                      capture_output=True, timeout=600).returncode != 0:
        run(["apt-get", "update", "-q"], 600, env=env)
        run(["apt-get", "install", "-y", "-q", "debootstrap"], 600, env=env)


def native_arch() -> str:
    return run(["dpkg", "--print-architecture"], 30).stdout.strip()


def base_tarball(flavour: str = "minbase", include: Sequence[str] = (), arch: str | None = None) -> Path:
    """A bookworm minbase tree (plus the packages ``include``) as a tarball, made once with
    debootstrap and cached as ``<suite>-<flavour>[-<hash of include>]-<arch>.tar``. A foreign
    ``arch`` (arm64, armhf) is debootstrapped under qemu-user emulation (armutil.py checks it)."""
    arch = arch or native_arch()
    if include:  # another package list is another tarball, never a stale one
        flavour += "-" + hashlib.sha256(",".join(sorted(include)).encode()).hexdigest()[:8]
    tarball = CACHE / f"{SUITE}-{flavour}-{arch}.tar"
    if tarball.exists():
        return tarball
    ensure_debootstrap()
    CACHE.mkdir(parents=True, exist_ok=True)
    tree = CACHE / f"{SUITE}-{flavour}-{arch}.tree"
    remove_tree(tree)
    try:
        cmd = ["debootstrap", "--variant=minbase", f"--arch={arch}"]
        if include:
            cmd.append("--include=" + ",".join(include))
        run(cmd + [SUITE, str(tree), MIRROR], 2400)
        for deb in (tree / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()  # debootstrap's own downloads: installed already
        partial = tarball.with_suffix(".tar.partial")
        run(["tar", "-C", str(tree), "--numeric-owner", "-cf", str(partial), "."], 600)
        partial.rename(tarball)
    finally:
        remove_tree(tree)
    return tarball


def build_deb(out: Path) -> BuiltDeb:
    """The .deb of the current tree (scripts/build-deb.sh), copied into ``out``."""
    had_mib = MIB_SOURCE.is_file()
    mib_text = MIB_SOURCE.read_bytes() if had_mib else b""
    proc = run(["bash", str(REPO / "scripts" / "build-deb.sh"), "--out", str(out)], 1500)
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out, proc.stdout
    return BuiltDeb(path=path, had_mib=had_mib, mib_text=mib_text)
