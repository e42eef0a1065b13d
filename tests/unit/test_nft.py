"""kernel/nft.py's loading of libnftables: a kernel (or an emulator) without the netfilter netlink
family is reported as NftError, so the engine turns sticky flows off, instead of libnftables
exiting the whole process ("mnl.c: Unable to initialize Netlink socket", seen under qemu-user)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from linkwatch.kernel import nft


class FakeLib:
    """Stands in for the loaded library: any function, with settable restype/argtypes."""

    def __getattr__(self, name):
        fn = type("Fn", (), {})()
        setattr(self, name, fn)
        return fn


@pytest.fixture
def fake_library(monkeypatch):
    monkeypatch.setattr(nft._Lib, "_lib", None)
    lib = FakeLib()
    monkeypatch.setattr(nft.ctypes, "CDLL", lambda name: lib)
    return lib


def test_without_netfilter_netlink_the_library_is_unavailable(fake_library, monkeypatch):
    opened = []
    real = socket.socket

    def refuse(family=-1, kind=-1, proto=-1, *args):
        opened.append((family, proto))
        if family == socket.AF_NETLINK and proto == nft.NETLINK_NETFILTER:
            raise OSError(93, "Protocol not supported")
        return real(family, kind, proto, *args)

    monkeypatch.setattr(nft.socket, "socket", refuse)
    with pytest.raises(nft.NftError, match="no netfilter netlink socket here"):
        nft.library()
    assert opened == [(socket.AF_NETLINK, nft.NETLINK_NETFILTER)]
    assert nft._Lib._lib is None  # not cached: nothing half-loaded is handed out later


def test_with_netfilter_netlink_the_library_loads(fake_library, monkeypatch):
    closed = []

    class Sock:
        def __init__(self, family, kind, proto):
            assert (family, proto) == (socket.AF_NETLINK, nft.NETLINK_NETFILTER)

        def close(self):
            closed.append(True)

    monkeypatch.setattr(nft.socket, "socket", Sock)
    assert nft.library() is fake_library
    assert closed == [True]


EXHAUST = """
import resource, sys
from linkwatch.kernel import nft
nft.run("add table ip lwexhaust")  # the engine's first command: at start, with descriptors to spare
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(open("/dev/null"))
except OSError:
    pass
print(nft.run("list table ip lwexhaust").split()[:3], flush=True)
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="nftables needs root (run in a throwaway network namespace)")
def test_a_process_out_of_descriptors_keeps_running_its_nft_commands():
    """Review of issue 14: libnftables opened a netlink socket per command and exits the whole
    process (exit code 3, "Unable to initialize Netlink socket") when it cannot: an engine out of
    descriptors died in the middle of a failover. One context, its socket opened once, is kept."""
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", EXHAUST], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.split() == ["['table',", "'ip',", "'lwexhaust']"], done.stdout


NAMESPACES = """
import os, subprocess, threading
from pyroute2.netns import setns
from linkwatch.kernel import nft
nft.run("add table ip lwmine")  # the process's own namespace: the kept context
subprocess.run(["ip", "netns", "add", "lw-nftT"], check=True)
try:
    def other():
        setns("lw-nftT")  # this thread only, as the reconciler's worker does with netns
        nft.run("add table ip lwtheirs")
        print("other:", nft.run("list tables").split())
    t = threading.Thread(target=other)
    t.start(); t.join()
    print("mine:", nft.run("list tables").split())
finally:
    subprocess.run(["ip", "netns", "del", "lw-nftT"], check=True)
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="nftables and namespaces need root")
def test_a_thread_in_another_namespace_changes_that_namespace_not_the_kept_contexts():
    """CI failure of the kept context: its socket lives in the namespace it was opened in, and a
    worker thread that had entered a lab namespace changed the first namespace's tables instead."""
    # a throwaway network namespace, and a mount namespace with its own /run for `ip netns add`
    done = subprocess.run(["unshare", "-n", "-m", "--propagation", "private", "sh", "-c",
                           f'mount -t tmpfs none /run && exec {sys.executable} -c "$0"', NAMESPACES],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert lines["other"] == "['table', 'ip', 'lwtheirs']", done.stdout
    assert lines["mine"] == "['table', 'ip', 'lwmine']", done.stdout
