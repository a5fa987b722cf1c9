"""Where an incident is: its aggregates, its location from the same-shot group, its stations.

Called inside the joining transaction, on a locked (or new) incident row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.conf import settings

from alerts.models import Detection, Incident, IncidentEvent, PoliceStation
from alerts.selectors import stations_for_point
from alerts.services.timeline import incident_event_add
from core.geo import SAME_SHOT_SIGMAS, SPEED_OF_SOUND_M_S, Arrival, Observation, Place, align_shots, locate
from detection.models import Clip

# Timing uncertainty per clock source for TDOA: GPS/PPS-disciplined clocks are good to about a
# millisecond, NTP over the internet to about ten.
CLOCK_SIGMA_S = {"gps": 0.002, "ntp": 0.010}
# TDOA fixes from this many devices are trusted (README: with 3, one in five falls back).
TRUSTED_FIX_DEVICES = 4


def observation(lat: float, lon: float, at: datetime, accuracy_m: float) -> Observation:
    return Observation(lat=lat, lon=lon, t=at.timestamp(), gps_accuracy_m=accuracy_m)


def timing_sigma_s(clock_source: str) -> float:
    """A clock's 1-sigma error. A free-running clock gets half the join slack per device, so two of
    them may disagree by ``ALERT_JOIN_SLACK_S`` at the same-shot test's cut."""
    if clock_source in settings.ALERT_TDOA_CLOCK_SOURCES:
        return CLOCK_SIGMA_S.get(clock_source, 0.010)
    return settings.ALERT_JOIN_SLACK_S / (2 * SAME_SHOT_SIGMAS)


def arrival(
    device_id: int, lat: float | None, lon: float | None, at: datetime, accuracy_m: float, clock_source: str
) -> Arrival:
    obs = observation(lat, lon, at, accuracy_m) if lat is not None and lon is not None else None
    return Arrival(device=device_id, obs=obs, timing_sigma_s=timing_sigma_s(clock_source), at=at.timestamp())


def detection_arrival(detection: Detection) -> Arrival:
    return arrival(
        detection.device_id,
        detection.latitude,
        detection.longitude,
        detection.event_at,
        detection.accuracy_m,
        detection.clock_source,
    )


def incident_shots(detections: Sequence[Detection]) -> list[list[Detection]]:
    """An incident's detections aligned into distinct shots (``core.geo.align_shots``), the shot its
    place and location come from first.

    The same alignment decides joins, picks the detections TDOA compares, and counts shots.
    """
    ordered = sorted(detections, key=lambda d: (d.event_at, d.pk or 0))
    groups = align_shots(
        [detection_arrival(d) for d in ordered],
        speed_of_sound=SPEED_OF_SOUND_M_S,
        hearing_range_m=settings.ALERT_HEARING_RANGE_M,
    )
    shots = [[ordered[i] for i in group] for group in groups]
    # A shot heard by one device places the incident only within the hearing range, and every shot in
    # that circle would pass for a follow-up: the place comes from the best-heard shot (the earliest
    # one heard by TRUSTED_FIX_DEVICES, else the one heard by most), never from a worse one.
    founding = max(
        range(len(shots)),
        key=lambda i: (min(sum(d.has_position for d in shots[i]), TRUSTED_FIX_DEVICES), -i),
        default=0,
    )
    return [shots[founding], *shots[:founding], *shots[founding + 1 :]] if shots else []


def incident_place(incident: Incident) -> Place | None:
    if incident.latitude is None or incident.longitude is None:
        return None
    return Place(incident.latitude, incident.longitude, incident.radius_m or 0.0)


def shot_count(shots: Sequence[Sequence[Detection]]) -> int:
    """Distinct shots: within one aligned shot (one burst heard by several devices) the most any device
    counted, since a distant device misses the quieter rounds; separate shots add up."""
    return sum(max(max(d.shots, 1) for d in shot) for shot in shots)


def _estimate(group: list[Detection]) -> tuple[float, float, float, str, float | None]:
    hearing = settings.ALERT_HEARING_RANGE_M
    observations = [
        observation(d.latitude, d.longitude, d.event_at, d.accuracy_m)  # type: ignore[arg-type]
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


REFRESH_FIELDS = (
    "pk",
    "clip_id",
    "device_id",
    "event_at",
    "latitude",
    "longitude",
    "accuracy_m",
    "clock_source",
    "score",
    "shots",
)


# What incident_refresh computes; the rest of the row (status, dispatch, review) belongs to other services.
_REFRESHED = [
    "latitude",
    "longitude",
    "radius_m",
    "location_method",
    "residual_m",
    "first_detected_at",
    "last_detected_at",
    "shots",
    "max_confidence",
    "device_count",
    "evidence_clip",
    "revision",
]


def incident_refresh(
    incident: Incident, *, detections: Sequence[Detection] | None = None, added: Detection | None = None
) -> bool:
    """Recompute the incident's aggregates, shot count and location; True when the location changed.

    The location comes from one shot only (TDOA must compare arrival times of one shot): the one
    ``incident_shots`` puts first. ``detections``: all of the incident's, when the caller read them under
    the incident's lock already (with at least ``REFRESH_FIELDS``); ``added``: the one just recorded.
    """
    if detections is None:
        detections = list(Detection.objects.filter(incident=incident).only(*REFRESH_FIELDS))
    shots = incident_shots(detections)
    best = _evidence_after(incident, detections, added) if added is not None else _evidence(incident)
    old_location = (incident.latitude, incident.longitude, incident.radius_m)
    group = [d for d in shots[0] if d.has_position] if shots else []
    if group:
        lat, lon, radius, method, residual = _estimate(group)
        incident.latitude, incident.longitude, incident.radius_m = lat, lon, radius
        incident.location_method, incident.residual_m = method, residual
    incident.first_detected_at = min(d.event_at for d in detections)
    incident.last_detected_at = max(d.event_at for d in detections)
    incident.shots = shot_count(shots)
    incident.max_confidence = max(d.score for d in detections)
    incident.device_count = len({d.device_id for d in detections})
    incident.evidence_clip = best
    # The row is locked (or new) in this transaction, so a plain increment is safe.
    incident.revision += 1
    incident.save(update_fields=_REFRESHED)
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


def _kept(clip: Clip) -> bool:
    return bool(clip.audio) and clip.audio_deleted_at is None


def _evidence_after(incident: Incident, detections: Sequence[Detection], added: Detection) -> Clip | None:
    """``_evidence`` after one detection was added, without a query when the answer follows from memory.

    Audio is only ever deleted, never restored: if the current evidence clip is still kept, nothing
    ranked above it had kept audio, so the answer is it or the new clip, whichever ranks first.
    """
    current = incident.evidence_clip if Incident.evidence_clip.is_cached(incident) else None
    holder = next((d for d in detections if d.clip_id == incident.evidence_clip_id), None)
    new_clip = added.clip if Detection.clip.is_cached(added) else None
    if current is None or holder is None or new_clip is None or not _kept(current):
        return _evidence(incident)
    if (-added.score, added.event_at) < (-holder.score, holder.event_at) and _kept(new_clip):
        return new_clip
    return current


def _evidence(incident: Incident) -> Clip | None:
    """The highest-scoring clip whose audio is still kept (else the highest-scoring one).

    Ids first, and the clip row only when the choice changed: a follow-up rarely changes it, and
    loading the top detections with their clips was a fifth of the incident step's time under load.
    """
    ranked = Detection.objects.filter(incident=incident).order_by("-score", "event_at")
    clip_id = (
        ranked.filter(clip__audio_deleted_at__isnull=True)
        .exclude(clip__audio="")
        .values_list("clip_id", flat=True)
        .first()
    )
    if clip_id is None:
        clip_id = ranked.values_list("clip_id", flat=True).first()
    if clip_id is None:
        return None
    if clip_id == incident.evidence_clip_id and Incident.evidence_clip.is_cached(incident):
        return incident.evidence_clip
    return Clip.objects.get(pk=clip_id)


def incident_route(incident: Incident) -> list[PoliceStation]:
    """Add the stations responsible for the current location; return the ones not routed before."""
    if not incident.has_location:
        return []
    already = set(incident.stations.values_list("pk", flat=True))
    stations = [s for s in stations_for_point(incident.latitude, incident.longitude) if s.pk not in already]  # type: ignore[arg-type]
    if stations:
        # Stations routed earlier stay: their officers may already be on the way.
        incident.stations.add(*stations)
    return stations
