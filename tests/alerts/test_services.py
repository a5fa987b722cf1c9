from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from alerts.models import Detection, Incident, IncidentEvent
from alerts.services import incident_record_detection, incident_transition
from core.geo import haversine_m
from devices.models import Device
from tests.alerts.helpers import around, classify, heard_at
from tests.factories import DeviceFactory, UserFactory

CENTRE = (52.52, 13.405)


@pytest.fixture
def home(owner) -> Device:
    return DeviceFactory(owner=owner, name="Home", latitude=CENTRE[0], longitude=CENTRE[1])


def test_negative_classification_opens_nothing(home: Device) -> None:
    assert incident_record_detection(classification=classify(home, label="other", score=0.1)) is None
    assert Incident.objects.count() == 0


def test_single_detection_opens_incident_at_device_with_hearing_radius(home: Device, settings) -> None:
    recorded = timezone.now().replace(microsecond=0)
    incident = incident_record_detection(
        classification=classify(home, recorded_at=recorded, offset_s=1.25, score=0.88, shots=3)
    )
    assert incident is not None
    incident.refresh_from_db()
    assert incident.status == Incident.Status.NEW
    assert incident.first_detected_at == recorded + timedelta(seconds=1.25)
    assert (incident.latitude, incident.longitude) == CENTRE
    # A surveyed home position: default accuracy plus how far a shot is heard.
    assert incident.radius_m == pytest.approx(settings.ALERT_DEFAULT_ACCURACY_M + settings.ALERT_HEARING_RANGE_M)
    assert incident.location_method == "single"
    assert (incident.shots, incident.max_confidence, incident.device_count) == (3, 0.88, 1)
    assert list(incident.events.values_list("kind", flat=True)) == ["opened"]


def test_trigger_offset_is_used_when_the_classifier_gives_none(home: Device) -> None:
    recorded = timezone.now().replace(microsecond=0)
    incident = incident_record_detection(
        classification=classify(home, recorded_at=recorded, offset_s=None, trigger_offset_s=0.75)
    )
    assert incident.first_detected_at == recorded + timedelta(seconds=0.75)


def test_the_device_trigger_offset_beats_the_classifier_offset(home: Device) -> None:
    """The trigger marks the onset on 1 ms frames; the classifier's strongest onset may be a later round."""
    recorded = timezone.now().replace(microsecond=0)
    incident = incident_record_detection(
        classification=classify(home, recorded_at=recorded, offset_s=1.4, trigger_offset_s=0.5)
    )
    assert incident.first_detected_at == recorded + timedelta(seconds=0.5)


def test_clip_position_beats_device_position(home: Device, settings) -> None:
    incident = incident_record_detection(classification=classify(home, lat=52.6, lon=13.5, accuracy_m=8))
    incident.refresh_from_db()
    assert (incident.latitude, incident.longitude) == (52.6, 13.5)
    assert incident.radius_m == pytest.approx(8 + settings.ALERT_HEARING_RANGE_M)


def test_vehicle_uses_last_fix_and_its_accuracy(owner, settings) -> None:
    car = DeviceFactory(
        owner=owner,
        kind=Device.Kind.VEHICLE,
        latitude=None,
        longitude=None,
        last_latitude=52.5,
        last_longitude=13.3,
        last_accuracy_m=12,
    )
    incident = incident_record_detection(classification=classify(car))
    incident.refresh_from_db()
    assert (incident.latitude, incident.longitude) == (52.5, 13.3)
    assert incident.radius_m == pytest.approx(12 + settings.ALERT_HEARING_RANGE_M)


def test_device_without_any_position_still_opens_an_incident(owner) -> None:
    nowhere = DeviceFactory(owner=owner, latitude=None, longitude=None)
    incident = incident_record_detection(classification=classify(nowhere))
    incident.refresh_from_db()
    assert incident.latitude is None and incident.radius_m is None
    assert incident.stations.count() == 0


def test_recording_the_same_classification_twice_counts_it_once(home: Device) -> None:
    classification = classify(home)
    first = incident_record_detection(classification=classification)
    second = incident_record_detection(classification=classification)
    assert first.pk == second.pk
    assert Detection.objects.count() == 1


def test_neighbour_hearing_the_same_shot_joins_the_incident(home: Device) -> None:
    shot = timezone.now()
    neighbour_pos = around(CENTRE, 600, [90])[0]
    neighbour = DeviceFactory(owner=UserFactory(), latitude=neighbour_pos[0], longitude=neighbour_pos[1])
    a = incident_record_detection(classification=classify(home, recorded_at=shot, offset_s=0.0, score=0.8))
    b = incident_record_detection(
        classification=classify(neighbour, recorded_at=heard_at(CENTRE, neighbour_pos, shot), offset_s=0.0, score=0.95)
    )
    assert a.pk == b.pk
    b.refresh_from_db()
    assert b.device_count == 2
    assert b.max_confidence == 0.95
    assert b.first_detected_at == shot
    assert b.location_method == "centroid"
    assert IncidentEvent.objects.filter(incident=b, kind="detection").count() == 1


def test_devices_too_far_apart_open_separate_incidents(home: Device) -> None:
    far_pos = around(CENTRE, 5000, [0])[0]
    far = DeviceFactory(owner=UserFactory(), latitude=far_pos[0], longitude=far_pos[1])
    shot = timezone.now()
    a = incident_record_detection(classification=classify(home, recorded_at=shot))
    b = incident_record_detection(classification=classify(far, recorded_at=shot + timedelta(seconds=0.2)))
    assert a.pk != b.pk


@pytest.mark.parametrize(("distance_m", "joins"), [(2900, True), (3200, False)])
def test_joining_reaches_two_hearing_ranges_plus_gps_error(home: Device, settings, distance_m, joins) -> None:
    # Both detections within hearing range (1500 m) of one shot: at most 3000 m + 2 * 25 m GPS apart.
    settings.ALERT_HEARING_RANGE_M = 1500
    settings.ALERT_DEFAULT_ACCURACY_M = 25
    pos = around(CENTRE, distance_m, [60])[0]
    other = DeviceFactory(owner=UserFactory(), latitude=pos[0], longitude=pos[1])
    shot = timezone.now()
    # Heard at the same moment: the shot was halfway between them. (This test used to put 2 s between
    # the two, which no shot within hearing range of both can do at 2,900 m: the nearer point with that
    # arrival difference is 1,793 m from the later device. The old pairwise rule let it join anyway.)
    a = incident_record_detection(classification=classify(home, recorded_at=shot))
    b = incident_record_detection(classification=classify(other, recorded_at=shot))
    assert (a.pk == b.pk) is joins


def test_device_without_position_follows_up_on_its_own_incident(owner) -> None:
    nowhere = DeviceFactory(owner=owner, latitude=None, longitude=None)
    start = timezone.now()
    first = incident_record_detection(classification=classify(nowhere, recorded_at=start))
    again = incident_record_detection(classification=classify(nowhere, recorded_at=start + timedelta(seconds=30)))
    assert again.pk == first.pk


def test_follow_up_inside_quiet_window_joins_and_later_one_opens_new(home: Device, settings) -> None:
    settings.ALERT_QUIET_WINDOW_S = 300
    start = timezone.now() - timedelta(minutes=30)
    first = incident_record_detection(classification=classify(home, recorded_at=start, shots=2))
    follow = incident_record_detection(classification=classify(home, recorded_at=start + timedelta(minutes=2), shots=3))
    assert follow.pk == first.pk
    follow.refresh_from_db()
    assert follow.shots == 5  # one device: its clips add up
    assert follow.last_detected_at > follow.first_detected_at
    later = incident_record_detection(classification=classify(home, recorded_at=start + timedelta(minutes=10)))
    assert later.pk != first.pk


def test_shots_are_the_most_any_one_device_heard(home: Device) -> None:
    shot = timezone.now()
    other = DeviceFactory(owner=UserFactory(), latitude=CENTRE[0] + 0.001, longitude=CENTRE[1])
    incident_record_detection(classification=classify(home, recorded_at=shot, shots=4))
    incident = incident_record_detection(classification=classify(other, recorded_at=shot, shots=2))
    incident.refresh_from_db()
    assert incident.shots == 4


def test_closed_incident_is_not_joined(home: Device, police_user) -> None:
    shot = timezone.now()
    first = incident_record_detection(classification=classify(home, recorded_at=shot))
    incident_transition(incident=first, user=police_user, action="close", disposition="false_alarm")
    again = incident_record_detection(classification=classify(home, recorded_at=shot + timedelta(seconds=20)))
    assert again.pk != first.pk


def _ring_of_devices(source: tuple[float, float], shot, clock_source: str):
    positions = around(CENTRE, 700, [0, 100, 200, 290])
    incident = None
    for pos in positions:
        device = DeviceFactory(owner=UserFactory(), latitude=pos[0], longitude=pos[1])
        incident = incident_record_detection(
            classification=classify(
                device,
                recorded_at=heard_at(source, pos, shot),
                offset_s=0.0,
                clock_source=clock_source,
                accuracy_m=3,
                lat=pos[0],
                lon=pos[1],
            )
        )
    assert incident is not None
    incident.refresh_from_db()
    return incident


def test_four_synchronised_devices_locate_the_shot_by_tdoa(db) -> None:
    source = around(CENTRE, 250, [45])[0]
    incident = _ring_of_devices(source, timezone.now(), "gps")
    assert Incident.objects.count() == 1
    assert incident.location_method == "tdoa"
    assert incident.device_count == 4
    error_m = haversine_m(incident.latitude, incident.longitude, *source)
    assert error_m < 30
    assert error_m <= incident.radius_m
    assert incident.radius_m < 200
    assert incident.residual_m is not None
    assert incident.events.filter(kind="located").exists()


def test_unsynchronised_clocks_fall_back_to_the_centroid(db, settings) -> None:
    source = around(CENTRE, 250, [45])[0]
    incident = _ring_of_devices(source, timezone.now(), "system")
    assert incident.location_method == "centroid"
    assert incident.radius_m >= settings.ALERT_HEARING_RANGE_M
    positions = around(CENTRE, 700, [0, 100, 200, 290])
    mean = (sum(p[0] for p in positions) / 4, sum(p[1] for p in positions) / 4)
    assert haversine_m(incident.latitude, incident.longitude, *mean) < 1


def _record_in_thread(classification_id: int, barrier: threading.Barrier, results: list, errors: list) -> None:
    from detection.models import Classification

    try:
        classification = Classification.objects.get(pk=classification_id)
        barrier.wait(timeout=10)
        results.append(incident_record_detection(classification=classification).pk)
    except Exception as exc:  # surfaced by the assertion in the test
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_on_one_event_open_one_incident() -> None:
    owner = UserFactory(username="racer")
    shot = timezone.now()
    positions = around(CENTRE, 300, [0, 72, 144, 216, 288])
    ids = []
    for pos in positions:
        device = DeviceFactory(owner=owner, latitude=pos[0], longitude=pos[1])
        ids.append(classify(device, recorded_at=heard_at(CENTRE, pos, shot), offset_s=0.0).pk)
    barrier = threading.Barrier(len(ids))
    results: list[int] = []
    errors: list[Exception] = []
    threads = [threading.Thread(target=_record_in_thread, args=(pk, barrier, results, errors)) for pk in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(set(results)) == 1
    assert Incident.objects.count() == 1
    assert Detection.objects.count() == len(ids)
    assert Incident.objects.get().device_count == len(ids)


def test_evidence_is_the_best_clip_whose_audio_is_kept(home: Device) -> None:
    shot = timezone.now()
    kept = classify(home, recorded_at=shot, score=0.7, audio=b"RIFF....WAVE")
    incident = incident_record_detection(classification=kept)
    louder = classify(home, recorded_at=shot + timedelta(seconds=20), score=0.99)  # its audio is gone
    incident = incident_record_detection(classification=louder)
    incident.refresh_from_db()
    assert incident.max_confidence == 0.99
    assert incident.evidence_clip_id == kept.clip_id


def test_two_shootings_across_town_within_the_quiet_window_are_two_incidents(owner) -> None:
    """Devices 2.5 km apart each hear their own shot 40 s apart: police need both places on the map."""
    west, east = around(CENTRE, 1250, [270, 90])
    a = DeviceFactory(owner=owner, name="West", latitude=west[0], longitude=west[1])
    b = DeviceFactory(owner=owner, name="East", latitude=east[0], longitude=east[1])
    start = timezone.now().replace(microsecond=0)
    first = incident_record_detection(classification=classify(a, recorded_at=start))
    second = incident_record_detection(classification=classify(b, recorded_at=start + timedelta(seconds=40)))
    assert first is not None and second is not None
    assert first.pk != second.pk
    # A follow-up shot heard again by the west device joins the west incident.
    again = incident_record_detection(classification=classify(a, recorded_at=start + timedelta(seconds=50)))
    assert again.pk == first.pk
    assert Incident.objects.count() == 2
