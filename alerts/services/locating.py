"""Where an incident is: its aggregates, its location from the same-shot group, its stations.

Called inside the joining transaction, on a locked (or new) incident row.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import Max, Min, Sum

from alerts.models import Detection, Incident, IncidentEvent, PoliceStation
from alerts.selectors import stations_for_point
from alerts.services.timeline import incident_event_add
from core.geo import SPEED_OF_SOUND_M_S, Observation, could_be_same_event, locate
from detection.models import Clip

# Timing uncertainty per clock source for TDOA: GPS/PPS-disciplined clocks are good to about a
# millisecond, NTP over the internet to about ten.
CLOCK_SIGMA_S = {"gps": 0.002, "ntp": 0.010}


def observation(lat: float, lon: float, at: datetime, accuracy_m: float) -> Observation:
    return Observation(lat=lat, lon=lon, t=at.timestamp(), gps_accuracy_m=accuracy_m)


def _same_shot_group(detections: list[Detection]) -> list[Detection]:
    """Each device's earliest detection that one shot, the incident's first, can explain.

    Follow-up shots are left out: TDOA must compare arrival times of the same shot.
    """
    earliest: dict[int, Detection] = {}
    for detection in sorted(detections, key=lambda d: d.event_at):
        if detection.has_position:
            earliest.setdefault(detection.device_id, detection)
    group = sorted(earliest.values(), key=lambda d: d.event_at)
    if not group:
        return []
    first = group[0]
    anchor = observation(first.latitude, first.longitude, first.event_at, first.accuracy_m)  # type: ignore[arg-type]  # detections with a position only
    return [first] + [
        d
        for d in group[1:]
        if could_be_same_event(
            anchor,
            observation(d.latitude, d.longitude, d.event_at, d.accuracy_m),  # type: ignore[arg-type]  # as above
            speed_of_sound=SPEED_OF_SOUND_M_S,
            hearing_range_m=settings.ALERT_HEARING_RANGE_M,
            slack_s=settings.ALERT_JOIN_SLACK_S,
        )
    ]


def _estimate(group: list[Detection]) -> tuple[float, float, float, str, float | None]:
    hearing = settings.ALERT_HEARING_RANGE_M
    observations = [
        observation(d.latitude, d.longitude, d.event_at, d.accuracy_m)  # type: ignore[arg-type]  # as above
        for d in group
    ]
    synced = all(d.clock_source in settings.ALERT_TDOA_CLOCK_SOURCES for d in group)
    if len(group) >= 3 and synced:
        sigma = max(CLOCK_SIGMA_S.get(d.clock_source, 0.010) for d in group)
        estimate = locate(
            observations, speed_of_sound=SPEED_OF_SOUND_M_S, hearing_range_m=hearing, timing_sigma_s=sigma
        )
        return estimate.lat, estimate.lon, estimate.radius_m, estimate.method, estimate.residual_m
    if len(group) >= 2 and not synced:
        # Unsynchronised clocks say nothing about who heard it first: the plain centroid, with the
        # radius that bounds every point all devices could hear.
        lat = sum(o.lat for o in observations) / len(observations)
        lon = sum(o.lon for o in observations) / len(observations)
        radius = hearing + max(o.gps_accuracy_m for o in observations)
        return lat, lon, radius, Incident.LocationMethod.CENTROID, None
    estimate = locate(observations, speed_of_sound=SPEED_OF_SOUND_M_S, hearing_range_m=hearing)
    return estimate.lat, estimate.lon, estimate.radius_m, estimate.method, estimate.residual_m


def incident_refresh(incident: Incident) -> bool:
    """Recompute the incident's aggregates and location; True when the location changed.

    Reads per-device aggregates and each device's earliest detection, not every detection: a
    long burst of follow-ups (a fireworks night) must not make each new one slower than the last.
    """
    per_device = list(
        Detection.objects.filter(incident=incident)
        .values("device_id")
        .annotate(shots=Sum("shots"), first=Min("event_at"), last=Max("event_at"), best=Max("score"))
    )
    firsts = {(row["device_id"], row["first"]) for row in per_device}
    earliest = [
        d
        for d in Detection.objects.filter(incident=incident, event_at__in={first for _, first in firsts})
        if (d.device_id, d.event_at) in firsts
    ]
    best = _evidence(incident)
    old_location = (incident.latitude, incident.longitude, incident.radius_m)
    group = _same_shot_group(earliest)
    if group:
        lat, lon, radius, method, residual = _estimate(group)
        incident.latitude, incident.longitude, incident.radius_m = lat, lon, radius
        incident.location_method, incident.residual_m = method, residual
    incident.first_detected_at = min(row["first"] for row in per_device)
    incident.last_detected_at = max(row["last"] for row in per_device)
    incident.shots = max(row["shots"] for row in per_device)
    incident.max_confidence = max(row["best"] for row in per_device)
    incident.device_count = len(per_device)
    incident.evidence_clip = best
    # The row is locked (or new) in this transaction, so a plain increment is safe.
    incident.revision += 1
    incident.save()
    moved = (incident.latitude, incident.longitude, incident.radius_m) != old_location
    if moved and group and old_location[0] is not None:
        incident_event_add(
            incident,
            IncidentEvent.Kind.LOCATED,
            f"Located from {len(group)} device(s) by {incident.get_location_method_display().lower()}, "
            f"±{incident.radius_m:.0f} m",
            data={"method": incident.location_method, "residual_m": incident.residual_m},
        )
    return moved


def _evidence(incident: Incident) -> Clip | None:
    """The highest-scoring clip whose audio is still kept (else the highest-scoring one)."""
    ranked = Detection.objects.filter(incident=incident).select_related("clip").order_by("-score", "event_at")
    top = list(ranked[:20])
    kept = next((d.clip for d in top if d.clip.audio and d.clip.audio_deleted_at is None), None)
    if kept is None:
        kept_detection = ranked.filter(clip__audio_deleted_at__isnull=True).exclude(clip__audio="").first()
        kept = kept_detection.clip if kept_detection else None
    return kept or (top[0].clip if top else None)


def incident_route(incident: Incident) -> list[PoliceStation]:
    """Add the stations responsible for the current location; return the ones not routed before."""
    if not incident.has_location:
        return []
    already = set(incident.stations.values_list("pk", flat=True))
    stations = [s for s in stations_for_point(incident.latitude, incident.longitude) if s.pk not in already]  # type: ignore[arg-type]  # has_location checked above
    if stations:
        # Stations routed earlier stay: their officers may already be on the way.
        incident.stations.add(*stations)
    return stations
