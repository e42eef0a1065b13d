"""The engine's I/O shell: tasks, sockets, timers, the kernel, the sinks, the SNMP agent.

Every decision is made by the pure core (:func:`linkwatch.core.engine.step`). The shell turns what
happens -- netlink events, finished probe rounds (:mod:`.probing`), control requests, timers,
SIGHUP -- into the core's inputs, with the time of its one :class:`Clock`, and hands the outputs to
the :class:`~linkwatch.daemon.applier.Applier`, which carries them out in order. Every netlink call
runs off the event loop; sinks cannot delay a failover (their queues never block).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from linkwatch import __version__
from linkwatch.config import Config, ConfigError, load
from linkwatch.core.engine import (
    EngineState,
    Outputs,
    initial_state,
    probe_plans,
    reload_refusal,
    routing_of,
    routing_params,
    step,
)
from linkwatch.core.family6 import probe_plans6, side_config
from linkwatch.core.uplink import same_uplink
from linkwatch.core.inputs import (
    AdminRequest,
    Counters,
    FactsChanged,
    Input,
    LanPrefixes,
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
from linkwatch.core.status import ShellReport, SinkStats, Status, build_status
from linkwatch.daemon import prefixstate
from linkwatch.daemon.applier import Applier
from linkwatch.daemon.budget import Budget
from linkwatch.daemon.probing import MakeProbes, Prober
from linkwatch.daemon.sdnotify import Notifier
from linkwatch.daemon.snmp import AgentSlot
from linkwatch.kernel import Kernel, sysctl
from linkwatch.kernel.nft import NftError, library as nft_library
from linkwatch.probes import make_probes
from linkwatch.report.control import ControlError, ControlServer
from linkwatch.sinks import build_sinks
from linkwatch.sinks.runner import SinkRunner

log = logging.getLogger("linkwatch.engine")

REPAIR_INTERVAL = 2.0  # the main loop's tick: a refused plan is retried this often
FULL_CHECK_INTERVAL = 30.0  # the kernel is checked this often even when no netlink event said so
SETTLE_TIMEOUT = 1.0  # an admin request waits at most this long for its routes (clients wait 2 s)
READ_ONLY_COMMANDS = frozenset({"status", "ping"})  # what [control] status_socket answers
RELOAD_BURST, RELOAD_INTERVAL = 5, 10.0  # a flood of reload requests: 5 reloads, then one per 10 s
SINK_DRAIN = 30.0  # a reload's old sinks get this long to deliver what they hold
COUNTER_MAX_SLEEP = 0.25  # the counter reader looks at the plans at least this often
COUNTER_SLACK = 0.002  # a read due within this is done now (sleep granularity)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Clock:
    """The engine's one clock: monotonic time for decisions, wall time to stamp events."""

    def now(self) -> Now:
        return Now(time.monotonic(), time.time())


def without_unavailable(config: Config) -> Config:
    """``config`` as this machine can run it: sticky flows need libnftables; without it they are
    off (a flow left on a working uplink without its mark rule would hang), with an error logged."""
    if config.policy.sticky_flows:
        try:
            nft_library()
        except NftError as e:
            log.error("sticky flows are off%s: %s", f" and the {len(config.rules)} policy rules are not applied"
                      if config.rules else "", e)
            return dataclasses.replace(config, policy=dataclasses.replace(config.policy, sticky_flows=False))
    return config


def warn_strict_rp_filter(config: Config, conf: Path = sysctl.CONF) -> list[str]:
    """Log an error for the uplinks whose strict rp_filter would drop the replies of sticky flows
    (see :mod:`linkwatch.kernel.sysctl`); returns them."""
    if not config.policy.sticky_flows:
        return []
    strict = sysctl.strict_rp_filter([u.interface for u in config.uplinks], conf)
    if strict:
        log.error("strict reverse-path filtering (rp_filter=1) on %s drops the replies of flows that stay on an "
                  "uplink other than the active one (sticky flows, balancing, policy rules): set "
                  "net.ipv4.conf.all.src_valid_mark=1 (or rp_filter=2, loose)", ", ".join(strict))
    return strict


class Engine:
    """Runs the core against the real world. ``kernel``, ``make_probes`` and ``clock`` may be
    replaced (tests run the whole shell without root that way)."""

    def __init__(self, config: Config, config_path: str | None = None, *, kernel: Any = None,
                 make_probes: MakeProbes = make_probes, clock: Any = None,
                 reload_interval: float = RELOAD_INTERVAL, reload_burst: int = RELOAD_BURST):
        # reloads: a burst of reload_burst, then one per reload_interval; requests meanwhile wait, coalesced
        self.reload_budget = Budget(reload_burst, reload_interval)
        self.config_path = config_path
        self.clock = clock or Clock()
        self.kernel = kernel if kernel is not None else Kernel(routing_params(config))
        self.make_probes = make_probes
        self.state: EngineState = initial_state(without_unavailable(config))
        self.sinks: SinkRunner | None = None
        self.control: ControlServer | None = None
        self.status_server: ControlServer | None = None  # [control] status_socket: read-only
        self.snmp = AgentSlot()
        self.notifier = Notifier()  # systemd Type=notify and WatchdogSec (no-op outside systemd)
        self.applier = Applier(self.kernel, lambda: routing_of(self.state), self._publish)
        self._probers: dict[tuple[str, int], Prober] = {}  # by uplink and family
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()  # replaced sinks draining, removed probers closing
        self._recheck: asyncio.TimerHandle | None = None
        self._period_start: float | None = None  # wall-clock start of the history period being summed
        self._recheck_at: float | None = None
        self._wakeup = asyncio.Event()
        self._stop = False
        self._reload = False
        self._prefix_file = prefixstate.path_for(config.control.socket)
        self._prefixes_loaded = False  # the saved LAN prefixes are read at start, after the socket
        self._prefix_warning: str | None = None  # why the last save failed
        self._last_ping = 0.0
        self._plans: dict[str, Any] | None = None  # the probe plans of the last step

    @property
    def config(self) -> Config:
        return self.state.config

    # ---- feeding the core ----------------------------------------------------------------------

    def feed(self, inp: Input) -> Outputs:
        """One step of the core; its outputs are carried out by the applier task, in order."""
        learned = self.state.v6.learned
        self.state, out = step(self.state, inp, self.clock.now())
        if self.state.v6.learned != learned and self._prefixes_loaded:  # a request, or a reload dropped some
            self._prefix_warning = prefixstate.save(self._prefix_file, self.state.v6.learned)
        for level, message in out.log:
            log.log(_LEVELS.get(level, logging.INFO), "%s", message)
        self.applier.add(out)
        self._plans = out.probes  # the plans of the state as it is now (the counter reader's too)
        for family, plans in ((4, out.probes), (6, out.probes6)):
            for name, plan in plans.items():
                prober = self._probers.get((name, family))
                if prober is not None:
                    prober.update(plan)
        self._schedule_recheck(out.recheck_at)
        return out

    def _load_saved_prefixes(self) -> None:
        """Once, after Start: the LAN prefixes saved by an engine before this one or by a hook
        that found no engine (before any request the socket took meanwhile, which comes after)."""
        if self._prefixes_loaded:
            return
        saved = prefixstate.load(self._prefix_file)
        for name, prefixes in saved.items():
            reply = self.feed(LanPrefixes(name, prefixes, "saved")).reply or {}
            if not reply.get("ok"):
                log.warning("saved LAN prefixes of %s not taken: %s", name, reply.get("error"))
        self._prefixes_loaded = True
        if saved:  # what was refused goes from the file
            self._prefix_warning = prefixstate.save(self._prefix_file, self.state.v6.learned)

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

    def _in_background(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _publish(self, event: Any) -> None:
        if self.sinks is not None:
            self.sinks.publish(event)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, fn in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                        (signal.SIGHUP, self.request_reload)):
            loop.add_signal_handler(sig, fn)  # handlers only set flags; the loop does the work
        try:
            await self.start()
        except BaseException:
            await self.applier.close(0.0, finish=False)
            await self._close_io()  # never touches the routes: a failed start changes nothing
            raise
        self.notifier.announce_ready(await self.applier.routes_in(),
                                     f"STATUS=active: {','.join(self.state.active) or '-'}")
        wake_every = min(REPAIR_INTERVAL, self.notifier.watchdog_interval or REPAIR_INTERVAL)
        tick_at = 0.0  # the next tick: the nftables table is looked at, the watchdog fed
        try:
            while not self._stop:
                self._wakeup.clear()  # then ask: a change noted meanwhile shortens the sleep
                # a repair a netlink event asked for, or a reload the rate limit held back, may be due sooner
                now = time.monotonic()
                sleep = self.applier.repair_wait(now, max(tick_at - now, 0.0))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(),
                                           min(sleep, self.reload_budget.wait()) if self._reload else sleep)
                ticked = False
                try:
                    if self._reload and not self._stop and self.reload_budget.wait() == 0.0:
                        self._reload = False
                        self.reload_budget.take()
                        self.notifier.notify("RELOADING=1", "STATUS=reloading the config")
                        await self.reload()
                        if self.notifier.ready:
                            self.notifier.notify("READY=1", f"STATUS=active: {','.join(self.state.active) or '-'}")
                    now = time.monotonic()
                    full = self.applier.repair_wanted(now, FULL_CHECK_INTERVAL)
                    if not self._stop and (full or now >= tick_at):  # repair what someone else changed
                        tick_at, ticked = now + wake_every, True
                        # the watchdog is fed only when this returns: it waits for the applier's lock
                        await self.applier.carry_out(repair=full, check_flows=True)
                        if not self.notifier.ready:  # READY=1 waits for the routes (see announce_ready)
                            self.notifier.announce_ready(await self.applier.routes_in(),
                                                         f"STATUS=active: {','.join(self.state.active) or '-'}")
                except Exception:  # a netlink hiccup must not take the engine (and the routes) down
                    log.exception("engine loop error; routes left as they are, retrying in %gs", REPAIR_INTERVAL)
                if ticked:
                    self._watchdog_ping()
        finally:
            self.notifier.notify("STOPPING=1")
            await self.shutdown()
        return 0

    def _watchdog_ping(self) -> None:
        """WATCHDOG=1 from the main loop, once per half watchdog interval: a stuck loop stops the
        pings, and so does a hung netlink call (the loop's repair waits for the applier), and
        systemd restarts the engine; the kernel keeps the last good routes meanwhile."""
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval and now - self._last_ping >= interval * 0.9:
            self._last_ping = now
            self.notifier.notify("WATCHDOG=1")

    def request_stop(self) -> None:
        self._stop = True
        self._wakeup.set()

    def request_reload(self) -> None:
        """Reload now, or once the reload budget allows (requests meanwhile make one reload then:
        the loop is not woken for each)."""
        self._reload = True
        if self.reload_budget.wait() == 0.0:
            self._wakeup.set()

    async def start(self) -> None:
        cfg = self.config
        self.sinks = SinkRunner(build_sinks(cfg, self.status))
        await self.sinks.start()
        await self.kernel.open()
        facts = await self.kernel.read_facts([u.interface for u in cfg.uplinks])
        warn_strict_rp_filter(cfg)
        kernel_active = await self.kernel.active_gateways()
        kernel_active6 = await self.kernel.active_gateways(6)
        flow_marks = await self.kernel.flow_marks()  # before the first apply replaces the table
        self.control = ControlServer(cfg.control.socket, self.handle_request, cfg.control.mode, cfg.control.group)
        if cfg.control.status_socket:
            self.status_server = ControlServer(cfg.control.status_socket, self.handle_request, cfg.control.status_mode,
                                               cfg.control.status_group, commands=READ_ONLY_COMMANDS,
                                               controls_at=cfg.control.socket)
        self.applier.start()
        self.feed(Start(facts, tuple(kernel_active), f"linkwatch {__version__}, pid {os.getpid()}",
                        month_bytes=await self._month_so_far(), flow_marks=flow_marks,
                        kernel_active6=tuple(kernel_active6)))
        # the socket first, then the saved prefixes: a DHCPv6 hook that found no engine wrote the
        # file before it asked again (linkwatch prefixes), so either the file or the request has them
        await self.control.start()
        if self.status_server is not None:
            try:  # a read-only extra: without it the engine still does its job
                await self.status_server.start()
            except ControlError as e:
                log.error("no read-only status socket: %s", e)
                self.status_server = None
        self._load_saved_prefixes()
        await self.applier.carry_out(repair=True)
        self._start_monitor()
        self._sync_probers()
        self._start_sampler()
        self._tasks["counters"] = asyncio.create_task(self._read_counters(), name="counters")
        await self.snmp.start(cfg.snmp, self.status, self.suppressed_traps)
        log.info("engine started: %d uplinks, mode=%s, control=%s", len(cfg.uplinks), cfg.policy.mode,
                 cfg.control.socket)

    async def shutdown(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        for prober in self._probers.values():
            await prober.close()
        self._probers.clear()
        for name in list(self._tasks):
            task = self._tasks.pop(name)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._period_start is not None and self.config.history.path:
            # the unfinished period too: the month's traffic in the history must not lose a minute a stop
            self.feed(PeriodEnd(self._period_start, self.clock.now().wall))
            self._period_start = None
        await self.applier.carry_out()  # what was decided before the stop
        if self.config.policy.on_stop == "withdraw":  # before "stopped" is told: events follow routes
            try:
                report = await self.applier.withdraw()
                log.info("withdrew linkwatch routes and rules (%d removed)", len(report.removed))
            except Exception as e:
                log.error("could not withdraw linkwatch's routes and rules: %s", e)
        else:
            log.info("stopping; routes stay as they are (fail-static)")
        self.feed(Stop())
        await self.applier.close(SINK_DRAIN)
        await self._close_io()

    async def _close_io(self) -> None:
        await self.snmp.stop()
        for server in (self.control, self.status_server):
            if server is not None:
                await server.close()
        self.control = self.status_server = None
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, SINK_DRAIN)
        if self.sinks:
            await self.sinks.stop()
            self.sinks = None
        await self.kernel.close()

    async def _month_so_far(self) -> dict[str, int]:
        """Each uplink's traffic this month before this start, from the history (none kept: 0)."""
        path = self.config.history.path
        if not path or not os.path.exists(path):
            return {}

        def read() -> dict[str, int]:
            from linkwatch.history.reader import HistoryReader

            first = datetime.datetime.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            with HistoryReader(path) as reader:
                return reader.traffic_since(first.timestamp())

        try:
            return await asyncio.to_thread(read)
        except Exception as e:  # an unreadable history costs the month's count, nothing else
            log.warning("cannot read this month's traffic from %s: %s", path, e)
            return {}

    # ---- reload ---------------------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the config. Unchanged uplinks keep their state: a reload never fails over.

        An invalid file, or one that changes [control] or [routing] (the socket and the kernel
        objects' numbering need a restart), is refused as a whole and the running config kept.
        """
        if not self.config_path:
            return
        try:
            new = without_unavailable(load(self.config_path))
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
        sinks_of = lambda c: (c.hooks, c.history, c.snmp, c.keepalived, c.mqtt, uplinks_of(c))  # noqa: E731
        if sinks_of(new) != sinks_of(old):
            await self._swap_sinks(new)
        self.feed(Reload(new, facts))
        if self.config is not new:
            return  # the core refused it (it said why)
        logging.getLogger("linkwatch").setLevel(getattr(logging, new.log.level.upper()))
        kept = {(u.name, 4) for u in old.uplinks for n in new.uplinks if u.name == n.name and same_uplink(u, n)}
        kept |= {(u.name, 6) for u in old.uplinks for n in new.uplinks
                 if u.name == n.name and same_uplink(side_config(u), side_config(n))}
        for key in [k for k in self._probers if k not in kept]:  # rebuilt: rounds under the old config
            self._in_background(self._probers.pop(key).close())  # must not count for the new uplink
        self._sync_probers()
        self._start_monitor()  # a fresh snapshot: facts that changed while the file was read count too
        if new.history != old.history:
            self._start_sampler()
        if new.snmp != old.snmp:
            await self.snmp.stop()
            await self.snmp.start(new.snmp, self.status, self.suppressed_traps)

    async def _swap_sinks(self, config: Config) -> None:
        """New sinks take the events at once, so one published meanwhile (a failover during the
        reload) is not lost; the old ones deliver what they hold, and each new sink starts
        delivering only when its predecessor has finished, so events stay in order."""
        new = SinkRunner(build_sinks(config, self.status))
        old, self.sinks = self.sinks, new
        if old is not None:
            self._in_background(old.stop(drain_timeout=SINK_DRAIN))
        await new.start(after=old, wait=SINK_DRAIN)  # each sink resumes where its predecessor ends

    # ---- tasks: probers, link monitor, history sampler -----------------------------------------------

    def _sync_probers(self) -> None:
        """One prober per configured uplink and family, following the core's probe plans."""
        wanted = {(name, 4): plan for name, plan in probe_plans(self.state).items()}
        wanted.update({(name, 6): plan for name, plan in probe_plans6(self.state.v6, self.config).items()})
        for key in [k for k in self._probers if k not in wanted]:
            self._in_background(self._probers.pop(key).close())
        for (name, family), plan in wanted.items():
            prober = self._probers.get((name, family))
            if prober is None:
                prober = self._probers[(name, family)] = Prober(
                    name, plan, self.make_probes, self._round_done, self._probe_trouble,
                    lambda: self.clock.now().mono, family)
                prober.start()
            else:
                prober.update(plan)

    def _round_done(self, prober: Prober, results: tuple, seq: int, started: float, burst: bool) -> None:
        if self._probers.get((prober.name, prober.family)) is prober:  # not a prober a reload replaced
            self.feed(RoundDone(prober.name, results, seq, burst=burst, started=started, family=prober.family))

    def _probe_trouble(self, prober: Prober, error: str | None) -> None:
        self.feed(ProbeTrouble(prober.name, error, prober.family))

    def _start_monitor(self) -> None:
        """(Re)start the netlink monitor over the current uplinks' interfaces."""
        task = self._tasks.pop("monitor", None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        # the monitor says so (on_owned) once it listens, and whenever linkwatch's objects change
        monitor = self.kernel.monitor([u.interface for u in self.config.uplinks],
                                      [u.table for u in self.config.uplinks])
        self._tasks["monitor"] = asyncio.create_task(self._run_monitor(monitor), name="monitor")

    async def _run_monitor(self, monitor: Any) -> None:
        try:
            # linkwatch's routes or rules may have changed (or its interfaces; or events were lost):
            # check the kernel at once instead of dumping it at every tick
            await monitor.run(lambda facts: self.feed(FactsChanged(facts)),
                              lambda: (self.applier.note_change(), self._wakeup.set()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("link monitor failed; routes stay, restarting it in 1s")
        else:  # its netlink socket ended by itself
            log.warning("link monitor stopped; routes stay, restarting it in 1s")
        finally:
            monitor.close()
        await asyncio.sleep(1.0)
        if not self._stop:
            self._start_monitor()

    async def _read_counters(self) -> None:
        """Read each uplink's interface counters as often as its plan says now (the active one up to
        17 times a second: its traffic is the fastest evidence) and feed them to the core. The plan
        is asked afresh at every wake-up, so a standby uplink that takes traffic is read fast at
        once instead of after its standby pause."""
        last_read: dict[str, float] = {}
        failing = False
        while True:
            now = self.clock.now().mono
            plans = self._plans if self._plans is not None else probe_plans(self.state)  # every step sets them
            due = {u.cfg.interface: u.facts.ifindex for u in self.state.uplinks
                   if u.facts is not None and u.facts.ifindex and u.name in plans
                   and now - last_read.get(u.name, -math.inf) >= plans[u.name].counter_interval - COUNTER_SLACK}
            if due:
                try:
                    got = await self.kernel.read_counters(list(due.values()))
                except Exception as e:  # a netlink surprise: no evidence this time, routes untouched
                    if not failing:
                        log.warning("cannot read interface counters: %s; retrying", e)
                    failing = True
                    await asyncio.sleep(1.0)
                    continue
                failing = False
                by_interface = {name: got[index] for name, index in due.items() if index in got}
                plans = self.feed(Counters(by_interface)).probes if by_interface else plans
                for u in self.state.uplinks:
                    if u.cfg.interface in due:
                        last_read[u.name] = now
            readable = {u.name for u in self.state.uplinks if u.facts is not None and u.facts.ifindex}
            wake = min([last_read.get(name, now) + plan.counter_interval for name, plan in plans.items()
                        if name in readable] or [now + COUNTER_MAX_SLEEP])
            await asyncio.sleep(min(max(wake - self.clock.now().mono, 0.005), COUNTER_MAX_SLEEP))

    def _start_sampler(self) -> None:
        task = self._tasks.pop("sampler", None)
        if task is not None:
            task.cancel()
        if not self.config.history.path:
            self._period_start = None  # history off: when it comes back, its first period starts then
        if self.config.history.path:
            self._tasks["sampler"] = asyncio.create_task(self._sampler(self.config.history.sample_period),
                                                         name="sampler")

    async def _sampler(self, period: float) -> None:
        """Every ``period`` (aligned to the wall clock, so rows of all uplinks line up) sum up what
        each uplink's probes saw since the last one."""
        if self._period_start is None:  # a restarted sampler (reload) goes on with the open period
            self._period_start = self.clock.now().wall
        while True:
            await asyncio.sleep(period - self.clock.now().wall % period)
            end = self.clock.now().wall
            self.feed(PeriodEnd(self._period_start, end))
            self._period_start = end

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
            await self.applier.settle(SETTLE_TIMEOUT)  # answer once the routes it caused are in place
            return dict(out.reply or {"ok": False, "error": "no answer"})
        if cmd == "prefixes":
            self._load_saved_prefixes()
            out = self.feed(LanPrefixes(req.get("uplink"), req.get("prefixes"), req.get("source", "cli")))
            answer = dict(out.reply or {"ok": False, "error": "no answer"})
            if answer.get("ok"):
                if self._prefix_warning:
                    answer["warning"] = f"not saved for a restart: {self._prefix_warning}"
                await self.applier.settle(SETTLE_TIMEOUT)
            return answer
        if cmd == "reload":
            self.request_reload()
            wait = self.reload_budget.wait()
            return {"ok": True, "message": "reload requested" + (
                f" (too many reloads: it runs in {wait:.1f}s)" if wait else "")}
        if cmd == "ping":
            return {"ok": True, "version": __version__}
        return {"ok": False, "error": f"unknown command {cmd!r}; expected status, set, prefixes, reload or ping"}

    def status(self) -> Status:
        return build_status(self.state, self.clock.now(), ShellReport(
            version=__version__, pid=os.getpid(), last_apply_ms=self.applier.last_apply_ms,
            conntrack_flushes=tuple(self.applier.flushes), sinks=self._sink_stats(),
            snmp=self.snmp.status(self.config.snmp)))

    def _sink_stats(self) -> dict[str, SinkStats]:
        if self.sinks is None:
            return {}
        return {name: SinkStats(**stats) for name, stats in self.sinks.stats().items()}
