"""The fleet simulator: physics of propagation, the microphone source, the ground-truth report."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from core.geo import destination_point, haversine_m
from devices.simulation import (
    LEAD_S,
    SAMPLE_RATE,
    SHOT_MAX_FLOOR_DB,
    SPEED_OF_SOUND,
    ObservedIncident,
    SimDevice,
    SimulatedSource,
    SoundBank,
    TruthEvent,
    absorption_cutoff_hz,
    arrival_time,
    ground_truth_report,
    hearers,
    level_db,
    make_fleet,
    own_floor_db,
    pink_noise,
    propagate,
    random_point,
    schedule_shot,
    synthetic_shot,
)

CENTER = (52.52, 13.405)


def test_sound_arrives_after_distance_over_the_speed_of_sound() -> None:
    assert arrival_time(100.0, 343.0) == pytest.approx(101.0)
    assert arrival_time(100.0, 1500.0) - 100.0 == pytest.approx(1500 / SPEED_OF_SOUND)


def test_level_drops_6_db_per_doubling_and_highs_fade_with_distance() -> None:
    rng = np.random.default_rng(1)
    shot = synthetic_shot(rng)
    near, far = propagate(shot, 200.0), propagate(shot, 400.0)
    # Spreading alone is -6 dB per doubling; the extra high-frequency loss makes it a little more.
    assert -8.5 < level_db(far) - level_db(near) < -5.5
    assert absorption_cutoff_hz(1500) < absorption_cutoff_hz(300) < absorption_cutoff_hz(50)


def test_random_points_stay_inside_the_disc_and_fill_it() -> None:
    rng = np.random.default_rng(2)
    distances = [haversine_m(*CENTER, *random_point(rng, CENTER, 1000)) for _ in range(2000)]
    assert max(distances) <= 1000.5
    # Uniform over the area: half of the points lie beyond 1/sqrt(2) of the radius.
    assert 0.45 < np.mean(np.array(distances) > 1000 / np.sqrt(2)) < 0.55


def test_vehicles_move_along_their_route_and_homes_stay() -> None:
    start = time.time()
    a, b = CENTER, destination_point(*CENTER, 90, 1000)
    car = SimDevice("car", "vehicle", [a, b], speed_mps=10, started_at=start)
    halfway = car.position_at(start + 50)
    assert haversine_m(*a, halfway.latitude, halfway.longitude) == pytest.approx(500, abs=5)
    home = SimDevice("home", "home", [a])
    assert (home.position_at(start + 999).latitude, home.position_at(start).latitude) == (a[0], a[0])
    fleet = make_fleet(np.random.default_rng(3), count=40, center=CENTER, radius_m=2000, vehicle_share=0.5)
    assert {d.kind for d in fleet} == {"home", "vehicle"}


def test_each_device_in_range_hears_the_shot_with_its_own_delay() -> None:
    rng = np.random.default_rng(4)
    stop = threading.Event()
    distances = [100.0, 700.0, 2500.0]
    devices = [SimDevice(f"d{i}", "home", [destination_point(*CENTER, 0, d)]) for i, d in enumerate(distances)]
    sources = [SimulatedSource(device, stop) for device in devices]
    bank = SoundBank.synthetic(rng)
    event = schedule_shot(
        event=TruthEvent(0, 1000.0, *CENTER), devices=devices, sources=sources, bank=bank, rng=rng, hearing_range_m=1500
    )
    assert event.audible == 2
    assert event.first_arrival == pytest.approx(1000 + 100 / SPEED_OF_SOUND, abs=1e-3)
    starts = [source._bursts[0][0] for source in sources[:2]]
    assert starts[1] - starts[0] == pytest.approx(600 / SPEED_OF_SOUND, abs=1e-3)
    assert starts[0] == pytest.approx(1000 + 100 / SPEED_OF_SOUND - LEAD_S, abs=1e-3)
    assert sources[2].pending() == 0  # out of range hears nothing
    # The nearer device hears it louder.
    assert np.max(np.abs(sources[0]._bursts[0][2])) > np.max(np.abs(sources[1]._bursts[0][2]))


def test_source_plays_bursts_in_real_time_stamped_with_the_device_clock() -> None:
    stop = threading.Event()
    device = SimDevice("d", "home", [CENTER], clock_offset_s=0.002)
    source = SimulatedSource(device, stop, block_s=0.05)
    audio = np.ones(int(0.2 * SAMPLE_RATE), dtype=np.float32)
    start = time.time() + 0.1
    source.schedule(start, audio)
    blocks = []
    for block in source:
        blocks.append(block)
        assert block.start_time + len(block.samples) / SAMPLE_RATE <= time.time() + device.clock_offset_s + 0.01
        if sum(len(b.samples) for b in blocks) >= len(audio):
            stop.set()
    assert blocks[0].start_time == pytest.approx(start + 0.002)
    assert sum(len(b.samples) for b in blocks) == len(audio)


def test_overlapping_bursts_are_mixed_into_one() -> None:
    source = SimulatedSource(SimDevice("d", "home", [CENTER]), threading.Event())
    one = np.ones(SAMPLE_RATE, dtype=np.float32)
    source.schedule(100.0, one)
    source.schedule(100.5, one)
    assert source.pending() == 1
    start, _, mixed = source._bursts[0]
    assert start == 100.0
    assert len(mixed) == pytest.approx(1.5 * SAMPLE_RATE, abs=2)
    assert mixed[int(0.75 * SAMPLE_RATE)] == pytest.approx(2.0)


def incident(t: float, lat: float, lon: float, method: str = "tdoa", opened_after: float = 1.0) -> ObservedIncident:
    return ObservedIncident(t, t + opened_after, lat, lon, 30.0, method, 3)


def test_report_matches_shots_to_incidents_and_counts_the_rest() -> None:
    near = destination_point(*CENTER, 45, 20)
    events = [
        TruthEvent(0, 100.0, *CENTER, audible=3, first_arrival=100.5),
        TruthEvent(1, 200.0, *CENTER, audible=2, first_arrival=200.2),
        TruthEvent(2, 300.0, *CENTER, audible=0),  # nobody could hear it: not a miss
    ]
    incidents = [
        incident(100.6, *near, opened_after=1.5),
        incident(250.0, *CENTER, method="single"),  # 50 s off: a false incident, and shot 1 is missed
    ]
    report: dict[str, Any] = ground_truth_report(events, incidents)
    assert report["audible_events"] == 2
    assert report["detected"] == 1
    assert report["missed"] == 1
    assert report["false_incidents"] == 1
    assert report["detection_rate"] == 0.5
    assert report["localisation_error_m"]["p50"] == pytest.approx(20, abs=0.5)
    assert report["localisation_error_m"]["by_method"]["tdoa"]["n"] == 1
    assert report["shot_to_incident_latency_s"]["p50"] == pytest.approx(1.6)


def test_report_on_nothing_is_empty_not_an_error() -> None:
    report: dict[str, Any] = ground_truth_report([], [])
    assert report["detection_rate"] is None
    assert report["localisation_error_m"]["p50"] is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_simulated_fleet_against_a_live_server_reports_ground_truth(live_server, tmp_path, eager_celery) -> None:
    """Three real agents pair with a live server, hear one shot, and the platform opens one incident.

    The detector is a random network with threshold 0 (everything is a gunshot): this checks the
    plumbing from microphone to incident, not the model.
    """
    import json
    from io import StringIO

    import torch
    from django.core.management import call_command

    from alerts.models import Incident
    from core.features import FeatureParams
    from core.networks import build
    from core.weights import save_weights
    from detection.services import model_version_register
    from devices.models import Device

    torch.manual_seed(0)
    params = FeatureParams()
    weights = tmp_path / "random.pt"
    save_weights(
        weights,
        architecture="gwcnn-tiny",
        params=params,
        threshold=0.0,
        state_dict=build("gwcnn-tiny", params).state_dict(),
        meta={},
    )
    model_version_register(name="random", version="0", weights_path=weights, activate=True)

    out = StringIO()
    call_command(
        "simulate_fleet",
        server=live_server.url,
        devices=3,
        radius_km=0.3,
        events=1,
        duration=2,
        nuisance_per_hour=0,
        vehicle_share=0,
        settle=10,
        manifest=tmp_path / "none.csv",
        json=True,
        stdout=out,
    )
    report = json.loads(out.getvalue())
    assert report["devices"] == 3
    assert report["audible_events"] == 1
    assert report["detected"] == 1
    assert report["false_incidents"] == 0
    assert Device.objects.filter(owner__username="owner", status=Device.Status.ACTIVE).count() == 3
    incident = Incident.objects.get()
    assert incident.device_count == 3


def test_a_moving_car_hears_the_shot_where_it_is_when_the_sound_arrives() -> None:
    start = 1000.0
    east = destination_point(*CENTER, 90, 3000)
    car = SimDevice("car", "vehicle", [CENTER, east], speed_mps=14.0, started_at=start)
    shot_at = destination_point(*CENTER, 270, 1000)  # behind the car, which drives away from it
    event = TruthEvent(0, start, *shot_at)
    [(_, distance, arrival)] = hearers(event, [car], hearing_range_m=1500)
    where = car.position_at(arrival)
    # Where the car is at arrival, not the 1,000 m at the shot: about 14 m/s x 3 s further away.
    assert distance == pytest.approx(haversine_m(*shot_at, where.latitude, where.longitude), abs=0.5)
    assert distance == pytest.approx(1000 + 14 * distance / SPEED_OF_SOUND, abs=1.0)
    assert arrival == pytest.approx(start + distance / SPEED_OF_SOUND)


def test_recordings_whose_own_background_drowns_the_blast_are_not_played_as_shots(tmp_path) -> None:
    import soundfile as sf

    rng = np.random.default_rng(5)
    clean = synthetic_shot(rng)
    noisy = clean + 0.2 * rng.normal(0, 1, clean.size).astype(np.float32)  # a loud range or street
    assert own_floor_db(clean) < SHOT_MAX_FLOOR_DB < own_floor_db(noisy)
    rows = ["file,label,category,duration_s"]
    for name, audio in (("clean.wav", clean), ("noisy.wav", noisy), ("bed.wav", pink_noise(rng, 4.0))):
        sf.write(tmp_path / name, audio, SAMPLE_RATE)
    rows += ["clean.wav,gunshot,gunshot,0.6", "noisy.wav,gunshot,gunshot,0.6", "bed.wav,other,engine_idling,4.0"]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    bank = SoundBank.load(tmp_path / "manifest.csv", rng)
    assert len(bank.shots) == 1
    assert own_floor_db(bank.shots[0]) < SHOT_MAX_FLOOR_DB


def _observed(
    key: int, at: float, pos: tuple[float, float], detections: tuple[tuple[str, float], ...], radius: float = 30.0
) -> ObservedIncident:
    return ObservedIncident(at, at + 1, *pos, radius, "tdoa", len(detections), key=key, detections=detections)


def test_per_shot_verdicts_show_splits_merges_and_follow_ups() -> None:
    far = destination_point(*CENTER, 90, 1400)
    near = destination_point(*CENTER, 0, 100)
    events = [
        TruthEvent(
            0, 100.0, *CENTER, audible=3, first_arrival=101.0, heard_by=(("a", 101.0), ("b", 101.5), ("e", 101.6))
        ),
        TruthEvent(1, 145.0, *far, audible=3, first_arrival=146.0, heard_by=(("a", 146.0), ("c", 146.2), ("f", 146.3))),
        TruthEvent(2, 160.0, *near, audible=1, first_arrival=161.0, heard_by=(("b", 161.0),)),
        TruthEvent(3, 200.0, *far, audible=2, first_arrival=201.0, heard_by=(("c", 201.0), ("d", 201.3))),
        TruthEvent(4, 300.0, *CENTER, audible=1, first_arrival=301.0, heard_by=(("a", 301.0),)),
    ]
    first = (("a", 101.02), ("b", 101.5), ("e", 101.6))
    second = (("a", 146.0), ("c", 146.21), ("f", 146.3))
    incidents = [
        # Shot 1, its follow-up shot 3 100 m away, and shot 2 (1.4 km away, three devices) absorbed.
        _observed(1, 101.0, CENTER, (*first, *second, ("b", 161.0))),
        _observed(2, 201.0, far, (("c", 201.0),)),  # shot 4 split over two incidents
        _observed(3, 201.3, far, (("d", 201.3),)),
        _observed(4, 500.0, CENTER, (("a", 500.0),)),  # a door slam taken for a shot
    ]
    report = ground_truth_report(events, incidents)
    verdicts = {v["shot"]: v for v in report["shots"]}
    assert verdicts[1]["incidents"] == [1] and verdicts[1]["devices"] == 3
    assert verdicts[1]["shared_with"] == [2, 3] and verdicts[1]["ok"] is False  # shot 2 is 1.4 km away
    assert verdicts[2]["ok"] is False and verdicts[2]["error_m"] == pytest.approx(1400, abs=1)
    # Shot 3, heard by one device, cannot be told from a follow-up of shot 2 either: reported as such.
    assert verdicts[3]["shared_m"][0] == 100 and verdicts[3]["confusable_with"] == [2]
    assert verdicts[4]["incidents"] == [2, 3] and verdicts[4]["ok"] is False
    assert verdicts[5]["devices"] == 0 and verdicts[5]["ok"] is False  # audible, missed
    assert report["one_incident_per_shot"] is False
    assert report["false_incidents"] == 1
    assert report["missed"] == 1

    # The same night done right: every shot its own incident, the follow-up 100 m away with shot 1.
    right = [
        _observed(1, 101.0, CENTER, (*first, ("b", 161.0))),
        _observed(2, 146.0, far, second),
        _observed(3, 201.0, far, (("c", 201.0), ("d", 201.3))),
        _observed(4, 301.0, CENTER, (("a", 301.0),)),
    ]
    report = ground_truth_report(events, right)
    assert report["one_incident_per_shot"] is True
    assert {v["shot"]: v["ok"] for v in report["shots"]} == {1: True, 2: True, 3: True, 4: True, 5: True}
    assert report["false_incidents"] == 0 and report["detected"] == 5


def test_a_shot_too_few_devices_heard_to_place_is_reported_as_confusable_not_failed() -> None:
    far = destination_point(*CENTER, 90, 900)
    events = [
        TruthEvent(
            0, 100.0, *CENTER, audible=3, first_arrival=101.0, heard_by=(("a", 101.0), ("b", 101.2), ("c", 101.4))
        ),
        TruthEvent(1, 130.0, *far, audible=1, first_arrival=131.0, heard_by=(("a", 131.0),)),
    ]
    incident = _observed(1, 101.0, CENTER, (("a", 101.0), ("b", 101.2), ("c", 101.4), ("a", 131.0)))
    report = ground_truth_report(events, [incident])
    verdicts = {v["shot"]: v for v in report["shots"]}
    assert verdicts[1]["confusable_with"] == [2] and verdicts[1]["ok"] is True
    assert verdicts[2]["confusable_with"] == [1] and verdicts[2]["ok"] is True
    assert verdicts[2]["error_m"] == pytest.approx(900, abs=1)
