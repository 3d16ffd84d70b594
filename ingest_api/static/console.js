// SmartLogs console: plain JavaScript, no build step, no third-party code.
//
// Reads only the public query API (/api/events, /api/stats, /api/templates) and the live tail
// stream (/api/stream, server-sent events), so it works with every store the API runs on.
//
// Log lines are hostile input. Every piece of data reaches the page through text nodes
// (h() below) or element attributes set one by one; nothing is ever parsed as HTML.
"use strict";

(function () {
  const LEVELS = ["EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG", "TRACE", "FATAL"];
  const MAX_TAIL_ROWS = 500;       // rows kept in the live tail
  const TAIL_BACKLOG = 50;         // events shown when the tail (re)starts
  const CATCH_UP_LIMIT = 2000;     // after a pause, replay at most this many missed events
  const REFRESH_MS = 5000;         // stats, chart and anomalies refresh
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  // -- DOM helpers: text only ---------------------------------------------------------------
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    setProps(el, props);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    append(el, children);
    return el;
  }
  function setProps(el, props) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
  // live regions: rewrite only when the text changed, or a screen reader repeats it every refresh
  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }

  // -- API ----------------------------------------------------------------------------------
  function url(path, params) {
    const u = new URL(path, document.baseURI);  // relative: works behind a path prefix too
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === "" || v === false) continue;
      u.searchParams.set(k, String(v));
    }
    return u;
  }
  // -- API key ------------------------------------------------------------------------------
  // With keys on, every API call needs a read key. The page asks for it in one in-page box
  // (never a modal prompt), stops polling and tailing while it has no working key, and keeps a
  // key in this browser's localStorage only once the server accepted it.
  const KEY_STORE = "smartlogs.apiKey";
  const KEY_HINT = "Create one with: smartlogs keys create --name me --scope read";
  function storedKey() { try { return localStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; } }
  function storeKey(k) {
    try { if (k) localStorage.setItem(KEY_STORE, k); else localStorage.removeItem(KEY_STORE); } catch (e) { /* private mode */ }
  }
  const auth = { key: storedKey(), blocked: false };
  class AuthError extends Error {}
  async function request(path, params, key) {
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = "Bearer " + key;
    try {
      return await fetch(url(path, params), { headers });
    } catch (e) {
      throw new Error("cannot reach the SmartLogs API (" + e.message + ")");
    }
  }
  function refusedMessage(status, sentKey) {
    if (!sentKey) return "This SmartLogs server needs a read API key.";
    if (status === 403) return "That key was refused: it may not read logs (it needs the read or admin scope).";
    return "That key was refused (unknown or revoked). Enter another read key.";
  }
  async function api(path, params) {
    if (auth.blocked) throw new AuthError("waiting for an API key (see the box at the top)");
    const key = auth.key;
    const r = await request(path, params, key);
    if (r.status === 401 || r.status === 403) {
      if (key === auth.key) needKey(refusedMessage(r.status, key), key);
      throw new AuthError(key ? "the API key was refused" : "this server needs a read API key");
    }
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) {
      const detail = body && (body.detail || body.error);
      throw new Error(detail ? String(detail) : "HTTP " + r.status);
    }
    return body;
  }
  function needKey(message, refusedKey) {
    const first = !auth.blocked;
    auth.blocked = true;
    if (refusedKey && refusedKey === storedKey()) storeKey("");  // a refused key is not kept
    closeStream();
    setConn("paused", "needs a key");
    tailStatus();
    $("tail-status").textContent = "paused until an API key is entered";
    showKeyBox(message, !!refusedKey);
    if (first && (document.activeElement === document.body || !document.activeElement)) $("key-input").focus();
  }
  function showKeyBox(message, refused) {
    $("key-msg").textContent = message;
    $("key-box").classList.toggle("refused", !!refused);
    $("key-forget").hidden = !auth.key && !storedKey();
    $("key-close").hidden = auth.blocked;
    $("key-box").hidden = false;
    $("key-btn").hidden = true;
  }
  function hideKeyBox() {
    $("key-box").hidden = true;
    $("key-input").value = "";
    $("key-btn").hidden = !auth.key;
  }
  async function useKey(candidate) {
    candidate = candidate.trim();
    if (!candidate) { $("key-msg").textContent = "Paste a key first. " + KEY_HINT; return; }
    $("key-use").disabled = true;
    $("key-msg").textContent = "checking the key…";
    let r;
    try {
      r = await request("api/events", { limit: 1 }, candidate);
    } catch (e) {
      $("key-msg").textContent = e.message + ": try again.";
      return;
    } finally {
      $("key-use").disabled = false;
    }
    if (r.status === 401 || r.status === 403) {
      $("key-box").classList.add("refused");
      $("key-msg").textContent = refusedMessage(r.status, candidate);
      $("key-input").select();
      return;
    }
    auth.key = candidate;
    storeKey(candidate);  // it worked: remember it in this browser
    $("key-msg").textContent = "";
    hideKeyBox();
    resumeAll();
  }
  function forgetKey() {
    storeKey("");
    auth.key = "";
    hideKeyBox();
    resumeAll();  // an open server just goes on; one with keys shows the box again
  }
  function resumeAll() {
    auth.blocked = false;
    refreshStats();
    restartTail();
    if (currentView === "templates") loadTemplates();
    else if (currentView === "anomalies") loadAnomalies();
    else if (currentView === "search" && searchGen) runSearch();
    else if (views[currentView]) views[currentView].load();
  }
  let errorTimer = null;
  function showError(msg) {
    const el = $("error");
    el.textContent = msg;
    el.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  // -- formatting ---------------------------------------------------------------------------
  const fmtInt = (n) => (n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US"));
  // an /api/events total: exact, or a lower bound past 10,000 ("10,000+", total_relation "gte")
  const fmtTotal = (res) => fmtInt(res.total) + (res.total_relation === "gte" ? "+" : "");
  const fewerThan = (n, res) => n < res.total || res.total_relation === "gte";
  function fmtTime(iso) {
    if (!iso) return "-";
    return String(iso).replace("T", " ").replace(/(\.000)?Z$/, "");
  }
  function fmtEpoch(sec) {
    if (sec === undefined || sec === null) return "-";
    const d = new Date(sec * 1000);
    return isNaN(d) ? "-" : fmtTime(d.toISOString());
  }
  const fmtScore = (x) => (typeof x === "number" ? x.toFixed(2) : "-");

  // -- event rows (shared by tail, search and examples) -----------------------------------
  function levelBadge(level) {
    if (!level) return "-";
    const cls = LEVELS.includes(level) ? "lvl lvl-" + level : "lvl";
    return h("span", { class: cls }, level);
  }
  function templateLink(tid) {
    return h("button", { type: "button", class: "linkish", title: "show this template",
      onclick: (ev) => { ev.stopPropagation(); openTemplate(tid); } }, tid || "-");
  }
  // an event's source: its host, else the service, file, stream or API key it came from
  function sourceLink(source, onPick) {
    if (!source) return "-";
    if (!onPick) return source;
    return h("button", { type: "button", class: "linkish", title: "filter on this source",
      onclick: (ev) => { ev.stopPropagation(); onPick(source); } }, source);
  }
  const MAX_ROW_MESSAGE = 1000;  // a 64 KiB line must not fill the screen: the detail has it all
  function clipped(text) {
    text = text || "";
    if (text.length <= MAX_ROW_MESSAGE) return text;
    return text.slice(0, MAX_ROW_MESSAGE) + " … (" +
      (text.length - MAX_ROW_MESSAGE).toLocaleString() + " more characters: click for the whole event)";
  }
  // the server cuts longer lines at SMARTLOGS_MAX_LINE_LENGTH (65,536 by default) and flags them
  const TRUNCATED = "✂ this line was longer: cut to 65,536 characters when stored";
  function eventRow(e, opts) {
    opts = opts || {};
    const msg = h("td", { class: "msg" }, clipped(e.message));
    if (e.truncated) msg.appendChild(h("span", { class: "trunc" }, TRUNCATED));
    if (e.anomaly) msg.appendChild(h("span", { class: "why" }, "⚠ " + (e.reason || "anomaly")));
    const tr = h("tr", {
      class: "event" + (e.anomaly ? " anomaly" : "") + (opts.fresh ? " fresh" : ""),
      dataset: { seq: String(e.seq), id: String(e.id) },
      title: "click for all fields",
    },
      h("td", { class: "time", title: e.timestamp || "" }, fmtTime(e.timestamp)),
      h("td", { class: "source" }, sourceLink(e.source || e.host, opts.onSource)),
      h("td", { class: "comp" }, e.component || "-"),
      h("td", { class: "level" }, levelBadge(e.level)),
      h("td", { class: "tid" }, templateLink(e.template_id)),
      h("td", { class: "num score" }, fmtScore(e.score)),
      msg);
    tr.addEventListener("click", () => toggleDetail(tr, e, 7));
    keyboardRow(tr);
    return tr;
  }
  // rows open their detail with Enter or Space too (a row's own buttons keep their keys)
  function keyboardRow(tr) {
    tr.tabIndex = 0;
    tr.addEventListener("keydown", (ev) => {
      if (ev.target !== tr || (ev.key !== "Enter" && ev.key !== " ")) return;
      ev.preventDefault();
      tr.click();
    });
  }
  function toggleDetail(tr, obj, colspan) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("detail")) { next.remove(); return; }
    tr.after(h("tr", { class: "detail" }, h("td", { colspan: String(colspan) },
      obj.truncated ? h("p", { class: "trunc" }, TRUNCATED) : null,
      h("pre", null, JSON.stringify(obj, null, 2)))));
  }

  // -- tabs ---------------------------------------------------------------------------------
  // the view shown first: the tab index.html marks selected (the incidents view)
  const firstTab = document.querySelector('.tabs button[aria-selected="true"]');
  let currentView = firstTab ? firstTab.dataset.view : "tail";
  // views defined in files of their own (console/incidents.js): name -> {load, refresh}
  const views = {};
  function registerView(name, view) {
    views[name] = view;
    if (currentView === name && !auth.blocked) view.load();
  }
  function showView(name) {
    currentView = name;
    for (const b of document.querySelectorAll(".tabs button")) {
      b.setAttribute("aria-selected", String(b.dataset.view === name));
    }
    for (const v of document.querySelectorAll("main > .view")) v.hidden = v.id !== "view-" + name;
    if (name === "templates" && !tpl().loaded) loadTemplates();
    if (name === "anomalies") loadAnomalies();
    if (views[name]) views[name].load();
  }

  // -- stats + chart --------------------------------------------------------------------------
  const stats = { windowSeconds: 60, knownLevels: new Set(), last: null, range: null };
  // the time every view's since/until and the chart count in: arrival (when SmartLogs got the
  // line, the default: live data shows up at once) or event (the time the line carries)
  const basis = () => $("time-basis").value;
  async function refreshStats() {
    let res;
    const want = Number($("chart-windows").value), asked = basis();
    try {
      res = await api("api/stats", { windows: want, top: 20, time: asked });
    } catch (e) {
      $("chart-note").textContent = "stats unavailable: " + e.message;
      return;
    }
    if (asked !== basis()) return;  // the switch moved meanwhile: a newer refresh is on its way
    stats.last = res;
    stats.windowSeconds = res.window_seconds || 60;
    // arrival: the last N windows up to now, empty ones included; event time: the span of the
    // windows that hold events (a replayed log's own dates)
    const ms = stats.windowSeconds * 1000;
    const end = Math.ceil(Date.now() / ms) * ms;
    stats.range = asked === "arrival" ? [end - want * ms, end] : null;
    $("chart-basis").textContent = asked === "arrival" ? "arrival time" : "event time";
    $("total-events").textContent = fmtInt(res.totals.events);
    $("total-anomalies").textContent = fmtInt(res.totals.anomalies);
    $("total-templates").textContent = fmtInt(res.totals.templates);
    $("chart-note").textContent = "windows of " + stats.windowSeconds + " s";
    drawChart(res.windows || [], stats.range);
    // hosts for the filters' autocompletion, levels for the level menus
    const dl = $("hosts");
    clear(dl);
    for (const hst of res.top_hosts || []) dl.appendChild(h("option", { value: hst.key }));
    let grew = false;
    for (const lv of res.top_levels || []) {
      if (lv.key && lv.key !== "-" && !stats.knownLevels.has(lv.key)) { stats.knownLevels.add(lv.key); grew = true; }
    }
    if (grew) fillLevelMenus();
  }
  function fillLevelMenus() {
    const all = [...new Set([...LEVELS, ...stats.knownLevels])];
    for (const sel of document.querySelectorAll("select.levels")) {
      const keep = sel.value;
      clear(sel);
      sel.appendChild(h("option", { value: "" }, "any"));
      for (const lv of all) sel.appendChild(h("option", { value: lv }, lv));
      sel.value = keep;
    }
  }

  // both axes count events: the top is 1 or an even integer, so the middle tick is an integer too
  function niceMax(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (v <= m * p && Number.isInteger(m * p / 2)) return m * p;
    return 10 * p;
  }
  // a true time axis: x is the window's start time, so empty windows are gaps (no bar, the
  // anomaly line broken) and a chart never looks evenly busy when it is not. ``range``:
  // [t0, t1) in ms (the live arrival view: the last N windows up to now); default: the span of
  // the windows given
  function drawChart(windows, range) {
    const svg = $("chart");
    const focused = document.activeElement && document.activeElement.classList &&
      document.activeElement.classList.contains("bar") ? document.activeElement.getAttribute("data-start") : null;
    clear(svg);
    const box = $("chart-box").getBoundingClientRect();
    const W = Math.max(320, Math.floor(box.width)), H = Math.max(120, Math.floor(box.height));
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const m = { l: 46, r: 40, t: 10, b: 24 };
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const ws = stats.windowSeconds * 1000;
    const at = (w) => Date.parse(w.start);
    windows = windows.filter((w) => !isNaN(at(w)) && (!range || (at(w) >= range[0] && at(w) < range[1])));
    svg.appendChild(s("line", { class: "axis", x1: m.l, y1: m.t + ph, x2: m.l + pw, y2: m.t + ph }));
    if (!windows.length) {
      svg.appendChild(s("text", { class: "nodata", x: W / 2, y: H / 2, "text-anchor": "middle" },
        range ? "no events arrived in these windows" : "no events yet"));
      return;
    }
    const t0 = range ? range[0] : at(windows[0]);
    const t1 = range ? range[1] : at(windows[windows.length - 1]) + ws;
    const xOf = (t) => m.l + ((t - t0) / (t1 - t0)) * pw;
    const step = (ws / (t1 - t0)) * pw, bw = Math.max(1, step * 0.8);
    const maxT = niceMax(Math.max(...windows.map((w) => w.total)));
    const maxA = niceMax(Math.max(1, ...windows.map((w) => w.anomalies)));
    for (const f of [0, 0.5, 1]) {
      const y = m.t + ph - f * ph;
      svg.appendChild(s("line", { class: "axis", x1: m.l, y1: y, x2: m.l + pw, y2: y, "stroke-dasharray": f ? "2,3" : "" }));
      // a label only where the value is a whole count (an axis topping at 1 has no middle label)
      if (Number.isInteger(maxT * f)) svg.appendChild(s("text", { class: "tick", x: m.l - 6, y: y + 4, "text-anchor": "end" }, fmtInt(maxT * f)));
      if (Number.isInteger(maxA * f)) svg.appendChild(s("text", { class: "tick anom", x: m.l + pw + 6, y: y + 4 }, fmtInt(maxA * f)));
    }
    const segments = [];  // the anomaly line, broken wherever a window is empty
    let prev = null;
    windows.forEach((w) => {
      const x0 = xOf(at(w));
      const x = x0 + (step - bw) / 2;
      const bh = (w.total / maxT) * ph;
      const lv = Object.entries(w.levels || {}).sort((a, b) => b[1] - a[1])
        .map(([k, v]) => k + " " + fmtInt(v)).join(", ");
      const tip = fmtTime(w.start) + " UTC\n" + fmtInt(w.total) + " events, " + fmtInt(w.anomalies) +
        " anomalies" + (lv ? "\nlevels: " + lv : "");
      const bar = s("rect", { class: "bar", x: x.toFixed(1), y: (m.t + ph - bh).toFixed(1),
        width: bw.toFixed(1), height: Math.max(bh, w.total ? 1 : 0).toFixed(1), "data-start": w.start },
        s("title", null, tip));
      bar.setAttribute("tabindex", "-1");
      bar.setAttribute("role", "button");
      bar.setAttribute("aria-label", tip.replace(/\n/g, ", ") + ": search this window");
      bar.addEventListener("click", () => searchWindow(w.start));
      bar.addEventListener("keydown", (ev) => barKey(ev, bar, w.start));
      svg.appendChild(bar);
      const pt = [x0 + step / 2, m.t + ph - (w.anomalies / maxA) * ph, w];
      if (prev !== null && at(w) - at(prev) === ws) segments[segments.length - 1].push(pt);
      else segments.push([pt]);
      prev = w;
    });
    const bars = svg.querySelectorAll("rect.bar");
    const keep = [...bars].find((b) => b.getAttribute("data-start") === focused);
    (keep || bars[bars.length - 1]).setAttribute("tabindex", "0");
    if (keep) keep.focus();
    for (const seg of segments) {
      if (seg.length > 1) svg.appendChild(s("polyline", { class: "anom-line", points: seg.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ") }));
      for (const [x, y, w] of seg) {
        if (w.anomalies) svg.appendChild(s("circle", { class: "anom-dot", cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5 },
          s("title", null, fmtTime(w.start) + " UTC: " + fmtInt(w.anomalies) + " anomalies")));
      }
    }
    // the axis' start, middle and end times (start and end on a narrow screen)
    const iso = (t) => new Date(t).toISOString();
    const labels = W < 560 ? [[t0, "start"], [t1, "end"]] : [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]];
    for (const [t, anchor] of labels) {
      svg.appendChild(s("text", { class: "tick time", x: xOf(t).toFixed(1), y: H - 6, "text-anchor": anchor }, fmtTime(iso(t))));
    }
  }
  function barKey(ev, bar, start) {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); searchWindow(start); return; }
    const bars = [...$("chart").querySelectorAll("rect.bar")];
    let i = bars.indexOf(bar);
    if (ev.key === "ArrowLeft") i--; else if (ev.key === "ArrowRight") i++;
    else if (ev.key === "Home") i = 0; else if (ev.key === "End") i = bars.length - 1;
    else return;
    ev.preventDefault();
    const next = bars[Math.max(0, Math.min(bars.length - 1, i))];
    for (const b of bars) b.setAttribute("tabindex", b === next ? "0" : "-1");
    next.focus();
  }
  function searchWindow(startIso) {
    // a bar is "everything in this window": the other filters are cleared, the times are ISO
    const start = Date.parse(startIso);
    if (isNaN(start)) return;
    for (const id of ["search-q", "search-host", "search-template"]) $(id).value = "";
    $("search-level").value = "";
    $("search-anomaly").checked = false;
    $("search-since").value = new Date(start).toISOString().replace(".000Z", "Z");
    $("search-until").value = new Date(start + stats.windowSeconds * 1000).toISOString().replace(".000Z", "Z");
    showView("search");  // since/until count in the switch's time, as the bar did
    runSearch();
  }

  // -- live tail ----------------------------------------------------------------------------
  const tail = { es: null, cursor: 0, paused: false, received: 0, gen: 0, pauseTimer: null, shown: new Set(), filters: null };
  function tailFilters() {
    return {
      host: $("tail-host").value.trim(),
      source: $("tail-source").value.trim(),
      level: $("tail-level").value,
      anomaly: $("tail-anomaly").checked ? "true" : "",
    };
  }
  const CONN_SAID = { live: "Live tail connected", paused: "Live tail paused", down: "Live tail disconnected" };
  function setConn(state, text) {
    const c = $("conn");
    c.className = "conn " + state;
    c.textContent = text;
    // screen readers hear state changes only (connected, paused, disconnected), not every event
    const said = (CONN_SAID[state] || "Live tail") + (text !== state && text !== "live" ? ": " + text : "");
    if ($("tail-live").textContent !== said) $("tail-live").textContent = said;
  }
  function tailStatus() {
    const n = $("tail-body").querySelectorAll("tr.event").length;
    $("tail-status").textContent = fmtInt(tail.received) + " received live · " + fmtInt(n) + " shown" +
      (tail.paused ? " · paused" : "");
    $("tail-empty").hidden = n > 0;
    // an empty tail says why: no events at all, none matching the filters, or no key yet
    const f = tailFilters();
    const set = [f.host && "host " + f.host, f.source && "source " + f.source, f.level && "level " + f.level, f.anomaly && "anomalies only"].filter(Boolean);
    let other = "";
    if (auth.blocked) other = "Paused until an API key is entered (see the box at the top).";
    else if (set.length) other = "No events match these filters yet (" + set.join(", ") + "): matching events show up here as they arrive.";
    $("tail-empty-other").textContent = other;
    $("tail-empty-other").hidden = !other;
    $("tail-empty-wait").hidden = !!other;
  }
  function addTailEvents(events, fresh) {
    // events arrive oldest first; the newest goes on top. A stream that starts a little behind
    // the first page (Elasticsearch: events must be old enough to be visible everywhere) may
    // repeat a few of its events: each seq is shown once.
    events = events.filter((e) => !tail.shown.has(String(e.seq)));
    const body = $("tail-body");
    const onSource = (src) => { $("tail-source").value = src; restartTail(); };
    const frag = document.createDocumentFragment();
    for (let i = events.length - 1; i >= 0; i--) {
      tail.shown.add(String(events[i].seq));
      frag.appendChild(eventRow(events[i], { fresh, onSource }));
    }
    body.insertBefore(frag, body.firstChild);
    const rows = body.querySelectorAll("tr.event");
    for (let i = MAX_TAIL_ROWS; i < rows.length; i++) {
      const next = rows[i].nextElementSibling;
      if (next && next.classList.contains("detail")) next.remove();
      tail.shown.delete(rows[i].dataset.seq);
      rows[i].remove();
    }
    return events.length;
  }
  function clearTail() {
    clear($("tail-body"));
    tail.shown.clear();
  }
  function closeStream() {
    if (tail.es) { tail.es.close(); tail.es = null; }
  }
  async function restartTail(note) {
    const gen = ++tail.gen;
    closeStream();
    let res;
    try {
      res = await api("api/events", { ...tailFilters(), limit: TAIL_BACKLOG, order: "arrival" });  // what arrived last, not the newest event time
    } catch (e) {
      if (gen !== tail.gen || e instanceof AuthError) return;  // no retries without a key
      setConn("down", "offline");
      $("tail-status").textContent = "cannot load events: " + e.message + " (retrying)";
      setTimeout(() => { if (gen === tail.gen) restartTail(note); }, 3000);
      return;
    }
    if (gen !== tail.gen) return;  // filters changed meanwhile
    const filters = JSON.stringify(tailFilters());
    if (filters !== tail.filters) tail.received = 0;  // "received live" counts for these filters
    tail.filters = filters;
    clearTail();
    addTailEvents(res.events.slice().reverse(), false);
    tail.cursor = res.last_seq;
    tailStatus();
    if (note) $("tail-status").textContent += " · " + note;
    if (!tail.paused) openStream();
  }
  function openStream() {
    closeStream();
    if (auth.blocked) return;
    const gen = tail.gen;
    // EventSource cannot send headers: the key goes as a query parameter (accepted only here)
    const es = new EventSource(url("api/stream", { ...tailFilters(), after: tail.cursor, key: auth.key }));
    tail.es = es;
    es.addEventListener("ready", () => { if (gen === tail.gen) setConn("live", "live"); });
    es.addEventListener("events", (m) => {
      if (gen !== tail.gen || tail.paused) return;
      const d = JSON.parse(m.data);
      tail.cursor = d.last_seq;
      if (d.events.length) {
        tail.received += addTailEvents(d.events, true);
        tailStatus();
      }
    });
    es.addEventListener("store_error", (m) => {
      let d = {};
      try { d = JSON.parse(m.data); } catch (e) { /* ignore */ }
      setConn("down", "store unavailable");
      $("tail-status").textContent = "store unavailable: " + (d.detail || "") + " (retrying)";
    });
    es.onopen = () => { if (gen === tail.gen) setConn("live", "live"); };
    es.onerror = () => {
      if (gen !== tail.gen) return;
      // EventSource reconnects by itself (resuming from the last id) unless the server refused
      setConn("down", es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
      // a refused stream (401: key revoked meanwhile) is found by one plain call, which shows the key box
      if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (gen === tail.gen && !tail.paused) reopenStream(gen); }, 3000);
    };
  }
  async function reopenStream(gen) {
    try {
      await api("api/events", { limit: 1 });
    } catch (e) {
      if (!(e instanceof AuthError) && gen === tail.gen) setTimeout(() => { if (gen === tail.gen && !tail.paused) reopenStream(gen); }, 3000);
      return;
    }
    if (gen === tail.gen && !tail.paused) openStream();
  }
  async function pollMissed() {
    if (!tail.paused || auth.blocked) return;
    try {
      const res = await api("api/events", { ...tailFilters(), after: tail.cursor, limit: 1 });
      if (tail.paused) $("tail-status").textContent = "paused · " + fmtTotal(res) + " new event(s) since";
    } catch (e) { /* shown on resume */ }
  }
  function pauseTail() {
    tail.paused = true;
    tail.gen++;  // ignore anything still in flight
    closeStream();
    $("tail-pause").textContent = "Resume";
    $("tail-pause").setAttribute("aria-pressed", "true");
    setConn("paused", "paused");
    tailStatus();
    tail.pauseTimer = setInterval(pollMissed, 2000);
  }
  async function resumeTail() {
    tail.paused = false;
    clearInterval(tail.pauseTimer);
    $("tail-pause").textContent = "Pause";
    $("tail-pause").setAttribute("aria-pressed", "false");
    let missed = 0, bound = false;
    try {
      const res = await api("api/events", { ...tailFilters(), after: tail.cursor, limit: 1 });
      missed = res.total;
      bound = res.total_relation === "gte";
    } catch (e) { /* the stream will say */ }
    if (missed > CATCH_UP_LIMIT) {
      restartTail("skipped " + (bound ? "more than " : "") + fmtInt(missed - TAIL_BACKLOG) +
        " events missed while paused");
    } else {
      tail.gen++;
      openStream();  // replays what arrived during the pause, then goes on live
      tailStatus();
    }
  }

  // -- bad times: the API's 422 names the value it could not read --------------------------------
  function markTimeFields(inputs, summary, message) {
    let bad = null;
    for (const inp of inputs) {
      const v = inp.value.trim();
      const hit = !!message && !bad && v !== "" && message.includes(v);
      if (hit) bad = inp;
      if (hit) { inp.setAttribute("aria-invalid", "true"); inp.setAttribute("aria-describedby", summary.id); }
      else { inp.removeAttribute("aria-invalid"); inp.removeAttribute("aria-describedby"); }
    }
    summary.classList.toggle("bad", !!message);
    return bad;
  }

  // -- search -------------------------------------------------------------------------------
  function searchParams() {
    return {
      q: $("search-q").value.trim(),
      host: $("search-host").value.trim(),
      source: $("search-source").value.trim(),
      level: $("search-level").value,
      template: $("search-template").value.trim(),
      anomaly: $("search-anomaly").checked ? "true" : "",
      since: $("search-since").value.trim(),
      until: $("search-until").value.trim(),
      limit: $("search-limit").value,
      time: basis(),
    };
  }
  let searchGen = 0;
  const searchPage = { params: null, next: null, shown: 0 };
  async function runSearch(more) {
    const gen = ++searchGen;
    const summary = $("search-summary");
    const params = more === true && searchPage.next ? { ...searchPage.params, cursor: searchPage.next } : searchParams();
    summary.textContent = "searching…";
    $("search-more").hidden = true;
    let res;
    try {
      res = await api("api/events", params);
    } catch (e) {
      if (gen === searchGen) {
        summary.textContent = "error: " + e.message;
        markTimeFields([$("search-since"), $("search-until")], summary, e.message);
        clear($("search-body"));
      }
      return;
    }
    if (gen !== searchGen) return;
    markTimeFields([$("search-since"), $("search-until")], summary, null);
    const body = $("search-body");
    if (!params.cursor) { clear(body); searchPage.shown = 0; }
    searchPage.params = { ...params };
    delete searchPage.params.cursor;
    searchPage.next = res.next || null;
    searchPage.shown += res.events.length;
    const onSource = (src) => { $("search-source").value = src; runSearch(); };
    for (const e of res.events) body.appendChild(eventRow(e, { onSource }));
    summary.textContent = fmtTotal(res) + " matching event(s)" +
      (fewerThan(searchPage.shown, res) ? ", showing the newest " + fmtInt(searchPage.shown) : "");
    $("search-more").hidden = !searchPage.next;  // the next page, appended below
  }

  // -- templates: the page is ingest_api/static/templates.js (window.smartlogsTemplates) ------
  const tpl = () => window.smartlogsTemplates;
  function loadTemplates() { return tpl().load(); }
  function searchTemplate(tid) {
    for (const id of ["search-q", "search-host", "search-source", "search-since", "search-until"]) $(id).value = "";
    $("search-level").value = "";
    $("search-anomaly").checked = false;
    $("search-template").value = tid;
    showView("search");
    runSearch();
  }
  function openTemplate(tid) { tpl().open(tid); }

  // -- anomalies ----------------------------------------------------------------------------
  let anomGen = 0;
  async function loadAnomalies() {
    const gen = ++anomGen;
    let res;
    try {
      res = await api("api/events", {
        anomaly: "true",
        host: $("anomalies-host").value.trim(),
        since: $("anomalies-since").value.trim(),
        limit: $("anomalies-limit").value,
        time: basis(),  // arrival: what was flagged last comes first, whatever its event time
        order: basis() === "arrival" ? "arrival" : "time",
      });
    } catch (e) {
      if (gen !== anomGen) return;
      $("anomalies-summary").textContent = "error: " + e.message;
      markTimeFields([$("anomalies-since")], $("anomalies-summary"), e.message);
      clear($("anomalies-body"));  // rows of an earlier query would look like this query's answer
      return;
    }
    if (gen !== anomGen) return;
    markTimeFields([$("anomalies-since")], $("anomalies-summary"), null);
    const body = $("anomalies-body");
    // the 5 s refresh rebuilds the table: rows the user opened stay open, focus stays put
    const open = new Set([...body.querySelectorAll("tr.event")]
      .filter((tr) => tr.nextElementSibling && tr.nextElementSibling.classList.contains("detail"))
      .map((tr) => tr.dataset.seq));
    const focused = document.activeElement && body.contains(document.activeElement) &&
      document.activeElement.matches("tr.event") ? document.activeElement.dataset.seq : null;
    clear(body);
    for (const e of res.events) {
      const meter = h("span", { class: "meter" }, h("span"));
      meter.firstChild.style.width = Math.round(Math.max(0, Math.min(1, e.score || 0)) * 100) + "%";
      const tr = h("tr", { class: "event anomaly", dataset: { seq: String(e.seq) }, title: "click for all fields" },
        h("td", { class: "num score" }, meter, fmtScore(e.score)),
        h("td", { class: "time", title: e.timestamp || "" }, fmtTime(e.timestamp)),
        h("td", { class: "source" }, e.source || e.host || "-"),
        h("td", { class: "comp" }, e.component || "-"),
        h("td", { class: "tid" }, templateLink(e.template_id)),
        h("td", { class: "reason" }, e.reason || ""),
        h("td", { class: "msg" }, clipped(e.message), e.truncated ? h("span", { class: "trunc" }, TRUNCATED) : null));
      tr.addEventListener("click", () => toggleDetail(tr, e, 7));
      keyboardRow(tr);
      body.appendChild(tr);
      if (open.has(String(e.seq))) toggleDetail(tr, e, 7);
      if (focused === String(e.seq)) tr.focus();
    }
    setText($("anomalies-summary"), fmtTotal(res) + " anomal" + (res.total === 1 && res.total_relation !== "gte" ? "y" : "ies") +
      (fewerThan(res.events.length, res) ? ", showing the newest " + fmtInt(res.events.length) : ""));
  }

  // what the pages in their own files use (templates.js)
  window.smartlogsUI = { h, clear, setText, api, auth, fmtInt, fmtEpoch, fmtTime,
    showView: (name) => showView(name), searchTemplate: (tid) => searchTemplate(tid) };

  // -- wiring -------------------------------------------------------------------------------
  function init() {
    fillLevelMenus();
    for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showView(b.dataset.view));

    let tailTimer = null;
    const tailChanged = () => { clearTimeout(tailTimer); tailTimer = setTimeout(() => restartTail(), 300); };
    $("tail-host").addEventListener("input", tailChanged);
    $("tail-source").addEventListener("input", tailChanged);
    $("tail-level").addEventListener("change", () => restartTail());
    $("tail-anomaly").addEventListener("change", () => restartTail());
    $("tail-form").addEventListener("submit", (ev) => { ev.preventDefault(); restartTail(); });
    $("tail-pause").addEventListener("click", () => (tail.paused ? resumeTail() : pauseTail()));
    $("tail-clear").addEventListener("click", () => { clearTail(); tail.received = 0; tailStatus(); });

    $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(); });
    $("anomalies-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadAnomalies(); });
    $("chart-windows").addEventListener("change", refreshStats);
    $("time-basis").addEventListener("change", () => {
      refreshStats();
      if (currentView === "anomalies") loadAnomalies();
      else if (views[currentView]) views[currentView].load();  // the incidents list
    });
    $("search-more").addEventListener("click", () => runSearch(true));
    $("key-box").addEventListener("submit", (ev) => { ev.preventDefault(); useKey($("key-input").value); });
    $("key-forget").addEventListener("click", forgetKey);
    $("key-close").addEventListener("click", () => { hideKeyBox(); $("key-btn").focus(); });
    $("key-btn").addEventListener("click", () => {
      showKeyBox("This browser uses a stored API key. Enter another one, or forget it.", false);
      $("key-input").focus();
    });
    $("key-btn").hidden = !auth.key;

    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (stats.last) drawChart(stats.last.windows || [], stats.range); }, 150);
    });
    setInterval(() => {
      if (document.hidden || auth.blocked) return;  // no polling while the server waits for a key
      refreshStats();
      if (currentView === "anomalies" && $("anomalies-auto").checked) loadAnomalies();
      if (views[currentView] && views[currentView].refresh) views[currentView].refresh();
    }, REFRESH_MS);

    refreshStats();
    restartTail();
    // for debugging and tests, and for the views in files of their own (registerView)
    window.smartlogsConsole = { tail, showView, runSearch, drawChart, registerView, api, h, clear,
      setText, fmtInt, fmtTotal, fewerThan, fmtTime, fmtScore, eventRow, templateLink, keyboardRow, markTimeFields,
      AuthError, basis, view: () => currentView };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
