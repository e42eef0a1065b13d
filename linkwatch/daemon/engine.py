"""The engine's I/O shell: tasks, sockets, timers, the kernel, the sinks, the SNMP agent.

Every decision is made by the pure core (:func:`linkwatch.core.engine.step`). This module only
turns what happens into the core's inputs, with the time of its one :class:`Clock`, and carries
out the core's outputs, always in the same order: forget stale neighbour entries, make the
kernel's routing equal the plan, publish the events, then flush the conntrack entries of uplinks
that lost their traffic. One task does that work, so kernel changes never overlap and events reach
the sinks only after the routes they announce are in place. Every netlink call runs off the event
loop; sinks cannot delay a failover (their queues never block).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from typing import Any

from linkwatch import __version__
from linkwatch.config import Config, ConfigError, load
from linkwatch.core.engine import EngineState, Outputs, initial_state, probe_plans, reload_refusal, routing_params, step
from linkwatch.core.inputs import (
    AdminRequest,
    FactsChanged,
    Input,
    Now,
    PeriodEnd,
    ProbeTrouble,
    Reload,
    ReloadFailed,
    RoundDone,
    Start,
    Stop,
    Tick,
)
from linkwatch.core.status import FlushReport, ShellReport, SinkStats, SnmpStatus, Status, build_status
from linkwatch.daemon.probing import MakeProbes, Prober
from linkwatch.daemon.sdnotify import Notifier
from linkwatch.kernel import Kernel
from linkwatch.probes import make_probes
from linkwatch.report.control import ControlServer
from linkwatch.sinks import build_sinks
from linkwatch.sinks.runner import SinkRunner

log = logging.getLogger("linkwatch.engine")

REPAIR_INTERVAL = 2.0  # re-check the kernel for deleted/changed owned objects this often
SETTLE_TIMEOUT = 2.0  # an admin request waits at most this long for its routes before answering
SINK_DRAIN = 30.0  # a reload's old sinks get this long to deliver what they hold
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Clock:
    """The engine's one clock: monotonic time for decisions, wall time to stamp events."""

    def now(self) -> Now:
        return Now(time.monotonic(), time.time())


class Engine:
    """Runs the core against the real world. ``kernel``, ``make_probes`` and ``clock`` may be
    replaced (tests run the whole shell without root that way)."""

    def __init__(self, config: Config, config_path: str | None = None, *, kernel: Any = None,
                 make_probes: MakeProbes = make_probes, clock: Any = None):
        self.config_path = config_path
        self.clock = clock or Clock()
        self.kernel = kernel if kernel is not None else Kernel(routing_params(config))
        self.make_probes = make_probes
        self.state: EngineState = initial_state(config)
        self.sinks: SinkRunner | None = None
        self.control: ControlServer | None = None
        self.agent: Any = None  # the SNMP agent, when [snmp.agent] is enabled
        self.agent_error: str | None = None
        self.notifier = Notifier()  # systemd Type=notify and WatchdogSec (no-op outside systemd)
        self.last_apply_ms: float | None = None
        self.flushes: deque[FlushReport] = deque(maxlen=20)
        self._probers: dict[str, Prober] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()  # flushes, old sinks draining
        self._pending: list[Outputs] = []  # outputs not carried out yet, oldest first
        self._applied: Any = None  # the routing last applied without errors
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._lock = asyncio.Lock()  # one carry-out at a time
        self._recheck: asyncio.TimerHandle | None = None
        self._recheck_at: float | None = None
        self._wakeup = asyncio.Event()
        self._stop = False
        self._reload = False
        self._last_ping = 0.0

    @property
    def config(self) -> Config:
        return self.state.config

    # ---- feeding the core ----------------------------------------------------------------------

    def feed(self, inp: Input) -> Outputs:
        """One step of the core; its outputs are carried out by the applier task, in order."""
        self.state, out = step(self.state, inp, self.clock.now())
        for level, message in out.log:
            log.log(_LEVELS.get(level, logging.INFO), "%s", message)
        self._pending.append(out)
        self._idle.clear()
        self._work.set()
        for name, plan in out.probes.items():
            prober = self._probers.get(name)
            if prober is not None:
                prober.update(plan)
        self._schedule_recheck(out.recheck_at)
        return out

    def _schedule_recheck(self, at: float | None) -> None:
        if at == self._recheck_at:
            return
        if self._recheck is not None:
            self._recheck.cancel()
        self._recheck, self._recheck_at = None, at
        if at is not None:
            delay = max(at - self.clock.now().mono, 0.0) + 0.01
            self._recheck = asyncio.get_running_loop().call_later(delay, self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck, self._recheck_at = None, None
        self.feed(Tick())

    # ---- carrying the outputs out ----------------------------------------------------------------

    async def _applier(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            await self.carry_out()

    async def carry_out(self, repair: bool = False) -> None:
        """Carry out every pending output. ``repair``: re-check the kernel even if the plan did
        not change (someone else may have deleted or changed linkwatch's objects)."""
        async with self._lock:
            batch, self._pending = self._pending, []
            for ifindex, gateway in (n for out in batch for n in out.forget_neighbours):
                try:  # a stale FAILED neighbour entry would delay failback by a second or more
                    await self.kernel.forget_neighbour(ifindex, gateway)
                except Exception as e:
                    log.warning("cannot drop the neighbour entry of %s (ifindex %d): %s", gateway, ifindex, e)
            routing = self.state.routing  # the newest plan: it includes every output in the batch
            if routing is not None and (repair or routing != self._applied):
                try:
                    report = await self.kernel.apply(routing)
                except Exception:  # a netlink hiccup must not take the engine (and the routes) down
                    log.exception("routing apply failed; routes left as they are, retrying")
                    self._applied = None
                else:
                    if report.changed:
                        self.last_apply_ms = report.elapsed_ms
                        log.info("routing applied in %.1fms: %s", report.elapsed_ms,
                                 "; ".join(report.added + report.replaced + report.removed)[:500])
                    for err in report.errors:
                        log.error("routing: %s", err)
                    self._applied = routing if not report.errors else None
            for event in (e for out in batch for e in out.events):
                if self.sinks is not None:
                    self.sinks.publish(event)
            for name, address in (f for out in batch for f in out.flushes):
                self._spawn(self._flush(name, address))
            if not self._pending:
                self._idle.set()

    async def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until every output fed so far has been carried out (at most ``timeout``)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def _flush(self, name: str, address: str) -> None:
        """Delete the NAT entries of an uplink that lost its traffic (after the route switch)."""
        t0 = time.monotonic()
        try:
            n = await self.kernel.flush_nat(address)
        except Exception as e:
            log.warning("conntrack flush for %s (%s) failed: %s", name, address, e)
            return
        ms = (time.monotonic() - t0) * 1000
        self.flushes.append(FlushReport(name, address, n, round(ms, 1)))
        log.info("conntrack: deleted %d entries NATed to %s (%s) in %.0fms", n, address, name, ms)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, fn in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                        (signal.SIGHUP, self.request_reload)):
            loop.add_signal_handler(sig, fn)  # handlers only set flags; the loop does the work
        try:
            await self.start()
        except BaseException:
            await self._close_io()  # never touches the routes: a failed start changes nothing
            raise
        self.notifier.notify("READY=1", f"STATUS=active: {','.join(self.state.active) or '-'}")
        wake_every = min(REPAIR_INTERVAL, self.notifier.watchdog_interval or REPAIR_INTERVAL)
        try:
            while not self._stop:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wake_every)
                try:
                    if self._reload and not self._stop:
                        self._reload = False
                        self.notifier.notify("RELOADING=1", "STATUS=reloading the config")
                        await self.reload()
                        self.notifier.notify("READY=1", f"STATUS=active: {','.join(self.state.active) or '-'}")
                    if not self._stop:
                        await self.carry_out(repair=True)  # repair what someone else changed
                except Exception:  # a netlink hiccup must not take the engine (and the routes) down
                    log.exception("engine loop error; routes left as they are, retrying in %gs", REPAIR_INTERVAL)
                self._watchdog_ping()
        finally:
            self.notifier.notify("STOPPING=1")
            await self.shutdown()
        return 0

    def _watchdog_ping(self) -> None:
        """WATCHDOG=1 from the main loop, once per half watchdog interval: a loop stuck in a
        netlink call or a deadlock stops the pings, and systemd restarts the engine."""
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval and now - self._last_ping >= interval * 0.9:
            self._last_ping = now
            self.notifier.notify("WATCHDOG=1")

    def request_stop(self) -> None:
        self._stop = True
        self._wakeup.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wakeup.set()

    async def start(self) -> None:
        cfg = self.config
        self.sinks = SinkRunner(build_sinks(cfg))
        await self.sinks.start()
        await self.kernel.open()
        facts = await self.kernel.read_facts([u.interface for u in cfg.uplinks])
        kernel_active = await self.kernel.active_gateways()
        self.control = ControlServer(cfg.control.socket, self.handle_request, cfg.control.mode, cfg.control.group)
        await self.control.start()
        self._tasks["applier"] = asyncio.create_task(self._applier(), name="applier")
        self.feed(Start(facts, tuple(kernel_active), f"linkwatch {__version__}, pid {os.getpid()}"))
        await self.carry_out(repair=True)
        self._start_monitor()
        self._sync_probers()
        self._start_sampler()
        await self._start_agent()
        log.info("engine started: %d uplinks, mode=%s, control=%s", len(cfg.uplinks), cfg.policy.mode,
                 cfg.control.socket)

    async def shutdown(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        for prober in self._probers.values():
            await prober.close()
        self._probers.clear()
        for name in [n for n in self._tasks if n != "applier"]:
            await self._cancel(name)
        if self.sinks is not None:
            self.feed(Stop())
        await self.carry_out()
        await self._cancel("applier")
        if self.config.policy.on_stop == "withdraw":
            with contextlib.suppress(Exception):
                report = await self.kernel.withdraw()
                log.info("withdrew linkwatch routes and rules (%d removed)", len(report.removed))
        else:
            log.info("stopping; routes stay as they are (fail-static)")
        await self._close_io()

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _close_io(self) -> None:
        await self._stop_agent()
        if self.control:
            await self.control.close()
            self.control = None
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, SINK_DRAIN)
        if self.sinks:
            await self.sinks.stop()
            self.sinks = None
        await self.kernel.close()

    # ---- reload ---------------------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the config. Unchanged uplinks keep their state: a reload never fails over.

        An invalid file, or one that changes [control] or [routing] (the socket and the kernel
        objects' numbering need a restart), is refused as a whole and the running config kept.
        """
        if not self.config_path:
            return
        try:
            new = load(self.config_path)
        except ConfigError as e:
            self.feed(ReloadFailed(str(e)))
            return
        old = self.config
        why = reload_refusal(old, new)
        if why:
            self.feed(ReloadFailed(why))
            return
        try:
            facts = await self.kernel.read_facts([u.interface for u in new.uplinks])
        except Exception as e:
            self.feed(ReloadFailed(f"cannot read interfaces: {e}"))
            return
        uplinks_of = lambda c: [(u.name, u.interface) for u in c.uplinks]  # noqa: E731
        if (new.hooks, new.history, new.snmp, uplinks_of(new)) != (old.hooks, old.history, old.snmp, uplinks_of(old)):
            await self._swap_sinks(new)
        self.feed(Reload(new, facts))
        if self.config is not new:
            return  # the core refused it (it said why)
        logging.getLogger("linkwatch").setLevel(getattr(logging, new.log.level.upper()))
        self._sync_probers()
        if [u.interface for u in new.uplinks] != [u.interface for u in old.uplinks]:
            self._start_monitor()
        if new.history != old.history:
            self._start_sampler()
        if new.snmp != old.snmp:
            await self._stop_agent()
            await self._start_agent()

    async def _swap_sinks(self, config: Config) -> None:
        """New sinks take over before the old ones stop: an event published meanwhile (a failover
        during the reload) reaches the new sinks, and the old ones deliver what they hold."""
        new = SinkRunner(build_sinks(config))
        await new.start()
        old, self.sinks = self.sinks, new
        if old is not None:
            self._spawn(old.stop(drain_timeout=SINK_DRAIN))

    # ---- tasks: probers, link monitor, history sampler -----------------------------------------------

    def _sync_probers(self) -> None:
        """One prober per configured uplink, following the core's probe plans."""
        plans = probe_plans(self.state)
        for name in [n for n in self._probers if n not in plans]:
            self._spawn(self._probers.pop(name).close())
        for name, plan in plans.items():
            prober = self._probers.get(name)
            if prober is None:
                prober = self._probers[name] = Prober(
                    name, plan, self.make_probes, self._round_done, self._probe_trouble,
                    lambda: self.clock.now().mono)
                prober.start()
            else:
                prober.update(plan)

    def _round_done(self, name: str, results: tuple, seq: int) -> None:
        if self._probers.get(name) is not None:
            self.feed(RoundDone(name, results, seq))

    def _probe_trouble(self, name: str, error: str | None) -> None:
        self.feed(ProbeTrouble(name, error))

    def _start_monitor(self) -> None:
        """(Re)start the netlink monitor over the current uplinks' interfaces."""
        task = self._tasks.pop("monitor", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        monitor = self.kernel.monitor([u.interface for u in self.config.uplinks])
        self._tasks["monitor"] = asyncio.create_task(self._run_monitor(monitor), name="monitor")

    async def _run_monitor(self, monitor: Any) -> None:
        try:
            await monitor.run(lambda facts: self.feed(FactsChanged(facts)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("link monitor failed; routes stay, restarting it in 1s")
            await asyncio.sleep(1.0)
            if not self._stop:
                self._start_monitor()
        finally:
            monitor.close()

    def _start_sampler(self) -> None:
        task = self._tasks.pop("sampler", None)
        if task is not None:
            task.cancel()
        if self.config.history.path:
            self._tasks["sampler"] = asyncio.create_task(self._sampler(self.config.history.sample_period),
                                                         name="sampler")

    async def _sampler(self, period: float) -> None:
        """Every ``period`` (aligned to the wall clock, so rows of all uplinks line up) sum up what
        each uplink's probes saw since the last one."""
        start = self.clock.now().wall
        while True:
            await asyncio.sleep(period - self.clock.now().wall % period)
            end = self.clock.now().wall
            self.feed(PeriodEnd(start, end))
            start = end

    # ---- SNMP agent ----------------------------------------------------------------------------------

    async def _start_agent(self) -> None:
        """Start the SNMP agent if [snmp.agent] enables it. A failure (address in use) is logged and
        shown in status: the agent is not worth a router without failover."""
        self.agent_error = None
        if not self.config.snmp.agent.enabled:
            return
        from linkwatch.snmp import SnmpError
        from linkwatch.snmp.agent import SnmpAgent

        agent = SnmpAgent(self.config.snmp, self.status, asyncio.get_running_loop(),
                          self.suppressed_traps)
        try:
            await agent.start()
        except (SnmpError, OSError) as e:
            self.agent_error = str(e)
            log.error("snmp agent not started: %s", e)
            return
        self.agent = agent

    async def _stop_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            try:
                await agent.close()
            except Exception as e:  # closing must not stop the engine from stopping
                log.warning("snmp agent close failed: %s", e)

    def suppressed_traps(self) -> dict[str, int]:
        """Traps held back by the storm limit, per uplink (for lwUplinkSuppressedTraps)."""
        traps = self.sinks.sink("snmp-traps") if self.sinks is not None else None
        return traps.suppressed() if traps is not None else {}

    # ---- control and status ---------------------------------------------------------------------------

    async def handle_request(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status().to_dict()}
        if cmd == "set":
            out = self.feed(AdminRequest(req.get("uplink"), req.get("action"), req.get("source", "cli")))
            await self.settle()  # answer once the routes it caused are in place
            return dict(out.reply or {"ok": False, "error": "no answer"})
        if cmd == "reload":
            self.request_reload()
            return {"ok": True, "message": "reload requested"}
        if cmd == "ping":
            return {"ok": True, "version": __version__}
        return {"ok": False, "error": f"unknown command {cmd!r}; expected status, set, reload or ping"}

    def status(self) -> Status:
        return build_status(self.state, self.clock.now(), ShellReport(
            version=__version__, pid=os.getpid(), last_apply_ms=self.last_apply_ms,
            conntrack_flushes=tuple(self.flushes), sinks=self._sink_stats(), snmp=self._snmp_status()))

    def _sink_stats(self) -> dict[str, SinkStats]:
        if self.sinks is None:
            return {}
        return {name: SinkStats(**stats) for name, stats in self.sinks.stats().items()}

    def _snmp_status(self) -> SnmpStatus | None:
        snmp = self.config.snmp
        if not snmp.traps and not snmp.agent.enabled:
            return None
        from linkwatch.snmp import engine_id

        return SnmpStatus(engine_id=engine_id(snmp.engine_id).hex(), base_oid=snmp.base_oid,
                          agent=self.agent.stats() if self.agent is not None else None,
                          agent_error=self.agent_error, agent_listen=snmp.agent.listen if snmp.agent.enabled else None)
