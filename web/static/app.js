// linkwatch dashboard: polls /api/v1/status, redraws the uplink cards in place, draws the RTT and
// loss graphs from /api/v1/samples and the timeline from /api/v1/events. Everything that came
// from the router or the network is put in with textContent, never as HTML.
"use strict";

(function () {
  const body = document.body;
  const refresh = Math.max(200, parseInt(body.dataset.refresh || "1000", 10));
  const loggedIn = body.dataset.loggedIn === "true";
  const csrf = body.dataset.csrf || "";
  const hasHistory = body.dataset.history === "true";
  const COLORS = ["#2b7bd6", "#d9822b", "#2ca25f", "#b04ad6", "#d64a4a", "#7a7a7a"];
  let range = "1h";
  let lastMark = null; // transitions + active changes seen at the last status; a change reloads events
  let busy = false;
  let eventsAgain = null;
  let samplesAgain = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmt(v, unit, digits) {
    return v === null || v === undefined ? "-" : v.toFixed(digits === undefined ? 1 : digits) + " " + unit;
  }

  function fmtSize(n) {
    // decimal units, one decimal, as linkwatch.config.convert.format_size: 12.3GB
    if (n === null || n === undefined) return "-";
    const units = [["TB", 1e12], ["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];
    for (const [unit, size] of units) if (n >= size) return (n / size).toFixed(1) + unit;
    return Math.floor(n) + "B";
  }

  function fmtMonth(u) {
    // this month's traffic, against the quota when there is one (as the page's first render)
    if (!u.quota_bytes) return fmtSize(u.month_bytes || 0);
    return fmtSize(u.month_bytes || 0) + " of " + fmtSize(u.quota_bytes) + " (" + Math.round(u.quota_pct || 0) + "%)";
  }

  function flapTitle(u) {
    if (!u.dampened) return "";
    return "flap penalty " + (u.flap_penalty || 0).toFixed(1) +
      ": it kept failing and takes no traffic back until the penalty decays";
  }

  function fmtTime(t) {
    if (!t) return "-";
    const d = new Date(t * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function fmtSince(t) {
    // today: the time; before: the date too
    if (!t) return "-";
    const d = new Date(t * 1000);
    const full = fmtTime(t);
    return d.toDateString() === new Date().toDateString() ? full.slice(11) : full.slice(0, 16);
  }

  function say(text, isError) {
    const m = document.getElementById("message");
    if (!m) return;
    m.textContent = text || "";
    m.classList.toggle("error", !!isError);
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let data = null;
    try { data = await r.json(); } catch (e) { data = { ok: false, error: "HTTP " + r.status }; }
    if (!r.ok || !data.ok) throw new Error((data && data.error) || "HTTP " + r.status);
    return data;
  }

  // ---- controls -----------------------------------------------------------------------------

  async function act(uplink, action) {
    say(action + " " + uplink + " ...");
    try {
      const r = await fetch("/api/v1/uplinks/" + encodeURIComponent(uplink) + "/" + encodeURIComponent(action), {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      });
      const data = await r.json();
      if (!r.ok || !data.ok) throw new Error(data.error || "HTTP " + r.status);
      say(data.message + "; traffic on " + (data.active.join(", ") || "-"));
    } catch (e) {
      say("refused: " + e.message, true);
    }
    poll();
  }

  function button(uplink, action, label, disabled) {
    const b = el("button", null, label);
    b.type = "button";
    b.dataset.action = action;
    b.disabled = !!disabled;
    b.addEventListener("click", () => act(uplink, action));
    return b;
  }

  // ---- cards --------------------------------------------------------------------------------

  function numberRow(label, cls) {
    const d = el("div");
    d.appendChild(el("dt", null, label));
    d.appendChild(el("dd", cls));
    return d;
  }

  function newCard(u) {
    const card = el("article", "card");
    card.dataset.uplink = u.name;
    const head = el("header");
    head.appendChild(el("h2", "name", u.name));
    head.appendChild(el("span", "iface muted"));
    head.appendChild(el("span", "flapping"));
    head.appendChild(el("span", "active-marker"));
    card.appendChild(head);
    card.appendChild(el("div", "state"));
    card.appendChild(el("div", "reason muted"));
    card.appendChild(el("div", "ipv6 muted"));
    const dl = el("dl", "numbers");
    [["RTT", "rtt"], ["Jitter", "jitter"], ["Loss", "loss"], ["Since", "since"]].forEach(
      ([label, cls]) => dl.appendChild(numberRow(label, cls)));
    [["Probes/day", "probe-bytes", "probe-cell"], ["This month", "month", "month-cell"]].forEach(([label, cls, cell]) => {
      const row = numberRow(label, cls);
      row.className = cell;
      dl.appendChild(row);
    });
    card.appendChild(dl);
    const meter = el("meter", "quota");
    Object.entries({ min: 0, max: 100, low: 80, high: 100, optimum: 0 }).forEach(([k, v]) => meter.setAttribute(k, v));
    card.appendChild(meter);
    if (loggedIn) card.appendChild(el("div", "controls"));
    return card;
  }

  function fillCard(card, u) {
    // an IPv6-only uplink: its colour and state are its IPv6 side's (its IPv4 side never carries traffic)
    const only6 = !!u.ipv6 && u.ipv6_only === true;
    const shown = only6 ? u.ipv6.state : u.state;
    card.className = "card state-" + shown + (u.active ? " active" : "") + (u.dampened ? " dampened" : "");
    card.querySelector(".iface").textContent = u.interface + (u.forced ? " (forced)" : "");
    const flapping = card.querySelector(".flapping");
    flapping.textContent = u.dampened ? "flapping" : "";
    flapping.dataset.dampened = u.dampened ? "true" : "false";
    flapping.title = flapTitle(u);
    const marker = card.querySelector(".active-marker");
    marker.textContent = u.active ? "ACTIVE" : "";
    marker.dataset.active = u.active ? "true" : "false";
    card.querySelector(".state").textContent = only6 ? "IPv6 " + shown : u.state;
    card.querySelector(".reason").textContent = u.reason || "";
    const six = card.querySelector(".ipv6");
    six.hidden = !u.ipv6;
    six.textContent = u.ipv6 ? "IPv6 " + u.ipv6.state + (u.ipv6.active ? " ACTIVE" : "") + " \u00b7 " +
      (u.ipv6.address || "no address") + " \u00b7 RTT " + fmt(u.ipv6.rtt_ms, "ms") + " \u00b7 loss " +
      fmt(u.ipv6.loss_pct, "%", 0) + " \u00b7 " + u.ipv6.reason : "";
    card.querySelector(".rtt").textContent = fmt(u.rtt_ms, "ms");
    card.querySelector(".jitter").textContent = fmt(u.jitter_ms, "ms");
    card.querySelector(".loss").textContent = fmt(u.loss_pct, "%", 0);
    card.querySelector(".since").textContent = fmtSince(u.since);
    card.querySelector(".probe-bytes").textContent = fmtSize(u.probe_bytes_per_day);
    card.querySelector(".month").textContent = fmtMonth(u);
    const quota = card.querySelector(".quota");
    quota.hidden = !u.quota_bytes;
    quota.value = Math.min(100, u.quota_pct || 0);
    quota.title = fmtMonth(u);
    if (loggedIn) {
      let controls = card.querySelector(".controls");
      const fresh = el("div", "controls");
      fresh.dataset.key = u.state + "/" + u.forced;
      if (!controls || controls.dataset.key !== fresh.dataset.key || controls.tagName === "FORM") {
        if (u.state === "DISABLED") fresh.appendChild(button(u.name, "enable", "Enable"));
        else fresh.appendChild(button(u.name, "disable", "Disable"));
        fresh.appendChild(button(u.name, "force", "Force", u.forced));
        if (controls) controls.replaceWith(fresh); else card.appendChild(fresh);
      }
    }
  }

  function renderStatus(st) {
    const cards = document.getElementById("cards");
    const seen = new Set();
    st.uplinks.forEach((u) => {
      seen.add(u.name);
      let card = Array.from(cards.children).find((c) => c.dataset.uplink === u.name);
      if (!card) { card = newCard(u); cards.appendChild(card); }
      fillCard(card, u);
    });
    Array.from(cards.children).forEach((c) => { if (!seen.has(c.dataset.uplink)) c.remove(); });
    document.getElementById("active").textContent = st.active.join(", ") || "-";
    document.getElementById("mode").textContent = "(" + st.mode + " mode" + (st.forced ? ", forced: " + st.forced : "") + ")";
    document.getElementById("decision").textContent = st.reason || "";
    const auto = document.getElementById("auto");
    if (auto) {
      auto.disabled = !st.forced;
      auto.onclick = (ev) => { ev.preventDefault(); if (st.forced) act(st.forced, "auto"); };
    }
    (st.rules || []).forEach((r) => {
      const row = document.querySelector('#rules tr[data-rule="' + CSS.escape(r.name) + '"] .now');
      if (row) row.textContent = r.now.length ? r.now.join(", ") : (r.fallback === "drop" ? "dropped" : "default policy");
    });
    const mark = st.uplinks.map((u) => u.transitions + (u.dampened ? "d" : "") + (u.quota_pct == null ? "" : "q" +
      Math.floor(u.quota_pct / 10))).join(",") + "/" + st.active_changes;
    if (mark !== lastMark) {
      // the history writes an event within a couple of seconds: look now and once more a bit later
      lastMark = mark;
      loadEvents();
      clearTimeout(eventsAgain);
      eventsAgain = setTimeout(loadEvents, 3000);
    }
  }

  function engineState(ok, text) {
    const e = document.getElementById("engine");
    e.textContent = text;
    e.className = "engine " + (ok ? "ok" : "down");
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const data = await getJSON("/api/v1/status");
      renderStatus(data.status);
      engineState(true, "engine answering");
    } catch (e) {
      engineState(false, "engine not reachable: " + e.message);
    } finally {
      busy = false;
    }
  }

  // ---- graphs -------------------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, String(v)));
    return e;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart(svg, series, key, t0, t1, fixedMax) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const W = 600, H = 180, L = 40, B = 18, T = 6;
    let max = fixedMax || 0;
    if (!fixedMax) series.forEach((s) => s.points.forEach((p) => { if (p[key] !== null && p[key] > max) max = p[key]; }));
    max = fixedMax || niceMax(max);
    const x = (t) => L + (W - L - 4) * (t - t0) / Math.max(1, t1 - t0);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    [0, 0.5, 1].forEach((f) => {
      svg.appendChild(svgEl("line", { x1: L, x2: W - 4, y1: y(max * f), y2: y(max * f), class: "grid" }));
      const label = svgEl("text", { x: L - 4, y: y(max * f) + 4, class: "axis", "text-anchor": "end" });
      label.textContent = String(Math.round(max * f * 10) / 10);
      svg.appendChild(label);
    });
    [t0, (t0 + t1) / 2, t1].forEach((t, i) => {
      const label = svgEl("text", { x: x(t), y: H - 4, class: "axis", "text-anchor": ["start", "middle", "end"][i] });
      const d = new Date(t * 1000);
      label.textContent = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
      svg.appendChild(label);
    });
    if (!series.some((s) => s.points.some((p) => p[key] !== null && p[key] !== undefined))) {
      const empty = svgEl("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" });
      empty.textContent = "no samples in this range yet";
      svg.appendChild(empty);
    }
    series.forEach((s) => {
      let d = "";
      let pen = false;
      s.points.forEach((p) => {
        const v = p[key];
        if (v === null || v === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(Math.min(v, max)).toFixed(1) + " ";
        pen = true;
      });
      if (d) svg.appendChild(svgEl("path", { d: d, stroke: s.color, class: s.ipv6 ? "series ipv6" : "series" }));
    });
  }

  async function loadSamples() {
    if (!hasHistory) return;
    try {
      const [data, six] = await Promise.all([getJSON("/api/v1/samples?since=" + range),
        getJSON("/api/v1/samples?family=6&since=" + range)]);
      const names = Object.keys(data.uplinks).sort();
      const series = names.map((n, i) => ({ name: n, color: COLORS[i % COLORS.length], points: data.uplinks[n] }));
      // a dual-stack uplink's IPv6 probes: a dashed line in its colour
      names.forEach((n, i) => { if (six.uplinks[n]) series.push({ name: n + " IPv6", ipv6: true, color: COLORS[i % COLORS.length], points: six.uplinks[n] }); });
      drawChart(document.getElementById("chart-rtt"), series, "rtt_avg_ms", data.since, data.until);
      drawChart(document.getElementById("chart-loss"), series, "loss_pct", data.since, data.until, 100);
      const legend = document.getElementById("legend");
      while (legend.firstChild) legend.removeChild(legend.firstChild);
      series.forEach((s) => {
        const item = el("span", s.ipv6 ? "legend-item ipv6" : "legend-item", s.name);
        item.style.setProperty("--c", s.color);
        legend.appendChild(item);
      });
    } catch (e) {
      const legend = document.getElementById("legend");
      legend.textContent = "history: " + e.message;
      clearTimeout(samplesAgain);
      samplesAgain = setTimeout(loadSamples, 5000); // e.g. a new database the engine writes in a moment
    }
  }

  // ---- timeline -----------------------------------------------------------------------------

  function describe(ev) {
    const n = (v, unit) => (v === null || v === undefined ? "-" : Math.round(v * 10) / 10 + unit);
    switch (ev.kind) {
      case "uplink_state":
        return ev.uplink + ": " + ev.old + " \u2192 " + ev.new + " (" + ev.reason + "; loss " + n(ev.loss_pct, "%") +
          ", rtt " + n(ev.rtt_ms, " ms") + ")";
      case "active_changed":
        return "traffic: " + ((ev.old || []).join(", ") || "-") + " \u2192 " + ((ev.new || []).join(", ") || "-") +
          " (" + ev.reason + ")";
      case "ipv6_state":
        return ev.uplink + " IPv6: " + ev.old + " \u2192 " + ev.new + " (" + ev.reason + "; loss " +
          n(ev.loss_pct, "%") + ", rtt " + n(ev.rtt_ms, " ms") + ")";
      case "ipv6_active":
        return "IPv6 traffic: " + ((ev.old || []).join(", ") || "-") + " \u2192 " +
          ((ev.new || []).join(", ") || "-") + " (" + ev.reason + ")";
      case "admin":
        return "admin " + ev.action + " " + ev.uplink + " by " + ev.source + ": " + ev.result;
      case "engine":
        return "engine " + ev.what + (ev.detail ? ": " + ev.detail : "");
      case "dampened":
        return ev.uplink + (ev.dampened ? ": flapping, dampened (penalty " : ": no longer dampened (penalty ") +
          n(ev.penalty, "") + ")";
      case "quota":
        return ev.uplink + ": " + ev.percent + "% of the monthly quota used (" + fmtSize(ev.used) + " of " +
          fmtSize(ev.quota) + ")";
      default:
        return ev.kind;
    }
  }

  async function loadEvents() {
    if (!hasHistory) return;
    try {
      const data = await getJSON("/api/v1/events?since=1d&limit=50&kind=uplink_state,active_changed,admin,engine,dampened,quota,ipv6_state,ipv6_active");
      const list = document.getElementById("timeline");
      const items = data.events.map((ev) => {
        const li = el("li", "ev ev-" + ev.kind + (ev.new && typeof ev.new === "string" ? " to-" + ev.new : "") +
          (ev.kind === "dampened" && ev.dampened ? " ev-flapping" : ""));
        li.appendChild(el("time", null, fmtTime(ev.at)));
        li.appendChild(el("span", "what", describe(ev)));
        return li;
      });
      list.replaceChildren(...items);
      if (!items.length) list.appendChild(el("li", "muted", "no events in the last day"));
    } catch (e) {
      document.getElementById("timeline").replaceChildren(el("li", "error", "history: " + e.message));
    }
  }

  // ---- start --------------------------------------------------------------------------------

  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
    range = tab.dataset.range;
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("selected", t === tab));
    loadSamples();
  }));
  if (loggedIn) {
    // With JavaScript, the buttons act at once through the API (the forms stay for browsers without it).
    document.querySelectorAll("form.controls").forEach((form) => {
      const uplink = form.querySelector("input[name=uplink]").value;
      const box = el("div", "controls");
      form.querySelectorAll("button[data-action]").forEach((b) => {
        box.appendChild(button(uplink, b.dataset.action, b.textContent, b.disabled));
      });
      form.replaceWith(box);
    });
  }
  poll();
  loadSamples();
  setInterval(poll, refresh);
  setInterval(loadSamples, 30000);
  setInterval(loadEvents, 15000);
})();
