"""The web UI: dashboard, JSON API (/api/v1), Prometheus metrics (/metrics), login and controls.

It holds no state of the engine: every request asks the engine over the control socket, and the
history comes from the database opened read-only. So it runs as an unprivileged user, and a
crash or restart of the web UI changes nothing on the router.

Rules: read-only pages need a login unless ``[web] public_read``; controls always need a login
and the session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``). Every API
error is JSON with a 4xx code (5xx only when the engine or the database cannot answer).
"""

from __future__ import annotations

import datetime
import math
import os
import re
import socket
import threading
import time
from typing import Any, Callable

from flask import Flask, abort, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from linkwatch import __version__
from linkwatch.config import Config
from linkwatch.config.convert import format_size
from linkwatch.report.control import ControlError, call
from linkwatch.core.events import EVENT_TYPES
from linkwatch.core.states import ADMIN_ACTIONS as ACTIONS
from linkwatch.core.status import Status, StatusError, UplinkStatus, status_from_dict
from linkwatch.history.reader import HistoryError, HistoryReader, parse_since
from linkwatch.report import metrics
from linkwatch.webui import WEB_DIR
from linkwatch.webui.security import (USER, Sessions, Throttle, client_address, host_allowed, new_token, password_ok,
                                      token_ok)

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_LIMIT = 1000
RESOLV_CONF = "/etc/resolv.conf"  # its search and domain entries name this machine too (Host check)
HOSTS_FILE = "/etc/hosts"  # and so do the names on the lines of its hostname (its FQDN, without DNS)


class BadInput(ValueError):
    """A query parameter or form field that cannot be used; becomes a 400 with this message."""


def _engine_call(socket_path: str) -> Callable[[dict], dict]:
    def ask(req: dict) -> dict:
        return call(socket_path, req, timeout=2.0)
    return ask


def _small_file_lines(path: str) -> list[str]:
    """The lines of a system file read at start (its first 64 kB); none when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(65536).splitlines()
    except OSError:
        return []


def resolv_domains(path: str) -> tuple[str, ...]:
    """The DNS domains this machine goes by: the ``search`` and ``domain`` entries of resolv.conf
    (lower case, without a trailing dot); none when the file cannot be read."""
    domains: list[str] = []
    for line in _small_file_lines(path):
        words = re.split(r"[#;]", line, maxsplit=1)[0].split()
        if len(words) < 2 or words[0] not in ("search", "domain"):
            continue
        for word in words[1:]:
            word = word.lower().strip(".")
            if re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", word) and len(word) <= 253 and word not in domains:
                domains.append(word)
    return tuple(domains[:32])


def hosts_names(hostname: str, path: str) -> tuple[str, ...]:
    """The names the hosts file gives this machine: those on the lines that list ``hostname`` (or
    its short name), e.g. Debian's ``127.0.1.1 router.example.org router``. Not socket.getfqdn():
    that asks DNS, and with the uplinks down it waited out the resolver's timeouts before the web UI
    could answer (the real systemd test saw it)."""
    mine = {hostname.lower().rstrip("."), hostname.lower().split(".")[0]}
    names: list[str] = []
    for line in _small_file_lines(path):
        words = [w.lower().rstrip(".") for w in line.split("#", 1)[0].split()[1:]]
        if mine & set(words):
            names += [w for w in words if w not in names]
    return tuple(names[:32])


def _fmt_since(value: Any) -> str:
    """Local time of a state change: only the time when it was today (as the page's script does)."""
    if not isinstance(value, (int, float)):
        return "-"
    when = datetime.datetime.fromtimestamp(value)
    return when.strftime("%H:%M:%S" if when.date() == datetime.date.today() else "%Y-%m-%d %H:%M")


def _fmt_size(value: Any) -> str:
    """Bytes as the page's script writes them: ``12.3GB``; ``-`` when unknown."""
    return "-" if value is None else format_size(value)


def _fmt_month(u: UplinkStatus) -> str:
    """This month's traffic, against the quota when there is one (as the page's script writes it)."""
    if not u.quota_bytes:
        return format_size(u.month_bytes)
    pct = math.floor((u.quota_pct or 0.0) + 0.5)  # as the script's Math.round, not round-half-even
    return f"{format_size(u.month_bytes)} of {format_size(u.quota_bytes)} ({pct}%)"


def _flap_title(u: UplinkStatus) -> str:
    """The flapping badge's tooltip (as the page's script writes it)."""
    if not u.dampened:
        return ""
    return f"flap penalty {u.flap_penalty:.1f}: it kept failing and takes no traffic back until the penalty decays"


def _param_since(name: str, default: str | None, now: float) -> float | None:
    text = request.args.get(name, default)
    if text is None:
        return None
    try:
        return parse_since(text, now)
    except HistoryError as e:
        raise BadInput(f"{name}: {e}") from None


def _param_int(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,9}", text) or not low <= int(text) <= high:
        raise BadInput(f"{name}: got {text[:40]!r}, expected an integer {low}..{high}")
    return int(text)


def _param_uplink() -> str | None:
    text = request.args.get("uplink")
    if text is not None and not NAME.fullmatch(text):
        raise BadInput(f"uplink: got {text[:40]!r}, expected an uplink name (1..32 letters, digits, _ or -)")
    return text


def _param_kinds() -> list[str] | None:
    text = request.args.get("kind")
    if text is None:
        return None
    kinds = [k for k in text.split(",") if k]
    unknown = [k for k in kinds if k not in EVENT_TYPES]
    if unknown or not kinds:
        raise BadInput(f"kind: got {text[:60]!r}, expected one or more of {', '.join(sorted(EVENT_TYPES))}")
    return kinds


def create_app(config: Config, engine: Callable[[dict], dict] | None = None,
               throttle: Throttle | None = None) -> Flask:
    """The Flask app for ``config``. ``engine`` sends one control request (tests pass a fake)."""
    web = config.web
    app = Flask(__name__, template_folder=os.path.join(WEB_DIR, "templates"),
                static_folder=os.path.join(WEB_DIR, "static"))
    app.config.update(
        SECRET_KEY=os.urandom(32),  # a restart of the web UI logs everybody out
        SESSION_COOKIE_NAME="linkwatch_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=web.secure_cookies,
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=web.session_lifetime),
        MAX_CONTENT_LENGTH=16 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.jinja_env.filters.update(since=_fmt_since, size=_fmt_size, month=_fmt_month, flap_title=_flap_title)
    ask = engine or _engine_call(config.control.socket)
    throttle = throttle or Throttle()
    sessions = Sessions(lifetime=web.session_lifetime)  # logout ends a login for every copy of its cookie
    history_path = config.history.path
    samples_lock = threading.Lock()

    # ---- who may do what --------------------------------------------------------------------

    def logged_in() -> bool:
        return session.get("user") == USER and sessions.alive(session.get("sid"))

    def may_view() -> bool:
        return web.public_read or logged_in()

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = new_token()
        return session["csrf"]

    def check_csrf() -> None:
        given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
        if not token_ok(session.get("csrf"), given):
            abort(403, "missing or wrong CSRF token (reload the page)")

    def client() -> str:
        return client_address(request.remote_addr or "unknown", request.headers.get("X-Forwarded-For"),
                              web.trusted_proxies)

    def api_error(code: int, message: str):
        return jsonify({"ok": False, "error": message}), code

    own_names = (socket.gethostname(), *hosts_names(socket.gethostname(), HOSTS_FILE))
    own_domains = resolv_domains(RESOLV_CONF)

    @app.before_request
    def _guard():
        host = request.headers.get("Host")
        if not host_allowed(host, web.allowed_hosts, own_names, own_domains):
            app.logger.warning("web: refused Host %r from %s", (host or "")[:80], client())
            message = (f"Host {(host or '')[:60]!r} is not allowed: this web UI answers to its IP addresses, "
                       "localhost, its own names (hostname, FQDN, <hostname>.local, <hostname>.<search domain>) "
                       "and the names in [web] allowed_hosts")
            if request.path.startswith("/api/") or request.path == "/metrics":
                return api_error(400, message)
            return app.response_class(message + "\n", status=400, mimetype="text/plain")  # no page: no links
        if request.method == "POST" and request.endpoint not in (None, "static"):
            check_csrf()

    @app.after_request
    def _headers(resp):
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(BadInput)
    def _bad_input(e):
        return api_error(400, str(e))

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if request.path.startswith("/api/") or request.path == "/metrics" or request.is_json:
            return api_error(e.code or 500, e.description or e.name)
        return render_template("error.html", code=e.code, message=e.description or e.name), e.code

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        if request.path.startswith("/api/"):
            return api_error(500, "internal error (logged)")
        return render_template("error.html", code=500, message="internal error (logged)"), 500

    # ---- engine and history access ----------------------------------------------------------

    def engine_status() -> tuple[Status | None, str | None]:
        try:
            answer = ask({"cmd": "status"})
        except ControlError as e:
            return None, str(e)
        if not answer.get("ok") or not isinstance(answer.get("status"), dict):
            return None, str(answer.get("error", "the engine gave no status"))
        try:
            return status_from_dict(answer["status"]), None
        except StatusError as e:
            app.logger.error("web: unreadable status from the engine: %s", e)
            return None, f"the engine sent a status this web UI cannot read: {e}"

    def need_history() -> None:
        if not history_path:
            abort(404, "no history is kept ([history] path is not set)")

    def reader():
        need_history()
        try:
            return HistoryReader(history_path)
        except HistoryError as e:
            abort(503, str(e))

    def control(uplink: str, action: str) -> tuple[int, dict]:
        if not logged_in():
            return 401, {"ok": False, "error": "log in first"}
        if action not in ACTIONS:
            return 400, {"ok": False, "error": f"unknown action {action[:20]!r}; expected one of {', '.join(ACTIONS)}"}
        if not NAME.fullmatch(uplink or ""):
            return 400, {"ok": False, "error": "uplink: expected an uplink name"}
        try:
            answer = ask({"cmd": "set", "uplink": uplink, "action": action, "source": f"web:{USER}@{client()}"})
        except ControlError as e:
            return 503, {"ok": False, "error": str(e)}
        if not answer.get("ok"):
            error = str(answer.get("error", "refused"))
            return (404 if error.startswith("unknown uplink") else 400), {"ok": False, "error": error}
        return 200, {"ok": True, "message": answer.get("message", ""), "active": answer.get("active", [])}

    # ---- pages ------------------------------------------------------------------------------

    @app.get("/")
    def dashboard():
        if not may_view():
            return redirect(url_for("login"))
        status, error = engine_status()
        return render_template(
            "dashboard.html", status=status, error=error, logged_in=logged_in(), csrf=csrf_token(),
            refresh_ms=int(web.refresh * 1000), history=bool(history_path), version=__version__,
            can_login=bool(web.password_hash), actions=ACTIONS)

    @app.get("/login")
    def login():
        return render_template("login.html", csrf=csrf_token(), can_login=bool(web.password_hash), error=None,
                               version=__version__)

    @app.post("/login")
    def login_post():
        address = client()
        wait = throttle.retry_after(address)
        if wait > 0:
            return render_template("login.html", csrf=csrf_token(), can_login=True, version=__version__,
                                   error=f"too many failed logins; try again in {wait:.0f}s"), 429
        if not password_ok(web.password_hash, request.form.get("password", "")):
            throttle.failed(address)
            app.logger.warning("web: failed login from %s", address)
            return render_template("login.html", csrf=csrf_token(), can_login=bool(web.password_hash),
                                   error="wrong password", version=__version__), 401
        throttle.succeeded(address)
        session.clear()  # a fresh session (and CSRF token) after login: no session fixation
        session.permanent = True
        session["user"] = USER
        session["sid"] = sessions.start()
        session["csrf"] = new_token()
        app.logger.info("web: %s logged in from %s", USER, address)
        return redirect(url_for("dashboard"))

    @app.post("/logout")
    def logout():
        sessions.end(session.get("sid"))
        session.clear()
        return redirect(url_for("login"))

    @app.post("/control")
    def control_form():
        code, answer = control(request.form.get("uplink", ""), request.form.get("action", ""))
        if code == 401:
            return redirect(url_for("login"))
        if code != 200:
            return render_template("error.html", code=code, message=answer["error"]), code
        return redirect(url_for("dashboard"))

    # ---- JSON API ---------------------------------------------------------------------------

    @app.get("/api/v1/session")
    def api_session():
        return jsonify({"ok": True, "logged_in": logged_in(), "user": USER if logged_in() else None,
                        "public_read": web.public_read, "csrf": csrf_token() if logged_in() else None})

    @app.get("/api/v1/status")
    def api_status():
        if not may_view():
            return api_error(401, "log in first")
        status, error = engine_status()
        if status is None:
            return api_error(503, error or "engine not reachable")
        return jsonify({"ok": True, "status": status.to_dict()})

    @app.get("/api/v1/events")
    def api_events():
        if not may_view():
            return api_error(401, "log in first")
        need_history()
        now = time.time()
        args = dict(uplink=_param_uplink(), since=_param_since("since", "1d", now),
                    until=_param_since("until", None, now), kinds=_param_kinds(),
                    limit=_param_int("limit", 200, 1, MAX_LIMIT))
        db = reader()
        try:
            events = db.events(**args)
        except HistoryError as e:
            abort(503, str(e))
        finally:
            db.close()
        return jsonify({"ok": True, "events": events})

    @app.get("/api/v1/samples")
    def api_samples():
        if not may_view():
            return api_error(401, "log in first")
        need_history()
        now = time.time()
        since = _param_since("since", "1h", now)
        until = _param_since("until", None, now)
        step = _param_int("step", 0, 0, 86400 * 31) or None
        uplink = _param_uplink()
        family = request.args.get("family", "4")
        if family not in ("4", "6"):
            raise BadInput(f"family: got {family[:20]!r}, expected 4 or 6")
        if until is not None and since is not None and until <= since:
            raise BadInput("until: must be later than since")
        with samples_lock:  # one long-range GROUP BY at a time: concurrent ones would each sort in memory
            db = reader()
            try:
                data = db.samples(since, until=until, step=step, uplink=uplink, family=int(family))
            except HistoryError as e:
                abort(503, str(e))
            finally:
                db.close()
        return jsonify({"ok": True, "since": since, "until": until or now, **data})

    @app.post("/api/v1/uplinks/<name>/<action>")
    def api_control(name: str, action: str):
        code, answer = control(name, action)
        return jsonify(answer), code

    @app.get("/metrics")
    def prometheus():
        if not (web.public_metrics or may_view()):
            return api_error(401, "log in first (or set [web] public_metrics = true)")
        status, _ = engine_status()
        return app.response_class(metrics.render(status), mimetype="text/plain; version=0.0.4")

    @app.get("/healthz")
    def healthz():
        status, error = engine_status()
        return jsonify({"ok": status is not None, "engine": error or "answering"}), 200 if status else 503

    return app
