// The live review queue: a websocket says something changed; the page re-reads the items and merges them,
// adding new incidents and removing decided ones, without touching an item a reviewer is listening to.
(function () {
  "use strict";
  var container = document.getElementById("review-items");
  var live = document.getElementById("review-live");
  if (!container) return;

  function wirePlay(root) {
    root.querySelectorAll(".review-play").forEach(function (button) {
      if (button.dataset.wired) return;
      button.dataset.wired = "1";
      button.addEventListener("click", function () {
        var audio = button.parentElement.querySelector("audio");
        if (!audio) return;
        audio.currentTime = 0;
        var played = audio.play();
        if (played && played.catch) played.catch(function () {});
        audio.closest(".review-clip").dataset.played = "1";
      });
    });
  }

  function tickDeadlines() {
    container.querySelectorAll(".review-deadline").forEach(function (badge) {
      var left = Math.round((new Date(badge.dataset.deadline) - Date.now()) / 1000);
      badge.textContent = left > 0 ? "dispatched unreviewed in " + left + " s" : "deadline passed: dispatching unreviewed";
    });
  }

  function refresh() {
    fetch(container.dataset.itemsUrl, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        var fresh = document.createElement("div");
        fresh.innerHTML = html;
        var wanted = {};
        fresh.querySelectorAll(".review-item").forEach(function (item) { wanted[item.dataset.code] = item; });
        container.querySelectorAll(".review-item").forEach(function (item) {
          var code = item.dataset.code;
          if (!wanted[code]) item.remove();
          else {
            var text = wanted[code].querySelector(".review-evidence");
            if (text) item.querySelector(".review-evidence").textContent = text.textContent;
            delete wanted[code];
          }
        });
        var empty = container.querySelector(".review-empty");
        Object.keys(wanted).forEach(function (code) {
          if (empty) { empty.remove(); empty = null; }
          container.appendChild(wanted[code]);
        });
        if (!container.querySelector(".review-item") && !container.querySelector(".review-empty")) {
          var none = document.createElement("p");
          none.className = "muted review-empty";
          none.textContent = "Nothing waiting for review.";
          container.appendChild(none);
        }
        wirePlay(container);
        tickDeadlines();
      })
      .catch(function () {});
  }

  function connect(delay) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/ws/review/");
    socket.onopen = function () {
      live.textContent = "live";
      live.dataset.state = "live";
      refresh(); // catch up on anything that changed while connecting
    };
    socket.onmessage = function () { refresh(); };
    socket.onclose = function () {
      live.textContent = "reconnecting…";
      live.dataset.state = "reconnecting";
      setTimeout(function () { connect(Math.min((delay || 1000) * 2, 15000)); }, delay || 1000);
    };
  }

  wirePlay(container);
  tickDeadlines();
  setInterval(tickDeadlines, 1000);
  setInterval(refresh, 15000); // a backstop for a missed message
  connect(1000);
})();
