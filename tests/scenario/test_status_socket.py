"""A read-only status socket beside the control socket (issue 14, item 6): monitoring tools and
users who may only look get [control] status_socket, which answers status and ping and refuses
every control (set, prefixes, reload); the control socket keeps its own group."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_shell import Running, until, write_config  # noqa: E402

from linkwatch.config import ConfigError, loads  # noqa: E402
from linkwatch.report.control import call  # noqa: E402


def test_the_status_socket_answers_status_and_refuses_controls(tmp_path):
    status_sock = tmp_path / "status.sock"
    path = write_config(tmp_path, f'status_socket = "{status_sock}"\nstatus_mode = "0666"\n')
    control_sock = str(tmp_path / "control.sock")

    async def scenario():
        run = Running(path)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            loop = asyncio.get_running_loop()

            def ask(sock, req):
                return loop.run_in_executor(None, call, sock, req)

            assert (status_sock.stat().st_mode & 0o777) == 0o666
            st = await ask(str(status_sock), {"cmd": "status"})
            assert st["ok"] and [u["name"] for u in st["status"]["uplinks"]] == ["fibre", "lte"]
            assert (await ask(str(status_sock), {"cmd": "ping"}))["ok"]
            for req in ({"cmd": "set", "uplink": "fibre", "action": "disable"}, {"cmd": "reload"},
                        {"cmd": "prefixes", "uplink": "fibre", "prefixes": None}):
                answer = await ask(str(status_sock), req)
                assert answer["ok"] is False and "read-only" in answer["error"] and control_sock in answer["error"]
            await asyncio.sleep(0.2)
            assert run.states() == {"fibre": "UP", "lte": "UP"} and engine.state.active == ("fibre",)
            done = await ask(control_sock, {"cmd": "set", "uplink": "fibre", "action": "disable"})
            assert done["ok"], done
            await until(lambda: run.states()["fibre"] == "DISABLED", what="the control socket still controls")
        assert not status_sock.exists(), "removed at stop"

    asyncio.run(scenario())


FAST_UPLINK = '[uplinks.a]\ninterface = "eth1"\n[[uplinks.a.probes]]\ntype = "icmp"\ntarget = "198.51.100.1"\n'


def test_status_socket_in_the_config():
    cfg = loads('[control]\nstatus_socket = "/run/linkwatch/status.sock"\nstatus_group = "adm"\n' + FAST_UPLINK)
    assert (cfg.control.status_socket, cfg.control.status_mode, cfg.control.status_group) == \
        ("/run/linkwatch/status.sock", 0o660, "adm")
    assert loads(FAST_UPLINK).control.status_socket is None  # off unless asked for
    with pytest.raises(ConfigError) as e:
        loads('[control]\nsocket = "/run/x.sock"\nstatus_socket = "/run/x.sock"\n' + FAST_UPLINK)
    assert "control.status_socket" in str(e.value) and "control.socket" in str(e.value)
    with pytest.raises(ConfigError) as e:
        loads('[control]\nstatus_socket = "status.sock"\n' + FAST_UPLINK)
    assert "control.status_socket" in str(e.value)


def test_a_status_group_the_engine_cannot_give_the_socket_to_costs_only_that_socket(tmp_path, monkeypatch, caplog):
    """[control] status_group names a group the engine's user is not in (the sample suggests "adm"):
    without CAP_CHOWN the chown fails. That took the whole engine down with a bare PermissionError
    (review); now the status socket is left out, with an error in the log that says why, and the
    engine runs. The same failure on the control socket is a clear start error (ControlError)."""
    import grp
    import logging
    import os

    from linkwatch.report.control import ControlError, ControlServer

    group = grp.getgrgid(os.getgid()).gr_name
    status_sock = tmp_path / "status.sock"
    path = write_config(tmp_path, f'status_socket = "{status_sock}"\nstatus_group = "{group}"\n')
    real_chown = os.chown

    def chown(p, uid, gid):
        if str(p) == str(status_sock):
            raise PermissionError(1, "Operation not permitted")
        return real_chown(p, uid, gid)

    monkeypatch.setattr(os, "chown", chown)

    async def scenario():
        run = Running(path)
        async with run:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="the engine runs all the same")
            assert not status_sock.exists()
            assert (await asyncio.get_running_loop().run_in_executor(
                None, call, str(tmp_path / "control.sock"), {"cmd": "ping"}))["ok"]
        server = ControlServer(str(status_sock), lambda req: None, 0o660, group)
        with pytest.raises(ControlError, match="must be a member of that group"):
            await server.start()
        assert not status_sock.exists(), "no socket left behind"

    with caplog.at_level(logging.ERROR, logger="linkwatch.engine"):
        asyncio.run(scenario())
    assert "no read-only status socket" in caplog.text and "Operation not permitted" in caplog.text
