"""The web UI through Flask's test client: every route, the auth and CSRF rules, escaping, the API's
error contract (4xx JSON, never a 500 for bad input), /metrics and `linkwatch passwd`."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import threading

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from statusdata import status_dict  # noqa: E402

from linkwatch.config import loads
from linkwatch.core.events import EVENT_TYPES
from linkwatch.core.status import status_from_dict
from linkwatch.report.control import ControlError
from linkwatch.report import metrics
from linkwatch.webui import WEB_DIR
from linkwatch.webui.app import create_app
from linkwatch.commands.passwd import PasswdError, set_password_hash, write_config
from linkwatch.webui.security import PasswordError, Throttle, hash_password, password_ok

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)

BASE = """
[uplinks.wan1]
interface = "eth1"
[[uplinks.wan1.probes]]
type = "icmp"
target = "198.51.100.1"
[uplinks.lte]
interface = "wwan0"
priority = 2
[[uplinks.lte.probes]]
type = "icmp"
target = "198.51.100.1"
"""

EVIL = '<script>alert(1)</script>'

STATUS = status_dict()


class FakeEngine:
    """Answers control requests like the engine does; records them."""

    def __init__(self, status=None, down=False):
        self.status = copy.deepcopy(status or STATUS)
        self.down = down
        self.requests: list[dict] = []

    def __call__(self, req: dict) -> dict:
        self.requests.append(req)
        if self.down:
            raise ControlError("no engine socket at /run/linkwatch/control.sock (is `linkwatch run` running?)")
        if req["cmd"] == "status":
            return {"ok": True, "status": self.status}
        if req["cmd"] == "set":
            if req["uplink"] not in [u["name"] for u in self.status["uplinks"]]:
                return {"ok": False, "error": f"unknown uplink {req['uplink']!r}; expected one of wan1, lte"}
            return {"ok": True, "message": f"{req['action']} {req['uplink']}", "active": [req["uplink"]]}
        return {"ok": False, "error": "unknown command"}


def make(web: str = "", engine: FakeEngine | None = None, history: str = "", throttle=None):
    text = f"[web]\npassword_hash = \"{HASH}\"\n{web}\n{history}\n{BASE}"
    engine = engine or FakeEngine()
    app = create_app(loads(text), engine=engine, throttle=throttle)
    app.testing = True
    return app.test_client(), engine


def csrf_of(client, path="/login") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client, password=PASSWORD):
    return client.post("/login", data={"password": password, "csrf_token": csrf_of(client)})


def session_csrf(client) -> str:
    return client.get("/api/v1/session").get_json()["csrf"]


# ---- who may see and do what -------------------------------------------------------------------


def test_without_login_the_dashboard_redirects_and_the_api_says_401():
    client, engine = make()
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    for path in ("/api/v1/status", "/api/v1/events", "/api/v1/samples"):
        r = client.get(path)
        assert r.status_code == 401 and r.get_json() == {"ok": False, "error": "log in first"}, path
    assert engine.requests == [], "nothing reaches the engine before a login"


def test_public_read_shows_the_dashboard_but_not_the_controls():
    client, engine = make("public_read = true")
    page = client.get("/").get_data(as_text=True)
    assert 'data-uplink="wan1"' in page and 'data-uplink="lte"' in page
    assert 'data-action="force"' not in page, "no control buttons without a login"
    r = client.post("/api/v1/uplinks/lte/force", headers={"X-CSRF-Token": client.get("/api/v1/session").get_json()["csrf"] or "x"})
    assert r.status_code == 403  # no session token: refused before anything else
    assert [q["cmd"] for q in engine.requests] == ["status"]


def test_login_controls_and_logout():
    client, engine = make()
    r = login(client)
    assert r.status_code == 302 and r.headers["Location"].endswith("/")
    page = client.get("/").get_data(as_text=True)
    assert 'data-action="force"' in page and 'id="logout"' in page
    token = session_csrf(client)
    r = client.post("/api/v1/uplinks/lte/force", headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.get_json() == {"ok": True, "message": "force lte", "active": ["lte"]}
    sent = engine.requests[-1]
    assert sent["cmd"] == "set" and sent["uplink"] == "lte" and sent["action"] == "force"
    assert sent["source"] == "web:admin@127.0.0.1"
    # the form fallback (no JavaScript) does the same and comes back to the dashboard
    r = client.post("/control", data={"uplink": "wan1", "action": "disable", "csrf_token": token})
    assert r.status_code == 302 and engine.requests[-1]["action"] == "disable"
    client.post("/logout", data={"csrf_token": token})
    assert client.get("/").status_code == 302
    r = client.post("/api/v1/uplinks/lte/auto", headers={"X-CSRF-Token": token})
    assert r.status_code == 403, "the old token died with the session"


def test_controls_need_the_csrf_token_of_the_session():
    client, engine = make()
    login(client)
    before = len(engine.requests)
    assert client.post("/api/v1/uplinks/lte/force").status_code == 403
    assert client.post("/api/v1/uplinks/lte/force", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/control", data={"uplink": "lte", "action": "force"}).status_code == 403
    other, _ = make()
    login(other)
    assert client.post("/api/v1/uplinks/lte/force",
                       headers={"X-CSRF-Token": session_csrf(other)}).status_code == 403, "another session's token"
    assert len(engine.requests) == before


def test_login_needs_a_csrf_token_and_rotates_the_session():
    client, _ = make()
    assert client.post("/login", data={"password": PASSWORD}).status_code == 403
    pre = csrf_of(client)
    client.post("/login", data={"password": PASSWORD, "csrf_token": pre})
    assert session_csrf(client) != pre, "a new CSRF token after login"


def test_wrong_password_and_throttling():
    clock = [1000.0]
    throttle = Throttle(limit=3, window=300, lockout=60, clock=lambda: clock[0])
    client, _ = make(throttle=throttle)
    for _ in range(3):
        r = login(client, "wrong password")
        assert r.status_code == 401 and "wrong password" in r.get_data(as_text=True)
    r = login(client)  # right password, but locked out now
    assert r.status_code == 429 and "too many failed logins" in r.get_data(as_text=True)
    clock[0] += 61
    assert login(client).status_code == 302


def test_no_password_set_means_nobody_logs_in():
    app = create_app(loads(BASE), engine=FakeEngine())
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "linkwatch passwd" in page and 'name="password"' not in page
    client.get("/login")
    with client.session_transaction() as sess:
        token = sess["csrf"]
    r = client.post("/login", data={"password": "anything at all", "csrf_token": token})
    assert r.status_code == 401
    assert client.get("/").status_code == 302


def test_session_cookie_flags():
    client, _ = make("secure_cookies = true\nsession_lifetime = \"1h\"")
    r = login(client)
    cookie = r.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Secure", "linkwatch_session="):
        assert flag in cookie, cookie
    assert "Expires=" in cookie
    client, _ = make()
    assert "Secure" not in login(client).headers["Set-Cookie"]


def test_security_headers_on_pages_and_api():
    client, _ = make("public_read = true")
    for path in ("/", "/api/v1/status", "/login"):
        h = client.get(path).headers
        assert "script-src 'self'" in h["Content-Security-Policy"] and "frame-ancestors 'none'" in h[
            "Content-Security-Policy"], path
        assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
        assert h["Cache-Control"] == "no-store"


# ---- nothing from the router or the network becomes markup ----------------------------------------


def test_names_reasons_and_errors_are_escaped():
    st = copy.deepcopy(STATUS)
    st["uplinks"][0]["interface"] = EVIL
    st["uplinks"][0]["reason"] = f'"><img src=x onerror=alert(1)>{EVIL}'
    st["reason"] = EVIL
    client, _ = make("public_read = true", engine=FakeEngine(st))
    page = client.get("/").get_data(as_text=True)
    assert EVIL not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # the only script is our own file
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/app.js">']
    r = client.get(f"/nope{EVIL}")
    assert r.status_code == 404 and EVIL not in r.get_data(as_text=True)


def test_the_dashboard_script_never_writes_html():
    text = open(os.path.join(WEB_DIR, "static", "app.js")).read()
    assert "textContent" in text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in text, sink


def test_no_asset_comes_from_the_internet():
    client, _ = make("public_read = true")
    page = client.get("/").get_data(as_text=True) + client.get("/login").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and not re.search(r"https?://(?!www\.w3\.org/2000/svg)", r.get_data(as_text=True))


# ---- the API contract ------------------------------------------------------------------------------


def test_status_api_passes_the_engine_status_and_503_when_the_engine_is_away():
    client, _ = make("public_read = true")
    body = client.get("/api/v1/status").get_json()
    assert body["ok"] is True and [u["name"] for u in body["status"]["uplinks"]] == ["wan1", "lte"]
    client, _ = make("public_read = true", engine=FakeEngine(down=True))
    r = client.get("/api/v1/status")
    assert r.status_code == 503 and "no engine socket" in r.get_json()["error"]
    page = client.get("/")
    assert page.status_code == 200 and "engine not reachable" in page.get_data(as_text=True)
    assert client.get("/healthz").status_code == 503


def flapping_status() -> dict:
    """STATUS with lte dampened, near its quota; wan1 proven, with probe traffic and no quota."""
    st = copy.deepcopy(STATUS)
    st["uplinks"][0].update(probe_bytes_per_day=24_000_000, month_bytes=312_000_000_000, proven=True, slow_rounds=2)
    st["uplinks"][1].update(dampened=True, flap_penalty=3.46, month_bytes=16_400_000_000,
                            quota_bytes=20_000_000_000, quota_pct=82.0, suspect=False)
    return st


def card_of(page: str, name: str) -> str:
    return re.search(rf'<article class="[^"]*" data-uplink="{name}">.*?</article>', page, re.S).group(0)


def test_cards_show_flapping_probe_traffic_and_the_month_against_the_quota():
    client, _ = make("public_read = true", engine=FakeEngine(flapping_status()))
    page = client.get("/").get_data(as_text=True)
    wan1, lte = card_of(page, "wan1"), card_of(page, "lte")
    assert '<span class="flapping" data-dampened="false" title=""></span>' in wan1
    assert re.search(r'<span class="flapping" data-dampened="true" title="flap penalty 3\.5: [^"]*">flapping</span>', lte)
    assert 'class="card state-DOWN dampened"' in lte and " dampened" not in wan1.split(">", 1)[0]
    assert '<dd class="probe-bytes">24.0MB</dd>' in wan1 and '<dd class="probe-bytes">-</dd>' in lte
    assert '<dd class="month">312.0GB</dd>' in wan1 and '<dd class="month">16.4GB of 20.0GB (82%)</dd>' in lte
    assert re.search(r'<meter class="quota"[^>]* value="82.0"[^>]*>', lte) and "hidden" not in lte.split("<meter")[1]
    assert re.search(r'<meter class="quota"[^>]* hidden>', wan1), "no quota: no bar"


def test_status_api_passes_the_new_status_fields_through():
    client, _ = make("public_read = true", engine=FakeEngine(flapping_status()))
    wan1, lte = client.get("/api/v1/status").get_json()["status"]["uplinks"]
    assert {k: wan1[k] for k in ("proven", "suspect", "slow_rounds", "probe_bytes_per_day", "month_bytes",
                                 "quota_bytes", "quota_pct")} == {
        "proven": True, "suspect": False, "slow_rounds": 2, "probe_bytes_per_day": 24_000_000,
        "month_bytes": 312_000_000_000, "quota_bytes": None, "quota_pct": None}
    assert {k: lte[k] for k in ("dampened", "flap_penalty", "month_bytes", "quota_bytes", "quota_pct")} == {
        "dampened": True, "flap_penalty": 3.46, "month_bytes": 16_400_000_000, "quota_bytes": 20_000_000_000,
        "quota_pct": 82.0}


def test_the_timeline_asks_for_and_describes_dampening_and_quota_events():
    text = open(os.path.join(WEB_DIR, "static", "app.js")).read()
    kinds = re.search(r"/api/v1/events\?[^\"]*kind=([a-z0-9_,]+)\"", text).group(1).split(",")
    assert {"dampened", "quota", "ipv6_state", "ipv6_active"} <= set(kinds) and set(kinds) <= set(EVENT_TYPES)
    assert 'case "dampened":' in text and 'case "quota":' in text and 'case "ipv6_state":' in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (scripts/bootstrap.sh --test-tools)")
def test_the_script_updates_the_cards_in_a_real_browser(tmp_path):
    """The page renders one status; the script's first poll gets another (wan1 now flapping, over a small
    quota; lte no longer dampened): the cards must show the second, through textContent only."""
    from werkzeug.serving import make_server

    later = flapping_status()
    later["uplinks"][0].update(dampened=True, flap_penalty=4.0, quota_bytes=500_000_000, quota_pct=112.5,
                               month_bytes=562_500_000)
    later["uplinks"][1].update(dampened=False, flap_penalty=0.8, month_bytes=19_000_000_000, quota_pct=95.0)
    engine = FakeEngine(flapping_status())
    answers = iter([flapping_status()])

    def ask(req):
        if req["cmd"] == "status":
            return {"ok": True, "status": next(answers, later)}
        return engine(req)

    app = create_app(loads(f"[web]\npublic_read = true\n{BASE}"), engine=ask)
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                               f"--user-data-dir={tmp_path}", "--virtual-time-budget=3000", "--dump-dom",
                               f"http://127.0.0.1:{server.server_port}/"],
                              capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        thread.join(5)
    page = done.stdout
    assert 'data-uplink="wan1"' in page, done.stderr[-2000:]
    wan1, lte = card_of(page, "wan1"), card_of(page, "lte")
    assert re.search(r'<span class="flapping" data-dampened="true" title="flap penalty 4\.0: [^"]*">flapping</span>', wan1)
    assert '<span class="flapping" data-dampened="false" title=""></span>' in lte
    assert "dampened" in wan1.split(">", 1)[0] and "dampened" not in lte.split(">", 1)[0]
    assert '<dd class="month">562.5MB of 500.0MB (113%)</dd>' in wan1  # the bar stops at full
    assert re.search(r'<meter class="quota"[^>]* value="100"[^>]*>', wan1) and "hidden" not in wan1.split("<meter")[1]
    assert '<dd class="month">19.0GB of 20.0GB (95%)</dd>' in lte
    assert '<dd class="probe-bytes">24.0MB</dd>' in wan1


@pytest.mark.parametrize("path, fragment", [
    ("/api/v1/events?since=yesterday", "since"),
    ("/api/v1/events?limit=0", "limit"),
    ("/api/v1/events?limit=99999999999", "limit"),
    ("/api/v1/events?limit=ten", "limit"),
    ("/api/v1/events?uplink=" + "x" * 40, "uplink"),
    ("/api/v1/events?uplink=%3Cscript%3E", "uplink"),
    ("/api/v1/events?kind=bogus", "kind"),
    ("/api/v1/samples?step=-5", "step"),
    ("/api/v1/samples?since=1h&until=2h", "until"),
    ("/api/v1/samples?until=%00", "until"),
    ("/api/v1/samples?family=5", "family"),
    ("/api/v1/samples?family=ipv6", "family"),
])
def test_bad_api_input_is_a_400_with_a_json_error(path, fragment, tmp_path):
    client, _ = make("public_read = true", history=f'[history]\npath = "{tmp_path}/h.db"')
    r = client.get(path)
    assert r.status_code == 400, (path, r.status_code, r.get_data(as_text=True)[:200])
    body = r.get_json()
    assert body["ok"] is False and fragment in body["error"]


@pytest.mark.parametrize("method, path, code", [
    ("get", "/api/v1/nothing", 404), ("delete", "/api/v1/status", 405), ("put", "/api/v1/uplinks/wan1/force", 405),
    ("get", "/api/v1/uplinks/wan1/force", 405),
])
def test_unknown_api_routes_and_methods_are_json_4xx(method, path, code):
    client, _ = make("public_read = true")
    r = getattr(client, method)(path)
    assert r.status_code == code and r.get_json()["ok"] is False


def test_history_api_without_a_history_is_404():
    client, _ = make("public_read = true")
    for path in ("/api/v1/events", "/api/v1/samples"):
        r = client.get(path)
        assert r.status_code == 404 and "[history] path" in r.get_json()["error"]


@pytest.mark.parametrize("uplink, action, code, fragment", [
    ("lte", "explode", 400, "unknown action"), ("nope", "force", 404, "unknown uplink"),
    ("x" * 40, "force", 400, "uplink"), ("<b>", "force", 400, "uplink"),
])
def test_bad_control_requests(uplink, action, code, fragment):
    client, engine = make()
    login(client)
    r = client.post(f"/api/v1/uplinks/{uplink}/{action}", headers={"X-CSRF-Token": session_csrf(client)})
    assert r.status_code == code and fragment in r.get_json()["error"], r.get_json()


def test_oversized_posts_are_refused():
    client, _ = make()
    login(client)
    r = client.post("/control", data={"uplink": "x" * 20000, "action": "force", "csrf_token": session_csrf(client)})
    assert r.status_code == 413


# ---- /metrics ---------------------------------------------------------------------------------------


def test_metrics_are_prometheus_text_with_one_state_per_uplink():
    client, _ = make()  # public_metrics defaults to true, without a login
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    text = r.get_data(as_text=True)
    assert 'linkwatch_uplink_state{uplink="wan1",state="UP"} 1' in text
    assert 'linkwatch_uplink_state{uplink="wan1",state="DOWN"} 0' in text
    assert 'linkwatch_uplink_active{uplink="wan1",interface="eth1"} 1.0' in text
    assert 'linkwatch_uplink_rtt_ms{uplink="lte",interface="wwan0"} NaN' in text
    assert 'linkwatch_uplink_loss_ratio{uplink="lte",interface="wwan0"} 1.0' in text
    assert 'linkwatch_uplink_transitions_total{uplink="lte",interface="wwan0"} 3.0' in text
    for line in text.splitlines():  # every sample line is "name{labels} value"
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[^}]*\})? (-?[0-9.e+]+|NaN)', line), line
    client, _ = make("public_metrics = false")
    assert client.get("/metrics").status_code == 401


def test_metrics_show_dampening_evidence_and_traffic():
    st = copy.deepcopy(STATUS)
    st["uplinks"][0].update(proven=True, slow_rounds=4, month_bytes=12_345_678_901, probe_bytes_per_day=24_000_000)
    st["uplinks"][1].update(dampened=True, flap_penalty=3.5, suspect=True, month_bytes=16_000_000_000,
                            quota_bytes=20_000_000_000, quota_pct=80.0)
    text = metrics.render(status_from_dict(st))
    wan1, lte = '{uplink="wan1",interface="eth1"}', '{uplink="lte",interface="wwan0"}'
    want = {
        "linkwatch_uplink_dampened": ("gauge", "0.0", "1.0"),
        "linkwatch_uplink_flap_penalty": ("gauge", "0.0", "3.5"),
        "linkwatch_uplink_proven": ("gauge", "1.0", "0.0"),
        "linkwatch_uplink_suspect": ("gauge", "0.0", "1.0"),
        "linkwatch_uplink_slow_rounds_total": ("counter", "4.0", "0.0"),
        "linkwatch_uplink_probe_bytes_per_day": ("gauge", "24000000.0", "NaN"),  # lte: too few rounds to tell
        "linkwatch_uplink_month_bytes": ("gauge", "12345678901.0", "16000000000.0"),
        "linkwatch_uplink_quota_bytes": ("gauge", "NaN", "20000000000.0"),  # wan1 has no quota
    }
    lines = text.splitlines()
    for name, (kind, v_wan1, v_lte) in want.items():
        assert f"# TYPE {name} {kind}" in lines, name
        assert f"{name}{wan1} {v_wan1}" in lines and f"{name}{lte} {v_lte}" in lines, name
        assert any(line.startswith(f"# HELP {name} ") for line in lines), name


def test_metrics_escape_label_values_and_report_an_absent_engine():
    st = copy.deepcopy(STATUS)
    st["uplinks"][0]["interface"] = 'a"b\\c\nd'
    text = metrics.render(status_from_dict(st))
    assert 'interface="a\\"b\\\\c\\nd"' in text
    assert metrics.render(None) .strip().endswith("linkwatch_engine_up 0")


def test_metrics_count_a_falling_uplink_as_up_as_the_policy_does():
    """FALLING still carries traffic (the policy keeps it until it is DOWN): /metrics agrees."""
    st = copy.deepcopy(STATUS)
    st["uplinks"][0].update(state="FALLING")
    st["uplinks"][1].update(state="RISING")
    text = metrics.render(status_from_dict(st))
    assert 'linkwatch_uplink_up{uplink="wan1",interface="eth1"} 1' in text
    assert 'linkwatch_uplink_up{uplink="lte",interface="wwan0"} 0' in text
    for state in ("UP", "FALLING", "DEGRADED"):
        st["uplinks"][0].update(state=state)
        assert 'linkwatch_uplink_up{uplink="wan1",interface="eth1"} 1' in metrics.render(status_from_dict(st))


def test_an_unreadable_status_is_a_503_not_a_crash():
    broken = copy.deepcopy(STATUS)
    broken["uplinks"][0]["state"] = "EXPLODED"
    client, _ = make("public_read = true", engine=FakeEngine(broken))
    r = client.get("/api/v1/status")
    assert r.status_code == 503 and "status.uplinks[0].state" in r.get_json()["error"]
    assert client.get("/").status_code == 200


# ---- passwords and `linkwatch passwd` ---------------------------------------------------------------


def test_password_hashing():
    assert password_ok(HASH, PASSWORD)
    assert not password_ok(HASH, PASSWORD + "x") and not password_ok(None, PASSWORD) and not password_ok(HASH, "")
    assert not password_ok("md5$bogus$abc", PASSWORD)
    with pytest.raises(PasswordError):
        hash_password("short")
    loads(f'[web]\npassword_hash = "{HASH}"\n{BASE}')  # the config accepts what we write


@pytest.mark.parametrize("before, after", [
    ("[log]\nlevel = \"info\"\n", "[log]\nlevel = \"info\"\n\n[web]\npassword_hash = \"H\"\n"),
    ("[web]\npublic_read = true\n[log]\n", "[web]\npassword_hash = \"H\"\npublic_read = true\n[log]\n"),
    ("[web]\n# password_hash = \"scrypt...\"\nrefresh = \"1s\"\n",
     "[web]\n# password_hash = \"scrypt...\"\npassword_hash = \"H\"\nrefresh = \"1s\"\n"),
    ("[web]\npassword_hash = \"old\"\n[uplinks.a]\n", "[web]\npassword_hash = \"H\"\n[uplinks.a]\n"),
    ("[web] # the UI\n", "[web] # the UI\npassword_hash = \"H\"\n"),
    ("[log]\nlevel = \"info\"", "[log]\nlevel = \"info\"\n\n[web]\npassword_hash = \"H\"\n"),
])
def test_set_password_hash_edits_only_that_line(before, after):
    assert set_password_hash(before, "H") == after


def test_passwd_writes_the_config_atomically_and_refuses_to_break_it(tmp_path):
    path = tmp_path / "linkwatch.toml"
    path.write_text(f"# my router\n[web]\npublic_read = true\n{BASE}")
    path.chmod(0o640)
    write_config(str(path), set_password_hash(path.read_text(), HASH))
    cfg = loads(path.read_text())
    assert cfg.web.password_hash == HASH and cfg.web.public_read is True
    assert path.read_text().startswith("# my router\n") and (path.stat().st_mode & 0o777) == 0o640
    with pytest.raises(PasswdError, match="left unchanged"):
        write_config(str(path), path.read_text() + "\n[web]\nrefresh = 1\n")  # a duplicate table
    assert loads(path.read_text()).web.password_hash == HASH
    assert [p.name for p in tmp_path.iterdir()] == ["linkwatch.toml"], "no temporary file left behind"


def test_passwd_command_reads_stdin_and_sets_a_working_hash(tmp_path, monkeypatch, capsys):
    import io

    from linkwatch.commands import main

    path = tmp_path / "lw.toml"
    path.write_text(BASE)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["passwd", "--config", str(path)]) == 0
    assert password_ok(loads(path.read_text()).web.password_hash, "a long enough password")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["passwd", "--config", str(path)]) == 2
    assert "at least 8 characters" in capsys.readouterr().err


# ---- the history API against a real database ----------------------------------------------------


@pytest.fixture
def history_db(tmp_path):
    """An hour of 1-minute samples for wan1 and lte, and a failover with its admin action."""
    import time as _time

    from linkwatch.core.events import ActiveChanged, AdminAction, UplinkSamples, UplinkStateChanged
    from linkwatch.history import Batch, HistoryStore, event_row, sample_row

    now = _time.time()
    start = now - now % 60 - 3600
    samples = [UplinkSamples(at=start + 60 * (i + 1), mono=0.0, uplink=u, start=start + 60 * i, sent=40,
                             lost=4 if u == "lte" else 0, loss_pct=10.0 if u == "lte" else 0.0,
                             rtt_avg_ms=30.0 if u == "lte" else 10.0, rtt_min_ms=5.0, rtt_max_ms=50.0,
                             jitter_ms=1.0) for i in range(60) for u in ("wan1", "lte")]
    samples += [UplinkSamples(at=start + 60 * (i + 1), mono=0.0, uplink="wan1", start=start + 60 * i, sent=20,
                              lost=10, loss_pct=50.0, rtt_avg_ms=70.0, rtt_min_ms=60.0, rtt_max_ms=80.0,
                              jitter_ms=2.0, family=6) for i in range(60)]  # wan1's IPv6 probes
    events = [
        UplinkStateChanged(now - 600, 1.0, "wan1", "eth1", "UP", "DOWN", f"3 failed rounds {EVIL}", 100.0, None, None),
        ActiveChanged(now - 599.9, 1.1, ("wan1",), ("lte",), "wan1 DOWN"),
        AdminAction(now - 300, 2.0, "force", "lte", "web:admin@198.51.100.7", "force lte; active: lte"),
    ]
    path = tmp_path / "history.db"
    store = HistoryStore(str(path))
    store.write(Batch(events=[event_row(e) for e in events], samples=[sample_row(s) for s in samples],
                      meta={"sample_period": "60.0"}))
    store.close()
    return path


def test_events_api_returns_the_history_newest_first_with_filters(history_db):
    client, _ = make("public_read = true", history=f'[history]\npath = "{history_db}"')
    body = client.get("/api/v1/events?since=1h").get_json()
    assert body["ok"] is True
    assert [e["kind"] for e in body["events"]] == ["admin", "active_changed", "uplink_state"]
    state = body["events"][2]
    assert (state["uplink"], state["old"], state["new"], state["loss_pct"]) == ("wan1", "UP", "DOWN", 100.0)
    assert state["reason"].endswith(EVIL), "the API returns data as data; the page escapes it"
    assert [e["kind"] for e in client.get("/api/v1/events?kind=admin").get_json()["events"]] == ["admin"]
    assert len(client.get("/api/v1/events?limit=1").get_json()["events"]) == 1
    assert client.get("/api/v1/events?since=1m").get_json()["events"] == []


def test_samples_api_buckets_per_uplink(history_db):
    client, _ = make("public_read = true", history=f'[history]\npath = "{history_db}"')
    body = client.get("/api/v1/samples?since=2h").get_json()
    assert body["ok"] is True and body["step"] == 60 and set(body["uplinks"]) == {"wan1", "lte"}
    lte = body["uplinks"]["lte"]
    assert len(lte) == 60 and all(p["loss_pct"] == pytest.approx(10.0) for p in lte)
    assert lte[0]["t"] < lte[-1]["t"] and body["since"] < lte[0]["t"] <= body["until"]
    coarse = client.get("/api/v1/samples?since=2h&step=600&uplink=wan1").get_json()
    assert coarse["step"] == 600 and list(coarse["uplinks"]) == ["wan1"]
    assert sum(p["sent"] for p in coarse["uplinks"]["wan1"]) == 60 * 40
    assert all(p["rtt_avg_ms"] == pytest.approx(10.0) for p in coarse["uplinks"]["wan1"])
    six = client.get("/api/v1/samples?since=2h&family=6").get_json()
    assert list(six["uplinks"]) == ["wan1"], "only dual-stack uplinks have IPv6 samples"
    assert all(p["loss_pct"] == pytest.approx(50.0) and p["rtt_avg_ms"] == pytest.approx(70.0)
               for p in six["uplinks"]["wan1"]) and len(six["uplinks"]["wan1"]) == 60


def test_history_api_with_a_missing_or_broken_database_is_503(tmp_path):
    client, _ = make("public_read = true", history=f'[history]\npath = "{tmp_path}/none.db"')
    r = client.get("/api/v1/events")
    assert r.status_code == 503 and "no history database" in r.get_json()["error"]
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    client, _ = make("public_read = true", history=f'[history]\npath = "{tmp_path}/junk.db"')
    for path in ("/api/v1/events", "/api/v1/samples"):
        r = client.get(path)
        assert r.status_code == 503 and r.get_json()["ok"] is False, path


def test_the_dashboard_lists_the_policy_rules_and_where_each_sends_flows_escaped():
    st = copy.deepcopy(STATUS)
    st["rules"] = [{"name": "calls", "matches": "udp dport 5060", "uplinks": ["lte", "wan1"], "balance": False,
                    "fallback": "default", "now": ["lte"], "applied": True},
                   {"name": "nas", "matches": f"src {EVIL}", "uplinks": ["wan1"], "balance": True,
                    "fallback": "drop", "now": []}]
    client, _ = make("public_read = true", engine=FakeEngine(st))
    page = client.get("/").get_data(as_text=True)
    rows = re.findall(r'<tr data-rule="([^"]+)".*?<td class="now">([^<]*)</td>', page, re.S)
    assert rows == [("calls", "lte"), ("nas", "dropped")]
    assert "lte → wan1" in page and "wan1 (balanced)" in page
    assert EVIL not in page and "&lt;script&gt;" in page
    client, _ = make("public_read = true")
    assert 'id="rules"' not in client.get("/").get_data(as_text=True), "no rules, no table"


def test_the_dashboard_shows_an_uplinks_ipv6_side_escaped():
    st = copy.deepcopy(STATUS)
    st["uplinks"][0]["ipv6"] = {
        "state": "DOWN", "usable": False, "reason": f"3 failed rounds {EVIL}", "active": False, "since": 1.0,
        "rtt_ms": 12.5, "loss_pct": 100.0, "jitter_ms": None, "address": "2001:db8:1::2", "gateway": "fe80::1",
        "interval_ms": 100, "rounds": 9, "downs": 1, "probe_error": None, "probes": [], "dampened": False}
    st["active_ipv6"] = ["lte"]
    client, _ = make("public_read = true", engine=FakeEngine(st))
    page = client.get("/").get_data(as_text=True)
    sixes = re.findall(r'<div class="ipv6 muted" ?(hidden)?>([^<]*)</div>', page)
    assert sixes[0] == ("", "IPv6 DOWN · 2001:db8:1::2 · RTT 12.5 ms · loss 100 % · 3 failed rounds &lt;script&gt;"
                        "alert(1)&lt;/script&gt;")
    assert sixes[1] == ("hidden", ""), "an uplink with no IPv6 probes shows none"
    assert EVIL not in page


def test_metrics_show_the_ipv6_side_of_dual_stack_uplinks_only():
    st = copy.deepcopy(STATUS)
    text = metrics.render(status_from_dict(st))
    assert "ipv6" not in text, "an IPv4-only config exports what it did before"
    st["uplinks"][0]["ipv6"] = {
        "state": "DOWN", "usable": False, "reason": "3 failed rounds", "active": False, "since": 1.0,
        "rtt_ms": 12.5, "loss_pct": 100.0, "jitter_ms": None, "address": "2001:db8:1::2", "gateway": "fe80::1",
        "interval_ms": 100, "rounds": 9, "downs": 2, "probe_error": None, "probes": [], "dampened": False}
    lines = metrics.render(status_from_dict(st)).splitlines()
    wan1 = '{uplink="wan1",interface="eth1"}'
    assert 'linkwatch_uplink_ipv6_state{uplink="wan1",state="DOWN"} 1' in lines
    assert 'linkwatch_uplink_ipv6_state{uplink="wan1",state="UP"} 0' in lines
    assert f"linkwatch_uplink_ipv6_rtt_ms{wan1} 12.5" in lines and f"linkwatch_uplink_ipv6_downs_total{wan1} 2.0" in lines
    assert f"linkwatch_uplink_ipv6_active{wan1} 0.0" in lines and "# TYPE linkwatch_uplink_ipv6_downs_total counter" in lines
    assert not any('uplink="lte"' in line and "ipv6" in line for line in lines)
