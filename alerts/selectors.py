"""Read-side queries for alerts: station routing and who may see which incidents."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db.models import Q, QuerySet

from accounts.models import User
from alerts.models import Incident, PoliceStation
from core.geo import bounding_box, haversine_m, point_in_geojson

# Widening search rings for the nearest stations: most incidents find theirs in the first one,
# so the prefilter usually reads a handful of rows instead of the whole table.
NEAREST_SEARCH_RADII_M = (10_000.0, 50_000.0, 250_000.0, 1_000_000.0)


def stations_covering(lat: float, lon: float) -> list[PoliceStation]:
    """Active stations whose jurisdiction (radius or polygon) contains the point."""
    found: list[PoliceStation] = []
    for station in PoliceStation.objects.filter(is_active=True, jurisdiction_geojson__isnull=False):
        if isinstance(station.jurisdiction_geojson, dict) and point_in_geojson(
            lat, lon, station.jurisdiction_geojson
        ):
            found.append(station)
    radius_stations = PoliceStation.objects.filter(
        is_active=True, jurisdiction_geojson__isnull=True, jurisdiction_radius_km__gt=0
    )
    for station in radius_stations:
        if haversine_m(lat, lon, station.latitude, station.longitude) <= station.jurisdiction_radius_km * 1000:  # type: ignore[operator]  # the query keeps radius > 0
            found.append(station)
    return found


def stations_nearest(lat: float, lon: float, limit: int) -> list[PoliceStation]:
    """The `limit` nearest active stations by great-circle distance.

    A latitude/longitude bounding box prefilters in SQL (plain comparisons, so SQLite and
    PostgreSQL behave alike) and haversine ranks in Python; the box widens until enough
    stations are inside it.
    """
    if limit <= 0:
        return []
    active = PoliceStation.objects.filter(is_active=True)
    candidates: list[PoliceStation] = []
    for radius in NEAREST_SEARCH_RADII_M:
        min_lat, min_lon, max_lat, max_lon = bounding_box(lat, lon, radius)
        boxed = list(
            active.filter(latitude__range=(min_lat, max_lat), longitude__range=(min_lon, max_lon))
        )
        # Only stations inside the circle are sure to beat anything outside the box.
        inside = [s for s in boxed if haversine_m(lat, lon, s.latitude, s.longitude) <= radius]
        if len(inside) >= limit:
            candidates = inside
            break
    else:
        candidates = list(active)
    candidates.sort(key=lambda s: haversine_m(lat, lon, s.latitude, s.longitude))
    return candidates[:limit]


def stations_for_point(lat: float, lon: float) -> list[PoliceStation]:
    """Where an incident at (lat, lon) is routed: its jurisdictions, else the nearest stations."""
    return stations_covering(lat, lon) or stations_nearest(lat, lon, settings.ALERT_NEAREST_STATIONS)


def police_see_all(user: User) -> bool:
    """The see-all rule: administrators see every incident, and so does every officer when
    POLICE_SEE_ALL_INCIDENTS is on; other officers see the incidents routed to their station."""
    return user.role == User.Role.ADMIN or user.is_superuser or settings.POLICE_SEE_ALL_INCIDENTS


def incidents_for_police(user: User) -> QuerySet[Incident]:
    qs = Incident.objects.all()
    if police_see_all(user):
        return qs
    return qs.filter(stations=user.police_station_id)


def incidents_for_owner(user: User) -> QuerySet[Incident]:
    return Incident.objects.filter(detections__device__owner=user).distinct()


def incidents_visible_to(user: User, *, police: bool) -> QuerySet[Incident]:
    """The one visibility rule for incidents: police (``has_police_access``) by station or see-all,
    owners the incidents their devices took part in. Pages, the API and the websocket all use it."""
    return incidents_for_police(user) if police else incidents_for_owner(user)


def station_ids_see_incident(station_ids: Iterable[int], user: User) -> bool:
    """``incidents_for_police`` for one message: may this officer see an incident routed to these stations?"""
    if police_see_all(user):
        return True
    return user.police_station_id in set(station_ids)


def incidents_in_bbox(qs: QuerySet[Incident], bbox: tuple[float, float, float, float]) -> QuerySet[Incident]:
    """Filter by (min_lon, min_lat, max_lon, max_lat), the order GeoJSON and Leaflet's toBBoxString use."""
    min_lon, min_lat, max_lon, max_lat = bbox
    lon_filter = Q(longitude__range=(min_lon, max_lon))
    if min_lon > max_lon:  # the box crosses the antimeridian
        lon_filter = Q(longitude__gte=min_lon) | Q(longitude__lte=max_lon)
    return qs.filter(lon_filter, latitude__range=(min_lat, max_lat))
