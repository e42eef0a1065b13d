"""The engine: the event loop that ties probes, health, policy, routing and sinks together.

It owns the clock and every socket; the decisions are made by the pure modules (``health``,
``policy``, ``routing.plan``). Data flows one way: netlink facts and probe results -> health ->
policy -> routing reconciler -> events to sinks. Sinks never delay a failover: events are
published after the routes are applied, into queues that never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field, replace

from linkwatch import __version__
from linkwatch.core import health as hm
from linkwatch.config import Config, ConfigError, UplinkConfig, load
from linkwatch.kernel.conntrack import flush_nat
from linkwatch.report.control import ControlServer
from linkwatch.core.events import ActiveChanged, AdminAction, EngineEvent, UplinkSamples, UplinkStateChanged
from linkwatch.core.health import Health, HealthParams, Sample, State, Stats, period_summary, window_stats
from linkwatch.sinks.hooks import HookSink
from linkwatch.kernel.facts import LinkFacts, LinkMonitor, read_facts
from linkwatch.core.policy import Decision, PolicyParams, UplinkView, decide
from linkwatch.probes import Probe, ProbeResult, ProbeSpec, make_probes
from linkwatch.kernel.routing import Desired, Reconciler, RoutingError, RoutingParams, UplinkRoute, plan
from linkwatch.daemon.sdnotify import Notifier
from linkwatch.sinks.runner import LogSink, SinkRunner

log = logging.getLogger("linkwatch.daemon.engine")

REPAIR_INTERVAL = 2.0  # re-check the kernel for deleted/changed owned objects this often
TRAFFIC_WINDOW = 60.0  # seconds of probe traffic the bytes/day estimate is based on


def health_params(cfg: UplinkConfig) -> HealthParams:
    h = cfg.health
    return HealthParams(
        down_after=h.down_after, up_after=h.up_after, min_targets=h.min_targets,
        quality_window=h.quality_window, loss_degraded=h.loss_degraded, loss_recovered=h.loss_recovered,
        rtt_degraded=h.rtt_degraded, rtt_recovered=h.rtt_recovered, quality_hold=h.quality_hold,
    )


def routing_params(config: Config) -> RoutingParams:
    r = config.routing
    return RoutingParams(protocol=r.protocol, active_table=r.active_table, suppress_priority=r.rule_priority,
                         active_priority=r.rule_priority + 100)


def link_verdict(cfg: UplinkConfig, facts: LinkFacts | None) -> tuple[bool, str]:
    """Can this uplink carry traffic at all, as far as the kernel says? (ok, reason)"""
    if facts is None or facts.ifindex is None:
        return False, f"interface {cfg.interface} missing"
    if not facts.carrier:
        return False, "carrier lost"
    if facts.address is None:
        return False, f"no IPv4 address on {cfg.interface}"
    if gateway_of(cfg, facts) is None:
        return False, f"no gateway (no default route via {cfg.interface} in the main table)"
    return True, "link up"


def _same_uplink(a: UplinkConfig, b: UplinkConfig) -> bool:
    """Equal but for the numbers derived from the uplink's position in the file."""
    return replace(a, table=b.table, rule_priority=b.rule_priority) == b


def gateway_of(cfg: UplinkConfig, facts: LinkFacts | None) -> str | None:
    if cfg.gateway is not None:
        return cfg.gateway
    return facts.gateway if facts else None


@dataclass
class Uplink:
    """Runtime of one uplink: config, kernel facts, health and probe bookkeeping."""

    cfg: UplinkConfig
    params: HealthParams
    health: Health = field(default_factory=Health)
    facts: LinkFacts | None = None
    probes: list[Probe] = field(default_factory=list)
    probe_source: str | None = None
    generation: int = 0  # bumped when the probes are rebuilt; results of older rounds are ignored
    samples: deque = field(default_factory=lambda: deque(maxlen=4096))
    last_results: dict[str, ProbeResult] = field(default_factory=dict)
    traffic: deque = field(default_factory=lambda: deque(maxlen=4096))  # (mono, bytes)
    working_since: float = 0.0
    wall_since: float = field(default_factory=time.time)
    stats: Stats = hm.EMPTY_STATS
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_round_start: float = 0.0
    round_seq: int = 0  # numbers rounds at their start ...
    applied_seq: int = 0  # ... so a slow old round finishing after a newer one does not step health back
    probe_error: str | None = None  # why the probes could not be opened (logged once)
    nat_address: str | None = None  # last address seen: NAT entries to flush even after the address is gone
    rounds: int = 0
    downs: int = 0  # times it went DOWN since the engine started
    transitions: int = 0  # state changes since the engine started
    period: list = field(default_factory=list)  # samples since the last history period ended

    @property
    def name(self) -> str:
        return self.cfg.name

    def route(self) -> UplinkRoute:
        f = self.facts
        ok, _ = link_verdict(self.cfg, f)
        return UplinkRoute(
            name=self.name, ifindex=f.ifindex if f else None, address=f.address if f else None,
            prefixlen=f.prefixlen if f else None, gateway=gateway_of(self.cfg, f), table=self.cfg.table,
            rule_priority=self.cfg.rule_priority, usable=ok,
        )

    def bytes_per_day(self, now: float) -> float | None:
        recent = [(t, b) for t, b in self.traffic if now - t <= TRAFFIC_WINDOW]
        if len(recent) < 2:
            return None
        span = max(now - recent[0][0], 1e-3)
        return sum(b for _, b in recent) / span * 86400.0

    def close_probes(self) -> None:
        for p in self.probes:
            with contextlib.suppress(Exception):
                p.close()
        self.probes = []
        self.probe_source = None
        self.generation += 1


class Engine:
    def __init__(self, config: Config, config_path: str | None = None, clock=time.monotonic):
        self.clock = clock  # monotonic seconds; scenario tests pass a fake clock
        self.flush_fn = flush_nat  # conntrack flush (runs in a worker thread)
        self.config = config
        self.config_path = config_path
        self.routing_params = routing_params(config)
        self.uplinks: dict[str, Uplink] = {u.name: Uplink(u, health_params(u)) for u in config.uplinks}
        self.active: tuple[str, ...] = ()
        self.previous_active: tuple[str, ...] = ()  # what carried traffic before the last change
        self.decision: Decision | None = None
        self.forced: str | None = None
        self.reconciler: Reconciler | None = None
        self.monitor: LinkMonitor | None = None
        self.sinks: SinkRunner | None = None
        self.traps = None  # the SNMP trap sink, when [[snmp.traps]] are configured
        self.agent = None  # the SNMP agent, when [snmp.agent] is enabled
        self.agent_error: str | None = None
        self.control: ControlServer | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._round_tasks: set[asyncio.Task] = set()
        self._stop = False
        self._reload = False
        self._wakeup = asyncio.Event()
        self._pending_active_event: ActiveChanged | None = None
        self._pending_flush: list[tuple[str, str]] = []  # (uplink, address) whose NAT entries go
        self._last_desired: Desired | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self.started_wall = time.time()
        self.last_apply_ms: float | None = None
        self.flushes: deque = deque(maxlen=20)
        self.active_changes = 0  # since the engine started (the first choice counts)
        self.notifier = Notifier()  # systemd Type=notify and WatchdogSec (no-op outside systemd)
        self._last_ping = 0.0

    # ---- lifecycle -----------------------------------------------------------------------------

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
        self.notifier.notify("READY=1", f"STATUS=active: {','.join(self.active) or '-'}")
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
                        self.notifier.notify("READY=1", f"STATUS=active: {','.join(self.active) or '-'}")
                    if not self._stop:
                        self.reconcile(force=True)  # repair what someone else changed
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
        self.sinks = SinkRunner(self._make_sinks())
        await self.sinks.start()
        self.reconciler = Reconciler(self.routing_params)
        facts = read_facts([u.cfg.interface for u in self.uplinks.values()], protocol=cfg.routing.protocol)
        now = self.clock()
        for u in self.uplinks.values():
            self._apply_facts(u, facts.get(u.cfg.interface), now, initial=True)
        # Restart safety: adopt what the kernel already routes through, so a restart changes nothing.
        kernel_active = self.reconciler.active_gateways()
        by_if = {u.facts.ifindex: u.name for u in self.uplinks.values() if u.facts and u.facts.ifindex}
        self.active = tuple(by_if[ifx] for _, ifx in kernel_active if ifx in by_if)
        if self.active:
            log.info("adopting active uplinks from the kernel: %s", ",".join(self.active))
        self.control = ControlServer(cfg.control.socket, self.handle_request, cfg.control.mode, cfg.control.group)
        await self.control.start()
        self._decide(now, reason_prefix="start: ")
        self.reconcile(force=True)
        self._start_monitor()
        for u in self.uplinks.values():
            self._start_prober(u)
        self._start_sampler()
        await self._start_agent()
        self._publish(EngineEvent(time.time(), now, "started", f"linkwatch {__version__}, pid {os.getpid()}"))
        log.info("engine started: %d uplinks, mode=%s, control=%s", len(self.uplinks), cfg.policy.mode,
                 cfg.control.socket)

    def _make_sinks(self) -> list:
        sinks: list = [LogSink(logging.getLogger("linkwatch.events"))]
        if self.config.hooks.directory:
            sinks.append(HookSink(self.config.hooks.directory, self.config.hooks.timeout,
                                  {u.name: u.interface for u in self.config.uplinks}))
        if self.config.history.path:
            from linkwatch.sinks.history import HistorySink  # sqlite-utils only when a history is kept

            sinks.append(HistorySink(self.config.history))
        if self.config.snmp.traps:
            from linkwatch.sinks.snmp_traps import TrapSink  # pysnmp only when traps are sent

            self.traps = TrapSink(self.config.snmp, [u.name for u in self.config.uplinks])
            sinks.append(self.traps)
        else:
            self.traps = None
        return sinks

    async def _start_agent(self) -> None:
        """Start the SNMP agent if [snmp.agent] enables it. A failure (address in use) is logged and
        shown in status: the agent is not worth a router without failover."""
        self.agent_error = None
        if not self.config.snmp.agent.enabled:
            return
        from linkwatch.snmp import SnmpError
        from linkwatch.snmp.agent import SnmpAgent

        agent = SnmpAgent(self.config.snmp, self.status, asyncio.get_running_loop(), self.suppressed_traps)
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
        return self.traps.suppressed() if self.traps is not None else {}

    async def shutdown(self) -> None:
        now = self.clock()
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        for t in list(self._tasks.values()) + list(self._round_tasks):
            t.cancel()
        for t in list(self._tasks.values()) + list(self._round_tasks):
            with contextlib.suppress(BaseException):
                await t
        if self.monitor:
            self.monitor.close()
        for u in self.uplinks.values():
            u.close_probes()
        if self.reconciler:
            if self.config.policy.on_stop == "withdraw":
                report = self.reconciler.withdraw()
                log.info("withdrew linkwatch routes and rules (%d removed)", len(report.removed))
            else:
                log.info("stopping; routes stay as they are (fail-static)")
        if self.sinks:
            self.sinks.publish(EngineEvent(time.time(), now, "stopped", ""))
        await self._close_io()

    async def _close_io(self) -> None:
        await self._stop_agent()
        if self.control:
            await self.control.close()
            self.control = None
        if self.sinks:
            await self.sinks.stop()
            self.sinks = None
        if self.reconciler:
            self.reconciler.close()
            self.reconciler = None

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
            return self._reload_refused(str(e))
        if new.control != self.config.control or new.routing != self.config.routing:
            return self._reload_refused("[control] and [routing] changes need a restart")
        try:
            facts = read_facts([u.interface for u in new.uplinks], protocol=new.routing.protocol)
        except Exception as e:
            return self._reload_refused(f"cannot read interfaces: {e}")
        old = self.uplinks
        kept, rebuilt = [], []
        uplinks: dict[str, Uplink] = {}
        for ucfg in new.uplinks:
            prev = old.get(ucfg.name)
            if prev is not None and _same_uplink(prev.cfg, ucfg):
                prev.cfg = ucfg  # table / rule priority may move with other uplinks; the state stays
                uplinks[ucfg.name] = prev
                kept.append(ucfg.name)
            else:
                uplinks[ucfg.name] = Uplink(ucfg, health_params(ucfg))
                rebuilt.append(ucfg.name)
        for name, u in old.items():
            if uplinks.get(name) is not u:
                self._stop_prober(u)
        sinks_changed = (new.hooks != self.config.hooks or new.history != self.config.history
                         or new.snmp != self.config.snmp
                         or [u.name for u in new.uplinks] != [u.cfg.name for u in old.values()]
                         or [u.interface for u in new.uplinks] != [u.cfg.interface for u in old.values()])
        agent_changed = new.snmp != self.config.snmp
        self.config = new
        self.uplinks = uplinks
        logging.getLogger("linkwatch").setLevel(getattr(logging, new.log.level.upper()))
        if self.forced not in uplinks:
            self.forced = None
        if sinks_changed and self.sinks is not None:
            await self.sinks.stop(drain_timeout=2.0)
            self.sinks = SinkRunner(self._make_sinks())
            await self.sinks.start()
        now = self.clock()
        for name in rebuilt:
            self._apply_facts(uplinks[name], facts.get(uplinks[name].cfg.interface), now, initial=True)
            self._start_prober(uplinks[name])
        self._start_monitor()  # the set of interfaces may have changed
        self._start_sampler()  # the history period may have changed
        if agent_changed:
            await self._stop_agent()
            await self._start_agent()
        gone = [n for n in self.active if n not in uplinks]
        self.active = tuple(n for n in self.active if n in uplinks)
        self._decide(now, reason_prefix="reload: ")
        self._pending_flush += [(n, old[n].nat_address) for n in gone if old[n].nat_address]
        self.reconcile(force=True)
        log.info("config reloaded: kept %s, rebuilt %s", ",".join(kept) or "-", ",".join(rebuilt) or "-")
        self._publish(EngineEvent(time.time(), now, "reloaded", f"kept={kept} rebuilt={rebuilt}"))

    def _reload_refused(self, why: str) -> None:
        log.error("reload refused, keeping the running config: %s", why)
        self._publish(EngineEvent(time.time(), self.clock(), "reload_failed", why))

    # ---- netlink facts ---------------------------------------------------------------------------

    def _start_monitor(self) -> None:
        """(Re)start the netlink monitor over the current uplinks' interfaces."""
        if self.monitor:
            self.monitor.close()
        task = self._tasks.get("monitor")
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.monitor = LinkMonitor([u.cfg.interface for u in self.uplinks.values()],
                                   protocol=self.config.routing.protocol)
        self._tasks["monitor"] = asyncio.create_task(self._run_monitor(self.monitor), name="monitor")

    async def _run_monitor(self, monitor: LinkMonitor) -> None:
        try:
            await monitor.run(self._on_facts)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("link monitor failed; routes stay, restarting it in 1s")
            await asyncio.sleep(1.0)
            if not self._stop and self.monitor is monitor:
                self._start_monitor()

    def _on_facts(self, snapshot: dict[str, LinkFacts]) -> None:
        now = self.clock()
        changed = False
        for u in self.uplinks.values():
            f = snapshot.get(u.cfg.interface)
            if f != u.facts:
                self._apply_facts(u, f, now)
                changed = True
        if changed:
            self._decide(now)
            self.reconcile()

    def _apply_facts(self, u: Uplink, f: LinkFacts | None, now: float, initial: bool = False) -> None:
        old = u.facts
        u.facts = f
        ok, reason = link_verdict(u.cfg, f)
        if not ok:
            # No rounds run while the link is gone: stale statistics would mislead status and events.
            u.stats = hm.EMPTY_STATS
            u.samples.clear()
            u.last_results.clear()
        self._step(u, hm.on_link(u.health, ok, reason, now), now)
        u.wake.set()
        if f is not None and f.address:
            if u.nat_address and f.address != u.nat_address:
                self._pending_flush.append((u.name, u.nat_address))  # renumbered: old NAT entries are dead
            u.nat_address = f.address
        if u.probes and (f is None or f.address != u.probe_source):
            u.close_probes()  # the source address changed (DHCP): rebuild on the new one
        if not initial and old is not None and f is not None and f.carrier and not old.carrier:
            gw = gateway_of(u.cfg, f)
            if gw and f.ifindex and self.reconciler:
                try:  # a stale FAILED neighbour entry would delay failback by a second or more
                    self.reconciler.forget_neighbour(f.ifindex, gw)
                except Exception as e:
                    log.warning("uplink=%s cannot drop the neighbour entry of %s: %s", u.name, gw, e)

    # ---- history samples ------------------------------------------------------------------------

    def _start_sampler(self) -> None:
        task = self._tasks.pop("sampler", None)
        if task is not None:
            task.cancel()
        if self.config.history.path:
            self._tasks["sampler"] = asyncio.create_task(self._sampler(self.config.history.sample_period),
                                                         name="sampler")
        else:
            for u in self.uplinks.values():
                u.period.clear()

    async def _sampler(self, period: float) -> None:
        """Every ``period`` (aligned to the wall clock, so rows of all uplinks line up) publish what
        each uplink's probes saw since the last one."""
        start = time.time()
        while True:
            await asyncio.sleep(period - time.time() % period)
            start = self.publish_samples(start, time.time())

    def publish_samples(self, start: float, end: float) -> float:
        """Publish one UplinkSamples per uplink for ``[start, end]`` and begin the next period at ``end``."""
        now = self.clock()
        for u in self.uplinks.values():
            taken, u.period = u.period, []
            s = period_summary(taken)
            self._publish(UplinkSamples(
                at=end, mono=now, uplink=u.name, start=start, sent=s.sent, lost=s.lost, loss_pct=s.loss_pct,
                rtt_avg_ms=s.rtt_avg_ms, rtt_min_ms=s.rtt_min_ms, rtt_max_ms=s.rtt_max_ms, jitter_ms=s.jitter_ms))
        return end

    # ---- probing ----------------------------------------------------------------------------------

    def _start_prober(self, u: Uplink) -> None:
        self._tasks[f"prober:{u.name}"] = asyncio.create_task(self._prober(u), name=f"prober:{u.name}")

    def _stop_prober(self, u: Uplink) -> None:
        task = self._tasks.pop(f"prober:{u.name}", None)
        if task:
            task.cancel()
        u.close_probes()

    def interval_of(self, u: Uplink) -> float:
        h = u.cfg.health
        return hm.round_interval(u.health.state, u.name in self.active, h.interval, h.fast_interval,
                                     h.standby_interval)

    async def _prober(self, u: Uplink) -> None:
        """Start a round every interval; the interval follows the state (fast while pending)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            due = u.last_round_start + self.interval_of(u)
            if now < due:
                u.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(u.wake.wait(), due - now)
                continue  # recompute: the state (and so the interval) may have changed
            u.last_round_start = now
            log.debug("uplink=%s round start state=%s", u.name, u.health.state)
            if u.health.state != State.DISABLED and u.health.link_ok and self._ensure_probes(u):
                u.round_seq += 1
                task = asyncio.create_task(self._round(u, u.probes, u.generation, u.round_seq))
                self._round_tasks.add(task)
                task.add_done_callback(self._round_tasks.discard)

    def _ensure_probes(self, u: Uplink) -> bool:
        if u.probes:
            return True
        if not (u.facts and u.facts.address):
            return False
        specs = [ProbeSpec(p.type, p.target, p.query) for p in u.cfg.probes]
        try:
            u.probes = make_probes(specs, u.facts.address)
        except Exception as e:  # e.g. no permission for ICMP sockets; retried every round, logged once
            if str(e) != u.probe_error:
                log.warning("uplink=%s cannot open probes from %s: %s", u.name, u.facts.address, e)
            u.probe_error = str(e)
            return False
        u.probe_source = u.facts.address
        u.probe_error = None
        return True

    async def _round(self, u: Uplink, probes: list[Probe], generation: int, seq: int) -> None:
        h = u.cfg.health
        try:
            results = await asyncio.gather(*(p.run(h.timeout, h.attempts) for p in probes))
            if generation != u.generation or self.uplinks.get(u.name) is not u:
                return  # the probes were rebuilt meanwhile (address change, reload)
            self.on_round(u, results, self.clock(), seq)
        except Exception:
            log.exception("probe round on %s failed; the next round goes on", u.name)

    def on_round(self, u: Uplink, results: list[ProbeResult], now: float, seq: int | None = None) -> None:
        """Feed a finished round. Rounds overlap (timeout > fast_interval): one that started before
        a round already applied adds its samples to the statistics but does not step the state."""
        if not u.health.link_ok:
            return  # the link went away while the round was in flight
        u.rounds += 1
        nbytes = 0
        for r in results:
            sample = Sample(now, r.target, r.sent, r.lost, r.rtt)
            u.samples.append(sample)
            if self.config.history.path:
                u.period.append(sample)
            u.last_results[f"{r.kind}:{r.target}"] = r
            nbytes += r.bytes_sent + r.bytes_received
            if not r.ok:
                log.debug("uplink=%s probe %s %s failed: %s", u.name, r.kind, r.target, r.error)
        u.traffic.append((now, nbytes))
        horizon = now - max(u.params.quality_window, 1.0)
        while u.samples and u.samples[0].at < horizon:
            u.samples.popleft()
        u.stats = window_stats(u.samples, now, u.params.quality_window, u.health.quality_since)
        answered = sum(1 for r in results if r.ok)
        log.debug("uplink=%s round done %d/%d answered", u.name, answered, len(results))
        if seq is not None:
            if seq < u.applied_seq:
                return
            u.applied_seq = seq
        before = u.health.state
        self._step(u, hm.on_round(u.health, answered, len(results), u.stats, u.params, now), now)
        if u.health.state != before:
            u.wake.set()
            self._decide(now)
            self.reconcile()

    # ---- decisions ----------------------------------------------------------------------------------

    def _step(self, u: Uplink, result: tuple[Health, list[hm.Transition]], now: float) -> None:
        new, transitions = result
        u.health = new
        for t in transitions:
            if (t.new in (State.UP, State.DEGRADED) and t.old not in hm.USABLE) or (
                    t.old == State.DEGRADED and t.new == State.UP):
                u.working_since = now  # the failback hold counts from here
            if t.new == State.DOWN:
                u.downs += 1
            u.transitions += 1
            u.wall_since = time.time()
            s = u.stats
            self._publish(UplinkStateChanged(
                at=time.time(), mono=now, uplink=u.name, interface=u.cfg.interface, old=t.old.value,
                new=t.new.value, reason=t.reason, loss_pct=s.loss_pct, rtt_ms=s.rtt_ms, jitter_ms=s.jitter_ms))

    def views(self) -> list[UplinkView]:
        return [UplinkView(u.name, u.health.state, u.cfg.priority, u.cfg.weight, link_verdict(u.cfg, u.facts)[0],
                           u.working_since, u.health.quality_bad, u.health.since) for u in self.uplinks.values()]

    def _decide(self, now: float, reason_prefix: str = "") -> None:
        p = self.config.policy
        d = decide(self.views(), PolicyParams(p.mode, p.failback_hold), self.active, now, self.forced)
        self.decision = d
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if d.recheck_at is not None:
            loop = asyncio.get_running_loop()
            self._recheck = loop.call_later(max(d.recheck_at - now, 0.0) + 0.01, self._on_recheck)
        if d.active != self.active:
            self.active_changes += 1
            old, self.active = self.active, d.active
            self.previous_active = old
            log.info("active %s -> %s reason=%s", ",".join(old) or "-", ",".join(d.active) or "-", d.reason)
            self._pending_active_event = ActiveChanged(time.time(), now, old, d.active, reason_prefix + d.reason)
            for n in old:
                u = self.uplinks.get(n)
                if n not in d.active and u is not None and u.nat_address:
                    self._pending_flush.append((n, u.nat_address))
            for n in set(old) ^ set(d.active):
                if n in self.uplinks:
                    self.uplinks[n].wake.set()  # its probing interval changes (active <-> standby)

    def _on_recheck(self) -> None:
        self._recheck = None
        self.tick(self.clock())

    def tick(self, now: float) -> None:
        """Decide again (a held failback may be due) and apply."""
        self._decide(now)
        self.reconcile()

    def reconcile(self, force: bool = False) -> None:
        """Apply the routing plan for the current decision; publish and flush after the switch."""
        if self.reconciler is None:
            return
        try:
            desired = plan([u.route() for u in self.uplinks.values()],
                           [(n, self.uplinks[n].cfg.weight) for n in self.active if n in self.uplinks],
                           self.routing_params)
        except RoutingError as e:  # inconsistent facts from the kernel: leave the routes as they are
            log.error("routing plan refused, kernel left unchanged: %s", e)
            return
        if force or desired != self._last_desired:
            report = self.reconciler.apply(desired)
            if report.changed:
                self.last_apply_ms = report.elapsed_ms
                log.info("routing applied in %.1fms: %s", report.elapsed_ms,
                         "; ".join(report.added + report.replaced + report.removed)[:500])
            for err in report.errors:
                log.error("routing: %s", err)
            self._last_desired = desired if not report.errors else None
        event = self._pending_active_event
        if event is not None:
            self._pending_active_event = None
            self._publish(event)
        flush, self._pending_flush = self._pending_flush, []
        if self.config.policy.flush_conntrack:
            for name, address in flush:
                self._flush_conntrack(name, address)

    def _flush_conntrack(self, name: str, address: str) -> None:
        """Delete the NAT entries of an uplink that lost its traffic, off the event loop."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()

        def done(fut: asyncio.Future) -> None:
            try:
                n = fut.result()
            except Exception as e:
                log.warning("conntrack flush for %s (%s) failed: %s", name, address, e)
                return
            ms = (time.monotonic() - t0) * 1000
            self.flushes.append({"uplink": name, "address": address, "deleted": n, "ms": round(ms, 1)})
            log.info("conntrack: deleted %d entries NATed to %s (%s) in %.0fms", n, address, name, ms)

        loop.run_in_executor(None, self.flush_fn, address).add_done_callback(done)

    def _publish(self, event) -> None:
        if self.sinks is not None:
            self.sinks.publish(event)

    # ---- control -----------------------------------------------------------------------------------

    async def handle_request(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "set":
            source = req.get("source", "cli")
            if not isinstance(source, str) or not source.isprintable() or not 0 < len(source) <= 100:
                return {"ok": False, "error": "source: expected a printable string of 1..100 characters"}
            return self.admin(req.get("uplink"), req.get("action"), source)
        if cmd == "reload":
            self.request_reload()
            return {"ok": True, "message": "reload requested"}
        if cmd == "ping":
            return {"ok": True, "version": __version__}
        return {"ok": False, "error": f"unknown command {cmd!r}; expected status, set, reload or ping"}

    def admin(self, name, action, source: str = "cli") -> dict:
        actions = ("disable", "enable", "force", "auto")
        if not isinstance(name, str) or name not in self.uplinks:
            return {"ok": False, "error": f"unknown uplink {name!r}; expected one of {', '.join(self.uplinks)}"}
        if action not in actions:
            return {"ok": False, "error": f"unknown action {action!r}; expected one of {', '.join(actions)}"}
        u = self.uplinks[name]
        now = self.clock()
        if action in ("disable", "enable"):
            self._step(u, hm.on_admin(u.health, action == "disable", now), now)
            u.wake.set()
        elif action == "force":
            self.forced = name
        else:  # auto: back to automatic choice, whichever uplink was forced
            message = f"auto: force on {self.forced} cleared" if self.forced else "auto: no uplink was forced"
            self.forced = None
        log.info("admin: %s %s (from %s)", action, name, source)
        self._decide(now, reason_prefix=f"admin {action} {name}: ")
        message = message if action == "auto" else f"{action} {name}"
        self._publish(AdminAction(time.time(), now, action, name, source,  # before the ActiveChanged it causes
                                  f"{message}; active: {','.join(self.active) or '-'}"))
        self.reconcile()
        return {"ok": True, "message": message, "active": list(self.active)}

    def status(self) -> dict:
        now = self.clock()
        out = []
        for u in self.uplinks.values():
            s = u.stats
            f = u.facts
            bpd = u.bytes_per_day(now)
            out.append({
                "name": u.name, "interface": u.cfg.interface, "state": u.health.state.value,
                "reason": u.health.reason, "active": u.name in self.active, "since": u.wall_since,
                "priority": u.cfg.priority, "weight": u.cfg.weight, "table": u.cfg.table,
                "rtt_ms": _round(s.rtt_ms), "loss_pct": _round(s.loss_pct), "jitter_ms": _round(s.jitter_ms),
                "carrier": bool(f and f.carrier), "address": f.address if f else None,
                "gateway": gateway_of(u.cfg, f), "forced": self.forced == u.name,
                "interval_ms": round(self.interval_of(u) * 1000),
                "probe_bytes_per_day": None if bpd is None else round(bpd),
                "rounds": u.rounds, "downs": u.downs, "transitions": u.transitions, "probe_error": u.probe_error,
                "probes": [{"kind": r.kind, "target": r.target, "ok": r.ok, "rtt_ms": _round(r.rtt and r.rtt * 1000),
                            "error": r.error} for r in u.last_results.values()],
            })
        d = self.decision
        return {
            "version": __version__, "pid": os.getpid(), "started": self.started_wall,
            "mode": self.config.policy.mode, "active": list(self.active), "forced": self.forced,
            "previous_active": list(self.previous_active),
            "reason": d.reason if d else "", "last_apply_ms": _round(self.last_apply_ms),
            "conntrack_flushes": list(self.flushes), "active_changes": self.active_changes, "uplinks": out,
            "sinks": self.sinks.stats() if self.sinks else {},
            "snmp": self._snmp_status(),
        }

    def _snmp_status(self) -> dict | None:
        """What status shows of SNMP (never a community or key)."""
        snmp = self.config.snmp
        if not snmp.traps and not snmp.agent.enabled:
            return None
        from linkwatch.snmp import engine_id

        return {"engine_id": engine_id(snmp.engine_id).hex(), "base_oid": snmp.base_oid,
                "agent": self.agent.stats() if self.agent is not None else None,
                "agent_error": self.agent_error, "agent_listen": snmp.agent.listen if snmp.agent.enabled else None}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
