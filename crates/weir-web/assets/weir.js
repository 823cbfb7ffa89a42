// Weir's only script: live updates over server-sent events.
// A page marked data-live reloads its content when the run history changes
// (the server sends one small event per change; nothing polls). A log with
// data-tail follows its attempt's log as it is written.
(function () {
  "use strict";
  var body = document.body;
  if (body.dataset.live && window.EventSource) {
    var base = body.dataset.base || "";
    var first = true;
    var pending = null;
    var events = new EventSource(base + "/events");
    events.addEventListener("change", function () {
      if (first) { first = false; return; }
      if (pending) return;
      // Several changes close together refresh once.
      pending = setTimeout(function () {
        pending = null;
        fetch(location.href, { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) {
            if (!html) return;
            var doc = new DOMParser().parseFromString(html, "text/html");
            var fresh = doc.querySelector("main");
            var main = document.querySelector("main");
            if (fresh && main) {
              var scrolls = Array.prototype.map.call(main.querySelectorAll(".scroll"), function (e) { return [e.scrollTop, e.scrollLeft]; });
              main.replaceWith(fresh);
              Array.prototype.forEach.call(fresh.querySelectorAll(".scroll"), function (e, i) {
                if (scrolls[i]) { e.scrollTop = scrolls[i][0]; e.scrollLeft = scrolls[i][1]; }
              });
            }
          })
          .catch(function () {});
      }, 300);
    });
  }
  var log = document.getElementById("log");
  if (log && log.dataset.tail && window.EventSource) {
    var tail = new EventSource(log.dataset.tail);
    tail.addEventListener("log", function (e) {
      var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(e.data.endsWith("\n") ? e.data : e.data + "\n"));
      if (atEnd) log.scrollTop = log.scrollHeight;
    });
    tail.addEventListener("end", function () {
      tail.close();
      var state = document.getElementById("attempt-state");
      if (state) state.textContent = "ended";
    });
  }
})();
