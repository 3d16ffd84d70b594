// SmartLogs console: how a view in a file of its own starts (incidents.js, templates.js,
// alerts.js). index.html loads this file after console.js and before them; each calls
// window.smartlogsView(start) once, and start(c, $) runs when console.js has set the page up:
// c holds console.js's helpers (window.smartlogsUI and window.smartlogsConsole in one object:
// registerView, api, h, setText, the formatters...), $ is document.getElementById.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  window.smartlogsView = function (start) {
    function run() {
      const c = window.smartlogsConsole;
      if (!c || !c.registerView) {  // console.js not initialised yet
        document.addEventListener("DOMContentLoaded", run, { once: true });
        return;
      }
      start(Object.assign({}, window.smartlogsUI, c), $);
    }
    run();
  };
})();
