"""The control socket against clients that hold its slots (issue 14, item 5)."""

from __future__ import annotations

import socket
import time

import pytest

from linkwatch.report import control
from linkwatch.report.control import MAX_CLIENTS, call
from tests.unit.test_control import Server

BIG = "x" * (1 << 20)  # one answer bigger than any socket buffer


@pytest.fixture
def big_server(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "WRITE_TIMEOUT", 0.5, raising=False)

    async def handler(req):
        return {"ok": True, "big": BIG} if req["cmd"] == "big" else {"ok": True}

    s = Server(tmp_path / "c.sock", handler)
    yield s
    s.close()


def test_clients_that_never_read_lose_their_slot(big_server):
    hogs = []
    try:
        for _ in range(MAX_CLIENTS):  # every slot: ask for a big answer, never read it
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(big_server.path)
            s.sendall(b'{"cmd": "big"}\n')
            hogs.append(s)
        time.sleep(0.2)
        deadline = time.monotonic() + 5.0
        answer = None
        while time.monotonic() < deadline:
            answer = call(big_server.path, {"cmd": "ping"}, timeout=1.0)
            if answer.get("ok"):
                break
            time.sleep(0.2)
        assert answer == {"ok": True}, f"still locked out after 5 s: {answer}"
    finally:
        for s in hogs:
            s.close()
