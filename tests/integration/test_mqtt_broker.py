"""The MQTT sink against a real broker (Debian's mosquitto on 127.0.0.1, a private port), with a
real Engine run by the scenario tests' stand-in kernel and probes (no namespaces: every packet
stays on loopback), and mosquitto_sub as the subscriber.

- discovery and the retained state arrive; a failover arrives;
- the broker stops for 15 s (the engine goes on failing over and says the broker is away) and
  comes back with its stale retained state, then once more empty: each time the whole current
  state is at the broker again within 2 s;
- TLS with a throwaway CA and a password: a wrong CA and a wrong password are the sink's error,
  not the engine's (it keeps failing over); fixed by a reload, it connects;
- a broker host that accepts TCP and never answers: failover goes on, the stop does not wait.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scenario"))
from fakes import FakeProbes  # noqa: E402
from harness import FACTS  # noqa: E402

from tests.integration.mqttutil import Broker, Subscriber, free_port, make_ca  # noqa: E402
from tests.scenario.test_shell import Running, until, write_config  # noqa: E402

pytestmark = pytest.mark.skipif(not (Path("/usr/sbin/mosquitto").exists() and shutil.which("mosquitto_sub")),
                                reason="needs mosquitto and mosquitto-clients (scripts/bootstrap.sh --test-tools)")

PREFIX = "lwtest/gw"
STATE_TOPICS = [f"{PREFIX}/active", f"{PREFIX}/status"] + [
    f"{PREFIX}/uplink/{n}/{w}" for n in ("fibre", "lte") for w in ("state", "usable", "active", "rtt_ms", "loss_pct")]
DISCOVERY = 9  # the active sensor; per uplink a binary_sensor and the state, RTT and loss sensors
DOWN_SECONDS = 15.0


def mqtt_toml(port: int, **extra: str) -> str:
    keys = {"host": '"127.0.0.1"', "port": str(port), "topic_prefix": f'"{PREFIX}"', "interval": '"1s"',
            "discovery_prefix": '"hatest"', **extra}
    return "[mqtt]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


def whole(fibre: str, active: str):
    """A predicate: the broker has the whole state with fibre in state ``fibre`` and ``active``."""
    def check(m: dict[str, str]) -> bool:
        disc = [t for t in m if t.startswith("hatest/")]
        return (all(t in m for t in STATE_TOPICS) and len(disc) == DISCOVERY and m[f"{PREFIX}/status"] == "online"
                and m[f"{PREFIX}/uplink/fibre/state"] == fibre and m[f"{PREFIX}/active"] == active)
    return check


def mqtt_stats(engine) -> dict:
    return engine.status().sinks["mqtt"].detail


async def in_thread(fn, *args):
    return await asyncio.to_thread(fn, *args)


def test_state_failover_and_a_broker_that_comes_back_stale_or_empty(tmp_path):
    port = free_port()
    broker = Broker(tmp_path, port, persistence=True).start()
    probes = FakeProbes()
    topics = [f"{PREFIX}/#", "hatest/#"]

    async def back_whole(fibre: str, active: str, name: str) -> float:
        """Start the broker; seconds until a new subscriber sees the whole current state."""
        await in_thread(broker.start)
        with Subscriber(port, topics, tmp_path, name=name) as sub:
            done = await in_thread(sub.wait_for, whole(fibre, active), 5.0, f"the whole state ({name})")
        return done - broker.started_at

    async def scenario():
        run = Running(write_config(tmp_path, mqtt_toml(port)), probes=probes)
        async with run as engine:
            with Subscriber(port, topics, tmp_path) as sub:
                await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
                await in_thread(sub.wait_for, whole("UP", "fibre"), 5.0, "the whole state")
                disc = json.loads(sub.latest()["hatest/binary_sensor/lwtest_gw/fibre_usable/config"])
                assert disc["state_topic"] == f"{PREFIX}/uplink/fibre/usable"
                assert disc["availability_topic"] == f"{PREFIX}/status"
                assert sub.latest()[f"{PREFIX}/uplink/fibre/rtt_ms"] != "None"

                probes.silent.add(FACTS["up1"].address)  # blackhole fibre
                await until(lambda: engine.state.active == ("lte",), what="failover")
                switched = time.time()
                got = await in_thread(sub.wait_for, lambda m: m[f"{PREFIX}/active"] == "lte", 2.0, "active lte")
                assert sub.latest()[f"{PREFIX}/uplink/fibre/state"] == "DOWN"
                assert got - switched < 2.0

            broker.stop()  # it keeps "lte active, fibre DOWN" on disk
            gone = time.time()
            assert broker.db.stat().st_size > 0
            await until(lambda: mqtt_stats(engine)["connected"] is False, what="the sink sees the broker gone")
            published = mqtt_stats(engine)["published"]
            probes.silent.discard(FACTS["up1"].address)  # while the broker is away: a failback
            await until(lambda: engine.state.active == ("fibre",), timeout=10, what="failback without a broker")
            await asyncio.sleep(DOWN_SECONDS / 2)
            stats = mqtt_stats(engine)
            assert stats["connected"] is False and stats["error"].startswith(f"cannot connect to 127.0.0.1:{port}")
            assert "Connection refused" in stats["error"]
            await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.time() - gone)))
            stats = mqtt_stats(engine)  # nothing queued while away: the reconnect sends the state
            assert stats["published"] == published and stats["skipped_offline"] >= DOWN_SECONDS / 2

            took = await back_whole("UP", "fibre", "stale")  # its stale retained state is replaced
            assert took <= 2.0, f"the whole state took {took:.2f}s after the broker came back with a stale one"

            broker.stop()
            broker.forget()  # it comes back empty
            probes.silent.add(FACTS["up1"].address)  # and a failover without a broker
            await until(lambda: engine.state.active == ("lte",), what="failover without a broker")
            await asyncio.sleep(2.0)
            took = await back_whole("DOWN", "lte", "empty")
            assert took <= 2.0, f"the whole state took {took:.2f}s after the broker came back empty"
            assert mqtt_stats(engine)["connects"] == 3 and mqtt_stats(engine)["error"] is None

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()


def test_tls_and_a_password_and_what_a_wrong_ca_or_password_does(tmp_path):
    port = free_port()
    good, other = make_ca(tmp_path, "good"), make_ca(tmp_path, "other")
    pwfile = tmp_path / "mqtt.password"
    pwfile.write_text("wrong-password\n")
    pwfile.chmod(0o600)
    probes = FakeProbes()
    auth = {"tls": "true", "username": '"lw"', "password_file": f'"{pwfile}"'}
    config = write_config(tmp_path, mqtt_toml(port, tls_ca_file=f'"{other.ca}"', **auth))

    async def scenario():
        with Broker(tmp_path, port, users={"lw": "right-password", "ha": "ha-password"}, tls=good):
            run = Running(config, probes=probes)
            async with run as engine:
                await until(lambda: (mqtt_stats(engine)["error"] or "").find("CERTIFICATE_VERIFY_FAILED") > 0,
                            what="the TLS failure in status")
                probes.silent.add(FACTS["up1"].address)
                await until(lambda: engine.state.active == ("lte",), what="failover despite the TLS failure")

                config.write_text(config.read_text().replace(str(other.ca), str(good.ca)))
                engine.request_reload()
                await until(lambda: "refused the connection" in (mqtt_stats(engine)["error"] or ""),
                            what="the refused login in status")
                assert "Not authorized" in mqtt_stats(engine)["error"]
                assert "wrong-password" not in json.dumps(engine.status().to_dict())
                probes.silent.discard(FACTS["up1"].address)
                await until(lambda: engine.state.active == ("fibre",), timeout=10, what="failback despite the login")

                pwfile.write_text("right-password\n")
                engine.request_reload()
                await until(lambda: mqtt_stats(engine)["connected"], what="connected over TLS with the password")
                with Subscriber(port, f"{PREFIX}/#", tmp_path, user="ha", password="ha-password", ca=good.ca) as sub:
                    await in_thread(sub.wait_for, lambda m: m.get(f"{PREFIX}/active") == "fibre"
                                    and m.get(f"{PREFIX}/status") == "online", 5.0, "the state over TLS")
                    assert mqtt_stats(engine)["broker"] == f"127.0.0.1:{port}" and mqtt_stats(engine)["tls"] is True
            # a clean stop says offline (the last will is for an engine that is lost)
            with Subscriber(port, f"{PREFIX}/status", tmp_path, user="ha", password="ha-password", ca=good.ca,
                            name="stopped") as sub:
                await in_thread(sub.wait_for, lambda m: m.get(f"{PREFIX}/status") == "offline", 5.0, "offline")

    asyncio.run(scenario())


def test_a_broker_that_accepts_and_never_answers_costs_the_engine_nothing(tmp_path):
    """A half-dead broker host: TCP connects (the kernel's backlog), the TLS handshake never ends.
    Each attempt then blocks paho's thread for its connect timeout, never the engine, and a stop
    in the middle of one does not wait for it to time out."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted, never answered
    port = silent.getsockname()[1]
    probes = FakeProbes()

    async def scenario():
        run = Running(write_config(tmp_path, mqtt_toml(port, tls="true")), probes=probes)
        async with run as engine:
            await until(lambda: run.states() == {"fibre": "UP", "lte": "UP"}, what="both UP")
            probes.silent.add(FACTS["up1"].address)
            await until(lambda: engine.state.active == ("lte",), what="failover")
            await until(lambda: "timed out" in (mqtt_stats(engine)["error"] or ""), timeout=8,
                        what="the timeout in status")
            assert mqtt_stats(engine)["connected"] is False
            await asyncio.sleep(1.0)  # the next attempt's handshake is under way (after 0.2 s, for 3 s)
            return time.monotonic()  # the engine stops now

    try:
        stopping = asyncio.run(scenario())
        stopped_in = time.monotonic() - stopping  # the loop and its worker threads included
    finally:
        silent.close()
    assert stopped_in < 2.0, f"the engine took {stopped_in:.1f}s to stop"  # not the rest of the attempt
