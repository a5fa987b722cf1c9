"""Read-side queries for alerts: station routing and who may see which incidents."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from statistics import median
from typing import Any

from django.conf import settings
from django.db.models import Min, Prefetch, Q, QuerySet

from accounts.models import User
from alerts.models import WAITING_FOR_REVIEW, Detection, Incident, IncidentEvent, PoliceStation
from core.geo import bounding_box, haversine_m, point_in_geojson

# Widening search rings for the nearest stations: most incidents find theirs in the first one,
# so the prefilter usually reads a handful of rows instead of the whole table.
NEAREST_SEARCH_RADII_M = (10_000.0, 50_000.0, 250_000.0, 1_000_000.0)


def stations_covering(lat: float, lon: float) -> list[PoliceStation]:
    """Active stations whose jurisdiction (radius or polygon) contains the point."""
    found: list[PoliceStation] = []
    for station in PoliceStation.objects.filter(is_active=True, jurisdiction_geojson__isnull=False):
        if isinstance(station.jurisdiction_geojson, dict) and point_in_geojson(lat, lon, station.jurisdiction_geojson):
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
        boxed = list(active.filter(latitude__range=(min_lat, max_lat), longitude__range=(min_lon, max_lon)))
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
    """Dispatched incidents only: one waiting for review, held or dismissed is not police business yet."""
    qs = Incident.objects.filter(dispatch=Incident.Dispatch.DISPATCHED)
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


# --- Outcomes (issue 11): how often an alert was right, per model version, station and device -------

OUTCOME_DIMENSIONS = ("model", "station", "device")
OUTCOME_COLUMNS = (
    "key",
    "incidents",
    "dispatched",
    "confirmed_gunfire",
    "false_alarms",
    "other_sources",
    "no_evidence",
    "dismissed_in_review",
    "unreviewed",
    "open",
    "confirmed_share",
    "median_review_s",
    "median_ack_s",
)


@dataclass
class OutcomeRow:
    """One model version's, station's or device's record. ``confirmed_share`` is confirmed gunfire over
    every incident with a verdict (confirmed, false alarm, other source, no evidence, dismissed)."""

    key: str
    incidents: int = 0
    dispatched: int = 0
    confirmed_gunfire: int = 0
    false_alarms: int = 0
    other_sources: int = 0
    no_evidence: int = 0
    dismissed_in_review: int = 0
    unreviewed: int = 0
    open: int = 0
    review_s: list[float] = field(default_factory=list)
    ack_s: list[float] = field(default_factory=list)

    @property
    def confirmed_share(self) -> float | None:
        decided = (
            self.confirmed_gunfire
            + self.false_alarms
            + self.other_sources
            + self.no_evidence
            + self.dismissed_in_review
        )
        return round(self.confirmed_gunfire / decided, 3) if decided else None

    @property
    def median_review_s(self) -> float | None:
        return round(median(self.review_s), 1) if self.review_s else None

    @property
    def median_ack_s(self) -> float | None:
        return round(median(self.ack_s), 1) if self.ack_s else None

    def as_dict(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in OUTCOME_COLUMNS}

    def count(self, incident: Incident, acknowledged_at: datetime | None) -> None:
        self.incidents += 1
        if incident.dispatch == Incident.Dispatch.DISMISSED:
            self.dismissed_in_review += 1
        elif incident.disposition == Incident.Disposition.CONFIRMED_GUNFIRE:
            self.confirmed_gunfire += 1
        elif incident.disposition == Incident.Disposition.FALSE_ALARM:
            self.false_alarms += 1
        elif incident.disposition == Incident.Disposition.OTHER_SOURCE:
            self.other_sources += 1
        elif incident.disposition == Incident.Disposition.NO_EVIDENCE:
            self.no_evidence += 1
        else:
            self.open += 1
        if incident.dispatch == Incident.Dispatch.DISPATCHED:
            self.dispatched += 1
        if incident.dispatch_reason == Incident.DispatchReason.UNREVIEWED:
            self.unreviewed += 1
        if incident.reviewed_at is not None:
            self.review_s.append((incident.reviewed_at - incident.opened_at).total_seconds())
        if acknowledged_at is not None:
            start = incident.dispatched_at or incident.opened_at
            self.ack_s.append(max((acknowledged_at - start).total_seconds(), 0.0))


def outcomes(by: str, *, since: datetime | None = None, until: datetime | None = None) -> list[OutcomeRow]:
    """Per model version, station or device: incidents and what became of them, time to review and to
    acknowledge. An incident heard by two devices (or routed to two stations) counts for each."""
    if by not in OUTCOME_DIMENSIONS:
        raise ValueError(f"by must be one of {', '.join(OUTCOME_DIMENSIONS)}")
    incidents = Incident.objects.all()
    if since is not None:
        incidents = incidents.filter(first_detected_at__gte=since)
    if until is not None:
        incidents = incidents.filter(first_detected_at__lt=until)
    incidents = incidents.prefetch_related(
        "stations",
        Prefetch(
            "detections",
            queryset=Detection.objects.select_related("device", "classification__model_version").only(
                "incident_id",
                "device__name",
                "device__code",
                "classification__model_version__name",
                "classification__model_version__version",
            ),
        ),
    )
    acks = dict(
        IncidentEvent.objects.filter(kind=IncidentEvent.Kind.ACKNOWLEDGED, incident__in=incidents.values("pk"))
        .values_list("incident_id")
        .annotate(first=Min("at"))
        .values_list("incident_id", "first")
    )
    rows: dict[str, OutcomeRow] = {}
    for incident in incidents:
        if by == "station":
            keys = {station.name for station in incident.stations.all()} or {"(no station)"}
        elif by == "device":
            keys = {d.device.name for d in incident.detections.all()}
        else:
            keys = {d.classification.model_version.label for d in incident.detections.all()}
        for key in keys or {"(none)"}:
            rows.setdefault(key, OutcomeRow(key)).count(incident, acks.get(incident.pk))
    return sorted(rows.values(), key=lambda row: (-row.incidents, row.key))


def review_queue_incidents() -> list[Incident]:
    """The 50 most urgent incidents waiting for a reviewer, each with its detections (``queue_detections``)."""
    incidents = list(
        Incident.objects.filter(dispatch__in=WAITING_FOR_REVIEW)
        .prefetch_related("stations")
        .order_by("review_deadline_at", "first_detected_at")[:50]
    )
    detections = Detection.objects.filter(incident__in=incidents).select_related("device", "clip").order_by("event_at")
    by_incident: dict[int, list[Detection]] = {}
    for detection in detections:
        by_incident.setdefault(detection.incident_id, []).append(detection)
    for incident in incidents:
        incident.queue_detections = by_incident.get(incident.pk, [])  # type: ignore[attr-defined]
    return incidents
