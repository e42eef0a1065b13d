"""Network-safety guard for every lab helper that sends traffic.

The machines linkwatch is developed on sit on a real network. A probe, a client flow or a fault
tool that runs in the wrong network namespace by mistake would send packets there. Every lab
helper that sends traffic calls :func:`require_lab_namespace` first and refuses to run elsewhere.
"""

from __future__ import annotations

import os

NETNS_DIR = "/run/netns"
LAB_PREFIX = "lw"  # every lab namespace name starts with this prefix


class NotInLabError(RuntimeError):
    """Raised when traffic would leave from a namespace that is not one of the lab's."""


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def current_namespace_inode() -> int:
    """Inode of this thread's network namespace (setns() is per thread)."""
    ino = _inode("/proc/thread-self/ns/net") or _inode("/proc/self/ns/net")
    if ino is None:
        raise NotInLabError("cannot read /proc/thread-self/ns/net")
    return ino


def namespace_inode(name: str) -> int | None:
    """Inode of the named namespace under /run/netns, or None if it does not exist."""
    return _inode(os.path.join(NETNS_DIR, name))


def current_lab_namespace(prefix: str = LAB_PREFIX) -> str | None:
    """Name of the lab namespace this thread runs in, or None when it is in none of them."""
    here = current_namespace_inode()
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return None
    for name in names:
        if name.startswith(prefix) and namespace_inode(name) == here:
            return name
    return None


def require_lab_namespace(allowed: tuple[str, ...] | None = None, prefix: str = LAB_PREFIX) -> str:
    """Return the lab namespace we are in, or raise NotInLabError.

    ``allowed`` narrows the accepted names (e.g. the namespaces of one lab); by default any
    namespace whose name starts with ``prefix`` counts. The root namespace never does.
    """
    name = current_lab_namespace(prefix)
    if name is None:
        raise NotInLabError(
            "refusing to send traffic: this process is not inside a lab network namespace "
            f"(names starting with {prefix!r} under {NETNS_DIR})"
        )
    if allowed is not None and name not in allowed:
        raise NotInLabError(f"refusing to send traffic: namespace {name!r} is not one of {allowed}")
    return name
