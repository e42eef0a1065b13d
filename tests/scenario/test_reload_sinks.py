"""A reload rebuilds the sinks when a sink's section changed: [keepalived] (its track file) and
[mqtt] (tests/integration/test_mqtt_broker.py changes its CA by a reload), not otherwise."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_shell import Running, until, write_config  # noqa: E402


def test_a_reload_that_moves_the_keepalived_track_file_writes_the_new_one(tmp_path):
    first, second = tmp_path / "a.track", tmp_path / "b.track"
    config = write_config(tmp_path, f'[keepalived]\ntrack_file = "{first}"\n')

    async def scenario():
        run = Running(config)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await until(lambda: first.exists() and first.read_text().strip() == "0", what="the first track file")
            before = engine.sinks.sink("keepalived")
            assert before is not None
            config.write_text(config.read_text().replace(str(first), str(second)))
            engine.request_reload()
            await until(lambda: second.exists() and second.read_text().strip() == "0", what="the new track file")
            assert engine.sinks.sink("keepalived") is not before
            same = engine.sinks.sink("keepalived")
            engine.request_reload()  # nothing changed: the same sinks go on
            await until(lambda: engine.status().sinks["log"].handled >= 1, what="the reload's event")
            await asyncio.sleep(0.3)
            assert engine.sinks.sink("keepalived") is same

    asyncio.run(scenario())
