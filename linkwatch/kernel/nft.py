"""linkwatch's own nftables table, through libnftables (the library the ``nft`` command is built
on, called in-process through ctypes: no shelling out, no extra Python dependency; Debian's
``python3-nftables`` is the same thin wrapper, but it cannot be installed into a virtualenv).

The table is owned the way the routes are: :meth:`FlowTable.apply` makes it equal to a ruleset
text (:func:`linkwatch.core.flows.ruleset`), :meth:`FlowTable.check` tells whether someone changed
or deleted it since, and :meth:`FlowTable.remove` deletes it. Only ``table ip <name>`` is ever
touched: every command names it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading

NFT_CTX_DEFAULT = 0
NETLINK_NETFILTER = 12


class NftError(Exception):
    """libnftables is missing, or it refused a command (the text says why)."""


class _Lib:
    """The few libnftables calls linkwatch needs, loaded once."""

    _lib: ctypes.CDLL | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> ctypes.CDLL:
        with cls._lock:
            if cls._lib is None:
                name = ctypes.util.find_library("nftables") or "libnftables.so.1"
                try:
                    lib = ctypes.CDLL(name)
                except OSError as e:
                    raise NftError(f"libnftables is not installed ({e}); install the libnftables1 package") from e
                _check_netlink()
                lib.nft_ctx_new.restype = ctypes.c_void_p
                lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
                lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
                lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
                lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
                cls._lib = lib
            return cls._lib


def _check_netlink() -> None:
    """libnftables exits the whole process when it cannot open its netlink socket (nftables'
    netlink_init_error): find that out first. Seen under qemu-user, which emulates only the route,
    uevent and audit netlink families; a kernel without nfnetlink would do the same."""
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER).close()
    except OSError as e:
        raise NftError(f"no netfilter netlink socket here ({e}): libnftables cannot reach the kernel") from e


def library() -> ctypes.CDLL:
    """libnftables, loaded (NftError: it is not installed)."""
    return _Lib.get()


def _netns(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class _Context:
    """One libnftables context for the process's own network namespace, made after
    :func:`_check_netlink` passed and kept: its netlink socket is opened once (at the first
    command) and reused. A context per command opened a socket per command, and libnftables exits
    the whole process when it cannot (nftables' netlink_init_error, e.g. EMFILE once the engine's
    descriptors are used up).

    A socket belongs to the namespace it was opened in: a thread that has entered another
    namespace (the reconciler's worker with ``netns``, as the tests and the lab use it) gets a
    context of its own for each command, checked first, as before."""

    _ctx: int | None = None
    _lock = threading.Lock()

    @classmethod
    def run(cls, lib: ctypes.CDLL, commands: bytes) -> tuple[int, str, str]:
        if _netns("/proc/thread-self/ns/net") != _netns("/proc/self/ns/net"):
            _check_netlink()
            ctx = cls._new(lib)
            try:
                return cls._run(lib, ctx, commands)
            finally:
                lib.nft_ctx_free(ctx)
        with cls._lock:
            if cls._ctx is None:
                _check_netlink()  # the only socket libnftables will open for it: make sure it can
                cls._ctx = cls._new(lib)
            return cls._run(lib, cls._ctx, commands)

    @staticmethod
    def _new(lib: ctypes.CDLL) -> int:
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        return ctx

    @staticmethod
    def _run(lib: ctypes.CDLL, ctx: int, commands: bytes) -> tuple[int, str, str]:
        rc = lib.nft_run_cmd_from_buffer(ctx, commands)
        # each get rewinds its buffer: the next command's output starts afresh
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        return rc, out, err


def run(commands: str) -> str:
    """Run nft commands (one transaction: all or nothing); returns what nft printed."""
    rc, out, err = _Context.run(_Lib.get(), commands.encode())
    if rc != 0:
        first = next((line for line in err.splitlines() if line.strip()), "failed")
        raise NftError(f"nft: {first}")
    return out


class FlowTable:
    """linkwatch's nftables table ``ip <name>``: applied, checked for changes, removed."""

    def __init__(self, name: str):
        self.name = name
        self._listed: str | None = None  # the kernel's listing right after our last apply

    def listing(self) -> str | None:
        """The table as the kernel has it (None: it does not exist)."""
        try:
            return run(f"list table ip {self.name}")
        except NftError as e:
            if "No such file or directory" in str(e) or "does not exist" in str(e):
                return None
            raise

    def apply(self, ruleset: str) -> None:
        """Replace the table by ``ruleset`` in one transaction (``add`` first, so the delete never
        fails on a missing table). Conntrack marks live in conntrack, not in the table: flows keep
        them across a replace."""
        run(f"add table ip {self.name}\ndelete table ip {self.name}\n{ruleset}")
        self._listed = self.listing()

    def check(self) -> bool:
        """Is the table still as linkwatch left it?"""
        return self._listed is not None and self.listing() == self._listed

    def remove(self) -> None:
        run(f"add table ip {self.name}\ndelete table ip {self.name}")
        self._listed = None
