"""The Raspberry Pi architectures under qemu-user: the fixture code of test_arm.py and
bench/bench_arm.py.

``arm64`` (Pi 3/4/5 with a 64-bit OS) and ``armhf`` (32-bit OS) packages are built by
``scripts/build-deb.sh --arch`` in an emulated Debian 12 build root, and installed here with apt
into a clean emulated bookworm minbase (debutil.base_tarball with ``arch``; apt's downloads are kept
in .cache/deb-test/archives-<arch>). Commands run in it by chroot; binfmt_misc hands every binary
of the root to qemu (registered with the F flag, so no qemu inside the root). The engine runs from
that root, i.e. under the emulated interpreter, inside a lab's router namespace, its control socket
reached from the host through a bind mount of the lab's state directory.

Everything mounted under a root is unmounted, and processes left in it are killed by pid, before
the tree is deleted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from linkwatch.lab.plan import LabSpec
from linkwatch.lab.processes import ProcessRecord, start_background
from tests.integration.debutil import (CACHE, REPO, BuiltDeb, base_tarball, mounts_under, pids_in,
                                       remove_tree, run)

BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}
PIP_CACHE = Path(os.environ.get("LINKWATCH_DEB_BUILD_CACHE", REPO / ".cache" / "deb-build"))  # pip-<arch>: build-deb.sh --arch's
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "PIP_CERT": "/etc/host-ca-certificates.crt",  # this machine's, copied in (apt may replace the root's own)
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
VENV_PYTHON = "/opt/venvs/linkwatch/bin/python"
SRC = "/src"  # where the repository's files go in a root, for the pure tests


def wanted_arches() -> list[str]:
    """``LINKWATCH_ARM_ARCHES``: a comma list of arm64/armhf, or ``none`` (the default: the suite
    leaves them out, see test_arm.py)."""
    text = os.environ.get("LINKWATCH_ARM_ARCHES", "none").strip()
    if text in ("", "none"):
        return []
    arches = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arches if a not in QEMU]
    if unknown:
        raise ValueError(f"LINKWATCH_ARM_ARCHES: unknown {unknown}; expected arm64, armhf or none")
    return arches


def emulation_problem(arch: str) -> str | None:
    """Why this machine cannot run ``arch``'s binaries (None when it can). Mounts binfmt_misc
    when it is not mounted yet, as scripts/build-deb.sh does."""
    name = QEMU[arch]
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True)
    if not (BINFMT / "register").exists():
        return f"binfmt_misc is not mounted (mount -t binfmt_misc binfmt_misc {BINFMT})"
    entry = BINFMT / name
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", name], capture_output=True)
    if not entry.exists():
        return (f"no {name} interpreter in binfmt_misc: apt-get install qemu-user-static binfmt-support "
                f"(scripts/bootstrap.sh --test-tools does)")
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"the {name} binfmt_misc entry is disabled (update-binfmts --enable {name})"
    flags = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        return f"{name} is registered without the F flag: a chroot cannot find the interpreter"
    return None


def build_deb(arch: str, out: Path) -> tuple[BuiltDeb, float]:
    """scripts/build-deb.sh --arch: the package and how long the build took (seconds)."""
    t0 = time.monotonic()
    proc = run(["bash", str(REPO / "scripts" / "build-deb.sh"), "--arch", arch, "--out", str(out)], 3600)
    took = time.monotonic() - t0
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.name.endswith(f"_{arch}.deb"), proc.stdout
    return BuiltDeb(path=path, had_mib=False, mib_text=b""), took


@dataclass
class EmulatedRoot:
    """A bookworm root of ``arch`` with the package installed by apt."""

    arch: str
    root: Path
    mounted: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def sh(self, script: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = ["chroot", str(self.root), "/bin/sh", "-c", script]
        if check:
            return run(cmd, timeout, env=ROOT_ENV)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ROOT_ENV)

    def mount(self, argv: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        run(argv + [str(target)], 60)
        self.mounted.append(target)

    def unmount(self, target: Path) -> None:
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        if target in self.mounted:
            self.mounted.remove(target)


def install_root(arch: str, deb: BuiltDeb, workdir: Path) -> EmulatedRoot:
    """Unpack a clean minbase of ``arch`` and apt-install the package into it. The caller must
    ``release`` the root it gets; when this raises, it has released the root itself."""
    t0 = time.monotonic()
    root = workdir / "root"
    root.mkdir(parents=True)
    r = EmulatedRoot(arch, root)
    try:
        run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(base_tarball(arch=arch))], 600)
        r.timings["unpack_s"] = time.monotonic() - t0
        shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
        shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", root / ROOT_ENV["PIP_CERT"].lstrip("/"))  # for pip
        archives = CACHE / f"archives-{arch}"
        for cached in archives.glob("*.deb") if archives.is_dir() else []:
            shutil.copy2(cached, root / "var" / "cache" / "apt" / "archives" / cached.name)
        shutil.copy2(deb.path, root / "tmp" / deb.path.name)
        r.mount(["mount", "-t", "proc", "proc"], root / "proc")
        r.mount(["mount", "--bind", "/dev"], root / "dev")
        t1 = time.monotonic()
        install = f"cd /tmp && apt-get install -y -q ./{deb.path.name}"
        if r.sh(install, check=False).returncode != 0:  # the cached package lists went stale
            r.sh("apt-get update -q")
            r.sh(install)
        r.timings["apt_install_s"] = time.monotonic() - t1
        archives.mkdir(parents=True, exist_ok=True)
        for got in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            if not (archives / got.name).exists():
                shutil.copy2(got, archives / got.name)
    except BaseException:
        release(r)
        raise
    return r


def release(r: EmulatedRoot) -> None:
    """Kill what runs in the root (by pid), unmount everything below it, delete it."""
    for pid in pids_in(r.root):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for target in reversed(r.mounted[:]):
        r.unmount(target)
    for target in sorted(mounts_under(r.root), reverse=True):  # anything mounted behind our back
        subprocess.run(["umount", "-l", target], capture_output=True)
    remove_tree(r.root)


def start_engine(r: EmulatedRoot, spec: LabSpec, config_text: str) -> ProcessRecord:
    """``linkwatch run`` from the root (the emulated interpreter) in the lab's router namespace.

    The lab's state directory (control socket, hooks, history) is bind-mounted at the same path in
    the root, so the config's paths work inside and the host reaches the socket. The process is
    recorded as the lab's engine: ``topology.down`` stops it by pid."""
    state = Path(spec.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    Path(spec.hooks_dir).mkdir(parents=True, exist_ok=True)
    Path(spec.config_path).write_text(config_text)
    r.mount(["mount", "--bind", str(state)], r.root / str(state).lstrip("/"))
    env = [f"{k}={v}" for k, v in ROOT_ENV.items()]
    argv = ["ip", "netns", "exec", spec.router_ns, "chroot", str(r.root), "/usr/bin/env", "-i", *env,
            "PYTHONUNBUFFERED=1", "/usr/bin/linkwatch", "run", "--config", spec.config_path]
    r.sh(f"linkwatch check-config {spec.config_path}")
    _proc, rec = start_background(spec.state_dir, "engine", argv, spec.engine_log)
    return rec


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB. Under qemu-user this is the whole emulated
    process: the guest's memory plus qemu's own (its translated-code buffer included)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def emulated_memory_kb(pid: int) -> dict[str, int]:
    """An emulated process's RSS split from /proc/<pid>/smaps: ``total``; ``qemu``, what is qemu's
    alone: the pages of its own binary, its host heap ([heap]) and its translated-code buffer
    (the anonymous read-write-execute mapping; arm64 seen: 31 MB of a 96 MB total); and ``guest``,
    the rest: the emulated program's own memory (its binary, libraries, heap, stacks), which is what
    the same program takes on the real CPU, plus qemu's thread stacks and malloc arenas (a few MB,
    not told apart: ``guest`` is an upper bound)."""
    total = qemu = 0
    name = perms = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                perms, name = head[1], (head[5] if len(head) > 5 else "")
            elif head[0] == "Rss:":
                kb = int(head[1])
                total += kb
                if "/qemu-" in name or name == "[heap]" or (not name and perms.startswith("rwx")):
                    qemu += kb
    return {"total": total, "qemu": qemu, "guest": total - qemu}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copy_sources(r: EmulatedRoot) -> None:
    """The repository's files (tracked and untracked-not-ignored) to /src in the root."""
    files = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], 60).stdout
    existing = "\0".join(f for f in files.split("\0") if f and os.path.lexists(REPO / f))
    dest = r.root / SRC.lstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    tar_in = subprocess.Popen(["tar", "-C", str(REPO), "--null", "-T", "-", "-c"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    tar_out = subprocess.Popen(["tar", "-x", "-C", str(dest)], stdin=tar_in.stdout)
    assert tar_in.stdout is not None and tar_in.stdin is not None
    tar_in.stdout.close()
    tar_in.stdin.write(existing.encode())
    tar_in.stdin.close()
    assert tar_in.wait(120) == 0 and tar_out.wait(120) == 0


def install_test_tools(r: EmulatedRoot) -> float:
    """pytest and the pure tests' other needs into the package's venv (a throwaway root), with
    pip's cache of that arch kept between runs. Returns the seconds it took."""
    t0 = time.monotonic()
    cache = PIP_CACHE / f"pip-{r.arch}"
    cache.mkdir(parents=True, exist_ok=True)
    r.mount(["mount", "--bind", str(cache)], r.root / "root" / ".cache" / "pip")
    r.sh(f"{VENV_PYTHON} -m pip install -q pytest hypothesis jsonschema", timeout=1800)
    return time.monotonic() - t0


# Left out under emulation, each for a reason that is the emulation's or the minimal root's, not
# the architecture's (seen in full runs of tests/unit and tests/scenario on arm64):
_NFT = "needs the netfilter netlink family for libnftables, which qemu-user does not emulate"
_SLOW = "a wall-clock bound that a 5x slower interpreter misses"
EMULATION_DESELECT = {
    "tests/scenario/test_shell.py::test_without_libnftables_sticky_flows_are_off_and_said_so": _NFT,
    "tests/scenario/test_shell.py::test_a_restart_resets_the_flows_a_previous_run_marked_for_an_uplink_now_"
    "numbered_otherwise": _NFT,
    "tests/scenario/test_shell.py::test_a_refused_mark_flush_of_an_uplink_that_never_had_an_address_deletes_"
    "nothing_else": _NFT,
    "tests/scenario/test_shell.py::test_failover_routes_are_in_place_before_the_event_is_published": _NFT,
    "tests/unit/test_agent.py::test_pysnmp_bulk_walk_equals_mib_instances_v2c_and_v3": _SLOW + " (sysUpTime ticks)",
    "tests/unit/test_agent.py::test_a_blocked_engine_loop_gives_generr_and_no_pile_of_status_calls": _SLOW,
    "tests/unit/test_agent.py::test_a_flood_of_malformed_packets_does_not_delay_the_engine_loop":
        _SLOW + " (loop lag under 20 ms; passed once, failed once at 20.6 ms)",
    "tests/unit/test_docs.py::test_the_quick_start_commands_work_as_written_in_a_root_shell_without_sudo":
        "runs git and the bootstrap script, which the minimal root has not",
}


def run_pure_tests(r: EmulatedRoot, paths: list[str], timeout: float = 3600) -> tuple[subprocess.CompletedProcess[str], float]:
    """pytest on ``paths`` in /src with the package venv's (emulated) interpreter, without the
    tests of EMULATION_DESELECT."""
    deselect = " ".join(f"--deselect {node}" for node in EMULATION_DESELECT
                        if any(node.startswith(path.rstrip("/")) for path in paths))
    t0 = time.monotonic()
    proc = r.sh(f"cd {SRC} && {VENV_PYTHON} -m pytest -q -p no:cacheprovider {deselect} {' '.join(paths)}",
                check=False, timeout=timeout)
    return proc, time.monotonic() - t0


def engine_answers(spec: LabSpec) -> bool:
    from linkwatch.lab.topology import engine_status

    return engine_status(spec, timeout=2.0)[0] is not None


def unmount_state(r: EmulatedRoot, spec: LabSpec) -> None:
    """Undo start_engine's bind mount of the lab's state directory (after topology.down)."""
    target = r.root / spec.state_dir.lstrip("/")
    if target in r.mounted:
        r.unmount(target)


def log_tail(spec: LabSpec, chars: int = 3000) -> str:
    try:
        return Path(spec.engine_log).read_text()[-chars:]
    except OSError as e:
        return f"(no engine log: {e})"
