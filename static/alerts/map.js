// Live police incident map: Leaflet + markercluster, fed by /ws/incidents/ and the incidents API.
//
// Every incident carries a `revision`; whatever arrives (a websocket message or a catch-up
// fetch) replaces the copy on screen only if it is newer, so the order of arrival never matters.
// After a reconnect the page refetches everything updated since the last change it saw, so
// nothing that happened while the socket was down is lost.
(function () {
  "use strict";

  var FRESH_MS = 10 * 60 * 1000; // an unattended incident older than this turns from red to dark red
  var CATCH_UP_OVERLAP_MS = 5000; // re-read a little before the last change seen: commits race clocks

  var config = JSON.parse(document.getElementById("incident-map-config").textContent);
  var incidents = {}; // id -> {data, marker, circle, item}
  var lastSeen = null; // Date of the newest updated_at seen
  var map, cluster, circles, socket, retryDelay = 1000, connectedOnce = false;

  function setLive(state, text) {
    var badge = document.getElementById("live-status");
    badge.className = "badge " + state;
    badge.textContent = text;
    document.body.dataset.live = state;
  }

  function ageClass(data) {
    if (data.status === "closed") return "closed";
    if (data.status !== "new") return "active";
    var age = Date.now() - new Date(data.first_detected_at).getTime();
    return age < FRESH_MS ? "fresh" : "stale";
  }

  function fmtTime(iso) {
    var d = new Date(iso);
    return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function ago(iso) {
    var s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function popupContent(data) {
    var box = el("div", "gw-popup");
    box.appendChild(el("strong", null, "Possible gunfire"));
    box.appendChild(el("div", null, fmtTime(data.first_detected_at) + " (" + ago(data.first_detected_at) + ")"));
    box.appendChild(el("div", null, data.status_display + (data.disposition ? " · " + data.disposition.replace("_", " ") : "")));
    box.appendChild(el("div", null, data.shots + " shot(s), confidence " + data.max_confidence.toFixed(2) +
      ", " + data.device_count + " device(s)"));
    if (data.radius_m !== null) box.appendChild(el("div", "muted", "±" + Math.round(data.radius_m) + " m (" + data.location_method + ")"));
    var link = el("a", null, "Open incident");
    link.href = data.url;
    box.appendChild(link);
    return box;
  }

  function icon(data) {
    return L.divIcon({
      className: "gw-incident-icon gw-" + ageClass(data),
      html: "<span>" + (data.shots > 1 ? data.shots : "") + "</span>",
      iconSize: [24, 24],
      iconAnchor: [12, 12],
      popupAnchor: [0, -10],
    });
  }

  function listItem(entry) {
    var data = entry.data;
    var item = entry.item || el("li", "gw-incident");
    item.innerHTML = "";
    item.dataset.id = data.id;
    item.className = "gw-incident gw-" + ageClass(data);
    var head = el("div", "row between");
    head.appendChild(el("strong", null, fmtTime(data.first_detected_at)));
    head.appendChild(el("span", "badge gw-status-" + data.status, data.status_display));
    item.appendChild(head);
    item.appendChild(el("div", "muted", data.shots + " shot(s) · conf " + data.max_confidence.toFixed(2) + " · " +
      data.device_count + " device(s) · " + ago(data.first_detected_at)));
    return item;
  }

  function sortList() {
    var list = document.getElementById("incident-list");
    var items = Array.prototype.slice.call(list.children);
    items.sort(function (a, b) {
      return new Date(incidents[b.dataset.id].data.first_detected_at) - new Date(incidents[a.dataset.id].data.first_detected_at);
    });
    items.forEach(function (item) { list.appendChild(item); });
    document.getElementById("incident-count").textContent = items.length;
    document.getElementById("incident-empty").hidden = items.length > 0;
  }

  function upsert(data, isNew) {
    if (lastSeen === null || new Date(data.updated_at) > lastSeen) lastSeen = new Date(data.updated_at);
    var entry = incidents[data.id];
    if (entry && entry.data.revision >= data.revision) return; // an older copy: keep what we have
    var firstTime = !entry;
    entry = entry || {};
    entry.data = data;
    incidents[data.id] = entry;
    if (data.latitude !== null && data.longitude !== null) {
      var latlng = [data.latitude, data.longitude];
      if (!entry.marker) {
        entry.marker = L.marker(latlng, { icon: icon(data), title: "Incident " + data.id });
        entry.marker.incidentId = data.id;
        cluster.addLayer(entry.marker);
      } else {
        entry.marker.setLatLng(latlng);
        entry.marker.setIcon(icon(data));
        cluster.refreshClusters(entry.marker);
      }
      entry.marker.bindPopup(popupContent(data));
      if (!entry.circle) {
        entry.circle = L.circle(latlng, { radius: data.radius_m || 0, className: "gw-uncertainty gw-" + ageClass(data), weight: 1 });
        circles.addLayer(entry.circle);
      } else {
        entry.circle.setLatLng(latlng);
        entry.circle.setRadius(data.radius_m || 0);
        if (entry.circle._path) entry.circle._path.setAttribute("class", "leaflet-interactive gw-uncertainty gw-" + ageClass(data));
      }
    }
    entry.item = listItem(entry);
    if (firstTime) {
      entry.item.addEventListener("click", function () { focus(data.id); });
      document.getElementById("incident-list").appendChild(entry.item);
      if (isNew) {
        entry.item.classList.add("gw-flash");
        if (entry.marker) map.setView(entry.marker.getLatLng(), Math.max(map.getZoom(), 14));
      }
    }
    sortList();
  }

  function focus(id) {
    var entry = incidents[id];
    if (!entry || !entry.marker) return;
    cluster.zoomToShowLayer(entry.marker, function () { entry.marker.openPopup(); });
  }

  function fitToIncidents() {
    // Open incidents first: they are what an officer opens the map for.
    var all = Object.keys(incidents).map(function (id) { return incidents[id]; }).filter(function (e) { return e.marker; });
    var open = all.filter(function (e) { return e.data.status !== "closed"; });
    var shown = open.length ? open : all;
    if (shown.length === 1) map.setView(shown[0].marker.getLatLng(), 14);
    else if (shown.length > 1) map.fitBounds(L.latLngBounds(shown.map(function (e) { return e.marker.getLatLng(); })), { padding: [40, 40], maxZoom: 15 });
  }

  function refreshAges() {
    Object.keys(incidents).forEach(function (id) {
      var entry = incidents[id];
      if (entry.marker) entry.marker.setIcon(icon(entry.data));
      if (entry.circle && entry.circle._path) entry.circle._path.setAttribute("class", "leaflet-interactive gw-uncertainty gw-" + ageClass(entry.data));
      listItem(entry);
    });
  }

  function fetchPage(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (body) {
        body.results.forEach(function (data) { upsert(data, false); });
        if (body.next) return fetchPage(body.next);
      });
  }

  function catchUp() {
    var queries;
    if (lastSeen === null) {
      // First load: the recent past, plus anything still open however old it is.
      queries = [
        { since: new Date(Date.now() - config.hours * 3600 * 1000).toISOString() },
        { status: "new,acknowledged,en_route,on_scene" },
      ];
    } else {
      queries = [{ updated_after: new Date(lastSeen.getTime() - CATCH_UP_OVERLAP_MS).toISOString() }];
    }
    return Promise.all(queries.map(function (query) {
      query.page_size = "500";
      return fetchPage(config.api_url + "?" + new URLSearchParams(query).toString());
    })).catch(function (err) {
      console.warn("catch-up failed", err);
    });
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + config.ws_path);
    setLive("warn", connectedOnce ? "reconnecting…" : "connecting…");
    socket.onopen = function () {
      retryDelay = 1000;
      // Subscribe first, fetch second: anything committed in between arrives one way or the other.
      var first = !connectedOnce;
      connectedOnce = true;
      catchUp().then(function () {
        setLive("ok", "live");
        if (first) fitToIncidents();
      });
    };
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "incident.opened" || message.type === "incident.updated") {
        upsert(message.incident, message.type === "incident.opened");
      }
    };
    socket.onclose = function (event) {
      if (event.code === 4403) { setLive("bad", "not authorised — log in again"); return; }
      setLive("bad", "offline, retrying");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    };
  }

  window.gwIncidentMap = function (leafletMap) {
    map = leafletMap;
    // markercluster needs the map's own maxZoom; django-leaflet only puts one on the tile layer.
    if (map.options.maxZoom === undefined) map.options.maxZoom = 19;
    circles = L.layerGroup().addTo(map);
    cluster = L.markerClusterGroup({ maxClusterRadius: 40, spiderfyOnMaxZoom: true, showCoverageOnHover: true });
    map.addLayer(cluster);
    window.gwIncidents = incidents; // for the browser test and for debugging from the console
    connect();
    setInterval(refreshAges, 15000);
  };
})();
