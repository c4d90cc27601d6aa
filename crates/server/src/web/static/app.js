// elevate: light progressive enhancement. Every page works without it.
// - <time datetime> shows the viewer's local time (UTC stays in the title);
// - .countdown[data-ends-at] ticks down;
// - a page with [data-watch] reloads when what it shows changes.
(function () {
  'use strict';
  var fmt = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit'
  });
  function localTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (el) {
      var d = new Date(el.getAttribute('datetime'));
      if (!isNaN(d)) { el.textContent = fmt.format(d); }
    });
  }
  function human(secs) {
    if (secs <= 0) { return '0s'; }
    var d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600),
        m = Math.floor(secs % 3600 / 60), s = secs % 60, out = [];
    if (d) { out.push(d + 'd'); }
    if (h) { out.push(h + 'h'); }
    if (m && !d) { out.push(m + 'm'); }
    if (s && !d && !h) { out.push(s + 's'); }
    return out.join(' ');
  }
  function tick() {
    document.querySelectorAll('.countdown[data-ends-at]').forEach(function (el) {
      var left = Math.round((new Date(el.getAttribute('data-ends-at')) - Date.now()) / 1000);
      el.textContent = left > 0 ? human(left) + ' left' : 'ending';
    });
  }
  // Reload when the server's fingerprint of what the page shows changes
  // (a state, an approval), so nobody acts on a stale page.
  function watch() {
    var el = document.querySelector('[data-watch]');
    if (!el) { return; }
    var url = el.getAttribute('data-watch'), seen = el.getAttribute('data-fingerprint');
    var timer = setInterval(function () {
      if (document.hidden) { return; }
      fetch(url, { credentials: 'same-origin', redirect: 'error', headers: { 'Accept': 'text/plain' } })
        .then(function (r) {
          // Signed out, or the request is gone from view: stop asking.
          if (r.status === 401 || r.status === 403 || r.status === 404) { clearInterval(timer); }
          return r.ok ? r.text() : null;
        })
        .then(function (t) {
          var busy = document.activeElement && /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
          if (t !== null && t.trim() !== seen && !busy) { window.location.reload(); }
        })
        .catch(function () {});
    }, 3000);
  }
  // Confirmation for buttons marked data-confirm (revoke, break-glass).
  document.addEventListener('submit', function (ev) {
    var b = ev.submitter;
    var msg = (b && b.getAttribute('data-confirm')) || ev.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) { ev.preventDefault(); }
  });
  // One-time notices ("request created", "approved") belong to the
  // action that led here, not to a later reload of the page.
  function forgetNotices() {
    var u = new URL(window.location.href), changed = false;
    var keys = ['created', 'done', 'revoked'];
    if (u.searchParams.has('done')) { keys.push('id'); }
    keys.forEach(function (k) {
      if (u.searchParams.has(k)) { u.searchParams.delete(k); changed = true; }
    });
    if (changed) { window.history.replaceState(null, '', u.pathname + u.search + u.hash); }
  }
  document.addEventListener('DOMContentLoaded', function () {
    forgetNotices();
    localTimes(document);
    tick();
    setInterval(tick, 1000);
    watch();
  });
})();
// The browser's time zone, for start times typed in local time.
document.addEventListener('DOMContentLoaded', function () {
  document.querySelectorAll('input[name=tz_offset]').forEach(function (el) {
    el.value = String(-new Date().getTimezoneOffset());
  });
});
