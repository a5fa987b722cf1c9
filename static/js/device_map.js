// Plots the owner's devices on the dashboard map, green when online, red when offline.
window.gwDeviceMap = function (map) {
  var data = JSON.parse(document.getElementById("device-markers").textContent);
  var bounds = [];
  data.forEach(function (d) {
    var marker = L.circleMarker([d.lat, d.lon], {
      radius: 8, weight: 2, color: d.online ? "#1b7f3b" : "#b3261e", fillOpacity: 0.6,
    }).addTo(map);
    var link = document.createElement("a");
    link.href = d.url;
    link.textContent = d.name + " (" + d.kind + ", " + (d.online ? "online" : "offline") + ")";
    marker.bindPopup(link);
    bounds.push([d.lat, d.lon]);
  });
  if (bounds.length === 1) { map.setView(bounds[0], 14); }
  else if (bounds.length > 1) { map.fitBounds(bounds, { padding: [30, 30] }); }
};
