// The owner's dashboard: devices on a map (green online, red offline, grey never paired or no
// heartbeat yet), and a live refresh of the table, counts and markers without reloading the page.
(function () {
  "use strict";
  var COLOURS = { online: "#1b7f3b", offline: "#b3261e", disabled: "#b3261e", no_heartbeat: "#9a6700",
                  awaiting_pairing: "#6b7785" };
  var map = null, layer = null, fitted = false;

  function draw(data) {
    if (!map) return;
    layer.clearLayers();
    var bounds = [];
    data.forEach(function (d) {
      var marker = L.circleMarker([d.lat, d.lon], {
        radius: 8, weight: 2, color: COLOURS[d.health] || "#6b7785", fillOpacity: 0.6,
      }).addTo(layer);
      var link = document.createElement("a");
      link.href = d.url;
      link.textContent = d.name + " (" + d.kind + ", " + d.label + ")";
      marker.bindPopup(link);
      bounds.push([d.lat, d.lon]);
    });
    if (fitted) return;
    fitted = true;
    if (bounds.length === 1) { map.setView(bounds[0], 14); }
    else if (bounds.length > 1) { map.fitBounds(bounds, { padding: [30, 30] }); }
  }

  window.gwDeviceMap = function (leafletMap) {
    map = leafletMap;
    layer = L.layerGroup().addTo(map);
    if (window.gwMapBasics) window.gwMapBasics(map, { devices: true });
    else L.control.scale({ imperial: false }).addTo(map);
    draw(JSON.parse(document.getElementById("device-markers").textContent));
  };

  function refresh() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { if (!response.ok) throw new Error("HTTP " + response.status); return response.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("device-health");
        var current = document.getElementById("device-health");
        if (!fresh || !current) return;
        // Swap the counts and the table; keep the map element (Leaflet owns it) and redraw markers.
        ["device-counts", "device-table"].forEach(function (id) {
          var a = document.getElementById(id), b = doc.getElementById(id);
          if (a && b) a.replaceWith(b);
        });
        var stamp = doc.getElementById("refreshed-at");
        if (stamp && document.getElementById("refreshed-at")) document.getElementById("refreshed-at").replaceWith(stamp);
        var markers = doc.getElementById("device-markers");
        if (markers) draw(JSON.parse(markers.textContent));
        document.body.dataset.refreshed = String(Date.now());
      })
      .catch(function (err) { console.warn("dashboard refresh failed", err); });
  }

  var box = document.getElementById("device-health");
  if (box) setInterval(refresh, 1000 * Number(box.dataset.refreshS || 30));
  window.gwDashboardRefresh = refresh; // for the browser test
})();
