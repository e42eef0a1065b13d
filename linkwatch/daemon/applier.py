"""Carrying out the core's outputs, always in the same order, one batch at a time.

For every batch of :class:`~linkwatch.core.engine.Outputs`: forget stale neighbour entries, make
the kernel's routing equal the newest plan, publish the events, then flush the conntrack entries
of uplinks that lost their traffic. One task does this, so kernel changes never overlap, events
reach the sinks only after the routes they announce are in place, and a slow conntrack flush never
delays a route switch (flushes run in the background).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from linkwatch.config.values import FLOW_BITS
from linkwatch.core.engine import Flush, Outputs
from linkwatch.core.flows import FLOW_MASK, MOVABLE
from linkwatch.core.routing import RouteSet
from linkwatch.core.status import FlushReport

log = logging.getLogger("linkwatch.engine")

FLUSHES_KEPT = 20  # the last conntrack flushes status shows
EVENT_REPAIR_GAP = 0.2  # repairs asked for by netlink events start at least this far apart
# A refusal is first a warning: most are races (an interface deleted or readdressed between the
# plan and its apply; the next plan or repair goes through). One that lasts this long is an error.
REFUSED_ERROR_AFTER = 3.0
_DENIED = (errno.EPERM, errno.EACCES)  # the kernel's answer to a process without CAP_NET_ADMIN
_DENIED_SUFFIXES = tuple(f"(errno {code})" for code in _DENIED)  # how the reconciler ends such an error


class Applier:
    """Applies outputs to ``kernel`` and publishes their events with ``publish``. ``plan()`` gives
    the newest routing plan (it includes every output fed so far)."""

    def __init__(self, kernel: Any, plan: Callable[[], RouteSet | None], publish: Callable[[Any], None]):
        self.kernel = kernel
        self.plan = plan
        self.publish = publish
        self.last_apply_ms: float | None = None
        self.flushes: deque[FlushReport] = deque(maxlen=FLUSHES_KEPT)
        self._pending: list[Outputs] = []
        self._attempted: RouteSet | None = None  # the plan last applied, with or without errors
        self._failed = False  # the last apply had errors: retried on the next repair only
        self._refused_since: float | None = None  # when the current streak of refused applies began
        self._refusal_logged = False  # ... and whether it was logged as an error
        self._denied = False  # ... and each of them was a permission error (no CAP_NET_ADMIN)
        self._change_seen = True  # a netlink event about linkwatch's own objects since the last repair
        self._last_repair = -math.inf
        self._unmarked = False  # the flow table could not be applied: new flows carry no flow mark
        self._withdrawn = False
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="applier")

    def add(self, out: Outputs) -> None:
        """Queue one step's outputs; the applier task carries them out soon after."""
        if not (out.events or out.flushes or out.forget_neighbours) and out.routing == self._attempted:
            return  # nothing to do (most probe rounds): no task switch
        self._pending.append(out)
        self._idle.clear()
        self._work.set()

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            await self.carry_out()

    async def carry_out(self, repair: bool = False, check_flows: bool = False) -> None:
        """Carry out every pending output now. ``repair``: re-check the kernel even if the plan did
        not change (someone else may have deleted or changed linkwatch's objects); ``check_flows``:
        re-check only the nftables table (no netlink event tells when someone changes it)."""
        async with self._lock:
            await self._carry_out(repair, check_flows)

    async def _carry_out(self, repair: bool, check_flows: bool = False) -> None:
        batch, self._pending = self._pending, []
        for ifindex, gateway in (n for out in batch for n in out.forget_neighbours):
            try:  # a stale FAILED neighbour entry would delay failback by a second or more
                await self.kernel.forget_neighbour(ifindex, gateway)
            except Exception as e:
                log.warning("cannot drop the neighbour entry of %s (ifindex %d): %s", gateway, ifindex, e)
        routing = self.plan()
        # A refused change is retried at the next repair (every 2 s), not after every probe round.
        if routing is not None and not self._withdrawn:
            if repair or routing != self._attempted:
                await self._apply(routing)
            elif check_flows:  # a refused plan is retried whole, not just its table
                await self._apply(routing, flows_only=not self._failed)
        for event in (e for out in batch for e in out.events):
            self.publish(event)
        switched = time.monotonic()  # the routing the flushes follow is in place
        for flush in (f for out in batch for f in out.flushes):
            self._spawn(self._flush(flush, switched))
        if not self._pending:
            self._idle.set()

    async def _apply(self, routing: RouteSet, flows_only: bool = False) -> None:
        retry = self._failed and routing == self._attempted
        self._attempted = routing
        try:
            report = await (self.kernel.check_flows(routing) if flows_only else self.kernel.apply(routing))
        except Exception as e:  # a netlink hiccup must not take the engine (and the routes) down
            if not retry:
                log.exception("routing apply failed; routes left as they are, retrying every repair")
            else:
                log.debug("routing apply failed again: %s", e)
            self._failed = True
            self._denied = isinstance(e, PermissionError) or getattr(e, "code", None) in _DENIED
            return
        if report.changed:
            self.last_apply_ms = report.elapsed_ms
            log.info("routing applied in %.1fms: %s", report.elapsed_ms,
                     "; ".join(report.added + report.replaced + report.removed)[:500])
        self._log_refusals(report.errors, retry)
        self._failed = bool(report.errors)
        routing_errors = [e for e in report.errors if not e.startswith("nft table")]
        self._denied = bool(routing_errors) and all(e.endswith(_DENIED_SUFFIXES) for e in routing_errors)
        self._unmarked = routing.flows is not None and any(e.startswith("nft table") for e in report.errors)

    def _log_refusals(self, errors: list[str], retry: bool) -> None:
        """Each plan's refusals once as a warning; an error once a streak lasts REFUSED_ERROR_AFTER."""
        now = time.monotonic()
        if not errors:
            if self._refused_since is not None:
                log.info("routing: the kernel took the plan after %.1fs of refusals", now - self._refused_since)
            self._refused_since, self._refusal_logged = None, False
            return
        if self._refused_since is None:
            self._refused_since = now
        for err in errors:
            log.log(logging.DEBUG if retry else logging.WARNING, "routing: %s (retried)", err)
        if not self._refusal_logged and now - self._refused_since >= REFUSED_ERROR_AFTER:
            self._refusal_logged = True
            log.error("routing: the kernel has refused part of the plan for %.0fs: %s", now - self._refused_since,
                      "; ".join(errors)[:500])

    def note_change(self) -> None:
        """A netlink event said linkwatch's objects may have changed: repair soon (see repair_wanted)."""
        self._change_seen = True

    def repair_wanted(self, now: float, full_check: float) -> bool:
        """Check the kernel's routes and rules against the plan now? After an event about
        linkwatch's own objects (at most once per ``EVENT_REPAIR_GAP``: a repair's own changes
        raise events too), while the last plan was refused (retried at every tick), and every
        ``full_check`` seconds whatever happened: dumping every table at each 2 s tick was a fifth
        of the engine's CPU with 4 dual-stack uplinks."""
        since = now - self._last_repair
        if since >= full_check or ((self._failed or self._change_seen) and since >= EVENT_REPAIR_GAP):
            self._change_seen, self._last_repair = False, now
            return True
        return False

    def repair_wait(self, now: float, longest: float) -> float:
        """How long the engine's loop may sleep before :meth:`repair_wanted` has something to say
        (at most ``longest``)."""
        if not self._change_seen:
            return longest
        return min(longest, max(0.0, self._last_repair + EVENT_REPAIR_GAP - now))

    async def routes_in(self) -> bool:
        """False only while the kernel denies linkwatch its routes (every routing error of the last
        apply a permission error: no CAP_NET_ADMIN) and the active table holds none. Any other
        refusal (one gateway the kernel will not take, an nftables error) is retried at the
        repairs but does not hold READY back: that would fail the unit's start and restart the
        engine for nothing."""
        if not self._denied:
            return True
        try:
            return bool(await self.kernel.active_gateways())
        except Exception as e:  # a failed dump is no proof either way: ask again at the next repair
            log.debug("cannot read the active table: %s", e)
            return False

    async def withdraw(self) -> Any:
        """Remove linkwatch's routes and rules (a clean stop); nothing is applied afterwards."""
        async with self._lock:
            self._withdrawn = True
            return await self.kernel.withdraw()

    async def settle(self, timeout: float) -> None:
        """Wait until every output added so far has been carried out (at most ``timeout``)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def _flush(self, f: Flush, switched: float) -> None:
        """Reset the flows of an uplink that lost its traffic (after the route switch): by their
        flow mark in one kernel operation (only the movable ones: ``move_flows_after``), or entry by
        entry by NAT address."""
        t0 = time.monotonic()
        mark = f.mark
        if mark is not None and self._unmarked and f.address and not f.movable:
            # the flows that started while the table is missing have no mark; those from before
            # have the uplink's address too
            log.warning("conntrack: linkwatch's nftables table is not in place; deleting %s's flows NATed to %s "
                        "one by one instead of by flow mark", f.uplink, f.address)
            mark = None
        if mark is not None:
            mark, mask = (mark | MOVABLE, FLOW_BITS) if f.movable else (mark, FLOW_MASK)
            try:
                n = await self.kernel.flush_marked(mark, mask)
            except Exception as e:  # a kernel without mark-filtered deletes: the flows must go all the same
                if f.movable:  # ... unless only some of them were to go: by address it would be all
                    log.warning("conntrack: cannot delete %s's movable flows by flow mark 0x%x (%s); they stay",
                                f.uplink, mark, e)
                    return
                log.warning("conntrack: cannot delete %s's flows by flow mark 0x%x (%s); deleting those NATed to %s "
                            "one by one instead", f.uplink, mark, e, f.address)
                mark = None
        what = f"with flow mark 0x{mark:x}/0x{mask:x}" if mark is not None else f"NATed to {f.address}"
        if mark is None:
            if not f.address:  # no address ever seen: nothing was NATed to it
                log.warning("conntrack flush for %s skipped: no flow mark filter and no address", f.uplink)
                return
            try:
                n = await self.kernel.flush_nat(f.address)
            except Exception as e:
                log.warning("conntrack flush for %s (%s) failed: %s", f.uplink, what, e)
                return
        done = time.monotonic()
        self.flushes.append(FlushReport(f.uplink, f.address, n, round((done - t0) * 1000, 1), mark,
                                        round((done - switched) * 1000, 1)))
        log.info("conntrack: deleted %d entries %s (%s) in %.0fms, %.0fms after the route switch", n, what,
                 f.uplink, (done - t0) * 1000, (done - switched) * 1000)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, grace: float, finish: bool = True) -> None:
        """Carry out what is left (unless not ``finish``), stop the task, let the flushes finish
        (each within ``grace``)."""
        if finish:
            await self.carry_out()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, grace)
