"""The applier's conntrack resets against a kernel that refuses mark-filtered deletes."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakes import FakeKernel  # noqa: E402
from harness import FACTS  # noqa: E402

from linkwatch.core.engine import Flush  # noqa: E402
from linkwatch.daemon.applier import Applier  # noqa: E402


def test_a_refused_movable_flush_deletes_nothing_rather_than_every_flow_of_the_uplink():
    """Second review, finding 6: move_flows_after fell back to deleting every flow NATed to the
    uplink, the connections that came in on it and the rules' flows included."""
    kernel = FakeKernel(FACTS)
    kernel.fail_mark_flush = True
    applier = Applier(kernel, lambda: None, lambda e: None)
    asyncio.run(applier._flush(Flush("lte", "198.51.100.10", 0x660000, movable=True), 0.0))
    assert kernel.flushed == [] and not applier.flushes
    asyncio.run(applier._flush(Flush("lte", "198.51.100.10", 0x660000), 0.0))
    assert kernel.flushed == ["198.51.100.10"], "a dead uplink's flows all go, by address if need be"
