"""keepalived's track file (issue 15): its value, the atomic write, no rewrite when unchanged, a
directory it cannot write (a clear error, the other sinks and the engine go on), its config key,
and the engine's process name keepalived's track_process looks for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

from linkwatch.config import ConfigError, loads
from linkwatch.core.events import EngineEvent, UplinkStateChanged
from linkwatch.sinks import build_sinks
from linkwatch.sinks.keepalived import (KeepalivedTrackSink, TrackFileError, read_value, track_value,
                                        write_atomically)
from linkwatch.sinks.runner import SinkRunner
from tests.statusdata import make_status, uplink_dict

CONFIG = """
[uplinks.fibre]
interface = "eth1"
[[uplinks.fibre.probes]]
type = "icmp"
target = "198.51.100.10"
"""


def status_with(*states: str):
    return make_status([uplink_dict(f"wan{i}", state=s) for i, s in enumerate(states, 1)])


def change(new: str = "DOWN") -> UplinkStateChanged:
    return UplinkStateChanged(at=1.7e9, mono=5.0, uplink="wan1", interface="eth1", old="UP", new=new, reason="test",
                              loss_pct=None, rtt_ms=None, jitter_ms=None)


class Holder:
    """The engine's status reader, with a status the test swaps."""

    def __init__(self, status):
        self.now = status

    def __call__(self):
        return self.now


@pytest.mark.parametrize("states, value", [
    (("UP",), 0), (("UP", "DOWN"), 0), (("DOWN", "FALLING"), 0), (("DEGRADED",), 0),
    (("DOWN", "DOWN"), 1), (("INIT", "INIT"), 1), (("RISING", "DISABLED"), 1), ((), 1),
])
def test_the_value_is_0_while_an_uplink_works_and_1_while_none_does(states, value):
    assert track_value(status_with(*states)) == value


def test_the_write_replaces_the_file_atomically_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "keepalived.track"
    path.write_text("0\n")
    inode = path.stat().st_ino
    os.link(path, tmp_path / "reader-holds-the-old-file")  # an open reader keeps the old inode
    write_atomically(str(path), 1)
    assert path.read_text() == "1\n"
    assert path.stat().st_ino != inode, "written in place, not renamed over"
    assert (tmp_path / "reader-holds-the-old-file").read_text() == "0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keepalived.track", "reader-holds-the-old-file"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_the_sink_writes_at_start_and_on_changes_only(tmp_path):
    path = str(tmp_path / "track")
    holder = Holder(status_with("INIT", "INIT"))
    sink = KeepalivedTrackSink(path, holder)

    async def run():
        await sink.handle(EngineEvent(1.7e9, 1.0, "started"))
        assert read_value(path) == 1  # a fresh engine knows no working uplink yet
        holder.now = status_with("UP", "INIT")
        await sink.handle(change("UP"))
        assert read_value(path) == 0
        inode = os.stat(path).st_ino
        holder.now = status_with("UP", "UP")
        await sink.handle(change("UP"))
        holder.now = status_with("FALLING", "DOWN")
        await sink.handle(change("FALLING"))
        assert os.stat(path).st_ino == inode, "rewritten although the value did not change"
        holder.now = status_with("DOWN", "DOWN")
        await sink.handle(change("DOWN"))
        assert read_value(path) == 1
        await sink.handle(EngineEvent(1.7e9, 9.0, "stopped"))
        assert read_value(path) == 1

    asyncio.run(run())
    assert sink.writes == 3
    assert sink.stats() == {"path": path, "value": 1, "writes": 3}


def test_a_new_sink_does_not_rewrite_a_file_that_already_holds_the_value(tmp_path):
    path = tmp_path / "track"
    path.write_text("0\n")
    inode = path.stat().st_ino
    sink = KeepalivedTrackSink(str(path), Holder(status_with("UP")))
    asyncio.run(sink.handle(EngineEvent(1.7e9, 1.0, "reloaded")))
    assert path.stat().st_ino == inode and sink.writes == 0


def test_a_deleted_file_is_written_again_on_the_next_event(tmp_path):
    path = tmp_path / "track"
    sink = KeepalivedTrackSink(str(path), Holder(status_with("UP")))
    asyncio.run(sink.handle(change("UP")))
    path.unlink()
    asyncio.run(sink.handle(change("UP")))
    assert path.read_text() == "0\n"


@pytest.mark.parametrize("where", ["missing directory", "a file as directory"])
def test_a_directory_it_cannot_write_is_a_clear_error_and_the_other_sinks_go_on(tmp_path, where, caplog):
    if where == "missing directory":
        path = tmp_path / "no-such-dir" / "track"
    else:
        (tmp_path / "plain").write_text("")
        path = tmp_path / "plain" / "track"
    with pytest.raises(TrackFileError, match=f"cannot write keepalived track file {path}"):
        write_atomically(str(path), 1)

    holder = Holder(status_with("DOWN"))
    track = KeepalivedTrackSink(str(path), holder)
    other = KeepalivedTrackSink(str(tmp_path / "other"), holder)
    other.name = "other"

    async def run():
        runner = SinkRunner([track, other])
        await runner.start()
        runner.publish(change())
        runner.publish(change())
        await asyncio.sleep(0.2)
        stats = runner.stats()
        await runner.stop()
        return stats

    stats = asyncio.run(run())
    assert stats["keepalived"]["failed"] == 2  # retried on the next event, not given up
    assert f"cannot write keepalived track file {path}" in stats["keepalived"]["last_error"]
    assert stats["other"]["handled"] == 2 and read_value(str(tmp_path / "other")) == 1
    assert any("sink keepalived: TrackFileError" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)


def test_the_config_key_turns_the_sink_on_and_empty_or_absent_leaves_it_off():
    on = loads('[keepalived]\ntrack_file = "/run/linkwatch/keepalived.track"\n' + CONFIG)
    assert on.keepalived.track_file == "/run/linkwatch/keepalived.track"
    sinks = build_sinks(on, lambda: status_with("UP"))
    assert [s.name for s in sinks if s.name == "keepalived"] == ["keepalived"]
    for text in ('[keepalived]\ntrack_file = ""\n' + CONFIG, CONFIG):
        off = loads(text)
        assert off.keepalived.track_file is None
        assert "keepalived" not in [s.name for s in build_sinks(off, lambda: status_with("UP"))]


def test_a_relative_track_file_is_refused_with_its_key_path():
    with pytest.raises(ConfigError) as caught:
        loads('[keepalived]\ntrack_file = "keepalived.track"\n' + CONFIG)
    [issue] = caught.value.issues
    assert "keepalived.track_file" in str(issue) and "absolute path" in str(issue)


def test_linkwatch_run_names_its_process_linkwatchd(tmp_path):
    """What keepalived's vrrp_track_process matches (the Name: of /proc/PID/status), set before
    the engine starts; the test's own process keeps its name (it runs in a child)."""
    config = tmp_path / "linkwatch.toml"
    config.write_text(CONFIG)
    script = textwrap.dedent(f"""
        import argparse, linkwatch.daemon.engine as engine
        class Fake:
            def __init__(self, *a): pass
            async def run(self):
                with open("/proc/self/status") as f:
                    print(next(line for line in f if line.startswith("Name:")).split()[1])
                return 0
        engine.Engine = Fake
        from linkwatch.commands.run import cmd_run
        raise SystemExit(cmd_run(argparse.Namespace(config={str(config)!r}, log_level="error")))
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "linkwatchd"
    with open("/proc/self/comm") as f:
        assert f.read().strip() != "linkwatchd"


def test_a_failed_write_is_retried_without_waiting_for_another_event(tmp_path, monkeypatch):
    """Review of issue 15: the write of "1" failed when the last uplink died (a full /var, a missing
    directory) and was retried only on the next event, which may be hours away: keepalived kept
    reading 0 and the router without uplinks kept the gateway."""
    monkeypatch.setattr(KeepalivedTrackSink, "RETRY_AFTER", (0.05, 0.1))
    directory = tmp_path / "later"
    path = directory / "track"
    sink = KeepalivedTrackSink(str(path), Holder(status_with("DOWN")))

    async def run():
        with pytest.raises(TrackFileError):
            await sink.handle(change())
        await asyncio.sleep(0.3)
        assert not path.exists() and sink.writes == 0, "still failing: retried, no file"
        directory.mkdir()  # the directory is there now; no event comes
        for _ in range(50):
            if path.exists():
                break
            await asyncio.sleep(0.05)
        await sink.close()

    asyncio.run(run())
    assert path.read_text() == "1\n" and sink.writes == 1


def test_a_reload_that_changes_the_track_file_moves_the_sink_to_the_new_path(tmp_path):
    """Review of issue 15: a reload rebuilt the sinks only for hooks, history, SNMP and the uplinks:
    a new track_file path was accepted and never written (keepalived reads a missing file as 0)."""
    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "scenario")))
    from fakes import FakeKernel  # noqa: E402
    from harness import FACTS  # noqa: E402
    from test_shell import Running, until, write_config  # noqa: E402

    first, second = tmp_path / "a.track", tmp_path / "b.track"

    async def scenario():
        path = write_config(tmp_path, f'[keepalived]\ntrack_file = "{first}"\n')
        run = Running(path, kernel=FakeKernel(FACTS))
        async with run as engine:
            await until(lambda: read_value(str(first)) == 0, what="a.track at 0")
            path.write_text(path.read_text().replace(str(first), str(second)))
            engine.request_reload()
            await until(lambda: read_value(str(second)) == 0, what="b.track written after the reload")
            run.probes.silent.update(f.address for f in FACTS.values())  # every uplink dies
            await until(lambda: read_value(str(second)) == 1, timeout=10.0, what="b.track at 1")
    asyncio.run(scenario())


def test_a_restarted_engine_says_1_before_keepalived_can_see_it(tmp_path):
    """Review of issue 15: the process took the name keepalived tracks before the sink wrote "1",
    so for a moment a restarted router showed its crashed predecessor's 0 with full priority (on
    a slow Pi long enough to take the gateway back before proving an uplink)."""
    track = tmp_path / "track"
    track.write_text("0\n")  # what the crashed engine left
    config = tmp_path / "linkwatch.toml"
    config.write_text(f'[keepalived]\ntrack_file = "{track}"\n' + CONFIG)
    script = textwrap.dedent(f"""
        import argparse, linkwatch.daemon.procname as procname
        def named():
            print(open({str(track)!r}).read().strip())  # what keepalived reads when it first sees us
            raise SystemExit(0)
        procname.set_process_name = named
        from linkwatch.commands.run import cmd_run
        cmd_run(argparse.Namespace(config={str(config)!r}, log_level="error"))
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
