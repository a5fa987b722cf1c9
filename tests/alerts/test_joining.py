"""The joining rule on the scenes from issue 12: separate shootings stay separate, follow-ups join,
and an incident counts distinct shots, not the sum of what its devices counted."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from alerts.models import Detection, Incident, IncidentEvent, Notification
from alerts.services import incident_record_detection
from core.geo import destination_point, haversine_m
from devices.models import Device
from tests.alerts.helpers import around, classify, heard_at
from tests.factories import DeviceFactory, UserFactory

CENTRE = (52.52, 13.405)


def _device(pos: tuple[float, float], name: str) -> Device:
    return DeviceFactory(owner=UserFactory(), name=name, latitude=pos[0], longitude=pos[1])


def _hear(device: Device, source: tuple[float, float], shot: datetime, *, shots: int = 1) -> Incident:
    pos = (device.latitude, device.longitude)
    incident = incident_record_detection(
        classification=classify(
            device,
            recorded_at=heard_at(source, pos, shot),
            offset_s=0.0,
            clock_source="gps",
            accuracy_m=4,
            lat=pos[0],
            lon=pos[1],
            shots=shots,
        )
    )
    assert incident is not None
    return incident


def _order_of_processing(devices: list[Device], source: tuple[float, float]) -> list[Device]:
    # The server sees the nearest device first, as it would.
    return sorted(devices, key=lambda d: haversine_m(d.latitude, d.longitude, *source))


def test_a_shot_1_4_km_away_45_s_later_is_its_own_incident_with_its_own_alert(db, settings) -> None:
    """The demo's case: six devices heard both shots; the second used to be appended to the first."""
    settings.ALERT_HEARING_RANGE_M = 1500
    first_source = CENTRE
    second_source = destination_point(*CENTRE, 80, 1400)
    # A ring of devices between the two places: every one is in earshot of both shots.
    middle = destination_point(*CENTRE, 80, 700)
    devices = [_device(pos, f"d{i}") for i, pos in enumerate(around(middle, 550, [0, 60, 120, 180, 240, 300]))]
    assert all(haversine_m(d.latitude, d.longitude, *second_source) < 1500 for d in devices)
    start = timezone.now().replace(microsecond=0)
    for device in _order_of_processing(devices, first_source):
        first = _hear(device, first_source, start)
    later = start + timedelta(seconds=45)
    for device in _order_of_processing(devices, second_source):
        second = _hear(device, second_source, later)
    assert Incident.objects.count() == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.pk != second.pk
    for incident, source in ((first, first_source), (second, second_source)):
        assert incident.device_count == 6
        assert incident.location_method == "tdoa"
        assert haversine_m(incident.latitude, incident.longitude, *source) <= incident.radius_m
    assert all(d.event_at >= later for d in Detection.objects.filter(incident=second))
    assert all(d.event_at < later for d in Detection.objects.filter(incident=first))
    # The second shooting alerted on its own: every owner heard about it.
    owners = {n.user_id for n in Notification.objects.filter(incident=second)}
    assert owners == {d.owner_id for d in devices}


def test_a_shot_2_6_km_away_never_joins_and_the_first_incident_keeps_its_fix(db) -> None:
    """Beyond the hearing range of the first incident's place: its detections are not the first's."""
    first_source = CENTRE
    second_source = destination_point(*CENTRE, 200, 2600)
    near_first = [_device(pos, f"a{i}") for i, pos in enumerate(around(first_source, 600, [0, 90, 180, 270]))]
    near_second = [_device(pos, f"b{i}") for i, pos in enumerate(around(second_source, 500, [0, 120, 240]))]
    start = timezone.now().replace(microsecond=0)
    for device in _order_of_processing(near_first, first_source):
        first = _hear(device, first_source, start)
    everyone = near_first + near_second
    hearing_second = [d for d in everyone if haversine_m(d.latitude, d.longitude, *second_source) < 1500]
    for device in _order_of_processing(hearing_second, second_source):
        second = _hear(device, second_source, start + timedelta(seconds=30))
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.pk != second.pk
    assert first.device_count == 4 and first.location_method == "tdoa"
    assert haversine_m(first.latitude, first.longitude, *first_source) <= first.radius_m
    assert second.location_method == "tdoa"
    assert haversine_m(second.latitude, second.longitude, *second_source) <= second.radius_m


def test_a_follow_up_at_the_same_place_joins_and_keeps_the_first_fix(db) -> None:
    devices = [_device(pos, f"d{i}") for i, pos in enumerate(around(CENTRE, 600, [10, 100, 190, 280]))]
    start = timezone.now().replace(microsecond=0)
    for device in devices:
        incident = _hear(device, CENTRE, start, shots=2)
    incident.refresh_from_db()
    fix = (incident.latitude, incident.longitude, incident.radius_m)
    moved = destination_point(*CENTRE, 45, 60)  # the shooter walked 60 m
    for device in devices[:3]:
        again = _hear(device, moved, start + timedelta(seconds=25), shots=3)
        assert again.pk == incident.pk
    incident.refresh_from_db()
    assert Incident.objects.count() == 1
    assert (incident.latitude, incident.longitude, incident.radius_m) == fix
    assert incident.shots == 2 + 3  # two volleys, each counted once
    assert incident.device_count == 4


def test_a_shot_first_taken_for_a_follow_up_is_split_off_when_it_proves_to_be_elsewhere(db) -> None:
    """One device hears both; its second detection arrives first and looks like a follow-up. The next
    devices' arrival times put that shot 1.2 km away: it becomes an incident of its own."""
    shared = _device(destination_point(*CENTRE, 90, 600), "shared")
    near_first = [_device(pos, f"a{i}") for i, pos in enumerate(around(CENTRE, 500, [0, 180, 270]))]
    second_source = destination_point(*CENTRE, 90, 1200)
    near_second = [_device(pos, f"b{i}") for i, pos in enumerate(around(second_source, 500, [0, 90, 180]))]
    start = timezone.now().replace(microsecond=0)
    for device in [shared, *near_first]:
        first = _hear(device, CENTRE, start)
    taken = _hear(shared, second_source, start + timedelta(seconds=20))
    assert taken.pk == first.pk  # a device in earshot hearing more gunfire: a follow-up, for now
    for device in near_second:
        second = _hear(device, second_source, start + timedelta(seconds=20))
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.pk != second.pk
    assert Incident.objects.count() == 2
    assert second.device_count == 4
    assert Detection.objects.filter(incident=second, device=shared).count() == 1
    assert Detection.objects.filter(incident=first, device=shared).count() == 1
    assert first.shots == 1 and first.device_count == 4
    assert haversine_m(second.latitude, second.longitude, *second_source) <= second.radius_m
    assert IncidentEvent.objects.filter(incident=first, kind="note", message__contains="moved").exists()
    # The shared device's owner hears about the second shooting too.
    assert Notification.objects.filter(incident=second, user=shared.owner).exists()


def test_shot_count_is_distinct_shots_aligned_across_devices_not_a_sum(db) -> None:
    """Three devices hear one burst and count 7, 8 and 9 rounds (the far one misses quiet ones); a second
    burst at the same place 30 s later is counted 4 and 3. The incident fired 9 + 4 shots, not 31."""
    devices = [_device(pos, f"d{i}") for i, pos in enumerate(around(CENTRE, 400, [0, 120, 240]))]
    start = timezone.now().replace(microsecond=0)
    for device, counted in zip(devices, (7, 8, 9), strict=True):
        incident = _hear(device, CENTRE, start, shots=counted)
    incident.refresh_from_db()
    assert incident.shots == 9
    for device, counted in zip(devices[:2], (4, 3), strict=True):
        _hear(device, CENTRE, start + timedelta(seconds=30), shots=counted)
    incident.refresh_from_db()
    assert incident.shots == 13
    assert Incident.objects.count() == 1


def test_two_clips_of_one_device_at_the_same_moment_are_not_one_shot_twice(db) -> None:
    """Alignment never puts two detections of one device in one shot: a device hears a shot once."""
    device = _device(CENTRE, "solo")
    start = timezone.now().replace(microsecond=0)
    _hear(device, CENTRE, start, shots=2)
    incident = _hear(device, CENTRE, start + timedelta(seconds=3), shots=2)
    incident.refresh_from_db()
    assert incident.shots == 4


@pytest.mark.parametrize("late_ms", [0, 5])
def test_a_detection_whose_time_no_source_explains_does_not_join_the_shot(db, late_ms: int) -> None:
    """Pairwise each arrival could be the shot; together only a consistent set is one shot. A fourth
    device 300 ms early heard another sound: at most another shot at that place, never part of the
    shot the location is computed from."""
    devices = [_device(pos, f"d{i}") for i, pos in enumerate(around(CENTRE, 500, [0, 120, 240]))]
    start = timezone.now().replace(microsecond=0)
    for device in devices:
        incident = _hear(device, CENTRE, start)
    odd = _device(destination_point(*CENTRE, 60, 300), "odd")
    pos = (odd.latitude, odd.longitude)
    at = heard_at(CENTRE, pos, start) + timedelta(milliseconds=late_ms - 300 if late_ms == 0 else late_ms)
    result = incident_record_detection(
        classification=classify(
            odd, recorded_at=at, offset_s=0.0, clock_source="gps", accuracy_m=4, lat=pos[0], lon=pos[1]
        )
    )
    incident.refresh_from_db()
    same_shot = late_ms == 5  # 5 ms is within a GPS clock's tolerance; 300 ms is 100 m of sound
    assert incident.shots == (1 if same_shot else 2)
    assert incident.location_method == "tdoa"
    assert haversine_m(incident.latitude, incident.longitude, *CENTRE) <= incident.radius_m
    assert result is not None and result.pk == incident.pk
