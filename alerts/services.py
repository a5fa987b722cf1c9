"""Incident flows. The detection pipeline calls ``incident_record_detection`` for every positive.

Opening or joining an incident happens in one short transaction that first takes the join lock
(``JoinLock``), so two workers classifying two clips of the same shot at the same moment cannot
both open an incident. Notifications are written in that transaction and sent after commit by
``alerts.tasks.send_notification``; the live map hears about it through ``alerts.broadcast``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Max, Min, Prefetch, Q, Sum
from django.utils import timezone

from accounts.models import User
from alerts import broadcast
from alerts.geo import Observation, bounding_box, could_be_same_event, haversine_m, locate
from alerts.models import Detection, Incident, IncidentEvent, JoinLock, Notification, PoliceStation
from alerts.selectors import stations_for_point
from detection.models import Classification, Clip
from devices.models import Device, TrustedContact
from devices.services import trusted_contacts_for_device
from gunwatch.exceptions import ApplicationError

logger = logging.getLogger(__name__)

SPEED_OF_SOUND_M_S = 343.0
JOIN_LOCK_NAME = "incident-join"
JOIN_ATTEMPTS = 5
# Timing uncertainty per clock source for TDOA: GPS/PPS-disciplined clocks are good to about a
# millisecond, NTP over the internet to about ten.
CLOCK_SIGMA_S = {"gps": 0.002, "ntp": 0.010}
# The SQL prefilter's allowance for the other detection's GPS error; fixes worse than this are
# rare, and they only make the box slightly too small for an already doubtful join.
MAX_ACCURACY_M = 500.0


# --- What one detection says ------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    device_id: int
    event_at: datetime
    latitude: float | None
    longitude: float | None
    accuracy_m: float
    clock_source: str
    score: float
    shots: int

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None


def detection_event_time(classification: Classification) -> datetime:
    """When the device heard the shot: recording start plus the offset of the shot in the clip.

    The device's own trigger offset comes first: it marks the onset on 1 ms frames, while the
    classifier's offset is its strongest onset on a 20 ms hop and, in a burst, may be a later
    round, which would put hundreds of metres of error into multilateration.
    """
    clip = classification.clip
    offset = clip.trigger_offset_s if clip.trigger_offset_s is not None else classification.offset_s
    return clip.recorded_at + timedelta(seconds=offset or 0.0)


def sighting_from(classification: Classification) -> Sighting:
    clip: Clip = classification.clip
    device: Device = clip.device
    if clip.latitude is not None and clip.longitude is not None:
        lat, lon = clip.latitude, clip.longitude
        accuracy = clip.accuracy_m
    elif device.position is not None:
        lat, lon = device.position
        # A home unit's surveyed position has no fix accuracy; a vehicle's last fix has one.
        accuracy = device.last_accuracy_m if device.kind == Device.Kind.VEHICLE else None
    else:
        lat = lon = None
        accuracy = None
    return Sighting(
        device_id=device.pk,
        event_at=detection_event_time(classification),
        latitude=lat,
        longitude=lon,
        accuracy_m=accuracy if accuracy is not None else settings.ALERT_DEFAULT_ACCURACY_M,
        clock_source=clip.clock_source,
        score=classification.score,
        shots=max(classification.shots, 1),
    )


def _observation(lat: float, lon: float, at: datetime, accuracy_m: float) -> Observation:
    return Observation(lat=lat, lon=lon, t=at.timestamp(), gps_accuracy_m=accuracy_m)


# --- Joining ------------------------------------------------------------------------------------


def _max_skew_s() -> float:
    # The most two devices hearing one shot can disagree: sound crossing twice the hearing range,
    # plus clock slack.
    return 2 * settings.ALERT_HEARING_RANGE_M / SPEED_OF_SOUND_M_S + settings.ALERT_JOIN_SLACK_S


def _same_shot(sighting: Sighting, detection: Detection) -> bool:
    """Could both devices have heard one shot? Close enough, and the time gap fits the distance."""
    if not (sighting.has_position and detection.has_position):
        return False
    distance = haversine_m(sighting.latitude, sighting.longitude, detection.latitude, detection.longitude)  # type: ignore[arg-type]
    fuzz_m = sighting.accuracy_m + detection.accuracy_m
    if distance - fuzz_m > 2 * settings.ALERT_HEARING_RANGE_M:
        return False
    gap_s = abs((sighting.event_at - detection.event_at).total_seconds())
    return gap_s <= (distance + fuzz_m) / SPEED_OF_SOUND_M_S + settings.ALERT_JOIN_SLACK_S


def _follow_up(incident: Incident, sighting: Sighting) -> bool:
    """A later shot of the same event: heard again by one of its devices, or by a device in earshot of
    where the incident is. Not merely near one of its devices: shootings a few kilometres apart in
    the same minutes are different incidents and each needs its own place on the map."""
    if any(detection.device_id == sighting.device_id for detection in incident.detections.all()):
        return True
    if incident.latitude is None or incident.longitude is None or not sighting.has_position:
        return False
    distance = haversine_m(sighting.latitude, sighting.longitude, incident.latitude, incident.longitude)  # type: ignore[arg-type]
    return distance - sighting.accuracy_m <= settings.ALERT_HEARING_RANGE_M


def _belongs(incident: Incident, sighting: Sighting) -> bool:
    """The same shot heard elsewhere, or a follow-up shot of it (the quiet window is in the query)."""
    return any(_same_shot(sighting, d) for d in incident.detections.all()) or _follow_up(incident, sighting)


def _take_join_lock() -> None:
    updated = JoinLock.objects.filter(name=JOIN_LOCK_NAME).update(taken=F("taken") + 1)
    if updated == 0:
        # The row comes from a data migration, but a flushed test database lacks it. A concurrent
        # creator makes this raise IntegrityError, and the caller retries.
        JoinLock.objects.create(name=JOIN_LOCK_NAME, taken=1)


def _candidates(sighting: Sighting) -> list[Incident]:
    """Open incidents this sighting could join, locked against concurrent police transitions.

    SQL narrows by time (the partial index on open incidents) and by place: an incident qualifies
    only if one of its detections lies in a box around the sighting as wide as hearing distance
    allows, or comes from the same device. `_belongs` then decides exactly.
    """
    quiet = timedelta(seconds=settings.ALERT_QUIET_WINDOW_S)
    skew = timedelta(seconds=_max_skew_s())
    in_window = Incident.objects.exclude(status=Incident.Status.CLOSED).filter(
        last_detected_at__gte=sighting.event_at - quiet, first_detected_at__lte=sighting.event_at + skew
    )
    nearby = Q(device_id=sighting.device_id)
    if sighting.has_position:
        reach = 2 * settings.ALERT_HEARING_RANGE_M + sighting.accuracy_m + MAX_ACCURACY_M
        min_lat, min_lon, max_lat, max_lon = bounding_box(sighting.latitude, sighting.longitude, reach)  # type: ignore[arg-type]
        nearby |= Q(latitude__range=(min_lat, max_lat), longitude__range=(min_lon, max_lon))
    related = Detection.objects.filter(nearby, incident__in=in_window.values("pk")).values("incident_id")
    return list(
        Incident.objects.select_for_update()
        .filter(pk__in=related)
        .prefetch_related(
            Prefetch("detections", queryset=Detection.objects.only("incident_id", "device_id", "latitude",
                                                                   "longitude", "accuracy_m", "event_at"))
        )
        .order_by("opened_at", "id")
    )


@dataclass
class _Outcome:
    incident: Incident
    opened: bool
    notification_ids: list[int]


def incident_record_detection(*, classification: Classification) -> Incident | None:
    """Open an incident for a positive classification, or join the open one it belongs to.

    Safe to call twice for the same classification (a redelivered task): the second call finds
    the detection and returns its incident. Returns None for negatives.
    """
    if not classification.is_gunshot:
        return None
    existing = Detection.objects.filter(classification=classification).select_related("incident").first()
    if existing is not None:
        return existing.incident
    # Everything that needs no lock is read before taking it: joins are serialised, keep them short.
    classification = Classification.objects.select_related("clip__device__owner").get(pk=classification.pk)
    sighting = sighting_from(classification)
    for attempt in range(JOIN_ATTEMPTS):
        try:
            with transaction.atomic():
                outcome = _record(classification, sighting)
        except IntegrityError:
            # Another worker recorded this very classification (or created the lock row) first.
            existing = Detection.objects.filter(classification=classification).select_related("incident").first()
            if existing is not None:
                return existing.incident
            if attempt == JOIN_ATTEMPTS - 1:
                raise
        except OperationalError:
            # SQLite "database is locked", PostgreSQL deadlock/serialisation: back off and retry.
            if attempt == JOIN_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (2**attempt) * (1 + random.random()))
        else:
            return outcome.incident
    return None  # pragma: no cover - the loop always returns or raises


def _record(classification: Classification, sighting: Sighting) -> _Outcome:
    # A concurrent call for this same classification fails on Detection's unique classification
    # and the caller returns the incident the other call recorded.
    _take_join_lock()
    incident = next((c for c in _candidates(sighting) if _belongs(c, sighting)), None)
    opened = incident is None
    device = classification.clip.device
    if incident is None:
        incident = Incident.objects.create(first_detected_at=sighting.event_at, last_detected_at=sighting.event_at)
        new_device = True
    else:
        new_device = all(d.device_id != device.pk for d in incident.detections.all())
    Detection.objects.create(
        incident=incident,
        classification=classification,
        clip=classification.clip,
        device=device,
        event_at=sighting.event_at,
        latitude=sighting.latitude,
        longitude=sighting.longitude,
        accuracy_m=sighting.accuracy_m,
        clock_source=sighting.clock_source,
        score=sighting.score,
        shots=sighting.shots,
    )
    _event(
        incident,
        IncidentEvent.Kind.OPENED if opened else IncidentEvent.Kind.DETECTION,
        f"{device.name} heard {sighting.shots} shot(s), confidence {sighting.score:.2f}",
        data={"device": str(device.code), "clip": str(classification.clip.code), "score": sighting.score},
    )
    moved = _refresh(incident)
    new_stations = _route(incident) if (opened or moved) else []
    notification_ids: list[int] = []
    if opened or new_device:
        notification_ids += _queue_for_device(incident, device)
    if new_stations:
        notification_ids += _queue_for_stations(incident, new_stations)
    if notification_ids:
        Incident.objects.filter(pk=incident.pk).update(notified_at=timezone.now())
    # Built now, from the rows as they will commit, and sent once they have.
    message = broadcast.incident_message(incident, kind="incident.opened" if opened else "incident.updated")
    transaction.on_commit(lambda: broadcast.publish(message))
    transaction.on_commit(lambda: _enqueue(notification_ids))
    return _Outcome(incident, opened, notification_ids)


def _event(
    incident: Incident, kind: str, message: str, *, actor: User | None = None, data: dict[str, Any] | None = None
) -> IncidentEvent:
    return IncidentEvent.objects.create(
        incident=incident, kind=kind, message=message[:500], actor=actor, data=data or {}
    )


# --- Aggregates and location ----------------------------------------------------------------------


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
    anchor = _observation(first.latitude, first.longitude, first.event_at, first.accuracy_m)  # type: ignore[arg-type]
    return [first] + [
        d
        for d in group[1:]
        if could_be_same_event(
            anchor,
            _observation(d.latitude, d.longitude, d.event_at, d.accuracy_m),  # type: ignore[arg-type]
            speed_of_sound=SPEED_OF_SOUND_M_S,
            hearing_range_m=settings.ALERT_HEARING_RANGE_M,
            slack_s=settings.ALERT_JOIN_SLACK_S,
        )
    ]


def _estimate(group: list[Detection]) -> tuple[float, float, float, str, float | None]:
    hearing = settings.ALERT_HEARING_RANGE_M
    observations = [
        _observation(d.latitude, d.longitude, d.event_at, d.accuracy_m)  # type: ignore[arg-type]
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


def _refresh(incident: Incident) -> bool:
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
        _event(
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


def _route(incident: Incident) -> list[PoliceStation]:
    """Add the stations responsible for the current location; return the ones not routed before."""
    if not incident.has_location:
        return []
    already = set(incident.stations.values_list("pk", flat=True))
    stations = [s for s in stations_for_point(incident.latitude, incident.longitude) if s.pk not in already]  # type: ignore[arg-type]
    if stations:
        # Stations routed earlier stay: their officers may already be on the way.
        incident.stations.add(*stations)
    return stations


# --- Notifications ------------------------------------------------------------------------------


def _new_notifications(incident: Incident, rows: Iterable[Notification]) -> list[int]:
    existing = set(incident.notifications.values_list("recipient_key", "channel"))
    created: list[int] = []
    for row in rows:
        if (row.recipient_key, row.channel) in existing or not row.target:
            continue
        row.incident = incident
        row.save()
        existing.add((row.recipient_key, row.channel))
        created.append(row.pk)
    return created


def _queue_for_device(incident: Incident, device: Device) -> list[int]:
    owner: User = device.owner
    rows: list[Notification] = []
    owner_fields = {
        "recipient_kind": Notification.RecipientKind.OWNER,
        "recipient_key": f"user:{owner.pk}",
        "recipient_name": owner.get_full_name() or owner.username,
        "user": owner,
        "owner": owner,
    }
    if owner.email:
        rows.append(Notification(channel=Notification.Channel.EMAIL, target=owner.email, **owner_fields))
    if owner.phone:
        rows.append(Notification(channel=Notification.Channel.SMS, target=owner.phone, **owner_fields))
    for contact in trusted_contacts_for_device(device=device):
        rows += _contact_rows(contact)
    return _new_notifications(incident, rows)


def _contact_rows(contact: TrustedContact) -> list[Notification]:
    fields = {
        "recipient_kind": Notification.RecipientKind.CONTACT,
        "recipient_key": f"contact:{contact.pk}",
        "recipient_name": contact.name,
        "contact": contact,
        "owner_id": contact.owner_id,
    }
    targets = {Notification.Channel.EMAIL: contact.email, Notification.Channel.SMS: contact.phone}
    return [
        Notification(channel=channel, target=targets[channel], **fields)
        for channel in (Notification.Channel.EMAIL, Notification.Channel.SMS)
        if channel in (contact.channels or []) and targets[channel]
    ]


def _queue_for_stations(incident: Incident, stations: Iterable[PoliceStation]) -> list[int]:
    rows: list[Notification] = []
    for station in stations:
        fields = {
            "recipient_kind": Notification.RecipientKind.STATION,
            "recipient_key": f"station:{station.pk}",
            "recipient_name": station.name,
            "station": station,
        }
        targets = {
            Notification.Channel.WEBHOOK: station.webhook_url,
            Notification.Channel.EMAIL: station.contact_email,
            Notification.Channel.SMS: station.contact_phone,
        }
        rows += [Notification(channel=channel, target=target, **fields) for channel, target in targets.items()]
    return _new_notifications(incident, rows)


def _enqueue(notification_ids: list[int]) -> None:
    if not notification_ids:
        return
    from alerts.tasks import enqueue_notifications

    enqueue_notifications(notification_ids)


# --- Police workflow ----------------------------------------------------------------------------

# action -> (statuses it may start from, status it leads to, timeline kind)
TRANSITIONS: dict[str, tuple[frozenset[str], str, str]] = {
    "acknowledge": (frozenset({Incident.Status.NEW}), Incident.Status.ACKNOWLEDGED, IncidentEvent.Kind.ACKNOWLEDGED),
    "en_route": (
        frozenset({Incident.Status.NEW, Incident.Status.ACKNOWLEDGED}),
        Incident.Status.EN_ROUTE,
        IncidentEvent.Kind.EN_ROUTE,
    ),
    "on_scene": (
        frozenset({Incident.Status.NEW, Incident.Status.ACKNOWLEDGED, Incident.Status.EN_ROUTE}),
        Incident.Status.ON_SCENE,
        IncidentEvent.Kind.ON_SCENE,
    ),
    "close": (
        frozenset({Incident.Status.NEW, Incident.Status.ACKNOWLEDGED, Incident.Status.EN_ROUTE,
                   Incident.Status.ON_SCENE}),
        Incident.Status.CLOSED,
        IncidentEvent.Kind.CLOSED,
    ),
}
ACTIONS = (*TRANSITIONS, "note")


def incident_actions_available(incident: Incident) -> list[str]:
    return [action for action, (sources, _, _) in TRANSITIONS.items() if incident.status in sources]


@transaction.atomic
def incident_transition(
    *, incident: Incident, user: User, action: str, disposition: str = "", note: str = ""
) -> Incident:
    """Move an incident along acknowledge → en route → on scene → closed, or add a note.

    The row is locked so two officers pressing buttons at once both see the state the other left.
    """
    note = note.strip()
    if action not in ACTIONS:
        raise ApplicationError(
            f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}.", code="invalid_action"
        )
    incident = Incident.objects.select_for_update().get(pk=incident.pk)
    if action == "note":
        if not note:
            raise ApplicationError("A note needs some text.", code="note_required")
        _event(incident, IncidentEvent.Kind.NOTE, note, actor=user)
    else:
        sources, target, kind = TRANSITIONS[action]
        if incident.status not in sources:
            raise ApplicationError(
                f"Cannot {action.replace('_', ' ')} an incident that is {incident.get_status_display().lower()}"
                + (f"; possible now: {', '.join(incident_actions_available(incident))}." if incident.is_open else "."),
                code="invalid_transition",
                extra={"status": incident.status, "allowed": incident_actions_available(incident)},
            )
        if action == "close":
            if disposition not in Incident.Disposition.values:
                raise ApplicationError(
                    "Closing needs a disposition: " + ", ".join(Incident.Disposition.values) + ".",
                    code="disposition_required",
                )
            incident.disposition = disposition
            incident.closed_at = timezone.now()
        elif disposition:
            raise ApplicationError("A disposition is given only when closing.", code="disposition_unexpected")
        incident.status = target
        message = f"{user.username}: {kind.replace('_', ' ')}"
        if action == "close":
            message += f" ({incident.get_disposition_display()})"
        if note:
            message += f" — {note}"
        _event(incident, kind, message, actor=user, data={"disposition": disposition} if disposition else {})
    incident.revision += 1  # the row is locked
    incident.save()
    message = broadcast.incident_message(incident, kind="incident.updated")
    transaction.on_commit(lambda: broadcast.publish(message))
    return incident


def notification_outcome_event(notification: Notification) -> None:
    """Put a sent or finally failed notification on the incident's timeline."""
    if notification.status == Notification.Status.SENT:
        kind, verb = IncidentEvent.Kind.NOTIFIED, "sent"
    else:
        kind, verb = IncidentEvent.Kind.NOTIFICATION_FAILED, "failed"
    who = (
        notification.recipient_name
        if notification.recipient_kind == Notification.RecipientKind.STATION
        else notification.get_recipient_kind_display().lower()
    )
    _event(
        notification.incident,
        kind,
        f"{notification.get_channel_display()} to {who} {verb}"
        + (f": {notification.last_error[:200]}" if verb == "failed" else ""),
        data={"notification": notification.pk, "attempts": notification.attempts},
    )
