"""Recording a positive detection: open an incident or join the open one it belongs to.

The detection pipeline calls ``incident_record_detection`` for every positive. Opening or joining
happens in one short transaction that first takes the join locks, so two workers classifying two clips
of the same shot at the same moment cannot both open an incident. On PostgreSQL these are advisory
locks on the map cells the sighting could reach and on its device (``_join_lock_keys``): shootings
kilometres apart are recorded in parallel. Other databases serialise every join on one row
(``JoinLock``).
Notifications are written in that transaction and sent after commit by
``alerts.tasks.send_notification``; the live map hears about it through ``alerts.broadcast``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
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


def _take_join_lock(sighting: Sighting) -> None:
    if connection.vendor == "postgresql":
        _take_advisory_locks(_join_lock_keys(sighting))
        return
    updated = JoinLock.objects.filter(name=JOIN_LOCK_NAME).update(taken=F("taken") + 1)
    if updated == 0:
        # The row comes from a data migration, but a flushed test database lacks it. A concurrent
        # creator makes this raise IntegrityError, and the caller retries.
        JoinLock.objects.create(name=JOIN_LOCK_NAME, taken=1)


# --- Region locks (PostgreSQL) ---------------------------------------------------------------------
#
# A join decision reads the detections in the sighting's box (``_candidates``) and its own device's; it
# writes one detection at the sighting's point. Two joins interfere only if one's point lies in the
# other's box, or they share a device. So each join takes, in one statement and in key order (no
# deadlocks between joins): its device's key and its point's cell exclusively, and every other cell its
# box touches shared. One's point in the other's box means the exclusive and a shared lock meet on that
# cell. A box too large to list (near a pole or the antimeridian) takes the global key exclusively,
# which every positioned join takes shared.

REGION_CELL_DEG = 0.01  # about 1.1 km of latitude: a 3.5 km reach touches ~8 x 11 cells at 52 degrees
MAX_REGION_CELLS = 400
_KEY_BASE = 0x4757 << 48  # "GW": this module's advisory key space
_GLOBAL, _DEVICE, _CELL = 0, 1, 2


def _key(kind: int, value: int) -> int:
    return _KEY_BASE | (kind << 44) | value


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return int((lat + 90.0) // REGION_CELL_DEG), int((lon + 180.0) // REGION_CELL_DEG)


def _cell_key(lat_index: int, lon_index: int) -> int:
    return _key(_CELL, (lat_index << 16) | lon_index)


def _join_lock_keys(sighting: Sighting) -> dict[int, bool]:
    """Advisory lock keys for a join, each mapped to True when taken exclusively."""
    keys = {_key(_DEVICE, sighting.device_id): True}
    if not sighting.has_position:
        # Without a position a sighting only looks at its own device's detections.
        return keys
    assert sighting.latitude is not None and sighting.longitude is not None
    min_lat, min_lon, max_lat, max_lon = bounding_box(sighting.latitude, sighting.longitude, _reach_m(sighting))
    (lat0, lon0), (lat1, lon1) = _cell(min_lat, min_lon), _cell(max_lat, max_lon)
    if (lat1 - lat0 + 1) * (lon1 - lon0 + 1) > MAX_REGION_CELLS:
        keys[_key(_GLOBAL, 0)] = True
        keys[_cell_key(*_cell(sighting.latitude, sighting.longitude))] = True
        return keys
    keys[_key(_GLOBAL, 0)] = False
    for lat_index in range(lat0, lat1 + 1):
        for lon_index in range(lon0, lon1 + 1):
            keys[_cell_key(lat_index, lon_index)] = False
    keys[_cell_key(*_cell(sighting.latitude, sighting.longitude))] = True
    return keys


def _take_advisory_locks(keys: dict[int, bool]) -> None:
    ordered = sorted(keys)
    with connection.cursor() as cursor:
        # unnest yields the arrays in order, so the locks are taken in key order.
        cursor.execute(
            "SELECT count(CASE WHEN x.exclusive THEN pg_advisory_xact_lock(x.k)::text"
            " ELSE pg_advisory_xact_lock_shared(x.k)::text END)"
            " FROM unnest(%s::bigint[], %s::boolean[]) AS x(k, exclusive)",
            [ordered, [keys[k] for k in ordered]],
        )


def _reach_m(sighting: Sighting) -> float:
    return 2 * settings.ALERT_HEARING_RANGE_M + sighting.accuracy_m + MAX_ACCURACY_M


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
        min_lat, min_lon, max_lat, max_lon = bounding_box(sighting.latitude, sighting.longitude, _reach_m(sighting))  # type: ignore[arg-type]
        nearby |= Q(latitude__range=(min_lat, max_lat), longitude__range=(min_lon, max_lon))
    related = Detection.objects.filter(nearby, incident__in=in_window.values("pk")).values("incident_id")
    return list(
        Incident.objects.select_for_update(of=("self",))
        .select_related("evidence_clip")
        .filter(pk__in=related)
        .prefetch_related(
            Prefetch(
                "detections",
                queryset=Detection.objects.only(
                    "incident_id",
                    "clip_id",
                    "device_id",
                    "latitude",
                    "longitude",
                    "accuracy_m",
                    "event_at",
                    "clock_source",
                    "score",
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
    the detection and returns its incident. Returns None for negatives. Clears the classification's
    ``incident_pending`` (the outbox flag) in the transaction that records it.
    """
    if not classification.is_gunshot:
        return None
    # Everything that needs no lock is read before taking it, in one query with the detection a
    # previous call may have recorded: joins nearby wait for this one, keep it short.
    passed = classification
    classification = Classification.objects.select_related("clip__device__owner", "incident_detection__incident").get(
        pk=classification.pk
    )
    try:
        existing = classification.incident_detection
    except Detection.DoesNotExist:
        pass
    else:
        _done(passed, classification)
        return existing.incident
    sighting = sighting_from(classification)
    for attempt in range(JOIN_ATTEMPTS):
        try:
            with transaction.atomic():
                outcome = _record(classification, sighting)
        except IntegrityError:
            # Another worker recorded this very classification (or created the lock row) first.
            found = Detection.objects.filter(classification=classification).select_related("incident").first()
            if found is not None:
                _done(passed, classification)
                return found.incident
            if attempt == JOIN_ATTEMPTS - 1:
                raise
        except OperationalError:
            # SQLite "database is locked", PostgreSQL deadlock/serialisation: back off and retry.
            if attempt == JOIN_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (2**attempt) * (1 + random.random()))
        else:
            passed.incident_pending = False
            return outcome.incident
    return None  # pragma: no cover - the loop always returns or raises


def _done(passed: Classification, loaded: Classification) -> None:
    """The outbox flag of an already recorded classification (a redelivery, or the sweep's second try)."""
    if loaded.incident_pending:
        Classification.objects.filter(pk=loaded.pk).update(incident_pending=False)
    passed.incident_pending = False


def _record(classification: Classification, sighting: Sighting) -> _Outcome:
    # A concurrent call for this same classification fails on Detection's unique classification
    # and the caller returns the incident the other call recorded.
    _take_join_lock(sighting)
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
        detections = list(incident.detections.all())
        new_device = all(d.device_id != device.pk for d in detections)
    else:
        detections = []
        opened, new_device = True, True
        incident = Incident.objects.create(first_detected_at=sighting.event_at, last_detected_at=sighting.event_at)
        if verdict.action == "split":
            assert verdict.incident is not None and verdict.shot is not None
            split_from = candidates[verdict.incident]
            moved = views[verdict.incident][1][verdict.shot]
            if connection.vendor == "postgresql":
                # Joins whose boxes hold the moved detections must see them move (see _join_lock_keys).
                cells = {
                    _cell(d.latitude, d.longitude) for d in moved if d.latitude is not None and d.longitude is not None
                }
                _take_advisory_locks({_cell_key(*cell): True for cell in cells})
            Detection.objects.filter(pk__in=[d.pk for d in moved]).update(incident=incident)
            detections = list(moved)
    if classification.incident_pending:
        # The outbox flag goes with the detection: one commit, and no window where the sweep redoes it.
        Classification.objects.filter(pk=classification.pk).update(incident_pending=False)
    detection = Detection.objects.create(
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
        remaining = [d for d in split_from.detections.all() if d not in moved]
        notification_ids += _split_off(split_from, incident, moved, remaining)
    # The detections are the ones the candidate query read under the locks, plus this one: no re-read.
    relocated = incident_refresh(incident, detections=[*detections, detection], added=detection)
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


def _split_off(source: Incident, incident: Incident, moved: list[Detection], remaining: list[Detection]) -> list[int]:
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
    incident_refresh(source, detections=remaining)
    # Its evidence changed (fewer devices): score it again under its stations' policy.
    incident_policy_apply(source, opened=False)
    return [pk for device in devices for pk in notifications_for_device(incident, device)]
