"""waitress, as `linkwatch web` runs it: a cap on the connections of one client.

waitress serves at most ``connection_limit`` connections and drops an idle one only after
``channel_timeout``; 110 connections that send nothing (from one LAN host) took it down for
everyone. Here one host (an IPv4 or IPv6 address: a whole LAN may share one IPv6 /64) gets at most :data:`PER_CLIENT`
connections, more are closed at once; the total is :data:`CONNECTION_LIMIT`, and an idle or
half-open connection is closed after :data:`CHANNEL_TIMEOUT` seconds (checked every
:data:`CLEANUP_INTERVAL`). Reverse proxies in ``[web] trusted_proxies`` carry many clients: no cap.

waitress is imported only here, and this module only by `linkwatch web`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any, Sequence

from waitress.adjustments import Adjustments
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from linkwatch.webui.security import host_key

log = logging.getLogger("linkwatch.web")

PER_CLIENT = 12  # a browser opens about six; the dashboard polls over one or two
CONNECTION_LIMIT = 200
CHANNEL_TIMEOUT = 15  # seconds an idle (or half-open) connection is kept
CLEANUP_INTERVAL = 5


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server with a cap on each client's connections."""

    per_client = PER_CLIENT
    exempt: tuple = ()  # networks of trusted proxies

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:  # as waitress: a socket the peer already closed
            return
        addr = self.fix_addr(addr)
        if not self._exempt(addr[0]):
            key = host_key(addr[0])
            held = sum(1 for ch in list(self.active_channels.values()) if host_key(ch.addr[0]) == key)
            if held >= self.per_client:
                conn.close()
                self._note_refusal(key, held)
                return
        self.channel_class(self, conn, addr, self.adj, map=self._map)

    def _note_refusal(self, key: str, held: int) -> None:
        """One warning per client per minute, not one per connection (a flood must not flood the log)."""
        now = time.monotonic()
        logged = getattr(self, "_logged", None)
        if logged is None:
            logged = self._logged = {}
        if now - logged.get(key, -math.inf) >= 60.0:
            if len(logged) > 1000:
                logged.clear()
            logged[key] = now
            log.warning("web: %s holds %d connections, the most one client may; refusing more (logged once a "
                        "minute)", key, held)

    def _exempt(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self.exempt)


def make_server(app: Any, host: str, port: int, threads: int, trusted_proxies: Sequence[str] = (),
                per_client: int = PER_CLIENT) -> GuardedServer:
    """A server bound to host:port (OSError when it cannot be); ``.run()`` serves until stopped."""
    adj = Adjustments(host=host, port=port, threads=threads, ident="linkwatch", connection_limit=CONNECTION_LIMIT,
                      channel_timeout=CHANNEL_TIMEOUT, cleanup_interval=CLEANUP_INTERVAL,
                      # X-Forwarded-For reaches the app only with [web] trusted_proxies: it checks who sent it
                      clear_untrusted_proxy_headers=not trusted_proxies)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    (sockinfo,) = adj.listen[:1]
    server = GuardedServer(app, {}, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)
    server.per_client = per_client
    server.exempt = tuple(ipaddress.ip_network(t) for t in trusted_proxies)
    return server
