// SmartLogs console: the Alerts view — what the alert rules raised (firing, resolved,
// suppressed; replayed logs' alerts marked so), the silences in force, and a form to silence a
// rule or one of its groups (an admin key). Reads GET /api/alerts, writes POST
// /api/alerts/silences through console.js's helpers (views.js: window.smartlogsView); data reaches
// the page as text only, like the rest of the console.
"use strict";

window.smartlogsView((c, $) => {
  const { api, h, clear, setText, fmtInt, fmtEpoch } = c;
  let gen = 0;

  async function load() {
    const mine = ++gen;
    let res;
    try {
      res = await api("api/alerts", {
        rule: $("alerts-rule").value.trim(),
        state: $("alerts-state").value,
        limit: $("alerts-limit").value,
      });
    } catch (e) {
      if (mine !== gen) return;
      // 404 alerts_off: no rules file; the message says how to turn them on
      setText($("alerts-summary"), e.message);
      clear($("alerts-body"));
      clear($("alerts-silences"));
      return;
    }
    if (mine !== gen) return;
    render(res.alerts || [], res.silences || []);
  }

  function render(alerts, silences) {
    const body = $("alerts-body");
    clear(body);
    for (const a of alerts) {
      const flags = [];
      if (a.historical) flags.push("replayed: not sent");
      else if (!a.notified) flags.push("not sent (silenced or no target)");
      if (a.warming_up) flags.push("model warming up (" + fmtInt(a.lines_learned) + " lines learned)");
      body.appendChild(h("tr", { class: "alert " + a.state },
        h("td", { class: "status" }, h("span", { class: "badge badge-" + a.state }, a.state)),
        h("td", { class: "time" }, fmtEpoch(a.at)),
        h("td", null, a.rule + " (" + a.kind + ")"),
        h("td", { class: "host" }, a.group),
        h("td", { class: "num" }, fmtInt(a.count) +
          (a.baseline != null ? " vs " + Number(a.baseline).toFixed(1) : "")),
        h("td", { class: "reason" }, (a.reasons || []).slice(0, 2).join("; ") +
          (flags.length ? " [" + flags.join("; ") + "]" : "")),
        h("td", { class: "msg" }, a.trigger ? (a.trigger.message || "") : "")));
    }
    setText($("alerts-summary"), fmtInt(alerts.length) + " alert record(s), " +
      fmtInt(alerts.filter((a) => a.state === "firing").length) + " firing");
    $("alerts-empty").hidden = alerts.length > 0;
    const sil = $("alerts-silences");
    clear(sil);
    for (const s of silences) {
      sil.appendChild(h("li", null, s.rule + " · " + s.group + " until " + fmtEpoch(s.until)));
    }
  }

  $("alerts-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("alerts-state").addEventListener("change", load);
  $("silence-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = $("silence-status");
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (c.auth.key) headers.Authorization = "Bearer " + c.auth.key;
    const body = { rule: $("silence-rule").value.trim(), group: $("silence-group").value.trim() || "*",
                   seconds: Number($("silence-hours").value) * 3600 };
    let r, res = null;
    try {
      r = await fetch(new URL("api/alerts/silences", document.baseURI),
        { method: "POST", headers, body: JSON.stringify(body) });
      try { res = await r.json(); } catch (e) { /* not JSON */ }
    } catch (e) {
      setText(status, "error: cannot reach the SmartLogs API (" + e.message + ")");
      return;
    }
    if (r.status === 401 || r.status === 403) {
      setText(status, "refused: silencing needs an admin API key");
      return;
    }
    if (!r.ok) {
      setText(status, "error: " + ((res && (res.detail || res.error)) || "HTTP " + r.status));
      return;
    }
    setText(status, "silenced " + res.rule + " · " + res.group + " until " + fmtEpoch(res.until));
    load();
  });
  c.registerView("alerts", {
    load,
    refresh: () => { if ($("alerts-auto").checked) load(); },
  });
});
