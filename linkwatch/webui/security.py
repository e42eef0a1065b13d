"""Login, CSRF tokens and login throttling for the web UI (pure helpers, no Flask imports).

One account: the admin, whose password hash sits in ``[web] password_hash`` (written by
``linkwatch passwd``). Hashes are Werkzeug's (scrypt by default), checked in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from werkzeug.security import check_password_hash, generate_password_hash

USER = "admin"
MIN_PASSWORD = 8


class PasswordError(ValueError):
    """A password that cannot be used (too short, not text)."""


def hash_password(password: str) -> str:
    """The hash to put in ``[web] password_hash``; refuses passwords shorter than MIN_PASSWORD."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise PasswordError(f"the password must have at least {MIN_PASSWORD} characters")
    return generate_password_hash(password)


def password_ok(stored_hash: str | None, password: str) -> bool:
    """True only if a hash is configured and ``password`` matches it."""
    if not stored_hash or not isinstance(password, str) or not password:
        return False
    try:
        return check_password_hash(stored_hash, password)
    except (ValueError, TypeError):  # a hash of an unknown method: nobody gets in
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing token on either side never matches."""
    if not expected or not given or not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass
class Throttle:
    """Refuse logins from an address after ``limit`` failures within ``window`` seconds, for
    ``lockout`` seconds. Remembers at most ``max_clients`` addresses (oldest forgotten first)."""

    limit: int = 5
    window: float = 300.0
    lockout: float = 60.0
    max_clients: int = 1000
    clock: object = time.monotonic
    _failures: OrderedDict = field(default_factory=OrderedDict)  # address -> [times]
    _lock: threading.Lock = field(default_factory=threading.Lock)  # waitress serves from several threads

    def retry_after(self, address: str) -> float:
        """Seconds this address must wait before it may try again (0: it may try now)."""
        now = self.clock()
        with self._lock:
            times = [t for t in self._failures.get(address, []) if now - t < self.window]
        if len(times) >= self.limit:
            return max(0.0, times[-1] + self.lockout - now)
        return 0.0

    def failed(self, address: str) -> None:
        now = self.clock()
        with self._lock:
            times = [t for t in self._failures.pop(address, []) if now - t < self.window]
            self._failures[address] = (times + [now])[-self.limit:]
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
