"""Hook scripts: run every executable in a directory for each event (mwan3-compatible).

Hooks run with the engine's capabilities, so a hook, or the directory itself, that is a symbolic
link, group- or world-writable, or owned by anyone but root or the engine's user is refused, with
a WARNING naming it and why (the other hooks still run; an unsafe directory runs none).

For each event, every executable regular file in the hook directory runs, one after the other,
sorted by name (hidden files, editor backups ``*~`` and ``*.dpkg-*`` leftovers are skipped). Each
gets ``timeout`` seconds; on timeout its whole process group is killed (SIGTERM, then SIGKILL).
stdin is /dev/null; stdout is logged at DEBUG and stderr at WARNING (truncated). A hook may start
background jobs, but once it exits their output is no longer captured.

Environment: a minimal ``PATH`` plus (only the variables that apply to the event kind):

=========================  ====================================================================
LINKWATCH_EVENT            uplink_state, active_changed, engine, admin, dampened, quota, or for
                           an uplink's IPv6 side ipv6_state and ipv6_active, with the variables of
                           uplink_state and active_changed (samples events run no hooks)
LINKWATCH_FAMILY           ipv4 (uplink_state, active_changed) or ipv6 (ipv6_state, ipv6_active):
                           e.g. deprecate a dead uplink's delegated prefix in radvd on ipv6_state
LINKWATCH_TIME             wall-clock time of the event, integer epoch seconds
LINKWATCH_REASON           why (uplink_state, active_changed)
LINKWATCH_UPLINK           uplink name (uplink_state, admin, dampened, quota)
LINKWATCH_INTERFACE        its Linux device (uplink_state; dampened and quota when known)
LINKWATCH_OLD_STATE        INIT UP FALLING DOWN RISING DEGRADED DISABLED (uplink_state)
LINKWATCH_STATE            the new state (uplink_state)
LINKWATCH_LOSS_PCT         loss in percent, empty when unknown (uplink_state)
LINKWATCH_RTT_MS           average RTT in ms, empty when unknown (uplink_state)
LINKWATCH_JITTER_MS        jitter in ms, empty when unknown (uplink_state)
LINKWATCH_ACTIVE           uplinks now carrying traffic, space-separated (active_changed)
LINKWATCH_OLD_ACTIVE       uplinks that carried it before (active_changed)
LINKWATCH_ACTIVE_DEVICES   devices of LINKWATCH_ACTIVE that are known (active_changed)
LINKWATCH_WHAT             started, stopped, reloaded or reload_failed (engine)
LINKWATCH_DETAIL           free text (engine)
LINKWATCH_ACTION           disable, enable, force or auto (admin)
LINKWATCH_SOURCE           who acted: cli, web:<user>@<address>, ... (admin)
LINKWATCH_RESULT           what the action did (admin)
LINKWATCH_DAMPENED         1: the uplink kept failing and is dampened (shown as flapping: it takes no
                           traffic back until its flap penalty decays); 0: no longer (dampened)
LINKWATCH_FLAP_PENALTY     the flap penalty now, e.g. 3.5 (dampened)
LINKWATCH_QUOTA_PCT        the threshold of the monthly quota reached, in percent: 80, 100 (quota)
LINKWATCH_MONTH_BYTES      bytes received + sent on the uplink's interface this month (quota)
LINKWATCH_QUOTA_BYTES      the monthly quota in bytes (quota)
ACTION                     mwan3: ``connected`` (UP from INIT/DOWN/RISING/DISABLED) or
                           ``disconnected`` (became DOWN); unset for every other change
INTERFACE, DEVICE          mwan3: the uplink name and its Linux device; set only with ACTION
=========================  ====================================================================
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from dataclasses import dataclass
from typing import Mapping

from linkwatch.core.events import (ActiveChanged, AdminAction, EngineEvent, Event, Ipv6ActiveChanged,
                                   Ipv6StateChanged, QuotaReached, UplinkDampened, UplinkStateChanged)
from linkwatch.core.states import State, usable
from linkwatch.sinks.log import fmt_num

log = logging.getLogger(__name__)

HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL to a timed-out hook's process group
REAP_LIMIT = 1.0  # seconds to wait for the hook to be reaped after SIGKILL
OUTPUT_GRACE = 0.2  # seconds to wait for the pipes to close once the hook has exited
CAPTURE_LIMIT = 64 * 1024  # bytes kept per stream; the rest is counted, not stored
LOG_LINES = 20  # lines logged per stream
LOG_LINE_CHARS = 500  # characters logged per line


class HookError(Exception):
    """Bad hook set-up, or one or more hooks failed for an event (the message names them)."""


# --- pure helpers --------------------------------------------------------------------------


def is_hook_name(name: str) -> bool:
    """False for names run-parts style tools skip: hidden, ``*~`` backups, ``*.dpkg-*`` files."""
    return (
        bool(name) and not name.startswith(".") and not name.endswith("~") and ".dpkg-" not in name
    )


def mwan3_action(old: str, new: str) -> str | None:
    """mwan3's ACTION for a state change: ``connected``, ``disconnected`` or None."""
    if new == State.UP and not usable(old):
        return "connected"
    if new == State.DOWN and old != State.DOWN:
        return "disconnected"
    return None


def hook_env(ev: Event, uplinks: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment hooks get for ``ev`` (see the module docstring)."""
    uplinks = uplinks or {}
    env = {"PATH": HOOK_PATH, "LINKWATCH_EVENT": ev.kind, "LINKWATCH_TIME": str(int(ev.at))}
    if isinstance(ev, (Ipv6StateChanged, Ipv6ActiveChanged)):
        env["LINKWATCH_FAMILY"] = "ipv6"
    elif isinstance(ev, (UplinkStateChanged, ActiveChanged)):
        env["LINKWATCH_FAMILY"] = "ipv4"
    if isinstance(ev, (UplinkStateChanged, Ipv6StateChanged)):
        device = ev.interface or uplinks.get(ev.uplink, "")
        env.update(
            LINKWATCH_UPLINK=ev.uplink,
            LINKWATCH_INTERFACE=device,
            LINKWATCH_OLD_STATE=ev.old,
            LINKWATCH_STATE=ev.new,
            LINKWATCH_REASON=ev.reason,
            LINKWATCH_LOSS_PCT=fmt_num(ev.loss_pct, missing=""),
            LINKWATCH_RTT_MS=fmt_num(ev.rtt_ms, missing=""),
            LINKWATCH_JITTER_MS=fmt_num(ev.jitter_ms, missing=""),
        )
        action = mwan3_action(ev.old, ev.new) if isinstance(ev, UplinkStateChanged) else None
        if action is not None:
            env.update(ACTION=action, INTERFACE=ev.uplink, DEVICE=device)
    elif isinstance(ev, (ActiveChanged, Ipv6ActiveChanged)):
        env.update(
            LINKWATCH_ACTIVE=" ".join(ev.new),
            LINKWATCH_OLD_ACTIVE=" ".join(ev.old),
            LINKWATCH_ACTIVE_DEVICES=" ".join(uplinks[n] for n in ev.new if n in uplinks),
            LINKWATCH_REASON=ev.reason,
        )
    elif isinstance(ev, EngineEvent):
        env.update(LINKWATCH_WHAT=ev.what, LINKWATCH_DETAIL=ev.detail)
    elif isinstance(ev, AdminAction):
        env.update(LINKWATCH_ACTION=ev.action, LINKWATCH_UPLINK=ev.uplink, LINKWATCH_SOURCE=ev.source,
                   LINKWATCH_RESULT=ev.result)
    elif isinstance(ev, (UplinkDampened, QuotaReached)):
        env.update(LINKWATCH_UPLINK=ev.uplink)
        if ev.uplink in uplinks:
            env.update(LINKWATCH_INTERFACE=uplinks[ev.uplink])
        if isinstance(ev, UplinkDampened):
            env.update(LINKWATCH_DAMPENED="1" if ev.dampened else "0", LINKWATCH_FLAP_PENALTY=fmt_num(ev.penalty))
        else:
            env.update(LINKWATCH_QUOTA_PCT=str(ev.percent), LINKWATCH_MONTH_BYTES=str(ev.used),
                       LINKWATCH_QUOTA_BYTES=str(ev.quota))
    return env


def unsafe(st: os.stat_result, owners: tuple[int, ...]) -> str | None:
    """Why a hook or the hook directory with this (l)stat must not be run, or None. Hooks run with
    the engine's capabilities: whoever can change one (or the directory) could act as the engine."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link (copy the script into the directory instead)"
    if st.st_uid not in owners:
        return f"it is owned by uid {st.st_uid}, not by root or the engine's user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o}; chmod go-w)"
    return None


def list_hooks(directory: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(hooks to run, sorted by name; names skipped because they are not executable; (name, why)
    of hooks refused as :func:`unsafe`). Only root and the engine's own user may own a hook.

    Raises OSError when the directory cannot be listed (FileNotFoundError when missing)."""
    owners = tuple({0, os.geteuid()})
    hooks: list[str] = []
    not_executable: list[str] = []
    refused: list[tuple[str, str]] = []
    for name in sorted(os.listdir(directory)):
        if not is_hook_name(name):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if not (stat.S_ISREG(os.stat(path).st_mode)):
                continue
        except OSError:  # dangling symlink, raced deletion
            continue
        why = unsafe(st, owners)
        if why is not None:
            refused.append((name, why))
        else:
            (hooks if os.access(path, os.X_OK) else not_executable).append(name)
    return hooks, not_executable, refused


def directory_problem(directory: str) -> str | None:
    """Why no hook in ``directory`` may run (see :func:`unsafe`), or None. OSError as os.lstat.

    The path itself is checked with lstat: a symbolic link is refused (whoever can re-point it
    chooses what runs), even one to a safe directory; otherwise the directory's owner and mode."""
    return unsafe(os.lstat(directory.rstrip("/") or "/"), tuple({0, os.geteuid()}))


# --- running one hook ----------------------------------------------------------------------


@dataclass(frozen=True)
class HookResult:
    """How one hook run ended."""

    name: str
    returncode: int | None = None
    timed_out: bool = False
    error: str | None = None  # could not start
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_total: int = 0  # bytes written, including what was not kept
    stderr_total: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and self.returncode == 0

    def describe(self, timeout: float) -> str:
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.timed_out:
            return f"timed out after {timeout:g}s, process group killed"
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exit status {self.returncode}"


class _Capture(asyncio.Protocol):
    """Reads one pipe, keeping at most ``limit`` bytes."""

    def __init__(self, limit: int):
        self.data = bytearray()
        self.total = 0
        self.limit = limit
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += data[:room]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _terminate_group(proc: asyncio.subprocess.Process) -> int | None:
    """SIGTERM the hook's process group, then SIGKILL it (children that ignore TERM too)."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE)
    except TimeoutError:
        pass
    finally:  # also when cancelled meanwhile
        _signal_group(proc.pid, signal.SIGKILL)
    try:
        return await asyncio.wait_for(proc.wait(), REAP_LIMIT)
    except TimeoutError:
        return None


async def run_hook(path: str, env: Mapping[str, str], timeout: float) -> HookResult:
    """Run one hook in its own session; never raises except CancelledError (which kills it)."""
    name = os.path.basename(path)
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    readers = [os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0)]
    transports: list[asyncio.BaseTransport] = []
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                path, stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                env=dict(env), cwd="/", start_new_session=True,
            )
        except OSError as exc:
            return HookResult(name, error=f"{type(exc).__name__}: {exc}")
        finally:
            os.close(out_w)
            os.close(err_w)
        out, err = _Capture(CAPTURE_LIMIT), _Capture(CAPTURE_LIMIT)
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                for f, capture in zip(readers, (out, err)):
                    transport, _ = await loop.connect_read_pipe(lambda c=capture: c, f)
                    transports.append(transport)
                rc: int | None = await proc.wait()
        except TimeoutError:
            timed_out = True
            rc = await _terminate_group(proc)
        except BaseException:  # cancelled (the sink's own timeout, stop()) or a bug: no orphans
            _signal_group(proc.pid, signal.SIGKILL)
            raise
        # Output written before exit is in the pipes; a background job may keep them open.
        await asyncio.wait([out.closed, err.closed], timeout=OUTPUT_GRACE)
        return HookResult(
            name, returncode=rc, timed_out=timed_out, stdout=bytes(out.data),
            stderr=bytes(err.data), stdout_total=out.total, stderr_total=err.total,
        )
    finally:
        for transport in transports:
            transport.close()
        for f in readers:
            f.close()


def _log_output(name: str, stream: str, data: bytes, total: int, level: int) -> None:
    if not data or not log.isEnabledFor(level):
        return
    lines = data.decode("utf-8", errors="replace").splitlines()
    for line in lines[:LOG_LINES]:
        if len(line) > LOG_LINE_CHARS:
            line = line[:LOG_LINE_CHARS] + "..."
        log.log(level, "hook %s %s: %s", name, stream, line)
    if len(lines) > LOG_LINES or total > len(data):
        log.log(level, "hook %s %s: ... truncated (%d bytes in all)", name, stream, total)


# --- the sink ------------------------------------------------------------------------------


class HookSink:
    """Runs the hook directory for every event (see the module docstring)."""

    def __init__(
        self, directory: str, timeout: float = 10.0, uplinks: Mapping[str, str] | None = None
    ):
        if not timeout > 0:
            raise HookError(f"hook timeout must be > 0 seconds, got {timeout!r}")
        self.name = "hooks"
        self.kinds = frozenset({"uplink_state", "active_changed", "engine", "admin", "dampened", "quota",
                                "ipv6_state", "ipv6_active"})  # not samples
        self.directory = os.path.abspath(directory)
        self.script_timeout = float(timeout)
        self.uplinks = dict(uplinks or {})
        self._dir_problem: str | None = None  # last directory problem logged
        self._not_executable_logged: set[str] = set()
        self._refused_logged: set[tuple[str, str]] = set()

    @property
    def timeout(self) -> float:
        """Time allowed per event: every hook's timeout plus the kill and output grace times."""
        per_hook = self.script_timeout + KILL_GRACE + REAP_LIMIT + OUTPUT_GRACE
        return max(1, len(self._scan())) * per_hook + 1.0

    def _scan(self) -> list[str]:
        try:
            problem = directory_problem(self.directory)
            if problem is not None:
                self._note_dir_problem(problem, logging.WARNING, "hook directory %s refused: %s; no hooks run",
                                       problem)
                return []
            hooks, not_executable, refused = list_hooks(self.directory)
        except FileNotFoundError:
            self._note_dir_problem(
                "missing", logging.INFO, "hook directory %s does not exist; no hooks run"
            )
            return []
        except OSError as exc:
            self._note_dir_problem(str(exc), logging.WARNING, "hook directory %s unusable: %s", exc)
            return []
        self._dir_problem = None
        for name in not_executable:
            if name not in self._not_executable_logged:
                self._not_executable_logged.add(name)
                log.info("hook %s in %s is not executable; skipped", name, self.directory)
        for name, why in refused:
            if (name, why) not in self._refused_logged:
                self._refused_logged.add((name, why))
                log.warning("hook %s in %s refused: %s", name, self.directory, why)
        return hooks

    def _note_dir_problem(self, problem: str, level: int, msg: str, *args: object) -> None:
        if self._dir_problem != problem:
            self._dir_problem = problem
            log.log(level, msg, self.directory, *args)

    async def handle(self, event: Event) -> None:
        """Run every hook for ``event``; raise HookError naming the hooks that failed."""
        hooks = self._scan()
        if not hooks:
            return
        env = hook_env(event, self.uplinks)
        failures = []
        for name in hooks:
            result = await run_hook(os.path.join(self.directory, name), env, self.script_timeout)
            _log_output(name, "stdout", result.stdout, result.stdout_total, logging.DEBUG)
            _log_output(name, "stderr", result.stderr, result.stderr_total, logging.WARNING)
            if not result.ok:
                why = result.describe(self.script_timeout)
                log.warning("hook %s (%s event): %s", name, event.kind, why)
                failures.append(f"{name} ({why})")
        if failures:
            raise HookError(
                f"{len(failures)} of {len(hooks)} hook(s) failed: {', '.join(failures)}"
            )

    async def close(self) -> None:
        return None
