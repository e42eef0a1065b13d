"""The kernel's side: link facts in (:mod:`.facts`), routes and rules out (:mod:`.reconciler`),
conntrack entries of a dead uplink deleted (:mod:`.conntrack`).

:class:`Kernel` is everything the engine asks of the kernel, in one place, each call awaited off
the event loop (netlink dumps and changes run on worker threads; the link monitor listens on an
asyncio socket). The engine takes a Kernel as a parameter, so tests can hand it another one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from linkwatch.core.inputs import LinkFacts
from linkwatch.core.routing import RouteSet, RoutingParams


class Kernel:
    """The real kernel, through netlink (pyroute2), in the engine's own network namespace."""

    def __init__(self, params: RoutingParams, netns: str | None = None):
        self.params = params
        self.netns = netns
        self._reconciler: Any = None
        self._counters: Any = None

    async def open(self) -> None:
        from linkwatch.kernel.counters import CounterReader
        from linkwatch.kernel.reconciler import Reconciler

        self._reconciler = await asyncio.to_thread(Reconciler, self.params, self.netns)
        if self.netns is None:  # the raw counter socket lives in the engine's own namespace
            self._counters = CounterReader()

    async def read_counters(self, ifindexes: Sequence[int]) -> dict[int, Any]:
        """Packet and byte counters of these interfaces (those that exist), by ifindex."""
        if self._counters is None:
            return {}
        return await self._counters.read(ifindexes)

    async def read_facts(self, ifnames: Sequence[str]) -> dict[str, LinkFacts]:
        from linkwatch.kernel.facts import read_facts_async

        return await read_facts_async(ifnames, self.netns, self.params.protocol)

    def monitor(self, ifnames: Sequence[str], tables: Iterable[int] = ()) -> Any:
        """A :class:`linkwatch.kernel.facts.LinkMonitor` of these interfaces (``await m.run(cb)``);
        ``tables``: the uplinks' routing tables (the active table and the rule priorities are the
        params')."""
        from linkwatch.kernel.facts import LinkMonitor

        p = self.params
        return LinkMonitor(ifnames, self.netns, p.protocol, (p.active_table, *tables),
                           (p.suppress_priority, p.active_priority))

    async def active_gateways(self, family: int = 4) -> list[tuple[str, int]]:
        return await self._reconciler.active_gateways_async(family)

    async def flow_marks(self) -> dict[str, int]:
        """Interface -> flow mark of the flow table a previous run left (empty: none)."""
        return await self._reconciler.flow_marks_async()

    async def apply(self, routes: RouteSet) -> Any:
        """Make linkwatch's routes and rules equal ``routes``; returns the ApplyReport."""
        return await self._reconciler.apply_async(routes)

    async def check_flows(self, routes: RouteSet) -> Any:
        """Make linkwatch's nftables table equal ``routes.flows`` and nothing else (one listing of
        the table when nothing changed: nftables changes raise no route or rule event)."""
        return await self._reconciler.apply_flows_async(routes)

    async def withdraw(self) -> Any:
        return await self._reconciler.apply_async(RouteSet())

    async def forget_neighbour(self, ifindex: int, address: str) -> None:
        await self._reconciler.forget_neighbour_async(ifindex, address)

    async def flush_nat(self, address: str) -> int:
        """Delete the conntrack entries NATed to ``address``; how many went."""
        from linkwatch.kernel.conntrack import flush_nat

        return await asyncio.to_thread(flush_nat, address, self.netns)

    async def flush_marked(self, mark: int, mask: int) -> int:
        """Delete the conntrack entries whose ct mark is ``mark`` in the bits of ``mask`` (one kernel
        operation); how many went."""
        from linkwatch.kernel.conntrack import flush_marked

        return await asyncio.to_thread(flush_marked, mark, mask, self.netns)

    async def close(self) -> None:
        if self._counters is not None:
            self._counters.close()
            self._counters = None
        reconciler, self._reconciler = self._reconciler, None
        if reconciler is not None:
            await asyncio.to_thread(reconciler.close)


