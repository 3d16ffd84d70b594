// SmartLogs console: the Incidents view (the first thing an operator sees).
//
// An incident is a group of anomalous lines that share a cause (streams/incidents.py): one row
// with its count, first and last time, source, pattern and reason, instead of one row per
// flagged line. A row opens to its example lines and the lines stored with its id.
// Reads GET /api/incidents and /api/events?incident=ID through console.js's helpers
// (views.js: window.smartlogsView); like the rest of the console, data reaches the page as text only.
"use strict";

window.smartlogsView((c, $) => {
  const { api, h, clear, setText, fmtInt, fmtTotal, fewerThan, fmtTime, fmtScore, eventRow, templateLink,
    keyboardRow, markTimeFields, AuthError, basis } = c;
  let gen = 0;
  const opened = new Set();  // incident ids whose detail is open (kept across refreshes)

  async function load() {
    const mine = ++gen;
    const since = $("incidents-since");
    // the console's one time switch: arrival (the default) lists what was flagged last first,
    // whatever the dates in a replayed file; event orders by the lines' own times
    const asked = basis();
    let res;
    try {
      res = await api("api/incidents", {
        status: $("incidents-status").value,
        source: $("incidents-source").value.trim(),
        since: since.value.trim(),
        limit: $("incidents-limit").value,
        time: asked,
      });
    } catch (e) {
      if (mine !== gen) return;
      setText($("incidents-summary"), (e instanceof AuthError ? "" : "error: ") + e.message);
      markTimeFields([since], $("incidents-summary"), e.message);
      clear($("incidents-body"));
      return;
    }
    if (mine !== gen) return;
    markTimeFields([since], $("incidents-summary"), null);
    render(res.incidents || [], asked === "arrival");
  }

  function render(incidents, arrival) {
    setText($("incidents-time-head"), arrival ? "last arrival (UTC)" : "last line (UTC)");
    const body = $("incidents-body");
    const focused = document.activeElement && body.contains(document.activeElement) &&
      document.activeElement.matches("tr.incident") ? document.activeElement.dataset.id : null;
    clear(body);
    for (const inc of incidents) {
      const tr = h("tr", {
        class: "incident " + inc.status, dataset: { id: inc.id },
        title: "click for its example lines and all its lines",
      },
        h("td", { class: "status" }, h("span", { class: "badge badge-" + inc.status }, inc.status)),
        h("td", { class: "num count" }, fmtInt(inc.count)),
        h("td", {
          class: "time",
          title: "first line " + (inc.first_seen || "") + ", last line " + (inc.last_seen || ""),
        }, fmtTime(arrival ? inc.last_arrival : inc.last_seen)),
        h("td", { class: "host" }, inc.source || "-"),
        h("td", { class: "tid" }, templateLink(inc.template_id)),
        h("td", { class: "reason" }, inc.reason || inc.last_reason || ""),
        h("td", { class: "msg" }, inc.last_message || ""));
      tr.addEventListener("click", () => toggle(tr, inc));
      keyboardRow(tr);
      body.appendChild(tr);
      if (opened.has(inc.id)) showDetail(tr, inc);
      if (focused === inc.id) tr.focus();
    }
    const open = incidents.filter((i) => i.status === "open").length;
    setText($("incidents-summary"), fmtInt(incidents.length) + " incident(s), " + fmtInt(open) +
      " open, " + fmtInt(incidents.reduce((n, i) => n + i.count, 0)) + " anomalous line(s)");
    $("incidents-empty").hidden = incidents.length > 0;
  }

  function toggle(tr, inc) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("detail")) {
      next.remove();
      opened.delete(inc.id);
      return;
    }
    opened.add(inc.id);
    showDetail(tr, inc);
  }

  function showDetail(tr, inc) {
    const lines = h("tbody", null, h("tr", null, h("td", { class: "muted" }, "loading…")));
    const cell = h("td", { colspan: "7" },
      h("p", { class: "meta" }, inc.id + " · " + inc.kind + " · first " + fmtTime(inc.first_seen) +
        " · last " + fmtTime(inc.last_seen) +
        (inc.resolved_at ? " · resolved " + fmtTime(inc.resolved_at) : "") +
        " · highest score " + fmtScore(inc.max_score)),
      inc.template ? h("p", { class: "meta" }, "pattern: " + inc.template) : null,
      h("ul", { class: "examples" }, (inc.examples || []).map((x) =>
        h("li", { class: "example anomaly" },
          h("span", { class: "meta" }, fmtTime(x.timestamp) + " " + (x.host || "-") + " " + (x.level || "-")),
          x.message))),
      h("table", { class: "events incident-lines" }, lines));
    tr.after(h("tr", { class: "detail" }, cell));
    api("api/events", { incident: inc.id, limit: 50 }).then((res) => {
      clear(lines);
      for (const e of res.events) lines.appendChild(eventRow(e));
      lines.appendChild(h("tr", null, h("td", { class: "muted", colspan: "7" },
        fmtTotal(res) + " line(s) stored with this incident" +
        (fewerThan(res.events.length, res) ? ", the newest " + fmtInt(res.events.length) + " shown" : ""))));
    }, (e) => {
      clear(lines);
      lines.appendChild(h("tr", null, h("td", null, "error: " + e.message)));
    });
  }

  $("incidents-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("incidents-status").addEventListener("change", load);
  c.registerView("incidents", {
    load,
    refresh: () => { if ($("incidents-auto").checked) load(); },
  });
});
