"""The incident step's cost: database round trips per recorded detection, and which joins wait for each other.

Joins that could touch the same incident are serialised (PostgreSQL: advisory locks on the map cells a
sighting can reach and on its device); joins kilometres apart are not.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from alerts.models import Detection, Incident
from alerts.services import incident_record_detection
from alerts.services.recording import _join_lock_keys, _take_join_lock, sighting_from
from core.geo import destination_point
from detection.models import Classification
from devices.models import Device
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory, PoliceStationFactory, UserFactory

CENTRE = (52.52, 13.405)


def _device(position: tuple[float, float], name: str = "Home") -> Device:
    return DeviceFactory(owner=UserFactory(), name=name, latitude=position[0], longitude=position[1])


def _positive(device: Device, *, seconds: float = 0.0) -> Classification:
    return classify(
        device,
        recorded_at=timezone.now() - timedelta(seconds=30) + timedelta(seconds=seconds),
        lat=device.latitude,
        lon=device.longitude,
        accuracy_m=10,
        audio=b"RIFF....WAVE",
    )


def test_a_follow_up_costs_the_same_few_queries_however_large_its_incident(
    db: None, django_assert_max_num_queries: Any
) -> None:
    PoliceStationFactory(latitude=CENTRE[0], longitude=CENTRE[1])
    device = _device(CENTRE)
    first = incident_record_detection(classification=_positive(device))
    for n in range(1, 25):
        incident_record_detection(classification=_positive(device, seconds=n))
    follow_up = _positive(device, seconds=25)
    # Read the classification and any earlier detection (1), savepoint (1), join lock (1), candidates
    # and their detections (2), detection and timeline line (2), incident row (1), evidence score:
    # detections and device calibration (2) and its row (1), stations for the map message (1), release
    # (1). Every detection is read once, by the candidates query; the evidence clip comes from memory.
    with django_assert_max_num_queries(13):
        incident = incident_record_detection(classification=follow_up)
    assert incident is not None and first is not None and incident.pk == first.pk
    incident.refresh_from_db()
    assert incident.device_count == 1 and Detection.objects.filter(incident=incident).count() == 26
    assert incident.last_detected_at == follow_up.clip.recorded_at + timedelta(seconds=0.5)


def test_opening_an_incident_stays_within_its_query_budget(db: None, django_assert_max_num_queries: Any) -> None:
    PoliceStationFactory(latitude=CENTRE[0], longitude=CENTRE[1])
    classification = _positive(_device(CENTRE))
    # A new incident also routes to its stations, applies their policy and writes the notifications.
    with django_assert_max_num_queries(29):
        incident = incident_record_detection(classification=classification)
    assert incident is not None and incident.notifications.count() >= 2


def test_recording_the_same_classification_again_is_one_query(db: None, django_assert_num_queries: Any) -> None:
    classification = _positive(_device(CENTRE))
    incident = incident_record_detection(classification=classification)
    with django_assert_num_queries(1):
        again = incident_record_detection(classification=classification)
    assert incident is not None and again is not None and again.pk == incident.pk


def _conflict(a: dict[int, bool], b: dict[int, bool]) -> bool:
    return any(a[key] or b[key] for key in a.keys() & b.keys())


def _keys_at(position: tuple[float, float], device: Device | None = None) -> dict[int, bool]:
    device = device or _device(position)
    return _join_lock_keys(sighting_from(_positive(device)))


def test_join_locks_meet_within_hearing_reach_and_not_across_town(db: None) -> None:
    here = _keys_at(CENTRE)
    for bearing in (0, 90, 180, 270):
        assert _conflict(here, _keys_at(destination_point(*CENTRE, bearing, 3000)))
        assert not _conflict(here, _keys_at(destination_point(*CENTRE, bearing, 5000)))


def test_one_devices_joins_always_meet_even_when_it_moved(db: None) -> None:
    car = _device(CENTRE, "Car")
    here = _keys_at(CENTRE, car)
    car.latitude, car.longitude = destination_point(*CENTRE, 90, 20_000)
    car.save()
    assert _conflict(here, _keys_at((car.latitude, car.longitude), car))
    # Without a position a sighting only looks at its own device: it needs no one else's cells.
    nowhere = DeviceFactory(owner=UserFactory(), latitude=None, longitude=None)
    blind = _join_lock_keys(sighting_from(classify(nowhere, lat=None, lon=None)))
    assert not _conflict(here, blind)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="region locks are PostgreSQL advisory locks")
@pytest.mark.django_db(transaction=True)
def test_a_join_nearby_waits_for_the_one_in_progress_and_one_across_town_does_not() -> None:
    PoliceStationFactory(latitude=CENTRE[0], longitude=CENTRE[1])
    holder = _positive(_device(CENTRE, "Holder"))
    nearby = _positive(_device(destination_point(*CENTRE, 0, 300), "Nearby"))
    across_town = _positive(_device(destination_point(*CENTRE, 90, 6000), "Across town"))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                _take_join_lock(sighting_from(Classification.objects.get(pk=holder.pk)))
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")
        try:
            assert incident_record_detection(classification=across_town) is not None
            with pytest.raises(OperationalError):
                incident_record_detection(classification=nearby)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    finally:
        release.set()
        thread.join(10)
    assert incident_record_detection(classification=nearby) is not None
    assert Incident.objects.count() == 2


def test_a_louder_follow_up_becomes_the_evidence_and_a_quieter_one_does_not(db: None) -> None:
    device = _device(CENTRE)
    first = _positive(device)
    incident = incident_record_detection(classification=first)
    quieter = classify(device, recorded_at=first.clip.recorded_at + timedelta(seconds=2), score=0.6, audio=b"RIFF")
    incident = incident_record_detection(classification=quieter)
    assert incident is not None and incident.evidence_clip_id == first.clip_id
    louder = classify(device, recorded_at=first.clip.recorded_at + timedelta(seconds=4), score=0.99, audio=b"RIFF")
    incident = incident_record_detection(classification=louder)
    assert incident is not None
    incident.refresh_from_db()
    assert incident.evidence_clip_id == louder.clip_id
