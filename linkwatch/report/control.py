"""The control socket: a unix stream socket speaking JSON lines.

Each request is one JSON object on one line, ``{"cmd": "status"}``; each answer is one line,
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The CLI, the web UI and the lab talk
to the engine only through it. Bad input of any kind gets an error answer; it never reaches the
engine's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
MAX_CLIENTS = 32
IDLE_TIMEOUT = 30.0
WRITE_TIMEOUT = 5.0  # a client that does not read its answer within this loses its connection (and slot)

Handler = Callable[[dict], Awaitable[dict]]


class ControlError(Exception):
    """The engine could not be asked (not running, socket missing, bad answer) or said no."""


def call(path: str, request: dict, timeout: float = 2.0) -> dict:
    """Send one request to the engine and return its answer (``ok`` checked by the caller)."""
    data = (json.dumps(request) + "\n").encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(data)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > 16 * MAX_LINE:
                    raise ControlError(f"answer from {path} is too large")
    except FileNotFoundError:
        raise ControlError(f"no engine socket at {path} (is `linkwatch run` running?)") from None
    except ConnectionRefusedError:
        raise ControlError(f"engine socket {path} refuses connections (stale socket? engine not running)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path} (need to be in the socket's group, or root)") from None
    except socket.timeout:
        raise ControlError(f"engine at {path} did not answer within {timeout:g}s") from None
    except OSError as e:
        raise ControlError(f"cannot talk to engine at {path}: {e.strerror or e}") from None
    try:
        answer = json.loads(buf)
    except ValueError:
        raise ControlError(f"engine at {path} sent a malformed answer") from None
    if not isinstance(answer, dict):
        raise ControlError(f"engine at {path} sent a malformed answer")
    return answer


def _socket_alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


class ControlServer:
    def __init__(self, path: str, handler: Handler, mode: int = 0o660, group: str | None = None, *,
                 commands: frozenset[str] | None = None, controls_at: str = ""):
        self.path = path
        self.handler = handler
        self.mode = mode
        self.group = group
        self.commands = commands  # None: every command; else a read-only socket's (status, ping)
        self.controls_at = controls_at  # where the other commands go, for the refusal
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlError(f"{self.path} exists and is not a socket; refusing to replace it")
            if _socket_alive(self.path):
                raise ControlError(f"another engine answers on {self.path}; refusing to start a second one")
            os.unlink(self.path)  # stale socket of a dead engine
        gid = -1
        if self.group is not None:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise ControlError(f"control socket group {self.group!r} does not exist") from None
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        try:
            if gid >= 0:
                os.chown(self.path, -1, gid)
            os.chmod(self.path, self.mode)
        except OSError as e:  # a group the engine's user is not in: no CAP_CHOWN to give it away
            await self.close()
            raise ControlError(f"cannot give {self.path} to group {self.group!r} with mode {self.mode:04o}: "
                               f"{e.strerror or e} (the engine's user must be a member of that group)") from None
        log.info("%s socket listening on %s", "control" if self.commands is None else "read-only status", self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._clients) >= MAX_CLIENTS:
            await self._send(writer, {"ok": False, "error": "too many clients"})
            writer.close()
            return
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (asyncio.TimeoutError, ConnectionError):
                    break
                except (asyncio.LimitOverrunError, ValueError):
                    await self._send(writer, {"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                    break
                if not line:
                    break
                if not await self._send(writer, await self.answer(line)):
                    break
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested input
            return {"ok": False, "error": f"request is not valid JSON: {str(e) or type(e).__name__}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be a JSON object with a "cmd" string'}
        if self.commands is not None and request["cmd"] not in self.commands:
            return {"ok": False, "error": f"{request['cmd'][:40]!r}: this socket is read-only "
                    f"({', '.join(sorted(self.commands))} only); controls go to {self.controls_at or 'the control socket'}"}
        try:
            return await self.handler(request)
        except Exception as e:  # the engine must survive any request
            log.exception("control request %r failed", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {e}"}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, answer: dict) -> bool:
        """Write one answer; False when the client is gone or does not read it within WRITE_TIMEOUT
        (the caller then drops it: a client that never reads must not hold a slot for ever)."""
        try:
            writer.write((json.dumps(answer) + "\n").encode())
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except ConnectionError:
            return False
        except TimeoutError:
            log.info("control client did not read its answer within %gs; disconnected", WRITE_TIMEOUT)
            writer.transport.abort()  # close() would wait to flush what it does not read
            return False
        return True
