"""Stand-ins for the kernel and the probes, so the engine's I/O shell runs without root: the
kernel remembers the routes it was given and announces link changes to the monitor; the probes
answer as the test says, per source address."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from linkwatch.core.inputs import LinkFacts, ProbeResult, ProbeSpec
from linkwatch.kernel.reconciler import ApplyReport


class FakeKernel:
    def __init__(self, facts: dict[str, LinkFacts], active: tuple = ()):
        self.facts = dict(facts)
        self.active = list(active)
        self.applied: list = []  # every RouteSet applied, in order
        self.neighbours: list[tuple[int, str]] = []
        self.flushed: list[str] = []
        self.fail_neighbours = False
        self.fail_mark_flush = False  # a kernel that refuses conntrack deletes filtered by mark
        self.apply_errors: list[str] = []  # what every apply reports as refused
        self.old_marks: dict[str, int] = {}  # interface -> flow mark of a previous run's table
        self.counters: dict[int, object] = {}  # ifindex -> LinkCounters; absent: not read
        self.counter_reads: list[tuple[float, int]] = []  # (monotonic time, ifindex) of every read
        self.opened = self.closed = False
        self.flow_checks = 0  # every check of the nftables table alone
        self._monitors: list[FakeMonitor] = []

    async def open(self) -> None:
        self.opened = True

    async def read_facts(self, ifnames):
        return {n: self.facts.get(n, LinkFacts(n, None, False, None, None, None)) for n in ifnames}

    def monitor(self, ifnames, tables=()):
        m = FakeMonitor(self, tuple(ifnames))
        m.tables = tuple(tables)
        self._monitors.append(m)
        return m

    async def read_counters(self, ifindexes):
        self.counter_reads.extend((time.monotonic(), i) for i in ifindexes)
        return {i: self.counters[i] for i in ifindexes if i in self.counters}

    async def active_gateways(self, family=4):
        return list(self.active) if family == 4 else list(getattr(self, "active6", ()))

    async def flow_marks(self):
        return dict(self.old_marks)

    async def apply(self, routes):
        changed = not self.applied or self.applied[-1] != routes
        self.applied.append(routes)
        if changed:  # the kernel announces the change, to linkwatch's own monitor too
            for m in self._monitors:
                asyncio.get_running_loop().call_soon(m.owned)
        return ApplyReport(added=["route"] if changed else [], errors=list(self.apply_errors))

    async def check_flows(self, routes):
        self.flow_checks += 1
        return ApplyReport(errors=[e for e in self.apply_errors if e.startswith("nft table")])

    async def withdraw(self):
        self.applied.append(None)
        return ApplyReport(removed=["everything"])

    async def forget_neighbour(self, ifindex, address):
        if self.fail_neighbours:
            raise OSError("netlink said no")
        self.neighbours.append((ifindex, address))

    async def flush_nat(self, address):
        self.flushed.append(address)
        return 0

    async def flush_marked(self, mark, mask):
        if self.fail_mark_flush:
            raise OSError("conntrack: Operation not supported")
        self.flushed.append(f"mark 0x{mark:x}" + (f"/0x{mask:x}" if mask != 0xFF0000 else ""))
        return 0

    async def close(self) -> None:
        self.closed = True

    def change(self, ifname: str, **changes) -> None:
        """A link change, as netlink would announce it."""
        self.facts[ifname] = replace(self.facts[ifname], **changes)
        for m in self._monitors:
            m.announce()


class FakeMonitor:
    def __init__(self, kernel: FakeKernel, ifnames: tuple):
        self.kernel, self.ifnames = kernel, ifnames
        self._on_change = None
        self.on_owned = None
        self._closed = asyncio.Event()

    async def run(self, on_change, on_owned=None):
        self._on_change = on_change
        self.on_owned = on_owned
        self.announce()
        self.owned()  # as LinkMonitor does once it listens
        await self._closed.wait()

    def owned(self):
        """An event about linkwatch's own routes or rules (someone else's change, or its own)."""
        if self.on_owned is not None and not self._closed.is_set():
            self.on_owned()

    def announce(self):
        if self._on_change is not None and not self._closed.is_set():
            self._on_change({n: self.kernel.facts[n] for n in self.ifnames if n in self.kernel.facts})

    def close(self):
        self._closed.set()


class FakeProbes:
    """``make_probes`` for the engine: each probe answers after ``rtt`` while its source address
    is in ``answering`` (all are, at first), else times out."""

    def __init__(self, rtt: float = 0.005):
        self.rtt = rtt
        self.silent: set[str] = set()  # source addresses whose probes get no answer
        self.made: list[tuple[str, tuple[ProbeSpec, ...]]] = []
        self.devices: list[str | None] = []  # the interface of each made() entry

    def __call__(self, specs, source, *, device=None):
        self.made.append((source, tuple(specs)))
        self.devices.append(device)
        return [FakeProbe(self, spec, source) for spec in specs]


class FakeProbe:
    def __init__(self, owner: FakeProbes, spec: ProbeSpec, source: str):
        self.owner, self.kind, self.target, self.source = owner, spec.kind, spec.target, source

    async def run(self, timeout, attempts, late_window=0.0):
        if self.source in self.owner.silent:
            await asyncio.sleep(timeout)
            return ProbeResult(self.kind, self.target, False, None, attempts, attempts, 28 * attempts, 0, "timeout")
        await asyncio.sleep(self.owner.rtt)
        return ProbeResult(self.kind, self.target, True, self.owner.rtt, 1, 0, 28, 28, None)

    def close(self):
        pass
