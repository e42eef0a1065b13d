"""The MQTT sink: the engine's state as retained MQTT messages, with Home Assistant discovery.

What goes where is :mod:`linkwatch.sinks.mqtt_topics` (pure). This module is the glue to
paho-mqtt, chosen over aiomqtt because its network thread (``loop_start``) keeps every network
step off the engine's event loop — DNS, the TCP connect, the TLS handshake, reconnects with
backoff — and its ``publish`` only queues a packet. aiomqtt runs the socket in the event loop
itself and leaves reconnecting to the caller.

Nothing here waits for the broker. :meth:`MqttSink.handle` reads the status snapshot (cheap,
in the loop's thread) and queues the topics whose payload changed; while disconnected it queues
nothing at all (counted), so no backlog builds up: on every (re)connect the sink publishes the
whole current state — discovery, every state topic, ``online`` — so a broker that restarted
empty is whole again within about ``reconnect_max`` of its return. A broker that is down,
unreachable, refuses the login or fails the TLS handshake shows in ``stats()`` (and in
``linkwatch status``); the engine goes on failing over.

The paho callbacks run in paho's thread: they only record what happened and hand the rest to the
event loop (``call_soon_threadsafe``), which alone reads the engine's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from linkwatch import __version__
from linkwatch.config import MqttConfig
from linkwatch.core.events import EngineEvent, Event
from linkwatch.sinks import mqtt_topics as topics

log = logging.getLogger(__name__)

KINDS = frozenset({"uplink_state", "active_changed", "ipv6_state", "ipv6_active", "samples", "dampened", "engine",
                   "admin"})
CONNECT_TIMEOUT = 3.0  # seconds for the TCP connect + TLS handshake of one attempt (in paho's thread)
RECONNECT_MIN = 0.1  # the first retry; each failed attempt doubles it, up to [mqtt] reconnect_max
QUEUE_LIMIT = 200  # QoS 1/2 messages paho may hold unacknowledged; more are dropped (counted)
STOP_WAIT = 1.0  # seconds close() waits for paho's thread to end
HANDOVER_WAIT = 3.0  # seconds a reloaded sink waits for its predecessor to let go of the client id
_HOLDERS: dict[str, threading.Event] = {}  # client id -> set once the sink that used it has closed


class MqttSetupError(RuntimeError):
    """The client cannot be set up (an unreadable password file, CA file or client key)."""


def read_password(cfg: MqttConfig) -> str | None:
    if cfg.password_file is None:
        return cfg.password
    try:
        with open(cfg.password_file, encoding="utf-8") as f:
            first = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise MqttSetupError(f"cannot read mqtt.password_file {cfg.password_file}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    if not first:
        raise MqttSetupError(f"mqtt.password_file {cfg.password_file}: the first line is empty")
    return first


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """The TLS settings of ``cfg``: the broker's certificate is always verified; its name unless
    ``tls_check_hostname`` is off."""
    try:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca_file)
        ctx.check_hostname = cfg.tls_check_hostname
        if cfg.tls_cert_file:
            ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise MqttSetupError(f"mqtt TLS files: {e}") from None
    return ctx


def _paho():
    import paho.mqtt.client as mqtt  # only when MQTT is configured

    class Client(mqtt.Client):
        """paho's client, telling why a connection attempt failed (paho itself only retries)."""

        on_attempt_failed: Callable[[OSError], None] | None = None

        def reconnect(self):
            try:
                return super().reconnect()
            except OSError as e:
                if self.on_attempt_failed is not None:
                    self.on_attempt_failed(e)
                raise

    return mqtt, Client


class MqttSink:
    """Publishes the engine's state to an MQTT broker (see the module docstring)."""

    def __init__(self, cfg: MqttConfig, status: Callable[[], Any], uplinks: Sequence[str],
                 hostname: str | None = None):
        self.name = "mqtt"
        self.timeout = 3.0  # handle() takes microseconds; close() may wait for paho's thread
        self.kinds = KINDS
        self.cfg = cfg
        self.layout = topics.layout(cfg, hostname or socket.gethostname())
        self.port = cfg.port or (8883 if cfg.tls else 1883)
        self._status = status
        self._uplinks = tuple(uplinks)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task | None = None
        self._closing = False
        self._connected = False  # the loop's view: publish only while True
        self._up = False  # paho's thread's view, for the error bookkeeping
        self._stopping = False  # the engine said "stopped": close() publishes offline
        self._closed = threading.Event()
        self._sent: dict[str, str] = {}  # topic -> payload last queued on this connection
        self._tick: asyncio.Task | None = None
        self._password: str | None = None
        self._reread: asyncio.Task | None = None
        self.error: str | None = None
        self.counts = {"connects": 0, "failed_attempts": 0, "published": 0, "not_queued": 0, "skipped_offline": 0}
        self.connected_at: float | None = None
        self.last_publish_at: float | None = None

    # ---- the sink interface (event loop) ----------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if isinstance(event, EngineEvent) and event.what == "stopped":
            self._stopping = True
        if isinstance(event, EngineEvent) and event.what == "reloaded" and self.cfg.password_file:
            self._reread = asyncio.create_task(self._reread_password(), name="mqtt-password")
        if self._starting is None:  # in the background: handle() never waits for a file or a predecessor
            self._starting = asyncio.create_task(self._start(), name="mqtt-start")
        self.sync()

    async def close(self) -> None:
        self._closing = True
        if self._tick is not None:
            self._tick.cancel()
        if self._starting is not None and not self._starting.done():
            await asyncio.wait({self._starting}, timeout=1.0)  # it shuts its client down itself if later
        client, self._client = self._client, None
        try:
            if client is not None:
                await asyncio.to_thread(self._shutdown, client, self._connected and self._stopping)
        finally:
            self._connected = False
            self._closed.set()

    def stats(self) -> dict[str, Any]:
        """What ``linkwatch status`` shows (never the password)."""
        return {"broker": f"{self.cfg.host}:{self.port}", "tls": self.cfg.tls, "connected": self._connected,
                "error": self.error, "topic_prefix": self.layout.prefix, "connected_at": self.connected_at,
                "last_publish_at": self.last_publish_at, **self.counts}

    # ---- publishing (event loop) ------------------------------------------------------------------

    def sync(self, full: bool = False) -> int:
        """Queue every state topic whose payload changed since it was last queued (all with ``full``);
        nothing while disconnected. Returns how many were queued."""
        if not self._connected:
            self.counts["skipped_offline"] += 1
            return 0
        messages = topics.state_messages(self.layout, self._status())
        return self._publish(messages if full else topics.changed(messages, self._sent))

    def _publish(self, messages: dict[str, str]) -> int:
        queued = 0
        for topic, payload in messages.items():
            info = self._client.publish(topic, payload, qos=self.cfg.qos, retain=True)
            if info.rc == 0:
                self._sent[topic] = payload
                queued += 1
            else:  # no connection after all, or paho's queue is full: the next (re)connect sends it all
                self._sent.pop(topic, None)
                self.counts["not_queued"] += 1
        self.counts["published"] += queued
        if queued:
            self.last_publish_at = time.time()
        return queued

    def _on_connected(self) -> None:
        """In the loop, after each (re)connect: the whole state, as if the broker knew nothing."""
        if self._client is None:
            return
        self._connected = True
        self._sent.clear()
        try:
            self._publish(topics.discovery_messages(self.layout, self._uplinks, __version__))
            self.sync(full=True)
            self._publish({self.layout.availability: topics.ONLINE})
        except Exception:  # the status must not break the sink: the next event or tick tries again
            log.exception("mqtt: could not publish the state after connecting")

    def _on_disconnected(self) -> None:
        self._connected = False

    async def _ticker(self) -> None:
        """Every ``interval``: the numbers (RTT, loss) that changed meanwhile."""
        while True:
            await asyncio.sleep(self.cfg.interval)
            try:
                self.sync()
            except Exception:
                log.debug("mqtt: periodic publish failed", exc_info=True)

    # ---- setting up and tearing down the client ----------------------------------------------------

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        before = _HOLDERS.get(self.layout.client_id)
        _HOLDERS[self.layout.client_id] = self._closed
        if before is not None and before is not self._closed:  # a reload: let the old client go first
            await asyncio.to_thread(before.wait, HANDOVER_WAIT)
        try:
            client = await asyncio.to_thread(self._make_client)
        except MqttSetupError as e:
            self.error = str(e)
            log.error("mqtt: %s; nothing is published until it is fixed and the engine reloaded", e)
            return
        if self._closing:  # closed while this was starting
            self._client = None
            await asyncio.to_thread(self._shutdown, client, False)
            return
        self._tick = asyncio.create_task(self._ticker(), name="mqtt-tick")

    async def _reread_password(self) -> None:
        """A reload that kept [mqtt] as it was keeps this sink: a new password in password_file is
        used from the next connection attempt on (after a refused login: within reconnect_max)."""
        try:
            password = await asyncio.to_thread(read_password, self.cfg)
        except MqttSetupError as e:
            log.error("mqtt: %s; the password read before stays in use", e)
            return
        if self._client is not None and password != self._password:
            self._password = password
            self._client.username_pw_set(self.cfg.username, password)
            log.info("mqtt: the password in %s changed: used from the next connection on", self.cfg.password_file)

    def _make_client(self) -> Any:
        """In a worker thread: files are read here. paho's own thread does the connecting."""
        cfg = self.cfg
        password = self._password = read_password(cfg)
        ctx = tls_context(cfg) if cfg.tls else None
        mqtt, Client = _paho()
        client = Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.layout.client_id,
                        protocol=mqtt.MQTTv311, clean_session=True)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_attempt_failed = self._paho_attempt_failed
        client.reconnect_delay_set(RECONNECT_MIN, cfg.reconnect_max)
        client.max_queued_messages_set(QUEUE_LIMIT)
        client.connect_timeout = CONNECT_TIMEOUT
        client.will_set(self.layout.availability, topics.OFFLINE, qos=cfg.qos, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, password)
        if ctx is not None:
            client.tls_set_context(ctx)
        client.connect_async(cfg.host, self.port, keepalive=max(5, round(cfg.keepalive)))
        self._client = client  # before its thread starts: its first connect is handled in the loop
        client.loop_start()
        return client

    def _shutdown(self, client: Any, offline: bool) -> None:
        """In a worker thread: ``offline`` (the engine stops) is said in so many words; after a
        reload the new sink says ``online`` again, and a clean disconnect drops the last will."""
        if offline:
            with contextlib.suppress(Exception):
                client.publish(self.layout.availability, topics.OFFLINE, qos=self.cfg.qos,
                               retain=True).wait_for_publish(1.0)
        with contextlib.suppress(Exception):
            client.disconnect()
        # paho's thread may be inside a connect attempt (up to CONNECT_TIMEOUT): it ends by itself,
        # a daemon thread, and an engine that stops does not wait for it
        stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT)

    # ---- paho's thread: record, and hand the rest to the loop --------------------------------------

    def _to_loop(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the engine has stopped
            self._loop.call_soon_threadsafe(fn)

    def _fail(self, error: str) -> None:
        self.counts["failed_attempts"] += 1
        if error != self.error:
            log.warning("mqtt: %s (retrying; failover is not affected)", error)
        self.error = error

    def _paho_attempt_failed(self, exc: OSError) -> None:
        self._fail(f"cannot connect to {self.cfg.host}:{self.port}: {exc.strerror or exc}")

    def _paho_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._fail(f"the broker {self.cfg.host}:{self.port} refused the connection: {reason}")
            return
        if self.error is not None or self.counts["connects"] == 0:
            log.info("mqtt: connected to %s:%d%s", self.cfg.host, self.port,
                     f" (after {self.error})" if self.error else "")
        self._up, self.error = True, None
        self.counts["connects"] += 1
        self.connected_at = time.time()
        self._to_loop(self._on_connected)

    def _paho_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if self._up and self._client is not None:
            self._fail(f"lost the connection to {self.cfg.host}:{self.port}: {reason}")
        self._up = False
        self._to_loop(self._on_disconnected)
