"""The control socket: JSON lines over a unix socket; bad input gets a clear error answer."""

import asyncio
import json
import os
import socket
import threading

import pytest

from linkwatch.report.control import MAX_LINE, ControlError, ControlServer, call


class Server:
    """A ControlServer on its own loop thread, answering with an echo handler."""

    def __init__(self, path, handler=None):
        self.path = str(path)
        self.seen = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def echo(req):
            self.seen.append(req)
            if req["cmd"] == "boom":
                raise RuntimeError("kaput")
            return {"ok": True, "echo": req}

        self.server = ControlServer(self.path, handler or echo, mode=0o600)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "ctl.sock")
    yield s
    s.close()


def raw(path, data: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_request_and_answer(server):
    assert call(server.path, {"cmd": "status"}) == {"ok": True, "echo": {"cmd": "status"}}
    assert oct(os.stat(server.path).st_mode & 0o777) == "0o600"


def test_several_requests_on_one_connection(server):
    answers = raw(server.path, b'{"cmd": "a"}\n{"cmd": "b"}\n')
    assert [a["echo"]["cmd"] for a in answers] == ["a", "b"]


@pytest.mark.parametrize("line, message", [
    (b"not json\n", "not valid JSON"),
    (b"[1, 2]\n", 'JSON object with a "cmd" string'),
    (b'{"command": "status"}\n', 'JSON object with a "cmd" string'),
    (b'{"cmd": 5}\n', 'JSON object with a "cmd" string'),
    (b"\xff\xfe\n", "not valid JSON"),
    (b"[" * 60000 + b"\n", "not valid JSON"),
])
def test_bad_requests_get_an_error_and_never_reach_the_handler(server, line, message):
    (answer,) = raw(server.path, line)
    assert answer["ok"] is False and message in answer["error"]
    assert server.seen == []


def test_handler_exception_becomes_an_error_answer_and_the_server_lives(server):
    (answer,) = raw(server.path, b'{"cmd": "boom"}\n')
    assert answer == {"ok": False, "error": "internal error: kaput"}
    assert call(server.path, {"cmd": "still-there"})["ok"]


def test_oversized_request_is_refused(server):
    answers = raw(server.path, b'{"cmd": "' + b"x" * (MAX_LINE + 10) + b'"}\n')
    assert answers and answers[0]["ok"] is False and "longer than" in answers[0]["error"]
    assert call(server.path, {"cmd": "after"})["ok"]


def test_second_server_on_a_live_socket_is_refused(server, tmp_path):
    with pytest.raises(ControlError, match="another engine answers"):
        Server(server.path)


def test_stale_socket_is_replaced_but_a_regular_file_is_not(tmp_path):
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # a dead engine's socket file
    srv = Server(stale)
    try:
        assert call(str(stale), {"cmd": "x"})["ok"]
    finally:
        srv.close()
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(ControlError, match="not a socket"):
        Server(regular)


def test_client_errors_are_clear(tmp_path):
    with pytest.raises(ControlError, match="no engine socket"):
        call(str(tmp_path / "missing.sock"), {"cmd": "status"})
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()
    with pytest.raises(ControlError, match="refuses connections"):
        call(str(dead), {"cmd": "status"})


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
def test_socket_group_lets_that_group_connect(tmp_path):
    import grp

    async def main():
        path = str(tmp_path / "g.sock")
        server = ControlServer(path, lambda req: None, mode=0o660, group="nogroup")
        await server.start()
        st = os.stat(path)
        await server.close()
        with pytest.raises(ControlError, match="group 'no-such-group' does not exist"):
            await ControlServer(path, lambda req: None, group="no-such-group").start()
        assert not os.path.exists(path), "a refused start leaves no socket behind"
        return st

    st = asyncio.run(main())
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid and st.st_mode & 0o777 == 0o660
