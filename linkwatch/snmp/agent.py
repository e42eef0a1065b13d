"""The SNMP agent: the UDP server that answers GET, GETNEXT and GETBULK on LINKWATCH-MIB, in a
thread of its own, with pysnmp doing the message processing and security.

What it answers is exactly :func:`linkwatch.snmp.mib.instances` of the engine's status (the typed
:class:`linkwatch.core.status.Status`), as :mod:`.view` (pure) builds and walks it;
lwPreviousActiveUplinks is the status's ``previous_active``. The values are a snapshot at most ``cache_ttl`` (0.5 s) old: one status call
serves a whole walk, and RTT, jitter and loss change every probe round anyway.

Who may read: SNMPv2c with ``[snmp.agent] community`` (read-only) and SNMPv3 (USM) users named in
``[snmp.agent] users``, with the protocols of their ``[snmp.users.NAME]``; a user must use the
security level those give (pysnmp's USM accepts a user at exactly that level: authPriv when both
are set). SNMPv1 is not spoken; only the default (empty) context exists.
A wrong community, an unknown user, a wrong digest or key gets no answer at all (no USM report
either), only a counter; engine-ID discovery and time-window reports are still sent, SNMPv3
needs them. SET is refused: notWritable for linkwatch's objects, noAccess for anything else.
Requests from outside ``[snmp.agent] allow_from`` are dropped unread, and an answer to an
unauthenticated request is cut to one MTU (:mod:`.access`): the agent is no reflection amplifier.

Threads: the engine's asyncio loop must never wait for SNMP. The agent runs pysnmp on its own
asyncio loop in its own thread; the engine's status is computed ON the engine's loop (status_fn
and suppressed_fn are scheduled there with ``call_soon_threadsafe``) and awaited by the agent
with a timeout: a slow or failing status costs the engine nothing and earns the manager genErr.
Malformed packets are counted and dropped, most by a few byte comparisons before pysnmp sees
them; the agent's caches for dropped messages are bounded. Both threads share the GIL: while the
agent runs, the interpreter's switch interval is 1 ms (not 5), so a flood of packets delays the
engine's loop by a millisecond or two, not by 5-15 ms.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.carrier.asyncio.dispatch import AsyncioDispatcher
from pysnmp.entity import config, engine
from pysnmp.proto import errind, rfc1902, rfc1905
from pysnmp.proto import error as proto_error
from pysnmp.proto.api import v2c
from pysnmp.proto.secmod import cache as secmod_cache
from pysnmp.proto.secmod.rfc3414.service import SnmpUSMSecurityModel

from linkwatch.config import SnmpConfig, SnmpUserConfig, parse_listen
from linkwatch.snmp import SnmpError, engine_id, mib
from linkwatch.snmp.access import exposure_warnings, networks, response_budget, source_allowed
from linkwatch.snmp.mib import OID, Layout
from linkwatch.snmp.view import (EXCEPTIONS, MAX_RESPONSE, View, answer_bulk, answer_get, answer_next,
                                 envelope_check, make_view, readable_objects, set_error)

if TYPE_CHECKING:
    from linkwatch.core.status import Status

log = logging.getLogger(__name__)

CACHE_TTL = 0.5  # seconds one status snapshot serves requests (a walk costs one status call)
STATUS_TIMEOUT = 0.5  # the engine's loop must answer within this, else genErr
START_TIMEOUT = 20.0  # building pysnmp's engine (its MIB modules) takes a few hundred ms
STOP_TIMEOUT = 5.0
MAX_DATAGRAM = 8192  # requests for this MIB are a few hundred bytes; bigger ones are dropped
MAX_PENDING = 256  # requests waiting for a status snapshot; more are dropped
CACHE_LIMIT = 4096  # security-model state kept for requests in flight
# A busy agent thread gives the GIL back around every syscall but takes it again before a waiting
# thread wakes, so the engine's loop waits for the interpreter's forced switch (5 ms by default).
# While the agent runs, the switch interval is at most this.
SWITCH_INTERVAL = 0.001

COUNTERS = ("requests", "answered", "bad_community", "bad_user_or_keys", "malformed", "bad_version",
            "refused", "set_refused", "status_errors", "dropped", "refused_source")

AUTH_PROTOCOLS = {
    "none": config.USM_AUTH_NONE, "md5": config.USM_AUTH_HMAC96_MD5, "sha": config.USM_AUTH_HMAC96_SHA,
    "sha224": config.USM_AUTH_HMAC128_SHA224, "sha256": config.USM_AUTH_HMAC192_SHA256,
    "sha384": config.USM_AUTH_HMAC256_SHA384, "sha512": config.USM_AUTH_HMAC384_SHA512,
}
# aes192/aes256 with the key extension of draft-blumenthal-aes-usm-04: net-snmp's AES192/AES256
PRIV_PROTOCOLS = {
    "none": config.USM_PRIV_NONE, "des": config.USM_PRIV_CBC56_DES, "aes": config.USM_PRIV_CFB128_AES,
    "aes192": config.USM_PRIV_CFB192_AES_BLUMENTHAL, "aes256": config.USM_PRIV_CFB256_AES_BLUMENTHAL,
}
BAD_CREDENTIALS = (errind.unknownSecurityName, errind.authenticationFailure, errind.decryptionError,
                   errind.unsupportedSecurityLevel)
PROTOCOL_REPORTS = (errind.unknownEngineID, errind.notInTimeWindow)  # discovery and clock sync


# --- pysnmp glue -----------------------------------------------------------------------------------


class BoundedCache(secmod_cache.Cache):
    """A security model's state cache that forgets its oldest entries: pysnmp only frees an entry
    when it answers, so every dropped message (bad key, no answer) would otherwise stay forever."""

    def __init__(self, limit: int = CACHE_LIMIT) -> None:  # noqa: D107 - no super(): its dict is unused
        self._entries: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._next = 0
        self._limit = limit

    def push(self, **data: Any) -> int:
        self._next = self._next % 0xFFFFFF + 1
        self._entries[self._next] = data
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
        return self._next

    def pop(self, ref: int) -> dict:
        try:
            return self._entries.pop(ref)
        except KeyError:
            raise proto_error.ProtocolError(f"cache miss for stateReference={ref}") from None

    def discard(self, ref: int | None) -> None:
        self._entries.pop(ref, None)

    def is_empty(self) -> bool:
        return not self._entries


class QuietUsm(SnmpUSMSecurityModel):
    """USM that stays silent on bad credentials (unknown user, wrong digest, undecryptable, a
    security level other than the user's): no usmStats report goes back, so a prober learns
    nothing, not even whether the user exists. ``on_result`` is told ``"bad_credentials"``,
    ``"report"`` (engine-ID discovery, time window: answered as SNMPv3 wants) or ``"malformed"``."""

    def __init__(self, on_result: Callable[[str], None]) -> None:
        super().__init__()
        self._cache = BoundedCache()
        self._on_result = on_result

    def process_incoming_message(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().process_incoming_message(*args, **kwargs)
        except proto_error.StatusInformation as e:
            indication = e.get("errorIndication")
            if indication in BAD_CREDENTIALS:
                self._on_result("bad_credentials")
                self._cache.discard(e.get("securityStateReference"))
                raise proto_error.StatusInformation(errorIndication=indication) from None
            self._on_result("report" if indication in PROTOCOL_REPORTS else "malformed")
            raise


@dataclass
class _Request:
    """What pysnmp handed the responder: everything needed to answer later."""

    mp_model: int
    sec_model: int
    sec_name: Any
    sec_level: int
    context_engine_id: Any
    context_name: Any
    pdu_version: int
    pdu: Any
    max_size: int
    state_reference: int

    @property
    def oids(self) -> list[OID]:
        return [tuple(name) for name, _ in v2c.apiPDU.get_varbinds(self.pdu)]


class SnmpAgent:
    """The engine's SNMP agent. ``status_fn`` and ``suppressed_fn`` are called on ``loop`` only."""

    def __init__(self, cfg: SnmpConfig, status_fn: Callable[[], Status], loop: asyncio.AbstractEventLoop,
                 suppressed_fn: Callable[[], dict[str, int]], *, cache_ttl: float = CACHE_TTL,
                 status_timeout: float = STATUS_TIMEOUT) -> None:
        self.cfg = cfg
        self.status_fn = status_fn
        self.loop = loop
        self.suppressed_fn = suppressed_fn
        self.cache_ttl = cache_ttl
        self.status_timeout = status_timeout
        self.layout = Layout.from_text(cfg.base_oid)
        self.objects = readable_objects(self.layout)
        self._allowed = networks(cfg.agent.allow_from)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._snmp: Any = None
        self._view: View | None = None
        self._pending: list[_Request] = []
        self._refresh: asyncio.Task | None = None
        self._inflight: concurrent.futures.Future | None = None
        self._outcome: str | None = None
        self._switch_interval: float | None = None  # the interpreter's, while the agent lowers it
        self._counters: tuple = ()  # pysnmp's snmpInBadCommunityNames and snmpInBadVersions

    def _user(self, name: str) -> SnmpUserConfig:
        try:
            return self.cfg.user(name)
        except KeyError:
            raise SnmpError(f"[snmp.agent] users names {name!r}, which is not a [snmp.users.NAME]") from None

    # --- public API --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind ``[snmp.agent] listen`` and start answering. SnmpError when that cannot be done."""
        if self._thread is not None:
            raise SnmpError("the snmp agent is already running")
        listen = self.cfg.agent.listen
        for name in self.cfg.agent.users:
            self._user(name)  # SnmpError here rather than in the agent's thread
        sock = _bind(listen)
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), name="linkwatch-snmp-agent",
                                        daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ready), START_TIMEOUT)
        except asyncio.CancelledError:
            await self.close()
            raise
        except asyncio.TimeoutError:
            await self.close()
            raise SnmpError(f"the snmp agent on {listen} did not start within {START_TIMEOUT:g}s") from None
        except Exception as e:  # pysnmp refusing the users' protocols or keys, ...
            await self.close()
            raise SnmpError(f"the snmp agent on {listen} failed to start: {type(e).__name__}") from None
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
        log.info("snmp agent listening on udp %s (v2c %s, v3 users: %s, from %s)", listen,
                 "on" if self.cfg.agent.community else "off", ",".join(self.cfg.agent.users) or "-",
                 ",".join(self.cfg.agent.allow_from) or "anywhere")
        for text in exposure_warnings(self.cfg):
            log.warning("%s", text)

    async def close(self) -> None:
        """Stop answering, close the socket and end the agent's thread. Idempotent."""
        thread, aloop = self._thread, self._aloop
        if thread is None:
            return
        if aloop is not None and thread.is_alive():
            try:
                done = asyncio.run_coroutine_threadsafe(self._shutdown(), aloop)
                await asyncio.wait_for(asyncio.wrap_future(done), STOP_TIMEOUT)
            except (RuntimeError, asyncio.TimeoutError, concurrent.futures.CancelledError) as e:
                log.warning("snmp agent did not stop cleanly: %s", type(e).__name__)
                with contextlib.suppress(Exception):
                    aloop.call_soon_threadsafe(aloop.stop)
        await asyncio.get_running_loop().run_in_executor(None, thread.join, STOP_TIMEOUT)
        self._thread = None
        self._aloop = None
        if self._switch_interval is not None and sys.getswitchinterval() == SWITCH_INTERVAL:
            sys.setswitchinterval(self._switch_interval)
        self._switch_interval = None

    def stats(self) -> dict:
        """Counters (no community, no key): requests (PDUs from an authorised manager), answered,
        bad_community, bad_user_or_keys (unknown user, wrong digest, undecryptable), malformed,
        bad_version (SNMPv1 or unknown), refused (a context other than the default one),
        set_refused, status_errors (genErr: the engine's status failed or was late), dropped
        (too many requests waiting), refused_source (a source outside allow_from), last_error."""
        out: dict[str, Any] = dict(self._counts)
        out["last_error"] = self._last_error
        return out

    # --- the agent's thread ------------------------------------------------------------------------

    def _run(self, sock: socket.socket, ready: concurrent.futures.Future) -> None:
        aloop = asyncio.new_event_loop()
        asyncio.set_event_loop(aloop)
        aloop.set_exception_handler(self._loop_exception)
        try:
            aloop.run_until_complete(self._setup(sock))
        except BaseException as e:
            sock.close()
            ready.set_exception(e)
            aloop.close()
            return
        self._aloop = aloop
        ready.set_result(None)
        try:
            aloop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                aloop.run_until_complete(aloop.shutdown_asyncgens())
            aloop.close()

    async def _setup(self, sock: socket.socket) -> None:
        aloop = asyncio.get_running_loop()
        snmp = engine.SnmpEngine(snmpEngineID=rfc1902.OctetString(engine_id(self.cfg.engine_id)))
        # SNMPv1 is not spoken: without its message processing model v1 packets count as bad versions
        snmp.message_processing_subsystems.pop(0, None)
        usm = QuietUsm(self._set_outcome)
        snmp.security_models[usm.SECURITY_MODEL_ID] = usm
        for model in snmp.security_models.values():
            if not isinstance(model._cache, BoundedCache):
                model._cache = BoundedCache()
        if self.cfg.agent.community:
            config.add_v1_system(snmp, "linkwatch-ro", self.cfg.agent.community)
        for name in self.cfg.agent.users:
            u = self._user(name)
            config.add_v3_user(snmp, u.name, AUTH_PROTOCOLS[u.auth], u.auth_key if u.auth != "none" else None,
                               PRIV_PROTOCOLS[u.priv], u.priv_key if u.priv != "none" else None)
        dispatcher = AsyncioDispatcher(loop=aloop)
        snmp.register_transport_dispatcher(dispatcher)
        ipv6 = sock.family == socket.AF_INET6
        transport = (udp6.Udp6AsyncioTransport if ipv6 else udp.UdpAsyncioTransport)(loop=aloop)
        await aloop.create_datagram_endpoint(lambda: transport, sock=sock)
        config.add_transport(snmp, udp6.DOMAIN_NAME if ipv6 else udp.DOMAIN_NAME, transport)
        dispatcher.unregister_recv_callback(None)  # every datagram goes through _receive first
        dispatcher.register_recv_callback(self._receive)
        (engine_id_symbol,) = snmp.get_mib_builder().import_symbols("__SNMP-FRAMEWORK-MIB", "snmpEngineID")
        snmp.message_dispatcher.register_context_engine_id(
            engine_id_symbol.syntax, (rfc1905.GetRequestPDU.tagSet, rfc1905.GetNextRequestPDU.tagSet,
                                      rfc1905.GetBulkRequestPDU.tagSet, rfc1905.SetRequestPDU.tagSet),
            self._process_pdu)
        self._counters = snmp.get_mib_builder().import_symbols(  # type: ignore[assignment]
            "__SNMPv2-MIB", "snmpInBadCommunityNames", "snmpInBadVersions")
        self._snmp = snmp

    async def _shutdown(self) -> None:
        for req in self._pending:
            self._count("dropped")
        self._pending = []
        if self._refresh is not None:
            self._refresh.cancel()
        if self._snmp is not None:
            with contextlib.suppress(Exception):
                self._snmp.close_dispatcher()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.get_running_loop().stop()

    def _loop_exception(self, aloop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        self._error(f"agent loop: {type(exc).__name__ if exc else context.get('message', '?')}")
        log.debug("snmp agent loop: %s", context.get("message"), exc_info=exc)

    # --- receiving ---------------------------------------------------------------------------------

    def _receive(self, dispatcher: Any, domain: Any, address: Any, message: bytes) -> None:
        """Every datagram: hand it to pysnmp, then count what became of it."""
        if not source_allowed(self._allowed, address[0]):
            self._count("refused_source")
            return
        if len(message) > MAX_DATAGRAM:
            self._count("malformed")
            self._error(f"dropped a {len(message)}-byte datagram from {address[0]} (limit {MAX_DATAGRAM})")
            return
        verdict = envelope_check(message)
        if verdict is not None:
            self._count(verdict)
            return
        self._outcome = None
        before = [int(c.syntax) for c in self._counters]
        try:
            self._snmp.message_dispatcher.receive_message(self._snmp, domain, address, message)
        except Exception as e:  # pysnmp's own error messages may quote a community: only the type
            self._outcome = "malformed"
            self._error(f"undecodable packet from {address[0]}: {type(e).__name__}")
        outcome = self._outcome
        if outcome is None:
            bad_community, bad_version = (int(c.syntax) - b for c, b in zip(self._counters, before))
            outcome = "bad_community" if bad_community else "bad_version" if bad_version else "malformed"
        if outcome == "bad_credentials":
            self._count("bad_user_or_keys")
        elif outcome in ("bad_community", "bad_version", "malformed"):
            self._count(outcome)

    def _set_outcome(self, outcome: str) -> None:
        self._outcome = outcome

    def _process_pdu(self, snmp: Any, mp_model: int, sec_model: int, sec_name: Any, sec_level: int,
                     context_engine_id: Any, context_name: Any, pdu_version: int, pdu: Any, max_size: int,
                     state_reference: int) -> None:
        self._outcome = "request"
        self._count("requests")
        req = _Request(int(mp_model), int(sec_model), sec_name, int(sec_level), context_engine_id,
                       context_name, pdu_version, pdu, int(max_size), state_reference)
        if bytes(context_name):  # dropped: pysnmp forgets its state for it after a while
            self._count("refused")
            self._error("a request named a context; only the default context exists")
            return
        if pdu.tagSet == rfc1905.SetRequestPDU.tagSet:
            self._count("set_refused")
            status, index = set_error(View((), (), self.objects), req.oids)
            self._send(req, status, index, self._echo(req))
            return
        view = self._view
        if view is not None and time.monotonic() - view.at < self.cache_ttl:
            self._answer(req, view)
            return
        if len(self._pending) >= MAX_PENDING:
            self._count("dropped")
            return
        self._pending.append(req)
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_view())

    # --- the status snapshot -----------------------------------------------------------------------

    def _engine_snapshot(self) -> tuple[Status, dict[str, int]]:
        """Runs ON the engine's loop."""
        return self.status_fn(), dict(self.suppressed_fn() or {})

    def _request_status(self) -> concurrent.futures.Future:
        fut = self._inflight
        if fut is not None and not fut.done():
            return fut
        fut = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return  # the agent stopped waiting: don't spend the engine's time on it
            try:
                fut.set_result(self._engine_snapshot())
            except BaseException as e:  # reported to the agent, never raised on the engine's loop
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        self._inflight = fut
        return fut

    async def _refresh_view(self) -> None:
        try:
            status, suppressed = await asyncio.wait_for(asyncio.wrap_future(self._request_status()),
                                                        self.status_timeout)
            self._view = self._make_view(status, suppressed)
        except Exception as e:  # TimeoutError too
            why = "timed out" if isinstance(e, asyncio.TimeoutError) else f"failed: {type(e).__name__}: {e}"
            self._error(f"engine status {why}"[:200])
            waiting, self._pending = self._pending, []
            for req in waiting:
                self._count("status_errors")
                self._send(req, "genErr", 1 if req.oids else 0, self._echo(req))
            return
        waiting, self._pending = self._pending, []
        for req in waiting:
            self._answer(req, self._view)

    def _make_view(self, status: Status, suppressed: dict[str, int]) -> View:
        instances = mib.instances(self.layout, status, max(0.0, time.time() - status.started), suppressed)
        return make_view(self.layout, instances, self.objects, time.monotonic())

    # --- answering ---------------------------------------------------------------------------------

    def _answer(self, req: _Request, view: View) -> None:
        tag = req.pdu.tagSet
        oids = req.oids
        budget = response_budget(req.max_size, MAX_RESPONSE, req.sec_level)  # less for unauthenticated ones
        if tag == rfc1905.GetBulkRequestPDU.tagSet:
            results = answer_bulk(view, oids, v2c.apiBulkPDU.get_non_repeaters(req.pdu),
                                  v2c.apiBulkPDU.get_max_repetitions(req.pdu), budget)
        elif tag == rfc1905.GetNextRequestPDU.tagSet:
            results = answer_next(view, oids)
        else:
            results = answer_get(view, oids)
        if sum(view.size(o, r) for o, r in results) > budget:
            self._send(req, "tooBig", 0, [])
            return
        varbinds = [view.values[r] if isinstance(r, int) else (rfc1902.ObjectName(o), EXCEPTIONS[r])
                    for o, r in results]
        self._send(req, 0, 0, varbinds)

    def _echo(self, req: _Request) -> list:
        return list(v2c.apiPDU.get_varbinds(req.pdu))

    def _send(self, req: _Request, error_status: int | str, error_index: int, varbinds: list) -> None:
        pdu = v2c.apiPDU.get_response(req.pdu)
        v2c.apiPDU.set_error_status(pdu, error_status)
        v2c.apiPDU.set_error_index(pdu, error_index)
        v2c.apiPDU.set_varbinds(pdu, varbinds)
        self._count("answered")  # before the datagram leaves: whoever got the answer sees it counted
        try:
            self._snmp.message_dispatcher.return_response_pdu(
                self._snmp, req.mp_model, req.sec_model, req.sec_name, req.sec_level, req.context_engine_id,
                req.context_name, req.pdu_version, pdu, req.max_size, req.state_reference, {})
        except Exception as e:  # tooBig for the manager's message size, a closed socket, ...
            self._counts["answered"] -= 1
            self._error(f"could not answer: {type(e).__name__}")

    def _count(self, key: str) -> None:
        self._counts[key] += 1

    def _error(self, text: str) -> None:
        self._last_error = text
        log.debug("snmp agent: %s", text)


def _bind(listen: str) -> socket.socket:
    """A UDP socket bound to ``listen``; SnmpError naming the address when that fails."""
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        why = f": {e}" if str(e) else ""
        raise SnmpError(f"[snmp.agent] listen {listen!r} is not address:port{why}") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SnmpError(f"cannot listen on udp {listen}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock
