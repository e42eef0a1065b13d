"""A flood of reload requests on the control socket (issue 14, item 5): a burst of reload_burst
reloads, then one per reload_interval, the requests meanwhile coalesced; so the flood neither
keeps restarting the monitor nor writes an event per request (which would prune real audit
events from the history)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakes import FakeKernel, FakeProbes  # noqa: E402
from harness import FACTS  # noqa: E402
from test_shell import until, write_config  # noqa: E402

from linkwatch.config import load  # noqa: E402
from linkwatch.daemon.engine import Engine  # noqa: E402
from linkwatch.report.control import call  # noqa: E402


def reloads(caplog) -> int:
    return sum("config reloaded" in r.getMessage() for r in caplog.records)


def test_a_reload_flood_makes_a_burst_of_reloads_then_one_later(tmp_path, caplog):
    path = write_config(tmp_path)
    sock = str(tmp_path / "control.sock")

    async def scenario():
        engine = Engine(load(path), str(path), kernel=FakeKernel(FACTS), make_probes=FakeProbes(),
                        reload_interval=1.5, reload_burst=3)
        task = asyncio.create_task(engine.run())
        try:
            await until(lambda: engine.control is not None and engine.state.routing is not None, what="start")
            loop = asyncio.get_running_loop()
            start = time.monotonic()
            answers = []
            while time.monotonic() - start < 1.0:  # a flood for a second
                answers.append(await loop.run_in_executor(None, call, sock, {"cmd": "reload"}))
            assert len(answers) > 20 and all(a["ok"] for a in answers)
            await asyncio.sleep(0.1)
            assert reloads(caplog) == 3, "a burst of 3 at once, the rest wait"
            assert "too many reloads: it runs in" in answers[-1]["message"]
            await until(lambda: reloads(caplog) == 4, timeout=3.0, what="the coalesced reload")
            await asyncio.sleep(2.0)
            assert reloads(caplog) == 4, "no request came after it: no other reload"
        finally:
            engine.request_stop()
            await asyncio.wait_for(task, 10)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
