// SmartLogs console: the Templates page (the template catalog and feedback on templates).
//
// Lists GET /api/templates (sorted by count, first seen or last seen, new since a time), opens
// one template's GET /api/templates/{id} (example lines, history of changes) and marks it with
// POST /api/templates/{id}/feedback (expected, always alert, clear). Uses console.js's helpers
// (views.js: window.smartlogsView); like console.js, it inserts data as text only.
"use strict";

window.smartlogsView((ui, $) => {
  const { h, clear, api, fmtInt, fmtEpoch, fmtTime } = ui;
  const MARK_LABEL = { expected: "expected", always_alert: "always alert" };
  const state = { loaded: false, rows: [], gen: 0 };

  async function load() {
    const gen = ++state.gen;
    $("templates-summary").textContent = "loading…";
    let res;
    try {
      res = await api("api/templates", {
        limit: 1000, sort: $("templates-sort").value, since: $("templates-since").value.trim(),
      });
    } catch (e) {
      if (gen !== state.gen) return;
      $("templates-summary").textContent = "error: " + e.message;
      $("templates-since").setAttribute("aria-invalid", String(/since/.test(e.message)));
      return;
    }
    if (gen !== state.gen) return;
    $("templates-since").removeAttribute("aria-invalid");
    state.rows = res.templates;
    state.loaded = true;
    render();
  }

  function markBadge(mark) {
    if (!mark) return "";
    return h("span", { class: "mark mark-" + mark }, MARK_LABEL[mark] || mark);
  }

  function render(openId) {
    const f = $("templates-filter").value.trim().toLowerCase();
    const body = $("templates-body");
    clear(body);
    let shown = 0;
    for (const t of state.rows) {
      if (f && !(String(t.id).toLowerCase() === f || String(t.template || "").toLowerCase().includes(f))) continue;
      shown++;
      const tr = h("tr", { class: "template", dataset: { tid: String(t.id) } },
        h("td", { class: "tid" }, t.id),
        h("td", { class: "num" }, fmtInt(t.count)),
        h("td", { class: "tmpl" }, t.template || ""),
        h("td", { class: "time" }, fmtEpoch(t.first_ts)),
        h("td", { class: "time" }, fmtEpoch(t.last_ts)),
        h("td", { class: "mark-cell" }, markBadge(t.mark)),
        h("td", null,
          h("button", { type: "button", class: "mini examples-btn", "aria-expanded": "false",
            onclick: () => toggle(tr, t.id) }, "details"),
          " ",
          h("button", { type: "button", class: "mini", onclick: () => ui.searchTemplate(t.id) }, "search")));
      body.appendChild(tr);
      if (openId && openId === t.id) toggle(tr, t.id);
    }
    const sortName = $("templates-sort").selectedOptions[0].textContent;
    $("templates-summary").textContent = fmtInt(state.rows.length) + " template(s), by " + sortName +
      (f ? ", " + fmtInt(shown) + " matching" : "");
  }

  function describe(c, tid) {
    if (c.kind === "created") return "first line";
    if (c.kind === "generalised") return "generalised: " + (c.previous || "?") + "  →  " + (c.template || "?");
    if (c.kind === "merged") return c.into === tid ? c.template_id + " merged into this template" : "merged into " + c.into;
    const mark = c.mark ? (MARK_LABEL[c.mark] || c.mark) : "mark cleared";
    return "feedback: " + mark + (c.by ? " by " + c.by : "") + (c.note ? ": " + c.note : "");
  }

  async function toggle(tr, tid) {
    const btn = tr.querySelector(".examples-btn");
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("detail")) {
      next.remove();
      btn.setAttribute("aria-expanded", "false");
      return;
    }
    btn.setAttribute("aria-expanded", "true");
    const cell = h("td", { colspan: "7" }, h("p", { class: "muted" }, "loading…"));
    tr.after(h("tr", { class: "detail template-detail", dataset: { tid: String(tid) } }, cell));
    let t;
    try {
      t = await api("api/templates/" + encodeURIComponent(tid), { history: 50 });
    } catch (e) {
      clear(cell);
      cell.appendChild(h("p", { class: "error-inline" }, "error: " + e.message));
      return;
    }
    clear(cell);
    const status = h("span", { class: "status feedback-status", role: "status", "aria-live": "polite" });
    const button = (mark, label, cls) => h("button", {
      type: "button", class: "mini feedback-btn " + cls, dataset: { mark },
      "aria-pressed": String((t.mark || "none") === mark),
      onclick: () => give(tid, mark, status),
    }, label);
    cell.append(
      h("div", { class: "feedback" },
        h("span", null, "Mark: "),
        button("expected", "expected", "fb-expected"),
        button("always_alert", "always alert", "fb-always"),
        button("none", "clear", "fb-clear"),
        status,
        h("span", { class: "muted" }, " expected: its lines stop counting as rare or new; always alert: its lines are always flagged")),
      h("h3", null, "Example lines"),
      h("ul", { class: "examples" }, t.examples.length
        ? t.examples.map((line) => h("li", { class: "example" }, line))
        : h("li", { class: "muted" }, "no example stored")),
      h("h3", null, "History (" + fmtInt(t.history_total) + ")"),
      h("ul", { class: "examples history" }, t.history.map((c) => h("li", { class: "history-item kind-" + c.kind },
        h("span", { class: "meta" }, fmtTime(c.time)), describe(c, tid),
        c.example && c.kind !== "created" ? h("span", { class: "meta line" }, " — line: " + c.example) : null,
        c.kind === "created" && c.example ? h("span", { class: "meta line" }, " " + c.example) : null))));
  }

  async function give(tid, mark, status) {
    status.textContent = "saving…";
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (ui.auth.key) headers.Authorization = "Bearer " + ui.auth.key;
    let r, body = null;
    try {
      r = await fetch(new URL("api/templates/" + encodeURIComponent(tid) + "/feedback", document.baseURI),
        { method: "POST", headers, body: JSON.stringify({ mark }) });
      try { body = await r.json(); } catch (e) { /* not JSON */ }
    } catch (e) {
      status.textContent = "error: cannot reach the SmartLogs API (" + e.message + ")";
      return;
    }
    if (r.status === 401 || r.status === 403) {
      // a read key may look but not mark: say so, without locking the page
      status.textContent = "refused: marking a template needs an admin API key";
      return;
    }
    if (!r.ok) {
      status.textContent = "error: " + ((body && (body.detail || body.error)) || "HTTP " + r.status);
      return;
    }
    const row = state.rows.find((t) => t.id === tid);
    if (row) row.mark = body.mark;
    status.textContent = (body.mark ? "marked " + MARK_LABEL[body.mark] : "mark cleared") + "; applies " + body.applies;
    const tr = document.querySelector('#templates-body tr.template[data-tid="' + CSS.escape(tid) + '"]');
    if (tr) {
      const cell = tr.querySelector(".mark-cell");
      clear(cell);
      const badge = markBadge(body.mark);
      if (badge) cell.appendChild(badge);
      const detail = tr.nextElementSibling;
      if (detail) {
        for (const b of detail.querySelectorAll(".feedback-btn")) {
          b.setAttribute("aria-pressed", String(b.dataset.mark === (body.mark || "none")));
        }
      }
    }
  }

  function open(tid) {
    $("templates-filter").value = tid;
    ui.showView("templates");
    if (state.loaded) render(tid);
    else load().then(() => render(tid));
  }

  function init() {
    $("templates-filter").addEventListener("input", () => render());
    $("templates-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
    $("templates-sort").addEventListener("change", () => load());
  }

  window.smartlogsTemplates = { load, open, render, state, get loaded() { return state.loaded; } };
  init();
});
