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
  var map, cluster, circles, devices, socket, retryDelay = 1000, connectedOnce = false;
  var unseen = 0, baseTitle = document.title;
  var timeFormat = new Intl.DateTimeFormat("en-CA", {
    timeZone: config.time_zone || "UTC", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  });

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

  // The pages' one format, "2026-12-07 04:18:27 UTC", in the server's TIME_ZONE.
  function fmtTime(iso) {
    var parts = {};
    timeFormat.formatToParts(new Date(iso)).forEach(function (p) { parts[p.type] = p.value; });
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + ":" +
      parts.second + " " + parts.timeZoneName;
  }

  function place(data, target) {
    // Coordinates at once; the address replaces them when a geocoder is configured and answers.
    if (data.latitude === null || data.longitude === null) { target.textContent = "location unknown"; return; }
    var coords = data.latitude.toFixed(5) + ", " + data.longitude.toFixed(5);
    target.textContent = coords;
    if (!config.address_url) return;
    if (data._address) { target.textContent = data._address; target.title = coords; return; }
    fetch(config.address_url + "?" + new URLSearchParams({ lat: data.latitude, lon: data.longitude }), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (body && body.address) { data._address = body.address; target.textContent = body.address; target.title = coords; }
      })
      .catch(function () {});
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
    place(data, box.appendChild(el("div", "gw-place")));
    box.appendChild(el("div", null, fmtTime(data.first_detected_at) + " (" + ago(data.first_detected_at) + ")"));
    box.appendChild(el("div", null, data.status_display + (data.disposition ? " · " + data.disposition.replace("_", " ") : "")));
    box.appendChild(el("div", null, data.shots + " shot(s), confidence " + data.max_confidence.toFixed(2) +
      ", " + data.device_count + " device(s)"));
    if (data.radius_m !== null) box.appendChild(el("div", "muted", "±" + Math.round(data.radius_m) + " m (" + data.location_method + ")"));
    if (data.evidence_summary) box.appendChild(el("div", "gw-evidence", data.evidence_summary));
    if (data.dispatch_reason === "unreviewed") box.appendChild(el("div", "badge gw-unreviewed", "Unreviewed"));
    else if (data.dispatch_reason === "reviewed") box.appendChild(el("div", "badge", "Confirmed in review"));
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
    place(data, item.appendChild(el("div", "gw-place")));
    item.appendChild(el("div", "muted", data.shots + " shot(s) · conf " + data.max_confidence.toFixed(2) + " · " +
      data.device_count + " device(s) · " + ago(data.first_detected_at)));
    if (data.evidence_summary) item.appendChild(el("div", "gw-evidence", data.evidence_summary));
    if (data.dispatch_reason === "unreviewed") item.appendChild(el("span", "badge gw-unreviewed", "Unreviewed"));
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
        // Tell, don't yank: the view stays where the officer put it; a cue and the list say what is new.
        entry.item.classList.add("gw-flash");
        announce(data);
      }
    }
    sortList();
  }

  function focus(id) {
    var entry = incidents[id];
    if (!entry || !entry.marker) return;
    cluster.zoomToShowLayer(entry.marker, function () { entry.marker.openPopup(); });
  }

  function muted() { return window.localStorage.getItem("gw-mute") === "1"; }

  function beep() {
    if (muted()) return;
    try {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      var ctx = beep.ctx || (beep.ctx = new Ctx());
      [0, 0.25].forEach(function (offset) {
        var osc = ctx.createOscillator(), gain = ctx.createGain();
        osc.type = "square";
        osc.frequency.value = 880;
        gain.gain.setValueAtTime(0.08, ctx.currentTime + offset);
        gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + offset + 0.18);
        osc.connect(gain).connect(ctx.destination);
        osc.start(ctx.currentTime + offset);
        osc.stop(ctx.currentTime + offset + 0.2);
      });
      document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
    } catch (err) { /* no audio device, or the browser wants a click first: the banner still shows */ }
  }

  function announce(data) {
    unseen += 1;
    document.title = "(" + unseen + ") " + baseTitle;
    var banner = document.getElementById("new-incident-banner");
    banner.hidden = false;
    banner.querySelector("span").textContent = "New incident " + fmtTime(data.first_detected_at) +
      (unseen > 1 ? " (" + unseen + " new)" : "");
    banner.dataset.id = data.id;
    beep();
  }

  function clearAnnouncement() {
    unseen = 0;
    document.title = baseTitle;
    document.getElementById("new-incident-banner").hidden = true;
  }

  function setupControls() {
    var banner = document.getElementById("new-incident-banner");
    banner.querySelector("button.show").addEventListener("click", function () { focus(banner.dataset.id); clearAnnouncement(); });
    banner.querySelector("button.dismiss").addEventListener("click", clearAnnouncement);
    var mute = document.getElementById("mute-toggle");
    function paint() {
      mute.textContent = muted() ? "Sound off" : "Sound on";
      mute.setAttribute("aria-pressed", muted() ? "true" : "false");
    }
    mute.addEventListener("click", function () {
      window.localStorage.setItem("gw-mute", muted() ? "0" : "1");
      paint();
    });
    paint();
    var FitControl = L.Control.extend({
      options: { position: "topleft" },
      onAdd: function () {
        var button = L.DomUtil.create("button", "gw-fit-control");
        button.type = "button";
        button.title = "Fit all incidents";
        button.setAttribute("aria-label", "Fit all incidents");
        button.textContent = "⤢ All incidents";
        L.DomEvent.disableClickPropagation(button);
        L.DomEvent.on(button, "click", function () { fitToIncidents(true); clearAnnouncement(); });
        return button;
      },
    });
    new FitControl().addTo(map);
  }

  function loadDevices() {
    fetch(config.devices_url, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (body) {
        devices.clearLayers();
        body.devices.forEach(function (d) {
          L.circleMarker([d.lat, d.lon], {
            radius: 5, weight: 1.5, color: d.online ? "#1f3a5f" : "#6b7785", fillColor: d.online ? "#5b8bd9" : "#ffffff",
            fillOpacity: d.online ? 0.8 : 0.9, dashArray: d.online ? null : "2 2", className: d.online ? "gw-device-online" : "gw-device-offline",
          }).bindTooltip((d.kind === "vehicle" ? "Vehicle" : "Home") + " device, " + (d.online ? "online" : "offline")).addTo(devices);
        });
        var label = document.getElementById("device-layer-count");
        if (label) label.textContent = body.online + " online, " + body.offline + " offline";
      })
      .catch(function (err) { console.warn("device layer failed", err); });
  }

  function clusterIcon(group) {
    // Red when anything inside is new, blue when all are being worked, grey when all are closed;
    // never markercluster's default green, which reads as "safe".
    var children = group.getAllChildMarkers(), worst = "closed";
    var rank = { fresh: 3, stale: 2, active: 1, closed: 0 };
    children.forEach(function (m) {
      var entry = incidents[m.incidentId];
      var cls = entry ? ageClass(entry.data) : "closed";
      if (rank[cls] > rank[worst]) worst = cls;
    });
    return L.divIcon({
      html: "<span>" + children.length + "</span>", className: "gw-cluster gw-" + worst, iconSize: [34, 34],
    });
  }

  function fitToIncidents(all) {
    // Open incidents first: they are what an officer opens the map for.
    var everything = Object.keys(incidents).map(function (id) { return incidents[id]; }).filter(function (e) { return e.marker; });
    var open = everything.filter(function (e) { return e.data.status !== "closed"; });
    var shown = open.length && all !== true ? open : everything;
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
    if (window.gwMapBasics) window.gwMapBasics(map, { devices: true });
    circles = L.layerGroup().addTo(map);
    devices = L.layerGroup().addTo(map);
    cluster = L.markerClusterGroup({ maxClusterRadius: 40, spiderfyOnMaxZoom: true, showCoverageOnHover: true,
                                     iconCreateFunction: clusterIcon });
    map.addLayer(cluster);
    L.control.layers(null, {
      "Incidents": cluster, "Uncertainty circles": circles,
      "Devices (<span id=\"device-layer-count\">…</span>)": devices,
    }, { collapsed: window.innerWidth < 640, position: "topright" }).addTo(map);
    setupControls();
    loadDevices();
    setInterval(loadDevices, 60000);
    window.gwIncidents = incidents; // for the browser test and for debugging from the console
    window.gwMap = map;
    connect();
    setInterval(refreshAges, 15000);
  };
})();
