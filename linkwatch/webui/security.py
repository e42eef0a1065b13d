"""Login, CSRF tokens and login throttling for the web UI (pure helpers, no Flask imports).

One account: the admin, whose password hash sits in ``[web] password_hash`` (written by
``linkwatch passwd``). Hashes are Werkzeug's (scrypt by default), checked in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Sequence

from werkzeug.security import check_password_hash, generate_password_hash

USER = "admin"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
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


def host_key(address: str) -> str:
    """One host: an IPv4 address, an IPv6 address (an IPv4-mapped one as its IPv4 address)."""
    try:
        addr = ipaddress.ip_address(str(address).split("%", 1)[0])
    except ValueError:
        return str(address)[:64]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def client_key(address: str) -> str:
    """A host's network as far as a throttle can tell: an IPv4 address, an IPv6 address's /64
    (one attacker may hold a whole /64; but so does a whole LAN with SLAAC, so a /64 gets a
    larger allowance than one host)."""
    key = host_key(address)
    if ":" in key:
        try:
            return str(ipaddress.IPv6Network(f"{key}/64", strict=False))
        except ValueError:
            return key
    return key


def _in(networks: Sequence[Network], text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in networks)


def client_address(remote: str, forwarded_for: str | None, trusted_proxies: Sequence[str]) -> str:
    """The client's address: ``remote`` (the TCP peer), unless that is one of ``trusted_proxies``
    (``[web] trusted_proxies``) and it sent X-Forwarded-For; then the first address, reading from
    the right (each proxy appends the address it saw), that is not a trusted proxy. Entries left
    of it were written by the client and are never believed; a malformed entry stops the walk at
    the last proxy. An entry may carry the client's port, as some proxies write it
    (``198.51.100.7:5555``, ``[2001:db8::7]:5555``, ``[2001:db8::7]``): it is dropped."""
    def address_of(entry: str) -> str | None:
        with_port = re.fullmatch(r"\[([^\[\]]+)\](?::(\d{1,5}))?|([0-9.]+):(\d{1,5})", entry)
        if with_port:
            port = with_port.group(2) or with_port.group(4)
            if port is not None and int(port) > 65535:
                return None
            entry = with_port.group(1) or with_port.group(3)
            try:
                addr = ipaddress.ip_address(entry)
            except ValueError:
                return None
            # brackets only ever hold IPv6; a port only ever follows an IPv4 address or brackets
            return entry if addr.version == (6 if with_port.group(1) else 4) else None
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            return None
        return entry

    networks = [ipaddress.ip_network(t) for t in trusted_proxies]
    if not networks or not forwarded_for or not _in(networks, remote):
        return remote
    hop = remote
    for entry in reversed(forwarded_for.split(",")):
        entry = address_of(entry.strip())
        if entry is None:
            return hop
        hop = entry
        if not _in(networks, entry):
            return entry
    return hop


def host_allowed(header: str | None, names: Sequence[str], hostname: str | Sequence[str] = "",
                 domains: Sequence[str] = ()) -> bool:
    """Whether a request's Host header names this web UI: an IP address (with or without a port;
    an IPv6 one in brackets, with or without a zone: ``[fe80::1%25eth0]``), ``localhost``, one of
    ``names`` (``[web] allowed_hosts``, lower case; ``"*"``: anything), or one of this machine's
    own names, from ``hostname`` (its hostname and FQDN, one name or several) and ``domains``
    (the ``search``/``domain`` entries of /etc/resolv.conf): each name itself, its short name
    (up to the first dot), ``<short>.local`` (mDNS) and ``<short>.<domain>`` for each domain.
    Case and a trailing dot do not matter. Only these exact names: ``router.evil.example`` is not
    ``router``'s.

    A browser always sends Host; a page of another site whose name an attacker re-points at the
    router (DNS rebinding) sends that site's name, so it is refused. No Host header at all
    (HTTP/1.0 tools) is allowed: no browser is involved."""
    if "*" in names or header is None:
        return True
    if len(header) > 300:
        return False
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)(?:%(?:25)?[A-Za-z0-9._~-]+)?\](?::\d{1,5})?", header)
    if bracketed:
        try:
            return ipaddress.ip_address(bracketed.group(1)).version == 6
        except ValueError:
            return False
    plain = re.fullmatch(r"([^:\[\]]+)(?::\d{1,5})?", header)
    if plain is None:
        return False
    name = plain.group(1).strip().lower().rstrip(".")
    try:
        return ipaddress.ip_address(name).version == 4
    except ValueError:
        pass
    if not name:
        return False
    if name == "localhost" or name in names:
        return True
    suffixes = {"local"} | {d.strip().lower().strip(".") for d in domains} - {""}
    for own in [hostname] if isinstance(hostname, str) else hostname:
        own = own.strip().lower().rstrip(".")
        short = own.split(".", 1)[0]
        if not short:
            continue
        if name in (own, short) or any(name == f"{short}.{suffix}" for suffix in suffixes):
            return True
    return False


@dataclass
class Throttle:
    """Refuse logins after failed ones, so that nobody can guess the password, without handing an
    attacker a way to lock the admin out:

    - a host (an IPv4 or IPv6 address: :func:`host_key`) that failed ``limit`` times within
      ``window`` seconds waits ``lockout`` seconds;
    - so does an IPv6 /64 (:func:`client_key`) that failed ``net_limit`` times, but for the hosts
      in it that logged in before: with SLAAC a whole LAN shares one /64, and one host on it must
      not lock the others out;
    - failures from all clients together have a budget, ``global_limit`` within ``window``: past it
      every client waits until the window moves on, except the hosts that logged in successfully
      before (the last ``max_known`` of them, remembered while the web UI runs), so the admin's
      own address still gets in (a new address of the admin's waits out the attack);
    - at most ``max_clients`` clients are remembered; the oldest are forgotten first, but never
      one that is locked out (a flood of failures from other addresses cannot unlock it)."""

    limit: int = 5
    net_limit: int = 20
    window: float = 300.0
    lockout: float = 60.0
    global_limit: int = 50
    max_clients: int = 1000
    max_known: int = 64
    clock: object = time.monotonic
    _failures: OrderedDict = field(default_factory=OrderedDict)  # host or /64 key -> [times]
    _recent: deque = field(default_factory=deque)  # times of every client's failures, oldest first
    _known: OrderedDict = field(default_factory=OrderedDict)  # client keys that logged in
    _lock: threading.Lock = field(default_factory=threading.Lock)  # waitress serves from several threads

    def _own_wait(self, key: str, now: float) -> float:
        limit = self.net_limit if "/" in key else self.limit  # a /64, or one host
        times = [t for t in self._failures.get(key, []) if now - t < self.window]
        if len(times) >= limit:
            return max(0.0, times[-1] + self.lockout - now)
        return 0.0

    def _global_wait(self, now: float) -> float:
        while self._recent and now - self._recent[0] >= self.window:
            self._recent.popleft()
        if len(self._recent) >= self.global_limit:
            return max(0.0, self._recent[-self.global_limit] + self.window - now)
        return 0.0

    def retry_after(self, address: str) -> float:
        """Seconds this address must wait before it may try again (0: it may try now)."""
        host, net, now = host_key(address), client_key(address), self.clock()
        with self._lock:
            wait = self._own_wait(host, now)
            if wait == 0.0 and host not in self._known:
                wait = max(self._own_wait(net, now) if net != host else 0.0, self._global_wait(now))
        return wait

    def failed(self, address: str) -> None:
        host, net, now = host_key(address), client_key(address), self.clock()
        with self._lock:
            for key in {host, net}:
                times = [t for t in self._failures.pop(key, []) if now - t < self.window]
                self._failures[key] = (times + [now])[-(self.net_limit if key != host else self.limit):]
            self._recent.append(now)
            while len(self._recent) > self.global_limit:
                self._recent.popleft()
            if len(self._failures) > self.max_clients:
                self._forget(now)

    def _forget(self, now: float) -> None:
        """Forget the oldest clients that are not locked out, down to max_clients."""
        for key in list(self._failures):
            if len(self._failures) <= self.max_clients:
                return
            if self._own_wait(key, now) == 0.0:
                del self._failures[key]

    def succeeded(self, address: str) -> None:
        key = host_key(address)
        with self._lock:
            self._failures.pop(key, None)
            self._known.pop(key, None)
            self._known[key] = True
            while len(self._known) > self.max_known:
                self._known.popitem(last=False)


@dataclass
class Sessions:
    """The logins that are alive, by session id. The session cookie is signed, not stored: without
    this list a copy of it would keep working after logout until it expires. At most ``limit``
    are kept (the oldest login is forgotten first, i.e. logged out)."""

    lifetime: float = 12 * 3600.0
    limit: int = 100
    clock: object = time.monotonic
    _alive: OrderedDict = field(default_factory=OrderedDict)  # session id -> expiry
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        sid = new_token()
        with self._lock:
            self._alive[sid] = self.clock() + self.lifetime
            while len(self._alive) > self.limit:
                self._alive.popitem(last=False)
        return sid

    def alive(self, sid: object) -> bool:
        if not isinstance(sid, str):
            return False
        with self._lock:
            expiry = self._alive.get(sid)
            if expiry is not None and expiry <= self.clock():
                del self._alive[sid]
                expiry = None
        return expiry is not None

    def end(self, sid: object) -> None:
        with self._lock:
            self._alive.pop(sid, None)
