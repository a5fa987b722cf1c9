// Incident page: a small map with the location and its uncertainty, and, for police, a live
// reload when another officer changes this incident.
window.gwIncidentDetailMap = function (map) {
  "use strict";
  var marker = JSON.parse(document.getElementById("incident-marker").textContent);
  if (window.gwMapBasics) window.gwMapBasics(map);
  if (marker.lat === null || marker.lon === null) return;
  var latlng = [marker.lat, marker.lon];
  L.circle(latlng, { radius: marker.radius || 0, color: "#d7191c", weight: 2, fillOpacity: 0.15 }).addTo(map);
  L.circleMarker(latlng, { radius: 7, color: "#d7191c", fillOpacity: 0.9 }).addTo(map);
  map.fitBounds(L.latLng(latlng).toBounds(2 * (marker.radius || 100)), { padding: [20, 20] });
};
(function () {
  "use strict";
  var idNode = document.getElementById("incident-id");
  if (!idNode) return;
  var id = JSON.parse(idNode.textContent);
  var revision = null;
  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/incidents/");
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.incident.id !== id) return;
      // Do not throw away a note being typed; otherwise show the other officer's change.
      var typing = document.activeElement && document.activeElement.tagName === "INPUT" && document.activeElement.value;
      if (!typing && (revision === null || message.incident.revision > revision)) window.location.reload();
    };
    socket.onclose = function (event) { if (event.code !== 4403) setTimeout(connect, 3000); };
  }
  fetch("/api/v1/incidents/" + id, { credentials: "same-origin" })
    .then(function (r) { return r.json(); })
    .then(function (body) { revision = body.revision; connect(); });
})();
