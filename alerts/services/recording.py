"""Recording a positive detection: open an incident or join the open one it belongs to.

The detection pipeline calls ``incident_record_detection`` for every positive. Opening or joining
happens in one short transaction that first takes the join lock (``JoinLock``), so two workers
classifying two clips of the same shot at the same moment cannot both open an incident.
Notifications are written in that transaction and sent after commit by
``alerts.tasks.send_notification``; the live map hears about it through ``alerts.broadcast``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Prefetch, Q
from django.utils import timezone

from alerts import broadcast
from alerts.models import Detection, Incident, IncidentEvent, JoinLock
from alerts.services.locating import (
    SPEED_OF_SOUND_M_S,
    arrival,
    detection_arrival,
    incident_place,
    incident_refresh,
    incident_route,
    incident_shots,
)
from alerts.services.recipients import notifications_enqueue, notifications_for_device, notifications_for_stations
from alerts.services.review import incident_policy_apply
from alerts.services.timeline import incident_event_add
from core.geo import Arrival, OpenIncident, bounding_box, place_arrival
from detection.models import Classification, Clip
from devices.models import Device
from devices.selectors import device_fix

JOIN_LOCK_NAME = "incident-join"
JOIN_ATTEMPTS = 5
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
    lat: float | None
    lon: float | None
    if clip.latitude is not None and clip.longitude is not None:
        lat, lon, accuracy = clip.latitude, clip.longitude, clip.accuracy_m
    else:
        # The clip came without a fix and the device had none either when it arrived; it may have one now.
        event_at = detection_event_time(classification)
        fix = device_fix(device, at=event_at)
        lat, lon, accuracy = (fix.latitude, fix.longitude, fix.accuracy_m) if fix else (None, None, None)
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


# --- Joining ------------------------------------------------------------------------------------


def _max_skew_s() -> float:
    # The most two devices hearing one shot can disagree: sound crossing twice the hearing range,
    # plus clock slack.
    return 2 * settings.ALERT_HEARING_RANGE_M / SPEED_OF_SOUND_M_S + settings.ALERT_JOIN_SLACK_S


def _sighting_arrival(sighting: Sighting) -> Arrival:
    return arrival(
        sighting.device_id,
        sighting.latitude,
        sighting.longitude,
        sighting.event_at,
        sighting.accuracy_m,
        sighting.clock_source,
    )


def _open_view(incident: Incident) -> tuple[OpenIncident, list[list[Detection]]]:
    """The incident as the joining rule sees it, and its detections per shot (same order)."""
    shots = incident_shots(list(incident.detections.all()))
    view = OpenIncident(
        key=incident.pk,
        place=incident_place(incident),
        shots=[[detection_arrival(d) for d in shot] for shot in shots],
    )
    return view, shots


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
    allows, or comes from the same device. ``core.geo.place_arrival`` then decides exactly.
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
            Prefetch(
                "detections",
                queryset=Detection.objects.only(
                    "incident_id",
                    "device_id",
                    "latitude",
                    "longitude",
                    "accuracy_m",
                    "event_at",
                    "clock_source",
                    "shots",
                ),
            )
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
    candidates = {c.pk: c for c in _candidates(sighting)}
    views = {pk: _open_view(c) for pk, c in candidates.items()}
    verdict = place_arrival(
        _sighting_arrival(sighting),
        [view for view, _ in views.values()],
        speed_of_sound=SPEED_OF_SOUND_M_S,
        hearing_range_m=settings.ALERT_HEARING_RANGE_M,
    )
    device = classification.clip.device
    split_from: Incident | None = None
    moved: list[Detection] = []
    if verdict.action == "join":
        assert verdict.incident is not None
        incident = candidates[verdict.incident]
        opened = False
        new_device = all(d.device_id != device.pk for d in incident.detections.all())
    else:
        opened, new_device = True, True
        incident = Incident.objects.create(first_detected_at=sighting.event_at, last_detected_at=sighting.event_at)
        if verdict.action == "split":
            assert verdict.incident is not None and verdict.shot is not None
            split_from = candidates[verdict.incident]
            moved = views[verdict.incident][1][verdict.shot]
            Detection.objects.filter(pk__in=[d.pk for d in moved]).update(incident=incident)
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
    incident_event_add(
        incident,
        IncidentEvent.Kind.OPENED if opened else IncidentEvent.Kind.DETECTION,
        f"{device.name} heard {sighting.shots} shot(s), confidence {sighting.score:.2f}",
        data={"device": str(device.code), "clip": str(classification.clip.code), "score": sighting.score},
    )
    notification_ids: list[int] = []
    if split_from is not None:
        notification_ids += _split_off(split_from, incident, moved)
    relocated = incident_refresh(incident)
    new_stations = incident_route(incident) if (opened or relocated) else []
    # Trust hook (issue 11): evidence score and the stations' dispatch policy, before any station is told.
    incident_policy_apply(incident, opened=opened)
    if opened or new_device:
        notification_ids += notifications_for_device(incident, device)
    if new_stations:
        notification_ids += notifications_for_stations(incident, new_stations)
    if notification_ids:
        Incident.objects.filter(pk=incident.pk).update(notified_at=timezone.now())
    # Built now, from the rows as they will commit, and sent once they have.
    messages = [broadcast.incident_message(incident, kind="incident.opened" if opened else "incident.updated")]
    if split_from is not None:
        messages.append(broadcast.incident_message(split_from, kind="incident.updated"))

    def publish_all() -> None:
        for message in messages:
            broadcast.publish(message)

    transaction.on_commit(publish_all)
    transaction.on_commit(lambda: notifications_enqueue(notification_ids))
    return _Outcome(incident, opened, notification_ids)


def _split_off(source: Incident, incident: Incident, moved: list[Detection]) -> list[int]:
    """A shot first taken for a follow-up of ``source`` was heard elsewhere: it is now ``incident``.

    Both timelines say so; the owners of the devices that heard it are told about the new incident
    (they were told about ``source`` when it opened, which was a different shooting).
    """
    devices = Device.objects.filter(pk__in={d.device_id for d in moved}).select_related("owner")
    incident_event_add(
        source,
        IncidentEvent.Kind.NOTE,
        f"{len(moved)} detection(s) of a shot fired elsewhere moved to a separate incident",
        data={"incident": str(incident.code), "detections": [d.pk for d in moved]},
    )
    incident_event_add(
        incident,
        IncidentEvent.Kind.NOTE,
        f"Includes {len(moved)} earlier detection(s) first taken for a follow-up of another incident",
        data={"incident": str(source.code)},
    )
    incident_refresh(source)
    # Its evidence changed (fewer devices): score it again under its stations' policy.
    incident_policy_apply(source, opened=False)
    return [pk for device in devices for pk in notifications_for_device(incident, device)]
