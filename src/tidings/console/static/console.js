// Tidings staff console: the one small hand-written script (no framework, no htmx: htmx is not
// on PyPI and must not be vendored, so every page works with plain forms and this script only
// adds comfort). It provides: live countdowns (SLA, lock, session, due dates) with aria-live
// announcements, media reveal counting (the per-session exposure counter) and blur-all, and
// keyboard shortcuts for every decision and for moving through a queue.
(function () {
  "use strict";
  var loaded = Date.now();
  var live = document.getElementById("live");
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var baseMeta = document.querySelector('meta[name="console-base"]');
  var base = baseMeta ? baseMeta.content : "";

  function announce(text) { if (live) { live.textContent = text; } }

  function fmt(ms) {
    var sign = ms < 0 ? "-" : "";
    var s = Math.floor(Math.abs(ms) / 1000);
    if (s >= 86400) { return sign + Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h"; }
    if (s >= 3600) { return sign + Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m"; }
    return sign + Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
  }

  // --- countdowns ----------------------------------------------------------------------------
  var counters = Array.prototype.slice.call(document.querySelectorAll("[data-countdown-ms]"));
  var announced = {};
  function tick() {
    var elapsed = Date.now() - loaded;
    counters.forEach(function (el) {
      var left = parseInt(el.getAttribute("data-countdown-ms"), 10) - elapsed;
      var kind = el.getAttribute("data-kind");
      if ((kind === "lock" || kind === "session") && left < 0) { left = 0; }
      el.textContent = fmt(left);
      if ((kind === "sla" || kind === "due") && left < 0) { el.classList.add("bad"); }
      var key = kind + (el.getAttribute("data-announce") || "");
      if (kind === "session" && left <= 120000 && !announced[key]) {
        announced[key] = true;
        announce("Your session ends in two minutes. Save your work.");
      }
      if (kind === "lock" && el.getAttribute("data-announce") && left <= 60000 && !announced[key]) {
        announced[key] = true;
        announce("Your lock on this case expires in one minute. Renew it to keep working.");
      }
    });
  }
  if (counters.length) { tick(); setInterval(tick, 1000); }

  // --- wellbeing: reveal counting and blur-all ---------------------------------------------
  var exposure = document.getElementById("exposure-count");
  function toggles() { return Array.prototype.slice.call(document.querySelectorAll(".reveal-toggle")); }
  toggles().forEach(function (box) {
    box.addEventListener("change", function () {
      if (!box.checked || box.getAttribute("data-counted")) { return; }
      box.setAttribute("data-counted", "1");
      if (!csrfMeta) { return; }
      var body = new URLSearchParams();
      body.set("csrf", csrfMeta.content);
      body.set("evidence", box.getAttribute("data-evidence") || "");
      fetch(base + "/wellbeing/exposure", { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data && exposure) { exposure.textContent = String(data.exposure); } })
        .catch(function () { /* the counter is advisory; the page keeps working */ });
    });
  });
  function blurAll() {
    toggles().forEach(function (box) { box.checked = false; });
    announce("All media blurred.");
  }
  var blurButton = document.getElementById("blur-all");
  if (blurButton) { blurButton.addEventListener("click", blurAll); }
  function revealNext() {
    var next = toggles().filter(function (b) { return !b.checked; })[0];
    if (next) { next.click(); next.focus(); }
  }

  // --- keyboard shortcuts --------------------------------------------------------------------
  function click(id) { var el = document.getElementById(id); if (el) { el.click(); return true; } return false; }
  function focus(id) { var el = document.getElementById(id); if (el) { el.focus(); return true; } return false; }
  function chooseKind(key) {
    var radio = document.querySelector('#decide-form input[name="kind"][data-key="' + key + '"]');
    if (!radio) { return false; }
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    var label = radio.parentElement ? radio.parentElement.textContent.trim().split(" ")[0] : key;
    var days = document.getElementById("days");
    if (radio.value === "suspend" && days) { days.focus(); } else { focus("policy"); }
    announce(label + " selected. Choose the policy and write the reason.");
    return true;
  }
  // Queue and bank tables: j/k move the selection, Enter opens (native link).
  var rows = Array.prototype.slice.call(document.querySelectorAll("#case-list a.row-link, #queue-list a.row-link, #bank-list a.row-link"));
  function moveRow(step) {
    if (!rows.length) { return false; }
    var i = rows.indexOf(document.activeElement);
    i = i < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.min(rows.length - 1, Math.max(0, i + step));
    rows.forEach(function (a) { a.closest("tr").classList.remove("selected"); });
    rows[i].focus();
    rows[i].closest("tr").classList.add("selected");
    return true;
  }

  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    var typing = t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
      (t.tagName === "INPUT" && ["checkbox", "radio", "submit", "button"].indexOf(t.type) < 0));
    if (typing) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && t.form) { ev.preventDefault(); t.form.requestSubmit(); }
      if (ev.key === "Escape") { t.blur(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var handled = false;
    switch (ev.key) {
      case "j": handled = rows.length ? moveRow(1) : click("nav-next"); break;
      case "k": handled = rows.length ? moveRow(-1) : click("nav-prev"); break;
      case "c": handled = click("claim"); break;
      case "u": handled = click("release"); break;
      case "d": case "w": case "r": case "s": case "b": case "e": handled = chooseKind(ev.key); break;
      case "x": handled = focus("escalate-reason"); break;
      case "a": handled = focus("confirm-reason"); break;
      case "n": handled = focus("note"); break;
      case "v": revealNext(); handled = true; break;
      case "z": blurAll(); handled = true; break;
      case "q": window.location.href = base + "/queues"; handled = true; break;
      case "?": var help = document.getElementById("help"); if (help && help.showModal) { help.showModal(); handled = true; } break;
    }
    if (handled) { ev.preventDefault(); }
  });
})();
