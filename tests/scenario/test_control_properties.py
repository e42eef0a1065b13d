"""Property-based tests of the control protocol (hypothesis, issue 14): one engine (the I/O shell with
a stand-in kernel and probes) runs in a thread; random requests (random commands and fields of every
JSON type) and random bytes go to its control socket. Every line gets one answer that is a JSON object
with a boolean "ok" and, when false, an "error" text; no request reaches the "internal error" path or
logs a traceback; a refused request leaves the routes as they were; the engine answers ping
afterwards and its main task is still running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_shell import Running, until, write_config  # noqa: E402

from linkwatch.report.control import call  # noqa: E402

PROPERTY = settings(max_examples=int(os.environ.get("LW_PROPERTY_EXAMPLES", "150")) // 2, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ACTIONS = ("disable", "enable", "force", "auto")  # admin actions that may move traffic

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20),
              st.sampled_from(["fibre", "lte", "198.51.100.0/24", "10.0.0.0/8", "::/0", "cli", "web:x@1.2.3.4"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=5)

commands = st.one_of(st.sampled_from(["status", "set", "prefixes", "ping", "nope", "", "STATUS"]), st.text(max_size=50))


@st.composite
def requests(draw) -> dict:
    req = {"cmd": draw(commands)}
    for key in ("uplink", "action", "prefixes", "source"):
        if draw(st.booleans()):
            req[key] = draw(json_values)
    if req.get("action") in ACTIONS and req.get("uplink") in ("fibre", "lte"):
        req["action"] = req["action"] + "?"  # a real admin action moves traffic: not what this test is about
    req.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return req


class Live:
    """The engine running in the main thread's event loop (it sets signal handlers); ``drive(check)``
    runs a synchronous hypothesis test in a worker thread against it."""

    def __init__(self, run: Running):
        self.run = run

    @property
    def socket(self) -> str:
        return self.run.engine.config.control.socket

    def routes(self):
        return self.run.kernel.applied[-1] if self.run.kernel.applied else None

    def alive(self) -> bool:
        return self.run.task is not None and not self.run.task.done()


def drive(tmp_path, check) -> None:
    async def scenario():
        run = Running(write_config(tmp_path))
        async with run:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await asyncio.to_thread(check, Live(run))
    asyncio.run(scenario())


class Tracebacks(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record):
        if record.exc_info or record.levelno >= logging.ERROR:
            self.seen.append(record.getMessage())


@pytest.fixture
def tracebacks():
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def check_answer(answer, what) -> None:
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), f"{what}: answer {answer!r}"
    if not answer["ok"]:
        assert isinstance(answer.get("error"), str) and answer["error"], f"{what}: no error text in {answer!r}"
        assert not answer["error"].startswith("internal error"), f"{what}: the handler raised: {answer['error']}"


def test_random_requests_get_clear_answers_and_leave_the_routes(tmp_path, tracebacks):
    drive(tmp_path, lambda engine: random_requests(engine, tracebacks))


@PROPERTY
@given(req=requests())
def random_requests(engine, tracebacks, req):
    before = engine.routes()
    answer = call(engine.socket, req, timeout=5.0)
    check_answer(answer, f"request {req!r}")
    if not answer["ok"]:
        assert engine.routes() == before, f"refused request {req!r} changed the routes"
    assert engine.alive() and call(engine.socket, {"cmd": "ping"})["ok"]
    assert tracebacks.seen == [], tracebacks.seen


def test_random_bytes_get_one_answer_a_line(tmp_path, tracebacks):
    drive(tmp_path, lambda engine: random_bytes(engine, tracebacks))


@PROPERTY
@given(data=st.lists(st.binary(min_size=1, max_size=300).filter(lambda b: b"\n" not in b), min_size=1, max_size=4))
def random_bytes(engine, tracebacks, data):
    before = engine.routes()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(engine.socket)
        s.sendall(b"".join(line + b"\n" for line in data))
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    lines = received.splitlines()
    assert len(lines) == len(data), f"{len(data)} lines sent, {len(lines)} answers: {received[:300]!r}"
    for sent, line in zip(data, lines):
        check_answer(json.loads(line), f"line {sent!r}")
    moved = [json.loads(x) for x in lines if json.loads(x).get("ok") and json.loads(x).get("active") is not None]
    if not moved:
        assert engine.routes() == before
    assert engine.alive() and call(engine.socket, {"cmd": "ping"})["ok"]
    assert tracebacks.seen == [], tracebacks.seen
