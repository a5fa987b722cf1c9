"""The joining rule over many simulated seeds: every fired shot is exactly one incident.

The simulator's world (fleet, shot points, propagation, clock error) feeds ``incident_record_detection``
directly (``devices.replay``), in the order a server would see the detections. ``manage.py
simulate_fleet --replay-seeds N`` prints the same figures for more seeds.
"""

from __future__ import annotations

import pytest

from devices.replay import ReplayOptions, replay_seed, replay_seeds
from devices.simulation import FOLLOW_UP_SHARE_M

SEEDS = range(8)  # 64 shots; about 20 s of CPU on a quiet machine


@pytest.mark.django_db
def test_every_fired_shot_is_exactly_one_incident_located_within_its_radius() -> None:
    summary = replay_seeds(SEEDS)
    assert summary["heard"] >= 55
    assert summary["false_incidents"] == 0
    assert summary["split"] == 0
    assert summary["outside_radius"] == 0
    assert summary["failures"] == []
    assert summary["one_incident"] == summary["heard"]


@pytest.mark.django_db
def test_missed_arrivals_do_not_merge_or_split_shots() -> None:
    """A fifth of the arrivals lost (a device that missed it, a clip the classifier called "other")."""
    summary = replay_seeds(range(100, 104), ReplayOptions(miss_rate=0.2))
    assert summary["split"] == 0
    assert summary["failures"] == []


@pytest.mark.django_db
def test_the_report_says_which_incident_each_shot_became() -> None:
    report = replay_seed(3)
    shots = report["shots"]
    assert len(shots) == 8 and report["one_incident_per_shot"] is True
    heard = [v for v in shots if v["devices"]]
    assert len({v["incidents"][0] for v in heard if not v["shared_with"]}) == len(
        [v for v in heard if not v["shared_with"]]
    )
    for verdict in heard:
        assert verdict["devices"] == verdict["audible"]
        assert verdict["error_m"] <= verdict["radius_m"] + (FOLLOW_UP_SHARE_M if verdict["shared_with"] else 0)
