"""systemd's notify protocol (sd_notify(3)) without a dependency: one datagram per message.

``Type=notify`` units learn that the engine is ready (after its first routing reconcile) and,
with ``WatchdogSec=``, get a ``WATCHDOG=1`` ping at half the watchdog interval from the engine's
loop, so a hung loop gets the service restarted. Outside systemd (no ``$NOTIFY_SOCKET``) every
call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("linkwatch.engine")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 1e6 / 2 if watchdog else None  # ping twice per interval
        self.sent: list[str] = []  # what was sent (for status and tests)
        self.ready = False  # READY=1 was sent
        self._waiting = False  # the "waiting" status was sent

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``"READY=1"``, ``"STATUS=..."``, ... as one message; False when not under systemd
        or the socket is gone (never raises: a notify must not stop the engine)."""
        if not self.address:
            return False
        address = self.address
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        message = "\n".join(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), address)
        except OSError:
            return False
        self.sent.append(message)
        del self.sent[:-20]
        return True

    def announce_ready(self, routes_in: bool, status: str) -> bool:
        """READY=1 (with ``status``), once, and only when ``routes_in``: systemd orders units
        after the engine on it, so it must not come while the kernel refuses the routes; until
        then one ``STATUS=waiting: …`` (and a warning in the log). True when READY=1 went out now."""
        if self.ready or not self.enabled:
            return False
        if not routes_in:
            if not self._waiting:
                self._waiting = True
                log.warning("not ready: the kernel refused the routes; retrying")
                self.notify("STATUS=waiting: the kernel refused the routes")
            return False
        self.ready = self.notify("READY=1", status)
        return self.ready
