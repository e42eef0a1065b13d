"""Running one uplink's probes as the core's :class:`~linkwatch.core.uplink.ProbePlan` says.

A :class:`Prober` starts a round every ``plan.interval`` while ``plan.running``, binds its probes to
``plan.source`` and ``plan.device`` (rebuilding them when the address, the interface or the probe
list changes) and hands every
finished round to the engine. Rounds may overlap (timeout > fast interval): each is numbered at its
start, and rounds of probes that were rebuilt meanwhile are dropped. On a data budget
(``plan.rotate``) a round asks one target, in turn; a new ``plan.burst`` number starts one burst
round at once: every target, BURST_ATTEMPTS packets each within ``plan.burst_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from linkwatch.core.inputs import ProbeResult, ProbeSpec
from linkwatch.core.uplink import ProbePlan
from linkwatch.probes.base import Probe

log = logging.getLogger(__name__)

class MakeProbes(Protocol):
    def __call__(self, specs: Sequence[ProbeSpec], source: str, *, device: str | None = None) -> list[Probe]: ...
BURST_ATTEMPTS = 3


def _binding(plan: ProbePlan) -> tuple:
    """What the probes' sockets are made for: a change means new sockets (and so new ICMP
    identifiers and conntrack entries: nothing of the old binding is carried over)."""
    return plan.source, plan.specs, plan.device, plan.ifindex


class Prober:
    """The probing task of one uplink."""

    def __init__(self, name: str, plan: ProbePlan, make_probes: MakeProbes,
                 on_round: Callable[[Prober, tuple[ProbeResult, ...], int, float, bool], None],
                 on_trouble: Callable[[Prober, str | None], None], clock: Callable[[], float], family: int = 4):
        self.name = name
        self.family = family  # 6: the uplink's IPv6 targets, from its IPv6 address
        self.plan = plan
        self._make_probes = make_probes
        self._on_round = on_round
        self._on_trouble = on_trouble
        self._clock = clock
        self._probes: list[Probe] = []
        self._generation = 0  # bumped when the probes are rebuilt; older rounds are dropped
        self._seq = 0
        self._error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._rounds: set[asyncio.Task] = set()
        self._last_start = -1e9
        self._turn = 0  # the next target of a rotating round
        self._burst_due = False
        self.closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"prober:{self.name}{'/ipv6' if self.family == 6 else ''}")

    def update(self, plan: ProbePlan) -> None:
        """The core's new plan: rebuild the probes if what they bind to changed; wake the loop."""
        if plan is self.plan or plan == self.plan:
            return
        if _binding(plan) != _binding(self.plan):
            self._close_probes()
        if plan.burst > self.plan.burst:
            self._burst_due = True
        self.plan = plan
        self._wake.set()  # the interval (or whether to run at all) may have changed

    async def close(self) -> None:
        self.closed = True  # also ends the loop if a cancellation is lost (3.11's wait_for can drop one)
        self._wake.set()
        tasks = [t for t in (self._task, *self._rounds) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._close_probes()

    async def _run(self) -> None:
        while not self.closed:
            now = self._clock()
            if self._burst_due:
                self._burst_due = False
                if self.plan.running and self._ensure_probes():
                    self._start_round(list(self._probes), now, burst=True)
            due = self._last_start + self.plan.interval
            if now < due:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due - now)
                continue  # recompute: the plan (and so the interval) may have changed
            self._last_start = now
            if self.plan.running and self._ensure_probes():
                probes = list(self._probes)
                if self.plan.rotate and probes:
                    probes = [probes[self._turn % len(probes)]]
                    self._turn += 1
                self._start_round(probes, now)

    def _start_round(self, probes: list[Probe], now: float, burst: bool = False) -> None:
        self._seq += 1
        task = asyncio.create_task(self._round(probes, self._generation, self._seq, now, burst))
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    def _ensure_probes(self) -> bool:
        if self._probes:
            return True
        plan = self.plan
        if plan.source is None:
            return False
        try:
            self._probes = self._make_probes(plan.specs, plan.source, device=plan.device)
        except Exception as e:  # e.g. no permission for ICMP sockets; retried every round, logged once
            if str(e) != self._error:
                log.warning("uplink=%s cannot open probes from %s: %s", self.name, plan.source, e)
                self._error = str(e)
                self._on_trouble(self, self._error)
            return False
        if self._error is not None:
            self._error = None
            self._on_trouble(self, None)
        return True

    async def _round(self, probes: list[Probe], generation: int, seq: int, started: float, burst: bool) -> None:
        plan = self.plan
        timeout, attempts = (plan.burst_timeout, BURST_ATTEMPTS) if burst else (plan.timeout, plan.attempts)
        try:
            results = await asyncio.gather(*(p.run(timeout, attempts, late_window=plan.late_window)
                                             for p in probes))
        except Exception:
            log.exception("probe round on %s failed; the next round goes on", self.name)
            return
        if generation == self._generation and not self.closed:  # else rebuilt or closed meanwhile
            self._on_round(self, tuple(results), seq, started, burst)

    def _close_probes(self) -> None:
        for p in self._probes:
            with contextlib.suppress(Exception):
                p.close()
        self._probes = []
        self._generation += 1
