// Shared by every GunWatch map: a metric scale, and an honest notice when the tiles cannot load
// (no internet, tile server down). Without tiles the map still shows what matters — incidents,
// circles and devices — on a plain background, and stops crediting a tile source it is not showing.
(function () {
  "use strict";
  var FAILURES_BEFORE_NOTICE = 3;

  window.gwMapBasics = function (map, options) {
    options = options || {};
    // django-leaflet adds a scale unless LEAFLET_CONFIG says otherwise; never two.
    if (!map.getContainer().querySelector(".leaflet-control-scale")) L.control.scale({ imperial: false }).addTo(map);
    var tileLayers = [];
    map.eachLayer(function (layer) { if (layer instanceof L.TileLayer) tileLayers.push(layer); });
    var failures = 0, loaded = 0, shown = false;

    function showNotice() {
      if (shown || loaded > 0) return;
      shown = true;
      var container = map.getContainer();
      container.classList.add("gw-no-tiles");
      document.body.dataset.tiles = "failed";
      tileLayers.forEach(function (layer) {
        if (map.attributionControl && layer.getAttribution && layer.getAttribution()) {
          map.attributionControl.removeAttribution(layer.getAttribution());
        }
      });
      var Notice = L.Control.extend({
        options: { position: "topright" },
        onAdd: function () {
          var box = L.DomUtil.create("div", "gw-tiles-notice");
          box.setAttribute("role", "status");
          box.innerHTML = "<strong>Map tiles unavailable</strong><br>Streets are not shown (offline or the tile " +
            "server is unreachable). Incidents" + (options.devices ? ", devices" : "") + " and distances are accurate.";
          L.DomEvent.disableClickPropagation(box);
          return box;
        },
      });
      new Notice().addTo(map);
    }

    tileLayers.forEach(function (layer) {
      layer.on("tileload", function () { loaded += 1; });
      layer.on("tileerror", function () {
        failures += 1;
        if (failures >= FAILURES_BEFORE_NOTICE) showNotice();
      });
    });
    if (tileLayers.length === 0) showNotice();
    return { noticeShown: function () { return shown; } };
  };
})();
