"""The engine's I/O shell (linkwatch.daemon.engine) with a stand-in kernel and stand-in probes, in
real time: the order in which it carries out the core's outputs, the control socket, reload with
its sink swap, and the failures it must contain. No root, no namespaces."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakes import FakeKernel, FakeProbes  # noqa: E402
from harness import FACTS, GATEWAY, active_gateways  # noqa: E402

from linkwatch.config import load  # noqa: E402
from linkwatch.core.status import status_from_dict  # noqa: E402
from linkwatch.daemon.engine import Engine  # noqa: E402
from linkwatch.history.reader import HistoryReader  # noqa: E402
from linkwatch.report.control import call  # noqa: E402

FAST = """
[health]
interval = "30ms"
fast_interval = "20ms"
standby_interval = "30ms"
timeout = "40ms"
attempts = 1
down_after = 3
up_after = 2
quality_window = "1s"
[policy]
failback_hold = "1s"
[uplinks.fibre]
interface = "up1"
priority = 1
[[uplinks.fibre.probes]]
type = "icmp"
target = "203.0.113.1"
[uplinks.lte]
interface = "up2"
priority = 2
[[uplinks.lte.probes]]
type = "icmp"
target = "203.0.113.1"
"""


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "linkwatch.toml"
    path.write_text(f'[control]\nsocket = "{tmp_path}/control.sock"\n' + extra + FAST)
    return path


async def until(check, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Running:
    """An engine running its main loop (Engine.run) in the test's event loop."""

    def __init__(self, path: Path, kernel: FakeKernel | None = None, probes: FakeProbes | None = None):
        self.kernel = kernel or FakeKernel(FACTS)
        self.probes = probes or FakeProbes()
        self.engine = Engine(load(path), str(path), kernel=self.kernel, make_probes=self.probes)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Engine:
        self.task = asyncio.create_task(self.engine.run())
        await until(lambda: self.engine.control is not None and self.engine.state.routing is not None, what="start")
        return self.engine

    async def __aexit__(self, *exc) -> None:
        self.engine.request_stop()
        await asyncio.wait_for(self.task, 10)

    def gateways(self) -> list[str]:
        return active_gateways(self.kernel.applied[-1]) if self.kernel.applied else []

    def states(self) -> dict[str, str]:
        return {u.name: u.health.state.value for u in self.engine.state.uplinks}


class SnapshotOnEvent(logging.Handler):
    """Records, for each event the log sink writes, what the kernel's routes were at that moment."""

    def __init__(self, kernel: FakeKernel):
        super().__init__(logging.INFO)
        self.kernel = kernel
        self.seen: list[tuple[str, list[str]]] = []

    def emit(self, record):
        applied = self.kernel.applied[-1] if self.kernel.applied else None
        self.seen.append((record.getMessage(), active_gateways(applied)))


def test_a_kernel_that_refuses_the_mark_flush_still_gets_the_flows_reset_by_address(tmp_path):
    async def scenario():
        run = Running(write_config(tmp_path))
        run.kernel.fail_mark_flush = True
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            run.probes.silent.add(FACTS["up1"].address)  # blackhole fibre
            await until(lambda: engine.state.active == ("lte",), what="failover")
            await until(lambda: run.kernel.flushed, what="the flush")
            assert run.kernel.flushed == [FACTS["up1"].address], "by NAT address, entry by entry, instead"
            report = engine.applier.flushes[-1]
            assert (report.uplink, report.mark) == ("fibre", None)
    asyncio.run(scenario())


def test_while_the_flow_table_cannot_be_applied_a_dead_uplinks_flows_are_reset_by_address(tmp_path):
    """Review finding 10: the core flushed by flow mark though no flow had one (nft kept failing)."""
    async def scenario():
        run = Running(write_config(tmp_path))
        run.kernel.apply_errors = ["nft table ip linkwatch: nft: Error: Could not process rule"]
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            run.probes.silent.add(FACTS["up1"].address)  # blackhole fibre
            await until(lambda: engine.state.active == ("lte",), what="failover")
            await until(lambda: run.kernel.flushed, what="the flush")
            assert run.kernel.flushed == [FACTS["up1"].address], "by NAT address: the flows carry no mark"
    asyncio.run(scenario())


def test_a_restart_resets_the_flows_a_previous_run_marked_for_an_uplink_now_numbered_otherwise(tmp_path):
    async def scenario():
        kernel = FakeKernel(FACTS)
        kernel.old_marks = {"up1": 0x650000, "up2": 0x670000}  # lte had table 103 in the previous config
        async with Running(write_config(tmp_path), kernel=kernel):
            await until(lambda: kernel.flushed, what="the flush")
            assert kernel.flushed == ["mark 0x670000"]
    asyncio.run(scenario())


def test_a_refused_mark_flush_of_an_uplink_that_never_had_an_address_deletes_nothing_else(tmp_path, caplog):
    async def scenario():
        run = Running(write_config(tmp_path), kernel=FakeKernel({"up2": FACTS["up2"]}))  # up1 missing
        run.kernel.fail_mark_flush = True
        async with run:
            await until(lambda: run.states()["fibre"] == "DOWN", what="fibre DOWN")
            await until(lambda: run.kernel.flushed or "flush for fibre skipped" in caplog.text, what="the attempt")
            assert run.kernel.flushed == [], "no address to delete by: not a flush of every NATed entry"
    asyncio.run(scenario())


def test_failover_routes_are_in_place_before_the_event_is_published(tmp_path):
    async def scenario():
        run = Running(write_config(tmp_path))
        spy = SnapshotOnEvent(run.kernel)
        events_log = logging.getLogger("linkwatch.events")
        events_log.addHandler(spy)
        events_log.setLevel(logging.INFO)
        try:
            async with run as engine:
                await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
                assert run.gateways() == [GATEWAY["fibre"]]
                run.probes.silent.add(FACTS["up1"].address)  # blackhole fibre
                await until(lambda: engine.state.active == ("lte",), what="failover")
                await until(lambda: any("active fibre -> lte" in m for m, _ in spy.seen), what="the event")
                assert run.gateways() == [GATEWAY["lte"]]
                assert run.kernel.flushed == ["mark 0x650000"], "fibre's flows are flushed by their flow mark"
        finally:
            events_log.removeHandler(spy)
        moved = [gw for m, gw in spy.seen if "active fibre -> lte" in m]
        assert moved == [[GATEWAY["lte"]]], "when ActiveChanged is published the kernel already routes via lte"
        assert any("engine stopped" in m for m, _ in spy.seen)
    asyncio.run(scenario())


def test_control_socket_status_and_set(tmp_path):
    async def scenario():
        run = Running(write_config(tmp_path))
        async with run as engine:
            sock = engine.config.control.socket
            assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            answer = await asyncio.to_thread(call, sock, {"cmd": "status"})
            status = status_from_dict(answer["status"])  # the JSON a reader gets is the typed contract
            assert [u.name for u in status.uplinks] == ["fibre", "lte"] and status.active == ("fibre",)
            answer = await asyncio.to_thread(call, sock, {"cmd": "set", "uplink": "lte", "action": "force",
                                                          "source": "web:admin@10.0.0.2"})
            assert answer == {"ok": True, "message": "force lte", "active": ["lte"]}
            assert run.gateways() == [GATEWAY["lte"]], "the answer comes once the route is in place"
            bad = await asyncio.to_thread(call, sock, {"cmd": "set", "uplink": "lte", "action": "force",
                                                       "source": "x\n<y>"})
            assert not bad["ok"] and "source" in bad["error"]
            bad = await asyncio.to_thread(call, sock, {"cmd": "nope"})
            assert not bad["ok"] and "unknown command" in bad["error"]
    asyncio.run(scenario())


def test_reload_swapping_sinks_loses_no_event_of_a_failover_meanwhile(tmp_path, caplog):
    """A reload that changes [hooks] or [history] replaces the sinks. A failover while that happens
    (the old hook still running, the old history still writing) must reach every sink."""
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    record = tmp_path / "hook.log"
    slow = hooks / "10-record"
    slow.write_text(f'#!/bin/sh\necho "$LINKWATCH_EVENT $LINKWATCH_UPLINK $LINKWATCH_STATE" >> {record}\nsleep 0.3\n')
    slow.chmod(0o755)
    db = tmp_path / "history.db"
    extra = (f'[hooks]\ndirectory = "{hooks}"\ntimeout = "5s"\n'
             f'[history]\npath = "{db}"\ncommit_interval = "1s"\nevent_delay = "100ms"\n')
    path = write_config(tmp_path, extra)

    async def scenario():
        run = Running(path)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            # The old hook sink still has a queue to work through (0.3 s per event) when the reload comes.
            path.write_text(path.read_text().replace('timeout = "5s"', 'timeout = "4s"'))
            engine.request_reload()
            run.probes.silent.add(FACTS["up1"].address)  # and fibre dies while the sinks are swapped
            await until(lambda: engine.state.active == ("lte",), what="failover")
            await until(lambda: engine.config.hooks.timeout == 4.0, what="reload")
            await asyncio.sleep(0.2)
        # Stopped: every sink has delivered what it got.
        return engine

    with caplog.at_level(logging.INFO, logger="linkwatch.events"):
        asyncio.run(scenario())
    logged = [r.getMessage() for r in caplog.records if r.name == "linkwatch.events"]
    assert any(m.startswith("uplink=fibre") and "-> DOWN" in m for m in logged), logged
    assert any(m.startswith("active fibre -> lte") for m in logged), logged
    with HistoryReader(str(db)) as reader:
        events = reader.events(limit=None)
    kinds = [(e["kind"], e.get("new")) for e in events]
    assert ("uplink_state", "DOWN") in kinds and ("active_changed", ["lte"]) in kinds, kinds
    assert ("engine", None) in [(k, None) for k, _ in kinds]
    hooked = record.read_text().splitlines()
    assert "uplink_state fibre DOWN" in hooked and any(line.startswith("active_changed") for line in hooked), hooked


def test_a_failing_neighbour_cleanup_does_not_keep_the_uplink_down(tmp_path):
    async def scenario():
        kernel = FakeKernel(FACTS)
        kernel.fail_neighbours = True
        run = Running(write_config(tmp_path), kernel=kernel)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            kernel.change("up1", carrier=False)
            await until(lambda: run.states()["fibre"] == "DOWN" and run.gateways() == [GATEWAY["lte"]],
                        what="carrier failover")
            kernel.change("up1", carrier=True)
            await until(lambda: run.states()["fibre"] == "UP", what="fibre back UP")
            assert engine.state.uplink("fibre").health.link_ok
    asyncio.run(scenario())


def test_probes_that_cannot_open_are_reported_and_retried(tmp_path):
    async def scenario():
        probes = FakeProbes()
        real = probes.__call__
        broken = {"on": True}

        def make(specs, source, *, device=None):
            if broken["on"] and source == FACTS["up2"].address:
                raise PermissionError("no permission for ICMP sockets")
            return real(specs, source, device=device)

        run = Running(write_config(tmp_path), probes=make)  # type: ignore[arg-type]
        async with run as engine:
            await until(lambda: engine.status().uplink("lte").probe_error is not None, what="probe error")
            assert "ICMP" in engine.status().uplink("lte").probe_error
            assert run.states()["lte"] == "INIT"
            broken["on"] = False
            await until(lambda: run.states()["lte"] == "UP", what="lte probed")
            assert engine.status().uplink("lte").probe_error is None
    asyncio.run(scenario())


def test_probes_are_bound_to_the_uplink_interface_and_a_returning_interface_gets_new_ones(tmp_path):
    """CI flake of test_interface_renamed_away_and_back: probes of an uplink whose policy rule was
    missing for a moment left through the other uplink, whose NAT then held their conntrack entry.
    Bound to their interface they cannot; and an interface that comes back (renamed back, or
    re-created with a new index) gets new sockets, so nothing of before is carried over."""
    async def scenario():
        run = Running(write_config(tmp_path))
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            made = dict(zip((source for source, _ in run.probes.made), run.probes.devices))
            assert made == {FACTS["up1"].address: "up1", FACTS["up2"].address: "up2"}
            for back in (12, 13):  # renamed away and back (same index), deleted and re-created
                count = len(run.probes.made)
                run.kernel.change("up2", ifindex=None)
                await until(lambda: run.states()["lte"] == "DOWN", what="lte missing")
                run.kernel.change("up2", ifindex=back)
                await until(lambda: run.states()["lte"] == "UP", what=f"lte back (index {back})")
                assert run.probes.made[count:] == [(FACTS["up2"].address, run.probes.made[0][1])]
                assert run.probes.devices[count:] == ["up2"]
            assert engine.state.uplink("lte").facts.ifindex == 13
    asyncio.run(scenario())


def test_an_snmp_agent_that_cannot_listen_is_reported_and_the_engine_goes_on(tmp_path):
    import socket

    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    path = write_config(tmp_path, f'[snmp.agent]\nenabled = true\nlisten = "127.0.0.1:{port}"\n'
                                  'community = "s3cret-ro"\n')

    async def scenario():
        run = Running(path)
        async with run as engine:
            snmp = engine.status().snmp
            assert engine.snmp.agent is None and "127.0.0.1" in snmp.agent_error
            assert "s3cret-ro" not in json.dumps(engine.status().to_dict())
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            run.probes.silent.add(FACTS["up1"].address)
            await until(lambda: run.gateways() == [GATEWAY["lte"]], what="failover without the agent")
    try:
        asyncio.run(scenario())
    finally:
        busy.close()


def test_restart_into_a_kernel_that_routes_changes_nothing(tmp_path):
    async def scenario():
        kernel = FakeKernel(FACTS, active=((GATEWAY["fibre"], FACTS["up1"].ifindex),))
        run = Running(write_config(tmp_path), kernel=kernel)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await asyncio.sleep(1.5)  # longer than failback_hold (1 s): rounds, ticks and repairs ran
            assert {tuple(active_gateways(r)) for r in kernel.applied} == {(GATEWAY["fibre"],)}, \
                "every apply kept the kernel's route"
            assert engine.state.active_changes == 0 and engine.state.active == ("fibre",)
    asyncio.run(scenario())


def test_stop_with_withdraw_removes_the_routes(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[policy]\n", '[policy]\non_stop = "withdraw"\n'))

    async def scenario():
        run = Running(path)
        async with run:
            pass
        assert run.kernel.applied[-1] is None and run.kernel.closed
    asyncio.run(scenario())


@pytest.mark.parametrize("garbage", ["[bogus]\n", "[routing]\nrule_priority = 2000\n"])
def test_a_refused_reload_keeps_everything(tmp_path, garbage):
    path = write_config(tmp_path)

    async def scenario():
        run = Running(path)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            before = engine.config
            path.write_text(garbage + path.read_text())
            await engine.reload()
            assert engine.config is before and engine.state.active == ("fibre",)
    asyncio.run(scenario())


# ---- regressions found by review (each failed before its fix) ------------------------------------


class RefusingKernel(FakeKernel):
    """A kernel that refuses part of every plan (a gateway it will not take, say)."""

    async def apply(self, routes):
        self.applied.append(routes)
        from linkwatch.kernel.reconciler import ApplyReport

        return ApplyReport(errors=["replace route default via 198.51.100.1 dev #11 table 101: "
                                   "Nexthop has invalid gateway (errno 22)"])


def test_a_refused_plan_is_retried_at_the_repair_tick_not_after_every_round(tmp_path, caplog):
    path = write_config(tmp_path)

    async def scenario():
        kernel = RefusingKernel(FACTS)
        run = Running(path, kernel=kernel)
        async with run:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await asyncio.sleep(0.3)
            before = len(kernel.applied)
            logged = len(warnings())
            await asyncio.sleep(4.1)  # ~130 probe rounds at these intervals, 2 repair ticks
            return len(kernel.applied) - before, logged

    def warnings():
        return [r for r in caplog.records if r.name == "linkwatch.engine" and r.levelno == logging.WARNING]

    def errors():
        return [r for r in caplog.records if r.name == "linkwatch.engine" and r.levelno >= logging.ERROR]

    with caplog.at_level(logging.DEBUG, logger="linkwatch.engine"):
        applies, logged = asyncio.run(scenario())
    assert applies <= 3, f"{applies} applies in 4 s"
    assert logged >= 1 and len(warnings()) == logged, [r.getMessage() for r in warnings()]  # per plan, not per retry
    # a refusal that lasts REFUSED_ERROR_AFTER (3 s) is an error, said once
    assert [r.getMessage().split(" for ")[0] for r in errors()] == ["routing: the kernel has refused part of the plan"]


class RacedKernel(FakeKernel):
    """The soak's deleted interface: the plan names an index the kernel no longer has, once."""

    def __init__(self, facts):
        super().__init__(facts)
        self.refuse_next = False

    async def apply(self, routes):
        report = await super().apply(routes)
        if self.refuse_next:
            self.refuse_next = False
            report.errors.append("replace route 198.51.100.8/29 dev #12 table 102 scope link src 198.51.100.10: "
                                 "No such device (errno 19)")
        return report


def test_a_refusal_the_next_plan_clears_is_a_warning_not_an_error(tmp_path, caplog):
    """The soak logged ERROR for routes refused while an interface was deleted and re-created."""
    async def scenario():
        kernel = RacedKernel(FACTS)
        run = Running(write_config(tmp_path), kernel=kernel)
        async with run:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            kernel.refuse_next = True
            kernel.change("up2", ifindex=13)  # re-created: a new plan, refused once, then the repair goes through
            await until(lambda: not kernel.refuse_next, what="the refused apply")
            await until(lambda: "took the plan" in caplog.text, timeout=5.0, what="the retry")

    with caplog.at_level(logging.DEBUG, logger="linkwatch.engine"):
        asyncio.run(scenario())
    engine_records = [r for r in caplog.records if r.name == "linkwatch.engine"]
    assert [r.levelname for r in engine_records if "No such device" in r.getMessage()] == ["WARNING"]
    assert not [r.getMessage() for r in engine_records if r.levelno >= logging.ERROR]


def test_hooks_see_one_uplinks_events_in_order_across_a_sink_swap(tmp_path):
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    record = tmp_path / "hook.log"
    slow = hooks / "10-record"
    slow.write_text(f'#!/bin/sh\n[ "$LINKWATCH_EVENT" = uplink_state ] && '
                    f'echo "$LINKWATCH_UPLINK $LINKWATCH_OLD_STATE $LINKWATCH_STATE" >> {record}\nsleep 0.2\n')
    slow.chmod(0o755)
    path = write_config(tmp_path, f'[hooks]\ndirectory = "{hooks}"\ntimeout = "5s"\n')

    async def scenario():
        run = Running(path)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            path.write_text(path.read_text().replace('timeout = "5s"', 'timeout = "4s"'))
            engine.request_reload()  # while the old hook sink still works through the start
            run.probes.silent.add(FACTS["up1"].address)
            await until(lambda: run.states()["fibre"] == "DOWN", what="fibre DOWN")
            await until(lambda: engine.config.hooks.timeout == 4.0, what="reload")

    asyncio.run(scenario())
    fibre = [line.split()[1:] for line in record.read_text().splitlines() if line.startswith("fibre")]
    assert fibre == [["INIT", "UP"], ["UP", "FALLING"], ["FALLING", "DOWN"]], fibre


class RacingKernel(FakeKernel):
    """DHCP renumbers lte while the engine is reading the facts for a reload."""

    race = False

    async def read_facts(self, ifnames):
        snapshot = await super().read_facts(ifnames)
        if self.race:
            self.race = False
            await asyncio.sleep(0)
            self.change("up2", address="198.51.100.11")
        return snapshot


def test_a_link_change_during_a_reload_is_not_lost(tmp_path):
    path = write_config(tmp_path)

    async def scenario():
        kernel = RacingKernel(FACTS)
        run = Running(path, kernel=kernel)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            path.write_text(path.read_text().replace("priority = 2", "priority = 3"))  # lte is rebuilt
            kernel.race = True
            await engine.reload()
            await until(lambda: engine.state.uplink("lte").facts.address == "198.51.100.11", what="new address")
            rules = sorted(r.src for r in engine.state.routing.rules if r.src)
            assert rules == ["198.51.100.11/32", "198.51.100.2/32"], rules
    asyncio.run(scenario())


def test_a_reload_that_rebuilds_an_uplink_keeps_saying_why_it_is_not_probed(tmp_path):
    path = write_config(tmp_path)

    async def scenario():
        probes = FakeProbes()

        def make(specs, source, *, device=None):
            if source == FACTS["up2"].address:
                raise PermissionError("no permission for ICMP sockets")
            return probes(specs, source, device=device)

        run = Running(path, probes=make)  # type: ignore[arg-type]
        async with run as engine:
            await until(lambda: engine.status().uplink("lte").probe_error is not None, what="probe error")
            path.write_text(path.read_text().replace("priority = 2", "priority = 3"))  # lte is rebuilt
            await engine.reload()
            await until(lambda: engine.status().uplink("lte").probe_error is not None, what="error again")
            assert "ICMP" in engine.status().uplink("lte").probe_error
    asyncio.run(scenario())


def test_with_withdraw_stopped_is_told_after_the_routes_are_gone(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[policy]\n", '[policy]\non_stop = "withdraw"\n'))
    run = Running(path)
    seen = []

    class Spy(logging.Handler):
        def emit(self, record):
            if "engine stopped" in record.getMessage():
                seen.append("withdrawn" if run.kernel.applied and run.kernel.applied[-1] is None else "routes")

    spy, events_log = Spy(), logging.getLogger("linkwatch.events")
    events_log.addHandler(spy)
    events_log.setLevel(logging.INFO)

    async def scenario():
        async with run:
            await asyncio.sleep(0.2)
    try:
        asyncio.run(scenario())
    finally:
        events_log.removeHandler(spy)
    assert seen == ["withdrawn"]


def test_a_rebuilt_uplink_is_probed_by_one_prober_at_its_own_interval(tmp_path):
    """The prober a reload replaces stops for good: it once went on at the fast interval of the
    rebuilt (INIT) uplink, five times the standby rate, and its rounds counted for the new one."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('standby_interval = "30ms"', 'standby_interval = "300ms"'))

    async def scenario():
        run = Running(path)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            path.write_text(path.read_text().replace("priority = 2", "priority = 3"))  # lte is rebuilt
            await engine.reload()
            await until(lambda: run.states()["lte"] == "UP", what="lte UP again")
            await asyncio.sleep(0.2)
            before = engine.state.uplink("lte").rounds
            await asyncio.sleep(1.2)
            rounds = engine.state.uplink("lte").rounds - before
            assert rounds <= 6, f"{rounds} rounds in 1.2 s at a 300 ms standby interval"
            probers = [t for t in asyncio.all_tasks() if t.get_name() == "prober:lte"]
            assert len(probers) == 1
    asyncio.run(scenario())


# ---- issue 10: the shell reads the counters, sends the bursts the core asks for ---------------------


async def lan_traffic(kernel: FakeKernel, ifindex: int, stop: asyncio.Event, rx: dict, tx_per_tick: int = 3):
    """A LAN flow through one interface: counters grow every 10 ms (rx only while rx["on"])."""
    from linkwatch.core.inputs import LinkCounters

    r = t = 0
    while not stop.is_set():
        t += tx_per_tick
        if rx["on"]:
            r += tx_per_tick
        kernel.counters[ifindex] = LinkCounters(r, t, 1000 * r, 1000 * t)
        await asyncio.sleep(0.01)


def test_a_blackhole_under_lan_traffic_is_confirmed_by_a_burst_within_half_a_second(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('interval = "30ms"', 'interval = "250ms"', 1)
                    .replace('standby_interval = "30ms"', 'standby_interval = "2s"')
                    .replace('timeout = "40ms"', 'timeout = "250ms"').replace("attempts = 1", "attempts = 2")
                    .replace('quality_window = "1s"', 'quality_window = "2s"'))

    async def scenario():
        run = Running(path)
        stop, rx = asyncio.Event(), {"on": True}
        traffic = asyncio.create_task(lan_traffic(run.kernel, FACTS["up1"].ifindex, stop, rx))
        try:
            async with run as engine:
                await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
                await asyncio.sleep(2.5)
                assert engine.status().uplink("fibre").proven, "the LAN's traffic proves fibre"
                assert engine.status().uplink("fibre").interval_ms == 2000
                t0 = time.monotonic()
                rx["on"] = False  # blackhole: the LAN keeps sending, nothing comes back ...
                run.probes.silent.add(FACTS["up1"].address)  # ... and the probes get no answer
                await until(lambda: engine.state.active == ("lte",), timeout=3.0, what="failover")
                elapsed = time.monotonic() - t0
                assert run.gateways() == [GATEWAY["lte"]]
                down = [u for u in engine.state.uplinks if u.name == "fibre"][0]
                assert "nothing came in for" in down.health.reason
                assert elapsed < 0.6, f"{elapsed:.2f}s"
        finally:
            stop.set()
            await traffic
    asyncio.run(scenario())


def test_a_standby_uplink_that_takes_traffic_has_its_counters_read_fast_at_once(tmp_path):
    """A standby uplink's counters are read rarely (its month's traffic only); the moment it
    becomes active its reads must follow the active plan, not wait out the standby pause."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('standby_interval = "30ms"', 'standby_interval = "5s"'))

    async def scenario():
        run = Running(path)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await asyncio.sleep(1.2)  # lte has had its standby read and waits ~5 s for the next
            lte = FACTS["up2"].ifindex
            run.kernel.change("up1", carrier=False)
            await until(lambda: engine.state.active == ("lte",), timeout=3.0, what="failover to lte")
            t0 = time.monotonic()
            await asyncio.sleep(0.6)
            reads = [t for t, i in run.kernel.counter_reads if i == lte and t >= t0]
            assert reads and reads[0] - t0 < 0.3, f"lte's first read as the active uplink: {reads[:1]} (t0 {t0:.2f})"
            assert len(reads) >= 2, "an active uplink is read at least every 250 ms"
    asyncio.run(scenario())


def test_a_stop_writes_the_unfinished_history_period_so_the_month_loses_nothing(tmp_path):
    """Review: the minute in progress at a stop was never written, so the month's traffic (summed
    from the history after a restart) came up short and a quota threshold could be raised twice."""
    from linkwatch.core.inputs import LinkCounters

    db = tmp_path / "history.db"
    path = write_config(tmp_path, f'[history]\npath = "{db}"\ncommit_interval = "1s"\nevent_delay = "100ms"\nsample_period = "60s"\n')

    async def scenario():
        run = Running(path)
        up1 = FACTS["up1"].ifindex
        run.kernel.counters[up1] = LinkCounters(0, 0, 0, 0)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await asyncio.sleep(0.5)
            run.kernel.counters[up1] = LinkCounters(100, 100, 300_000, 200_000)
            await until(lambda: engine.status().uplink("fibre").month_bytes == 500_000, what="the bytes counted")
        return engine

    asyncio.run(scenario())
    with HistoryReader(str(db)) as reader:
        assert reader.traffic_since(0).get("fibre") == 500_000, "the unfinished minute is in the history"


def test_without_libnftables_sticky_flows_are_off_and_said_so(monkeypatch, caplog):
    """A router without libnftables: the engine runs without sticky flows (flushing on every move,
    as a flow must not be left on a working uplink without its mark rule) and says why."""
    from linkwatch.config import loads
    from linkwatch.daemon import engine as daemon
    from linkwatch.kernel.nft import NftError

    def missing():
        raise NftError("libnftables is not installed (libnftables.so.1: cannot open shared object file)")

    monkeypatch.setattr(daemon, "nft_library", missing)
    with caplog.at_level(logging.ERROR, logger="linkwatch.engine"):
        cfg = daemon.without_unavailable(loads(FAST))
    assert not cfg.policy.sticky_flows
    assert any("sticky flows are off: libnftables is not installed" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.ERROR, logger="linkwatch.engine"):
        daemon.without_unavailable(loads(FAST + '\n[[rules]]\nproto = "udp"\ndport = 5060\nuplinks = ["lte"]\n'))
    assert any("sticky flows are off and the 1 policy rules are not applied" in r.getMessage()
               for r in caplog.records)
    monkeypatch.undo()
    assert daemon.without_unavailable(loads(FAST)).policy.sticky_flows, "here it is installed"


def test_run_time_lan_prefixes_follow_reloads_in_their_file(tmp_path):
    """The file of run-time LAN prefixes says what the engine holds: a request writes it, a reload
    that drops the uplink rewrites it (a restart must not bring back what the engine dropped), a
    saved entry the engine refuses at start goes from it."""
    from linkwatch.daemon import prefixstate

    six = FAST.replace('[uplinks.lte]', '[[uplinks.fibre.probes]]\ntype = "icmp"\ntarget = "2001:db8:f::1"\n'
                       '[uplinks.lte]') + '[[uplinks.lte.probes]]\ntype = "icmp"\ntarget = "2001:db8:f::1"\n'
    path = tmp_path / "linkwatch.toml"
    path.write_text(f'[control]\nsocket = "{tmp_path}/control.sock"\n' + six)
    saved = tmp_path / "control.prefixes.json"
    assert prefixstate.path_for(str(tmp_path / "control.sock")) == str(saved)
    assert prefixstate.path_for("/run/a.sock") != prefixstate.path_for("/run/b.sock"), "one file per engine"
    saved.write_text('{"lte": ["2001:db8:2a00::/56"], "gone": ["2001:db8:3a00::/56"]}')

    async def scenario():
        async with Running(path) as engine:
            sock = engine.config.control.socket
            assert engine.state.v6.learned == (("lte", ("2001:db8:2a00::/56",)),), "the saved one is taken"
            assert json.loads(saved.read_text()) == {"lte": ["2001:db8:2a00::/56"]}, "the refused one went"
            answer = await asyncio.to_thread(call, sock, {"cmd": "prefixes", "uplink": "fibre",
                                                          "prefixes": ["2001:db8:1a00::/56"]})
            assert answer["ok"], answer
            assert json.loads(saved.read_text()) == {"lte": ["2001:db8:2a00::/56"], "fibre": ["2001:db8:1a00::/56"]}
            path.write_text(path.read_text().replace('[[uplinks.lte.probes]]\ntype = "icmp"\ntarget = "2001:db8:f::1"\n',
                                                     ''))  # lte loses its IPv6 side
            await engine.reload()
            assert json.loads(saved.read_text()) == {"fibre": ["2001:db8:1a00::/56"]}
            bad = await asyncio.to_thread(call, sock, {"cmd": "prefixes", "uplink": "fibre", "prefixes": "x"})
            assert not bad["ok"] and json.loads(saved.read_text()) == {"fibre": ["2001:db8:1a00::/56"]}
    asyncio.run(scenario())


def test_ready_is_held_back_only_while_the_kernel_denies_the_routes():
    """READY=1 waits while every routing error is a permission error (no CAP_NET_ADMIN) and the
    active table is empty; a gateway the kernel will not take (EINVAL) with nothing active, as
    when every uplink is down at boot, must not hold it back (the unit's start would fail)."""
    from linkwatch.core.routing import RouteSet
    from linkwatch.daemon.applier import Applier
    from linkwatch.kernel.reconciler import ApplyReport

    class Kernel:
        def __init__(self, errors, active=()):
            self.errors, self.active = errors, list(active)

        async def apply(self, routes):
            return ApplyReport(errors=list(self.errors))

        async def active_gateways(self, family=4):
            return self.active

    async def verdict(kernel) -> bool:
        applier = Applier(kernel, lambda: None, lambda ev: None)
        await applier._apply(RouteSet())
        return await applier.routes_in()

    denied = "add rule from 198.51.100.2 lookup 101: Operation not permitted (errno 1)"
    invalid = "replace route default via 198.51.100.1 dev #11 table 101: Nexthop has invalid gateway (errno 22)"
    assert asyncio.run(verdict(Kernel([]))) is True
    assert asyncio.run(verdict(Kernel([denied, denied]))) is False
    assert asyncio.run(verdict(Kernel([denied], active=[("198.51.100.1", 11)]))) is True
    assert asyncio.run(verdict(Kernel([invalid]))) is True, "not a denial: READY goes out"
    assert asyncio.run(verdict(Kernel([denied, invalid]))) is True
    assert asyncio.run(verdict(Kernel(["nft table inet linkwatch: no libnftables"]))) is True


def test_the_kernel_is_checked_on_a_netlink_event_not_dumped_at_every_tick(tmp_path):
    """Steady state: no dump of the kernel's routes and rules at the 2 s ticks (it was a fifth of
    the engine's CPU), only the nftables table is looked at; an event about linkwatch's own objects
    (the monitor's on_owned) gets a repair at once, and a storm of them one per 0.2 s at most."""
    path = write_config(tmp_path)

    async def scenario():
        run = Running(path)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await asyncio.sleep(2.5)  # the start's own checks are done
            before, checks = len(run.kernel.applied), run.kernel.flow_checks
            await asyncio.sleep(4.5)  # two ticks
            quiet, flows = len(run.kernel.applied) - before, run.kernel.flow_checks - checks
            monitor = run.kernel._monitors[-1]
            before, t0 = len(run.kernel.applied), time.monotonic()
            monitor.owned()  # someone deleted one of linkwatch's routes
            await until(lambda: len(run.kernel.applied) > before, timeout=1.0, what="a repair")
            delay = time.monotonic() - t0
            await asyncio.sleep(0.3)
            return quiet, flows, delay, await storm(run), engine

    quiet, flows, delay, (repairs, looks), engine = asyncio.run(scenario())
    assert quiet == 0, f"{quiet} repairs in 4.5 s without any event"
    assert flows >= 2, f"the nftables table looked at {flows} times in two ticks"
    assert delay < 0.5, f"repaired {delay:.2f} s after the event"
    assert 3 <= repairs <= 7, f"{repairs} repairs for 100 events in 1 s (one per 0.2 s at most)"
    assert looks <= 1, f"the nftables table looked at {looks} times in 1 s: the events woke the loop each time"


async def storm(run: Running) -> tuple[int, int]:
    """1 s of someone's script fighting linkwatch's routes (100 netlink events): how many full
    repairs, and how many looks at the nftables table alone, the engine made meanwhile."""
    monitor = run.kernel._monitors[-1]
    applied, looks = len(run.kernel.applied), run.kernel.flow_checks
    for _ in range(100):
        monitor.owned()
        await asyncio.sleep(0.01)
    return len(run.kernel.applied) - applied, run.kernel.flow_checks - looks


def test_a_storm_of_events_while_a_plan_is_refused_is_rate_limited_too(tmp_path):
    """A refused plan is retried at every tick; it must not lift the 0.2 s limit on the repairs
    netlink events ask for (review: 100 events gave 100 full applies)."""
    path = write_config(tmp_path)

    async def scenario():
        run = Running(path, kernel=RefusingKernel(FACTS))
        async with run:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            await asyncio.sleep(0.3)
            return await storm(run)

    repairs, _ = asyncio.run(scenario())
    assert 3 <= repairs <= 7, f"{repairs} repairs for 100 events in 1 s while the plan is refused"


def test_the_engine_tells_the_monitor_its_tables(tmp_path):
    """The monitor counts a route of any protocol in linkwatch's tables as linkwatch's (someone's
    ``ip route replace``): it must be told the uplinks' tables (the active one is the kernel's)."""
    path = write_config(tmp_path)

    async def scenario():
        run = Running(path)
        async with run as engine:
            return run.kernel._monitors[-1].tables, tuple(u.table for u in engine.config.uplinks)

    told, tables = asyncio.run(scenario())
    assert told == tables and len(tables) == 2


def test_a_monitor_that_stops_by_itself_is_restarted(tmp_path, caplog):
    """A netlink event socket that ends (no error, no more messages) left the engine without link
    facts and event-driven repairs for good; it is restarted like a monitor that failed (review)."""
    path = write_config(tmp_path)

    async def scenario():
        run = Running(path)
        async with run:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            monitors = len(run.kernel._monitors)
            run.kernel._monitors[-1].close()  # its run() returns, as LinkMonitor's does when the socket ends
            await until(lambda: len(run.kernel._monitors) > monitors, timeout=3.0, what="a new monitor")
            run.kernel.change("up2", carrier=False)  # and the new one is heard
            await until(lambda: run.states()["lte"] == "DOWN", timeout=2.0, what="lte DOWN on carrier loss")

    with caplog.at_level(logging.WARNING, logger="linkwatch.engine"):
        asyncio.run(scenario())
    assert "link monitor stopped" in caplog.text
