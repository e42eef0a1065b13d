"""The web UI against an attacker on the LAN (issue 14): login throttling that nobody can turn
against the admin, trusted reverse proxies. In-process (Flask's test client), no sockets."""

from __future__ import annotations

import pytest

from linkwatch.config import loads
from linkwatch.config.loading import ConfigError
from linkwatch.webui.security import Throttle, client_address, host_allowed
from tests.unit.test_web import BASE, PASSWORD, csrf_of, make

WRONG = "not the password"


def clocked(**kw) -> tuple[Throttle, list[float]]:
    clock = [1000.0]
    return Throttle(clock=lambda: clock[0], **kw), clock


def fail(throttle: Throttle, address: str, times: int = 1) -> None:
    for _ in range(times):
        throttle.failed(address)


def test_ipv6_clients_are_grouped_by_their_64():
    throttle, _ = clocked(limit=5, net_limit=20)
    for i in range(20):  # one /64 holds 2**64 addresses: one lockout for all of them, at 20
        throttle.failed(f"2001:db8:1:2::{i + 1:x}")
    assert throttle.retry_after("2001:db8:1:2:ffff::99") > 0
    assert throttle.retry_after("2001:db8:1:3::1") == 0
    assert throttle.retry_after("::ffff:198.51.100.1") == 0
    fail(throttle, "::ffff:198.51.100.1", 5)  # an IPv4-mapped address is its IPv4 address
    assert throttle.retry_after("198.51.100.1") > 0 and throttle.retry_after("198.51.100.2") == 0


def test_a_locked_out_address_is_never_evicted():
    throttle, _ = clocked(limit=5, max_clients=100, global_limit=10**6)
    fail(throttle, "198.51.100.66", 5)
    assert throttle.retry_after("198.51.100.66") > 0
    for i in range(1000):  # failures from 1,000 other addresses
        throttle.failed(f"10.{i // 250}.{i % 250}.1")
    assert throttle.retry_after("198.51.100.66") > 0


def test_a_global_failure_budget_with_the_admins_own_address_exempt():
    throttle, clock = clocked(limit=5, window=300, global_limit=20)
    throttle.succeeded("198.51.100.10")  # where the admin logged in from before
    for i in range(20):  # one failure each from many addresses: no address reaches its own limit
        throttle.failed(f"203.0.113.{i + 1}")
    assert throttle.retry_after("203.0.113.200") > 0  # a new address must wait
    assert throttle.retry_after("198.51.100.10") == 0  # the admin's known address may still try
    clock[0] += 301
    assert throttle.retry_after("203.0.113.200") == 0


def test_client_address_honours_x_forwarded_for_only_from_trusted_proxies():
    proxies = ("127.0.0.1/32", "10.0.0.0/30")
    assert client_address("127.0.0.1", "198.51.100.7", proxies) == "198.51.100.7"
    # the attacker's own (left) entries are not believed: the first untrusted hop from the right
    assert client_address("127.0.0.1", "1.2.3.4, 198.51.100.7, 10.0.0.2", proxies) == "198.51.100.7"
    assert client_address("198.51.100.9", "127.0.0.1", proxies) == "198.51.100.9"  # not a proxy
    assert client_address("127.0.0.1", "198.51.100.7", ()) == "127.0.0.1"  # no proxies configured
    assert client_address("127.0.0.1", "junk, <script>", proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", None, proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", "10.0.0.1", proxies) == "10.0.0.1"  # all proxies: the last one


def test_x_forwarded_for_entries_with_a_port():
    """Some proxies write the client's port too: the address is taken without it, in each form a
    proxy writes (IPv4 a.b.c.d:port, [IPv6]:port, [IPv6]); anything else is still malformed."""
    assert client_address("10.0.0.1", "198.51.100.7:5555", ["10.0.0.1"]) == "198.51.100.7"
    assert client_address("10.0.0.1", "[2001:db8::7]:5555", ["10.0.0.1"]) == "2001:db8::7"
    assert client_address("10.0.0.1", "[2001:db8::7]", ["10.0.0.1"]) == "2001:db8::7"
    assert client_address("10.0.0.1", "203.0.113.5:1, 10.0.0.2:443", ["10.0.0.0/30"]) == "203.0.113.5"
    for junk in ("198.51.100.7:", "198.51.100.7:99999", "198.51.100.7:55:55", "198.51.100.7:x",
                 "[198.51.100.7]:5555", "[2001:db8::7]:", "[2001:db8::7", "2001:db8::7]:5555",
                 "[junk]:5555", "host.example:5555", "[2001:db8::7]:5555:1"):
        assert client_address("10.0.0.1", junk, ["10.0.0.1"]) == "10.0.0.1", junk


def post_login(client, password: str, remote: str, xff: str | None = None):
    headers = {"X-Forwarded-For": xff} if xff else {}
    env = {"REMOTE_ADDR": remote}
    token = csrf_of(client)
    return client.post("/login", data={"password": password, "csrf_token": token}, headers=headers,
                       environ_base=env)


def test_behind_a_trusted_proxy_one_client_cannot_lock_out_the_others():
    throttle, _ = clocked(limit=5)
    client, _ = make('trusted_proxies = ["127.0.0.1"]', throttle=throttle)
    for _ in range(5):
        assert post_login(client, WRONG, "127.0.0.1", "198.51.100.7").status_code == 401
    assert post_login(client, PASSWORD, "127.0.0.1", "198.51.100.7").status_code == 429
    assert post_login(client, PASSWORD, "127.0.0.1", "198.51.100.8").status_code == 302


def test_x_forwarded_for_from_anyone_else_is_ignored():
    throttle, _ = clocked(limit=5)
    client, _ = make(throttle=throttle)
    for i in range(5):  # a new spoofed X-Forwarded-For each time: still one client
        assert post_login(client, WRONG, "10.9.9.9", f"198.51.100.{i + 1}").status_code == 401
    assert post_login(client, PASSWORD, "10.9.9.9", "198.51.100.77").status_code == 429


def test_trusted_proxies_in_the_config():
    cfg = loads(f'[web]\ntrusted_proxies = ["127.0.0.1", "fd00::/64"]\n{BASE}')
    assert cfg.web.trusted_proxies == ("127.0.0.1/32", "fd00::/64")
    with pytest.raises(ConfigError) as e:
        loads(f'[web]\ntrusted_proxies = ["proxy.lan"]\n{BASE}')
    assert "web.trusted_proxies" in str(e.value) and "'proxy.lan' is not a network" in str(e.value)


# ---- /api/v1/samples cannot be made to return a month at full resolution ----------------------------


@pytest.fixture(scope="module")
def month_db(tmp_path_factory):
    """30 days of 1-minute samples for two uplinks (86,400 rows)."""
    import time as _time

    from linkwatch.core.events import UplinkSamples
    from linkwatch.history import Batch, HistoryStore, sample_row

    now = _time.time()
    start = now - now % 60 - 30 * 86400
    path = tmp_path_factory.mktemp("month") / "history.db"
    store = HistoryStore(str(path))
    rows = [sample_row(UplinkSamples(at=start + 60 * (i + 1), mono=0.0, uplink=u, start=start + 60 * i, sent=40,
                                     lost=0, loss_pct=0.0, rtt_avg_ms=10.0, rtt_min_ms=5.0, rtt_max_ms=50.0,
                                     jitter_ms=1.0))
            for i in range(30 * 1440) for u in ("wan1", "lte")]
    store.write(Batch(events=[], samples=rows, meta={"sample_period": "60.0"}))
    store.close()
    return path


@pytest.mark.parametrize("query", ["since=30d&step=60", "since=30d&step=1", "since=30d", "since=40d&until=1m&step=61"])
def test_samples_with_any_step_stay_within_the_point_cap(month_db, query):
    from linkwatch.history import MAX_POINTS

    client, _ = make("public_read = true", history=f'[history]\npath = "{month_db}"')
    r = client.get(f"/api/v1/samples?{query}")
    body = r.get_json()
    assert r.status_code == 200 and set(body["uplinks"]) == {"wan1", "lte"}
    assert all(len(points) <= MAX_POINTS for points in body["uplinks"].values()), \
        f"{query}: {[len(p) for p in body['uplinks'].values()]} points, {len(r.data)} bytes"
    assert body["step"] % 60 == 0 and sum(p["sent"] for p in body["uplinks"]["wan1"]) <= 30 * 1440 * 40
    assert len(r.data) < 400_000


def test_a_step_coarser_than_the_cap_is_kept(month_db):
    client, _ = make("public_read = true", history=f'[history]\npath = "{month_db}"')
    body = client.get("/api/v1/samples?since=30d&step=86400").get_json()
    assert body["step"] == 86400 and all(30 <= len(p) <= 31 for p in body["uplinks"].values())


# ---- logout ends the session for every copy of its cookie ------------------------------------------


def test_logout_revokes_a_copied_session_cookie():
    client, engine = make()
    assert post_login(client, PASSWORD, "127.0.0.1").status_code == 302
    stolen = client.get_cookie("linkwatch_session").value
    thief = client.application.test_client()
    thief.set_cookie("linkwatch_session", stolen)
    state = thief.get("/api/v1/session").get_json()
    assert state["logged_in"] is True  # the copy works while the session lives
    token = state["csrf"]
    client.post("/logout", data={"csrf_token": token})
    assert thief.get("/api/v1/session").get_json()["logged_in"] is False
    r = thief.post("/api/v1/uplinks/lte/force", headers={"X-CSRF-Token": token})
    assert r.status_code == 401 and all(req["cmd"] != "set" for req in engine.requests)
    assert thief.get("/").status_code == 302  # to the login page
    # a new login works, and gets a new session
    assert post_login(client, PASSWORD, "127.0.0.1").status_code == 302
    assert client.get("/api/v1/session").get_json()["logged_in"] is True
    assert thief.get("/api/v1/session").get_json()["logged_in"] is False


# ---- DNS rebinding: only the Host names the router answers to ------------------------------------


@pytest.mark.parametrize("host, ok", [
    ("localhost", True), ("localhost:8080", True), ("192.168.1.1", True), ("192.168.1.1:8080", True),
    ("[fd00::1]:8080", True), ("[::1]", True), ("evil.example", False), ("evil.example:8080", False),
    ("192.168.1.1.evil.example", False), ("", False), ("[fd00::1", False), ("a" * 300, False)])
def test_the_host_header_must_be_an_address_or_a_configured_name(host, ok):
    client, _ = make("public_read = true")
    for path in ("/metrics", "/api/v1/status", "/"):
        r = client.get(path, headers={"Host": host})
        assert (r.status_code != 400) == ok, (path, host, r.status_code)
        if not ok:
            assert "allowed_hosts" in r.get_data(as_text=True)
            assert "<script" not in r.get_data(as_text=True)


def test_allowed_hosts_names_the_router():
    client, _ = make('public_read = true\nallowed_hosts = ["router.lan", "Status.Example.ORG"]')
    for host in ("router.lan", "ROUTER.LAN.:8443", "status.example.org", "10.0.0.1"):
        assert client.get("/metrics", headers={"Host": host}).status_code == 200, host
    assert client.get("/metrics", headers={"Host": "other.lan"}).status_code == 400
    anyhost, _ = make('allowed_hosts = ["*"]')
    assert anyhost.get("/metrics", headers={"Host": "whatever.example"}).status_code == 200


def test_allowed_hosts_in_the_config():
    with pytest.raises(ConfigError) as e:
        loads(f'[web]\nallowed_hosts = ["router lan"]\n{BASE}')
    assert "web.allowed_hosts" in str(e.value)
    assert loads(f'[web]\nallowed_hosts = ["Router.LAN."]\n{BASE}').web.allowed_hosts == ("router.lan",)


def test_one_host_cannot_lock_out_the_rest_of_its_lans_64():
    """With SLAAC a whole LAN shares one /64: one host's 5 failures lock that host out, not the
    admin's address beside it; a /64 that fails 20 times waits, except for the hosts in it that
    logged in before (review: the /64 alone was the key, and one host locked out every other)."""
    throttle, _ = clocked(limit=5, net_limit=20, global_limit=10**6)
    throttle.succeeded("2001:db8:1:2::a11")  # the admin, last week
    fail(throttle, "2001:db8:1:2::bad", 5)
    assert throttle.retry_after("2001:db8:1:2::bad") > 0
    assert throttle.retry_after("2001:db8:1:2::a11") == 0
    assert throttle.retry_after("2001:db8:1:2::c0de") == 0, "another host of the LAN"
    for i in range(15):  # the attacker rotates through its /64
        throttle.failed(f"2001:db8:1:2::{0x1000 + i:x}")
    assert throttle.retry_after("2001:db8:1:2::c0de") > 0, "a /64 that failed 20 times waits"
    assert throttle.retry_after("2001:db8:1:2::a11") == 0, "but not the admin's known address"


# ---- the names the router goes by, accepted without allowed_hosts -------------------------------

OWN = {"hostname": ("router", "router"), "domains": ("lan", "home.arpa")}


@pytest.mark.parametrize("host, ok", [
    ("router", True), ("router.lan", True), ("router.local", True), ("ROUTER.LAN:8080", True),
    ("router.lan.", True), ("Router.Home.Arpa.:443", True), ("router.local:8080", True),
    # a name that merely starts with the hostname is someone else's (DNS rebinding)
    ("router.evil.example", False), ("router.evil.example:8080", False), ("router.lan.evil.example", False),
    ("routerx.lan", False), ("evil-router.lan", False), ("lan", False), (".local", False),
    ("other.lan", False), ("router.local.evil.example", False)])
def test_the_routers_own_names_are_accepted(host, ok):
    assert host_allowed(host, (), **OWN) is ok


def test_an_fqdn_hostname_also_accepts_its_short_name():
    for names in (("router.example.net", "router.example.net"), ("router", "router.example.net")):
        for host in ("router", "router.example.net", "ROUTER.EXAMPLE.NET.:8443", "router.local"):
            assert host_allowed(host, (), names), (names, host)
        assert not host_allowed("router.example.net.evil.example", (), names)
        assert not host_allowed("router.lan", (), names)  # no search domain given


@pytest.mark.parametrize("host, ok", [
    ("[fe80::1%25eth0]", True), ("[fe80::1%25eth0]:8080", True), ("[fe80::1%eth0]", True),
    ("[FE80::1%25wlan0.5]:80", True), ("[fe80::1%25eth0", False), ("[fe80::1%25]x", False),
    ("[fe80::1%25eth/0]", False), ("[fe80::1%25eth0]:port", False), ("[evil.example%25eth0]", False)])
def test_ipv6_literals_with_a_zone(host, ok):
    assert host_allowed(host, ()) is ok


def make_named(monkeypatch, tmp_path, resolv: str | None, hostname="router", fqdn="router"):
    import socket

    from linkwatch.webui import app as webapp
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    monkeypatch.setattr(socket, "getfqdn", lambda *a: pytest.fail("getfqdn asks DNS: it can wait for seconds"))
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.1.1 {fqdn} {hostname}  # Debian's\n::1 ip6-localhost\n")
    monkeypatch.setattr(webapp, "HOSTS_FILE", str(hosts))
    path = tmp_path / "resolv.conf"
    if resolv is not None:
        path.write_text(resolv)
    monkeypatch.setattr(webapp, "RESOLV_CONF", str(path))
    client, _ = make("public_read = true")
    return lambda host: client.get("/metrics", headers={"Host": host}).status_code


def test_names_from_resolv_conf_are_accepted_after_an_upgrade(monkeypatch, tmp_path):
    status = make_named(monkeypatch, tmp_path, "# by dhcp\nnameserver 10.0.0.1\nsearch lan Home.Arpa.\n"
                                               "domain corp.example ; old style\noptions ndots:1\n")
    for host in ("router.lan", "router.local", "ROUTER.LAN:8080", "router.home.arpa", "router.corp.example",
                 "router", "[fe80::1%25eth0]:8080"):
        assert status(host) == 200, host
    for host in ("router.evil.example", "router.ndots:1", "router.old", "router.nameserver", "other.lan"):
        assert status(host) == 400, host


def test_without_resolv_conf_the_hostname_and_mdns_name_still_work(monkeypatch, tmp_path):
    status = make_named(monkeypatch, tmp_path, None, hostname="router.example.net", fqdn="router.example.net")
    assert [status(h) for h in ("router", "router.example.net", "router.local", "router.lan")] == [200, 200, 200, 400]


def test_the_fqdn_comes_from_the_hosts_file_not_dns(monkeypatch, tmp_path):
    """socket.getfqdn() asks DNS: with the uplinks down (the real systemd test's container) the web
    UI waited out the resolver before it answered at all. The hosts file names the FQDN."""
    status = make_named(monkeypatch, tmp_path, None, hostname="router", fqdn="router.example.org")
    assert [status(h) for h in ("router", "router.example.org", "router.local", "ip6-localhost", "router.lan")] \
        == [200, 200, 200, 400, 400], "only the names on the hostname's own line"
