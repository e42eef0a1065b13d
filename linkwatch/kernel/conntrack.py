"""Delete the conntrack entries of the flows of one uplink, so they start again elsewhere.

Two ways. With sticky flows every flow carries its uplink's flow mark in its ct mark, and
:func:`flush_marked` deletes all of them in **one kernel operation** (an IPCTNL_MSG_CT_DELETE
with only a mark and mask: the kernel walks its table itself): 10,000 entries in about 20 ms
here. Without them, :func:`flush_nat` finds the entries NATed to the uplink's address and
deletes them one by one (about 0.5 ms each):

With ``snat to <addr>`` a long-lived flow keeps its conntrack entry (every packet refreshes it)
and stays stuck on the dead uplink's address after a failover; deleting the entries makes the
next packet create a new entry NATed through the new uplink. Only entries whose reply
direction goes to the uplink's address (``reply.daddr == address``) and that did not start
on the router itself from that address (``orig.saddr != address``) are deleted.

The work is blocking (dump + one delete per entry): call :func:`flush_nat` from a worker thread
(``asyncio.to_thread``), never in the way of a route switch. Each call opens its own socket.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyroute2.conntrack import AsyncConntrack, ConntrackEntry
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

log = logging.getLogger(__name__)

DELETE_BATCH = 64  # deletes in flight at once on the one socket
_GONE = frozenset({errno.ENOENT, errno.ESRCH})


class ConntrackError(Exception):
    """A bad address, or the conntrack table could not be read."""


@dataclass(frozen=True)
class FlowKey:
    """The addresses of one entry that decide whether it was NATed to an address."""

    orig_src: str
    reply_dst: str


def is_natted_to(key: FlowKey, address: str) -> bool:
    """True if the entry was source-NATed to ``address`` (and did not start from it)."""
    return key.reply_dst == address and key.orig_src != address


def _key(entry: ConntrackEntry) -> FlowKey:
    return FlowKey(orig_src=entry.tuple_orig.saddr, reply_dst=entry.tuple_reply.daddr)


async def _delete(ct: AsyncConntrack, entry: ConntrackEntry) -> bool:
    try:
        await ct.entry("del", tuple_orig=entry.tuple_orig)
    except NetlinkError as err:
        if err.code in _GONE:  # expired or deleted meanwhile: not an error
            return False
        raise
    return True


async def _flush(address: str, netns: str | None, family: int = socket.AF_INET) -> int:
    ct = _open(netns, family)
    try:
        try:
            # kernel-side filter on the reply tuple (kernel >= 5.8), re-checked below anyway; IPv6
            # entries are filtered here only (pyroute2's IPv6 filter matches nothing)
            selector = NFCTAttrTuple(family=family, daddr=address) if family == socket.AF_INET else None
            victims = [
                e async for e in await ct.dump_entries(tuple_reply=selector) if is_natted_to(_key(e), address)
            ]
        except (NetlinkError, OSError) as err:
            where = "" if netns is None else f" in netns={netns!r}"
            raise ConntrackError(f"cannot dump conntrack entries for {address}{where}: {err}") from err
        deleted = 0
        for start in range(0, len(victims), DELETE_BATCH):
            chunk = victims[start : start + DELETE_BATCH]
            results = await asyncio.gather(*(_delete(ct, e) for e in chunk), return_exceptions=True)
            for entry, result in zip(chunk, results):
                if isinstance(result, BaseException):
                    log.warning("conntrack: cannot delete %s: %s", entry, result)
                elif result:
                    deleted += 1
        return deleted
    finally:
        ct.close()


async def _flush_marked(mark: int, mask: int, netns: str | None) -> int:
    ct = _open(netns)
    try:
        try:
            before = await ct.count()
            await ct.flush(mark=mark, mark_mask=mask)  # one request: the kernel deletes every match
            after = await ct.count()
        except (NetlinkError, OSError) as err:
            where = "" if netns is None else f" in netns={netns!r}"
            raise ConntrackError(f"cannot delete the conntrack entries with mark 0x{mark:x}/0x{mask:x}{where}: {err}") \
                from err
        return max(before - after, 0)
    finally:
        ct.close()


def flush_marked(mark: int, mask: int, netns: str | None = None) -> int:
    """Delete every IPv4 conntrack entry whose ct mark has ``mark`` in the bits of ``mask``.
    Returns how many entries the table lost meanwhile (the kernel does not say how many it
    deleted: the table's size before and after, so flows that started or ended in that
    millisecond count too). Blocking, like :func:`flush_nat`."""
    if not (0 < mark <= 0xFFFFFFFF and 0 < mask <= 0xFFFFFFFF and mark & ~mask == 0):
        raise ConntrackError(f"mark=0x{mark:x} mask=0x{mask:x}: expected a non-zero mark inside a 32-bit mask")
    return _run(_flush_marked(mark, mask, netns))


def _open(netns: str | None, family: int = socket.AF_INET) -> AsyncConntrack:
    kwargs: dict[str, Any] = {"nfgen_family": family} if netns is None else {"netns": netns, "flags": 0,
                                                                             "nfgen_family": family}
    try:
        return AsyncConntrack(**kwargs)
    except OSError as err:
        raise ConntrackError(f"cannot open conntrack netlink in netns={netns!r}: {err}") from err


def _run(coro: Any) -> Any:
    """Run ``coro`` on a private event loop (a private thread if this one runs a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lw-conntrack") as pool:
        return pool.submit(asyncio.run, coro).result()


def flush_nat(address: str, netns: str | None = None) -> int:
    """Delete the conntrack entries NATed to ``address`` (IPv4, or IPv6 for NAT66); return how
    many were deleted.

    Blocking; safe in any thread (own socket and event loop). Called from a thread that runs
    an asyncio loop it still works, on a private thread, but then it blocks that loop.
    """
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        raise ConntrackError(f"address={address!r}: not an IPv4 or IPv6 address") from None
    started = time.perf_counter()
    deleted = _run(_flush(address, netns, socket.AF_INET6 if version == 6 else socket.AF_INET))
    log.debug(
        "conntrack: deleted %d entries NATed to %s in %.1f ms",
        deleted,
        address,
        (time.perf_counter() - started) * 1000.0,
    )
    return deleted
