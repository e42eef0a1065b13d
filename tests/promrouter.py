"""A router for the Prometheus tests (tests/unit/test_prometheus.py, tests/integration/
test_prometheus_fleet.py): a real Engine (daemon shell and core) on the scenario tests' stand-in
kernel and probes, with its control socket, in a state worth alerting on: fibre UP and active at
85 % of its monthly quota, lte blackholed and DOWN. No root, no packets."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "scenario"))
from fakes import FakeKernel  # noqa: E402
from harness import FACTS  # noqa: E402
from test_shell import FAST, Running, until  # noqa: E402

from linkwatch.core.inputs import LinkCounters  # noqa: E402

QUOTA = 1_000_000  # fibre's quota in the config ("1MB")
USED = 850_000  # what its interface counters show: 85 %


def write_config(directory: Path) -> Path:
    """fibre (interface up1, quota 1MB) and lte (up2); the control socket in ``directory``."""
    path = directory / "linkwatch.toml"
    path.write_text(f'[control]\nsocket = "{directory}/control.sock"\n'
                    + FAST.replace("priority = 1\n", 'priority = 1\nquota = "1MB"\n', 1))
    return path


@contextlib.asynccontextmanager
async def faulty_router(path: Path):
    """The engine running, once lte is DOWN and fibre's bytes are counted; stopped on exit."""
    kernel = FakeKernel(FACTS)
    up1 = FACTS["up1"].ifindex
    kernel.counters[up1] = LinkCounters(0, 0, 0, 0)
    run = Running(path, kernel=kernel)
    async with run as engine:
        await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
        await asyncio.sleep(0.4)  # the counters' first reading is the base
        kernel.counters[up1] = LinkCounters(600, 400, USED - 300_000, 300_000)
        run.probes.silent.add(FACTS["up2"].address)  # lte's probes go unanswered
        await until(lambda: run.states()["lte"] == "DOWN", what="lte DOWN")
        await until(lambda: engine.status().uplink("fibre").month_bytes == USED, what="fibre's bytes")
        yield engine
