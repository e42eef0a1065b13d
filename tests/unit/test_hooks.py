"""HookSink: env (LINKWATCH_* and mwan3's ACTION/INTERFACE/DEVICE), ordering, skipping,
timeouts that kill the whole process group, failures logged, a missing directory tolerated."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from linkwatch.core.events import ActiveChanged, EngineEvent, QuotaReached, UplinkDampened, UplinkStateChanged
from linkwatch.sinks.hooks import (
    HOOK_PATH,
    KILL_GRACE,
    HookError,
    HookSink,
    hook_env,
    is_hook_name,
    list_hooks,
    mwan3_action,
)
from linkwatch.sinks.runner import SinkRunner


def change(old: str, new: str, **kw) -> UplinkStateChanged:
    fields = dict(at=1718000000.75, mono=50.0, uplink="wan1", interface="eth1", old=old, new=new,
                  reason="3 failed rounds", loss_pct=100.0, rtt_ms=None, jitter_ms=None)
    fields.update(kw)
    return UplinkStateChanged(**fields)


def write_hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new, action",
    [
        ("DOWN", "UP", "connected"),
        ("RISING", "UP", "connected"),
        ("INIT", "UP", "connected"),
        ("DISABLED", "UP", "connected"),
        ("UP", "DOWN", "disconnected"),
        ("FALLING", "DOWN", "disconnected"),
        ("INIT", "DOWN", "disconnected"),
        ("DEGRADED", "DOWN", "disconnected"),
        ("UP", "FALLING", None),
        ("FALLING", "UP", None),
        ("UP", "DEGRADED", None),
        ("DEGRADED", "UP", None),
        ("DOWN", "RISING", None),
        ("UP", "DISABLED", None),
    ],
)
def test_mwan3_action(old, new, action):
    assert mwan3_action(old, new) == action


def test_env_for_connected_has_mwan3_variables():
    env = hook_env(change("RISING", "UP", reason="3 good rounds", loss_pct=0.0, rtt_ms=12.34,
                          jitter_ms=1.25))
    assert env == {
        "PATH": HOOK_PATH,
        "LINKWATCH_EVENT": "uplink_state", "LINKWATCH_TIME": "1718000000", "LINKWATCH_FAMILY": "ipv4",
        "LINKWATCH_UPLINK": "wan1", "LINKWATCH_INTERFACE": "eth1",
        "LINKWATCH_OLD_STATE": "RISING", "LINKWATCH_STATE": "UP",
        "LINKWATCH_REASON": "3 good rounds", "LINKWATCH_LOSS_PCT": "0",
        "LINKWATCH_RTT_MS": "12.3", "LINKWATCH_JITTER_MS": "1.2",
        "ACTION": "connected", "INTERFACE": "wan1", "DEVICE": "eth1",
    }


def test_env_for_disconnected_and_unknown_numbers():
    env = hook_env(change("UP", "DOWN"))
    assert (env["ACTION"], env["INTERFACE"], env["DEVICE"]) == ("disconnected", "wan1", "eth1")
    assert env["LINKWATCH_LOSS_PCT"] == "100" and env["LINKWATCH_RTT_MS"] == ""


def test_env_without_action_for_other_changes():
    env = hook_env(change("UP", "FALLING"))
    assert env["LINKWATCH_STATE"] == "FALLING"
    assert not {"ACTION", "INTERFACE", "DEVICE"} & set(env)


def test_device_falls_back_to_the_uplinks_map():
    env = hook_env(change("DOWN", "UP", interface=""), uplinks={"wan1": "ppp0"})
    assert env["DEVICE"] == "ppp0" and env["LINKWATCH_INTERFACE"] == "ppp0"


def test_env_for_active_changed_and_engine():
    env = hook_env(ActiveChanged(5.9, 1.0, ("wan1",), ("wan2", "lte"), "wan1 DOWN"),
                   uplinks={"wan1": "eth1", "wan2": "eth2"})
    assert env["LINKWATCH_EVENT"] == "active_changed" and env["LINKWATCH_TIME"] == "5"
    assert env["LINKWATCH_ACTIVE"] == "wan2 lte" and env["LINKWATCH_OLD_ACTIVE"] == "wan1"
    assert env["LINKWATCH_ACTIVE_DEVICES"] == "eth2"
    assert "ACTION" not in env and "LINKWATCH_UPLINK" not in env
    env = hook_env(EngineEvent(7.0, 1.0, "error", "netlink socket closed"))
    assert (env["LINKWATCH_EVENT"], env["LINKWATCH_WHAT"], env["LINKWATCH_DETAIL"]) == (
        "engine", "error", "netlink socket closed")


def test_env_for_dampened_and_quota():
    env = hook_env(UplinkDampened(1718000000.2, 1.0, "wan1", True, 3.46), uplinks={"wan1": "eth1"})
    assert env == {"PATH": HOOK_PATH, "LINKWATCH_EVENT": "dampened", "LINKWATCH_TIME": "1718000000",
                   "LINKWATCH_UPLINK": "wan1", "LINKWATCH_INTERFACE": "eth1", "LINKWATCH_DAMPENED": "1",
                   "LINKWATCH_FLAP_PENALTY": "3.5"}
    env = hook_env(UplinkDampened(1718000000.2, 1.0, "wan1", False, 0.98))
    assert env["LINKWATCH_DAMPENED"] == "0" and env["LINKWATCH_FLAP_PENALTY"] == "1"
    assert "LINKWATCH_INTERFACE" not in env  # unknown device: unset, not empty
    env = hook_env(QuotaReached(1718000000.0, 1.0, "lte", 80, 16_000_000_123, 20_000_000_000),
                   uplinks={"lte": "wwan0"})
    assert env == {"PATH": HOOK_PATH, "LINKWATCH_EVENT": "quota", "LINKWATCH_TIME": "1718000000",
                   "LINKWATCH_UPLINK": "lte", "LINKWATCH_INTERFACE": "wwan0", "LINKWATCH_QUOTA_PCT": "80",
                   "LINKWATCH_MONTH_BYTES": "16000000123", "LINKWATCH_QUOTA_BYTES": "20000000000"}
    # mwan3's variables are for connected/disconnected only
    assert not {"ACTION", "INTERFACE", "DEVICE"} & set(env)


def test_hooks_run_for_dampening_and_quota_events_but_not_samples():
    sink = HookSink("/nonexistent")
    assert {"dampened", "quota"} <= sink.kinds and "samples" not in sink.kinds


@pytest.mark.parametrize(
    "name, ok",
    [("10-log", True), ("notify.sh", True), (".hidden", False), ("10-log~", False),
     ("10-log.dpkg-old", False), ("10-log.dpkg-dist", False), ("", False)],
)
def test_is_hook_name(name, ok):
    assert is_hook_name(name) is ok


def test_list_hooks_sorts_and_skips(tmp_path):
    for name in ("20-b", "10-a", ".hidden", "15-backup~", "16-x.dpkg-new"):
        write_hook(tmp_path, name, "true")
    write_hook(tmp_path, "17-noexec", "true", mode=0o644)
    (tmp_path / "18-dir").mkdir(mode=0o755)
    os.symlink(tmp_path / "10-a", tmp_path / "30-link")
    os.symlink(tmp_path / "nowhere", tmp_path / "40-dangling")
    hooks, not_executable, refused = list_hooks(str(tmp_path))
    assert (hooks, not_executable) == (["10-a", "20-b"], ["17-noexec"])
    assert [name for name, _ in refused] == ["30-link"]  # a link is refused: see test_hooks_safety.py


# --- running real scripts --------------------------------------------------------------------


def test_hooks_run_in_name_order_with_env_and_skips(tmp_path, monkeypatch):
    hooks, out = tmp_path / "hooks.d", tmp_path / "out"
    hooks.mkdir()
    out.mkdir()
    monkeypatch.setenv("LINKWATCH_TEST_LEAK", "must not reach hooks")
    for name in ("30-c", "10-a", "20-b"):
        write_hook(hooks, name, f'echo {name} >> {out}/order\nenv > {out}/{name}.env')
    for name in (".hidden", "15-a~", "16-a.dpkg-old"):
        write_hook(hooks, name, f"echo {name} >> {out}/order")
    write_hook(hooks, "17-noexec", f"echo 17-noexec >> {out}/order", mode=0o644)

    sink = HookSink(str(hooks), timeout=5, uplinks={"wan1": "eth1"})
    asyncio.run(sink.handle(change("UP", "DOWN")))

    assert (out / "order").read_text().split() == ["10-a", "20-b", "30-c"]
    env = read_env(out / "10-a.env")
    assert env["ACTION"] == "disconnected"
    assert env["INTERFACE"] == "wan1" and env["DEVICE"] == "eth1"
    assert env["LINKWATCH_EVENT"] == "uplink_state" and env["LINKWATCH_STATE"] == "DOWN"
    assert env["LINKWATCH_OLD_STATE"] == "UP" and env["LINKWATCH_REASON"] == "3 failed rounds"
    assert env["PATH"] == HOOK_PATH
    assert "LINKWATCH_TEST_LEAK" not in env and "HOME" not in env

    asyncio.run(sink.handle(change("DOWN", "UP")))
    env = read_env(out / "20-b.env")
    assert (env["ACTION"], env["INTERFACE"], env["DEVICE"]) == ("connected", "wan1", "eth1")

    asyncio.run(sink.handle(change("UP", "DEGRADED", reason="loss 64% > 40%")))
    env = read_env(out / "30-c.env")
    assert env["LINKWATCH_STATE"] == "DEGRADED" and "ACTION" not in env and "DEVICE" not in env


def _stat_fields(pid: str) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return rest[0], int(rest[2])  # state, process group


def live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are still alive (zombies count as dead)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat_fields(pid)
        if fields and fields[1] == pgid and fields[0] not in ("Z", "X"):
            out.append(int(pid))
    return out


async def _wait_for_file(path: Path, limit: float = 5.0) -> None:
    end = time.monotonic() + limit
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < end, f"{path} never appeared"
        await asyncio.sleep(0.01)


async def _wait_group_gone(pgid: int, limit: float = 3.0) -> list[int]:
    end = time.monotonic() + limit
    while (alive := live_group_members(pgid)) and time.monotonic() < end:
        await asyncio.sleep(0.02)
    return alive


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill"])
def test_timeout_kills_the_whole_process_group(tmp_path, caplog, ignore_term):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    trap = 'trap "" TERM; ' if ignore_term else ""
    # The hook starts a child (ignoring SIGTERM in the second case) and waits for it.
    write_hook(hooks, "10-hang", f"{trap}sleep 30 &\necho $! > {tmp_path}/child\n"
                                 f"echo $$ > {tmp_path}/leader\nwait")
    write_hook(hooks, "20-after", f"echo ran > {tmp_path}/after")
    sink = HookSink(str(hooks), timeout=0.5)

    async def main():
        task = asyncio.create_task(sink.handle(change("UP", "DOWN")))
        await _wait_for_file(tmp_path / "leader")
        await _wait_for_file(tmp_path / "child")
        pgid = int((tmp_path / "leader").read_text())
        child = int((tmp_path / "child").read_text())
        assert child in live_group_members(pgid)  # the group exists while the hook runs
        t0 = time.monotonic()
        with pytest.raises(HookError) as info:
            await task
        took = time.monotonic() - t0
        return pgid, took, str(info.value), await _wait_group_gone(pgid)

    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        pgid, took, err, alive = asyncio.run(main())
    assert alive == [], f"hook processes survived the timeout: {alive}"
    assert took < 0.5 + KILL_GRACE + 1.0
    if ignore_term:
        assert took >= KILL_GRACE * 0.9  # it needed the SIGKILL step
    assert "10-hang (timed out after 0.5s" in err and err.startswith("1 of 2")
    assert (tmp_path / "after").read_text().strip() == "ran"  # the next hook still ran
    assert any("10-hang" in r.getMessage() and "timed out" in r.getMessage() for r in caplog.records)


def test_cancelled_hook_is_killed_with_its_group(tmp_path):
    """The runner cancels a sink past its timeout; the hook and its children must die then."""
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    write_hook(hooks, "10-hang", f"sleep 30 &\necho $$ > {tmp_path}/leader\nwait")
    sink = HookSink(str(hooks), timeout=30)

    async def main():
        task = asyncio.create_task(sink.handle(change("UP", "DOWN")))
        await _wait_for_file(tmp_path / "leader")
        pgid = int((tmp_path / "leader").read_text())
        assert len(live_group_members(pgid)) >= 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await _wait_group_gone(pgid)

    assert asyncio.run(main()) == []


def test_nonzero_exit_and_stderr_are_logged(tmp_path, caplog):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    write_hook(hooks, "10-fail", "echo some detail\necho boom >&2\nexit 3")
    write_hook(hooks, "20-ok", f"echo fine; touch {tmp_path}/ok")
    sink = HookSink(str(hooks))
    with caplog.at_level(logging.DEBUG, logger="linkwatch.sinks.hooks"):
        with pytest.raises(HookError, match=r"1 of 2 hook\(s\) failed: 10-fail \(exit status 3\)"):
            asyncio.run(sink.handle(change("UP", "DOWN")))
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.WARNING, "hook 10-fail (uplink_state event): exit status 3") in logged
    assert (logging.WARNING, "hook 10-fail stderr: boom") in logged
    assert (logging.DEBUG, "hook 10-fail stdout: some detail") in logged
    assert (logging.DEBUG, "hook 20-ok stdout: fine") in logged
    assert (tmp_path / "ok").exists()


def test_long_output_is_truncated_in_the_log(tmp_path, caplog):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    write_hook(hooks, "10-chatty", "i=0; while [ $i -lt 200 ]; do echo line $i >&2; i=$((i+1)); done")
    sink = HookSink(str(hooks))
    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        asyncio.run(sink.handle(change("UP", "DOWN")))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hook 10-chatty stderr")]
    assert lines[0] == "hook 10-chatty stderr: line 0"
    assert len(lines) == 21 and "truncated" in lines[-1]


def test_background_job_does_not_hold_the_sink(tmp_path):
    """A hook that exits but leaves a job holding its stdout is done once it exits."""
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    write_hook(hooks, "10-bg", f"sleep 3 &\necho $! > {tmp_path}/bg\nexit 0")
    sink = HookSink(str(hooks), timeout=5)
    t0 = time.monotonic()
    asyncio.run(sink.handle(change("UP", "DOWN")))
    assert time.monotonic() - t0 < 1.5
    bg = int((tmp_path / "bg").read_text())
    os.kill(bg, 9)  # tidy up the job the test started


def test_unstartable_hook_is_reported(tmp_path, caplog):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    bad = hooks / "10-badshebang"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="linkwatch.sinks.hooks"):
        with pytest.raises(HookError, match="10-badshebang"):
            asyncio.run(HookSink(str(hooks)).handle(change("UP", "DOWN")))
    assert any("could not start" in r.getMessage() for r in caplog.records)


def test_missing_directory_is_fine_and_logged_once(tmp_path, caplog):
    sink = HookSink(str(tmp_path / "nope"))
    with caplog.at_level(logging.INFO, logger="linkwatch.sinks.hooks"):
        for _ in range(3):
            asyncio.run(sink.handle(change("UP", "DOWN")))
        assert sink.timeout > sink.script_timeout
    notes = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


def test_not_executable_is_logged_once(tmp_path, caplog):
    write_hook(tmp_path, "10-forgot-chmod", "true", mode=0o644)
    sink = HookSink(str(tmp_path))
    with caplog.at_level(logging.INFO, logger="linkwatch.sinks.hooks"):
        for _ in range(2):
            asyncio.run(sink.handle(change("UP", "DOWN")))
    notes = [r for r in caplog.records if "10-forgot-chmod" in r.getMessage()]
    assert len(notes) == 1 and "not executable" in notes[0].getMessage()


def test_sink_timeout_covers_every_hook(tmp_path):
    for name in ("10-a", "20-b", "30-c"):
        write_hook(tmp_path, name, "true")
    sink = HookSink(str(tmp_path), timeout=2)
    assert sink.timeout > 3 * 2


def test_bad_timeout_is_rejected():
    with pytest.raises(HookError, match="got 0"):
        HookSink("/nonexistent", timeout=0)


def test_hook_failures_show_in_runner_stats_and_do_not_block_other_sinks(tmp_path):
    write_hook(tmp_path, "10-fail", "exit 2")

    class Rec:
        name, timeout = "rec", 1.0

        def __init__(self):
            self.got = []

        async def handle(self, event):
            self.got.append(event)

        async def close(self):
            pass

    async def main():
        rec = Rec()
        runner = SinkRunner([HookSink(str(tmp_path)), rec])
        await runner.start()
        runner.publish(change("UP", "DOWN"))
        await runner.stop(drain_timeout=5)
        return rec.got, runner.stats()["hooks"]

    got, stats = asyncio.run(main())
    assert len(got) == 1
    assert stats["failed"] == 1 and "10-fail (exit status 2)" in stats["last_error"]


EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "hooks.d" / "10-log-example"


def test_shipped_example_hook_runs_for_every_event_kind(tmp_path, caplog):
    assert os.access(EXAMPLE, os.X_OK), "the example hook must be executable"
    (tmp_path / EXAMPLE.name).write_bytes(EXAMPLE.read_bytes())
    (tmp_path / EXAMPLE.name).chmod(0o755)
    sink = HookSink(str(tmp_path), timeout=5)
    events = [
        change("UP", "DOWN"),
        change("RISING", "UP", loss_pct=0.0, rtt_ms=9.5),
        ActiveChanged(1.0, 1.0, ("wan1",), ("wan2",), "wan1 DOWN"),
        EngineEvent(1.0, 1.0, "started"),
        UplinkDampened(1.0, 1.0, "wan1", True, 3.5),
        UplinkDampened(1.0, 1.0, "wan1", False, 0.9),
        QuotaReached(1.0, 1.0, "lte", 80, 16_000_000_000, 20_000_000_000),
    ]
    with caplog.at_level(logging.DEBUG, logger="linkwatch.sinks.hooks"):
        for e in events:
            asyncio.run(sink.handle(e))  # raises HookError on a non-zero exit
    out = [r.getMessage() for r in caplog.records]
    assert "hook 10-log-example stdout: uplink wan1 (eth1): UP -> DOWN loss_pct=100 rtt_ms=- " \
           "reason=3 failed rounds" in out
    assert "hook 10-log-example stdout: mwan3-style: wan1 (eth1) disconnected" in out
    assert "hook 10-log-example stdout: mwan3-style: wan1 (eth1) connected" in out
    assert "hook 10-log-example stdout: active: wan1 -> wan2 reason=wan1 DOWN" in out
    assert any(m.startswith("hook 10-log-example stdout: engine started") for m in out)
    assert "hook 10-log-example stdout: uplink wan1 is flapping (penalty 3.5): no traffic back for now" in out
    assert "hook 10-log-example stdout: uplink wan1 is stable again (penalty 0.9)" in out
    assert ("hook 10-log-example stdout: uplink lte: 80% of its monthly quota used (16000000000 of "
            "20000000000 bytes)") in out
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_ipv6_events_get_the_variables_of_their_ipv4_kin_and_the_family_but_no_mwan3_action():
    from linkwatch.core.events import Ipv6ActiveChanged, Ipv6StateChanged

    env = hook_env(Ipv6StateChanged(1718000000.5, 5.0, "wan1", "eth1", "UP", "DOWN", "3 failed rounds", 100.0,
                                    None, None))
    assert env["LINKWATCH_EVENT"] == "ipv6_state" and env["LINKWATCH_FAMILY"] == "ipv6"
    assert (env["LINKWATCH_UPLINK"], env["LINKWATCH_STATE"], env["LINKWATCH_INTERFACE"]) == ("wan1", "DOWN", "eth1")
    assert "ACTION" not in env, "mwan3's ACTION means the uplink itself went down"
    env = hook_env(Ipv6ActiveChanged(1718000000.5, 5.0, ("wan1",), ("wan2",), "wan2 healthy"), {"wan2": "eth2"})
    assert (env["LINKWATCH_ACTIVE"], env["LINKWATCH_ACTIVE_DEVICES"], env["LINKWATCH_FAMILY"]) == ("wan2", "eth2", "ipv6")
