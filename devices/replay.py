"""Simulated shots straight into the server's joining, without agents, audio or a live server.

The fleet simulator's world (``devices.simulation``: fleet, shot points, propagation, clock error)
decides who hears which shot and when; each arrival becomes a clip and a positive classification and
goes through ``incident_record_detection`` exactly as the pipeline calls it, in the order the
server would see them (arrival plus a random upload and inference delay). What comes out is scored
per shot by ``ground_truth_report``. Everything happens in a transaction that is rolled back, on
dates in the year 2000, so it can run against the demo's own database without touching it.

This is how the joining rule is checked over many seeds: ``manage.py simulate_fleet --replay-seeds N``
and the test ``tests/devices/test_replay.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.db import transaction

from accounts.models import User
from alerts.models import Incident
from alerts.services import incident_record_detection
from detection.models import Classification, Clip, ModelVersion
from devices.models import Device
from devices.simulation import (
    ObservedIncident,
    TruthEvent,
    ground_truth_report,
    heard_event,
    hearers,
    make_fleet,
    random_point,
)

EPOCH = datetime(2000, 1, 1, tzinfo=UTC).timestamp()  # far from any real incident in the database


@dataclass(frozen=True)
class ReplayOptions:
    devices: int = 25
    center: tuple[float, float] = (52.52, 13.405)
    radius_m: float = 3000.0
    events: int = 8
    duration_s: float = 120.0
    hearing_range_m: float = 1500.0
    vehicle_share: float = 0.3
    clock_sigma_s: float = 0.001
    miss_rate: float = 0.0  # share of arrivals the device or classifier misses
    latency_s: tuple[float, float] = (0.5, 4.0)  # upload + inference, uniform


class _Rollback(Exception):
    pass


def replay_seed(seed: int, options: ReplayOptions | None = None) -> dict[str, Any]:
    """Fire one seed's shots through the joining rule; the ground-truth report, per-shot verdicts included."""
    opts = options or ReplayOptions()
    rng = np.random.default_rng(seed)
    start = EPOCH + seed * 86_400.0
    fleet = make_fleet(
        rng,
        count=opts.devices,
        center=opts.center,
        radius_m=opts.radius_m,
        vehicle_share=opts.vehicle_share,
        clock_sigma_s=opts.clock_sigma_s,
    )
    for sim in fleet:
        sim.started_at = start
    interval = opts.duration_s / max(opts.events, 1)
    times = sorted(start + (k + float(rng.uniform(0.1, 0.9))) * interval for k in range(opts.events))
    truth: list[TruthEvent] = []
    arrivals: list[tuple[float, float, int, int]] = []  # (processed at, heard at, device index, shot)
    for index, shot_time in enumerate(times):
        lat, lon = random_point(rng, opts.center, opts.radius_m)
        heard = hearers(TruthEvent(index, shot_time, lat, lon), fleet, opts.hearing_range_m)
        event = heard_event(TruthEvent(index, shot_time, lat, lon), heard)
        truth.append(event)
        for (device, _distance, _arrival), (_name, on_clock) in zip(heard, event.heard_by, strict=True):
            if rng.random() < opts.miss_rate:
                continue
            delay = float(rng.uniform(*opts.latency_s))
            arrivals.append((on_clock + delay, on_clock, fleet.index(device), index))
    arrivals.sort()
    report: dict[str, Any] = {}
    try:
        with transaction.atomic():
            report = _replay(seed, fleet, truth, arrivals)
            raise _Rollback
    except _Rollback:
        pass
    return report


def _replay(
    seed: int, fleet: list[Any], truth: list[TruthEvent], arrivals: list[tuple[float, float, int, int]]
) -> dict[str, Any]:
    owner = User.objects.create(username=f"replay-{seed}-{uuid.uuid4().hex[:8]}", role=User.Role.OWNER)
    devices = [
        Device.objects.create(
            owner=owner,
            name=sim.name,
            kind=sim.kind,
            status=Device.Status.ACTIVE,
            latitude=sim.route[0][0] if sim.kind == "home" else None,
            longitude=sim.route[0][1] if sim.kind == "home" else None,
        )
        for sim in fleet
    ]
    version = ModelVersion.objects.create(
        name=f"replay-{seed}",
        version=uuid.uuid4().hex[:8],
        architecture="sim",
        sha256="0" * 64,
        weights="models/replay.pt",
    )
    for _processed, on_clock, device_index, _shot in arrivals:
        sim, device = fleet[device_index], devices[device_index]
        position = sim.position_at(on_clock)
        clip = Clip.objects.create(
            device=device,
            client_id=uuid.uuid4(),
            audio_sha256="0" * 64,
            audio_format="wav",
            recorded_at=datetime.fromtimestamp(on_clock - 0.5, UTC),
            trigger_offset_s=0.5,
            latitude=position.latitude,
            longitude=position.longitude,
            accuracy_m=position.accuracy_m,
            clock_source="gps",
            status=Clip.Status.DONE,
            duration_s=2.0,
        )
        classification = Classification.objects.create(
            clip=clip,
            model_version=version,
            label=Classification.Label.GUNSHOT,
            score=0.9,
            threshold=0.5,
            shots=1,
            offset_s=0.5,
        )
        incident_record_detection(classification=classification)
    incidents = [
        ObservedIncident(
            first_detected_at=row.first_detected_at.timestamp(),
            opened_at=row.first_detected_at.timestamp(),
            latitude=row.latitude,
            longitude=row.longitude,
            radius_m=row.radius_m,
            method=row.location_method,
            device_count=row.device_count,
            key=row.pk,
            shots=row.shots,
            detections=tuple((d.device.name, d.event_at.timestamp()) for d in row.detections.select_related("device")),
        )
        for row in Incident.objects.filter(detections__device__owner=owner).distinct().order_by("first_detected_at")
    ]
    report = ground_truth_report(truth, incidents)
    report["seed"] = seed
    return report


def replay_seeds(seeds: range | list[int], options: ReplayOptions | None = None) -> dict[str, Any]:
    """Many seeds: totals over every fired shot, and the seeds' reports."""
    reports = [replay_seed(seed, options) for seed in seeds]
    verdicts = [v for r in reports for v in r.get("shots", [])]
    heard = [v for v in verdicts if v["devices"]]
    # Location error of shots with a place of their own (one that shares an incident with a shot it
    # cannot be told from is "located" wherever that shot was).
    errors = sorted(v["error_m"] for v in heard if v["ok"] and v["error_m"] is not None and not v["confusable_with"])
    return {
        "seeds": len(reports),
        "shots": len(verdicts),
        "audible": sum(1 for v in verdicts if v["audible"]),
        "heard": len(heard),
        "one_incident": sum(1 for v in heard if v["ok"]),
        "split": sum(1 for v in heard if len(v["incidents"]) > 1),
        "shared": sum(1 for v in heard if v["shared_with"]),
        "follow_ups": sum(1 for v in heard if v["shared_with"] and v["ok"] and not v["confusable_with"]),
        "confusable": sum(1 for v in heard if v["confusable_with"] and v["ok"]),
        "outside_radius": sum(1 for v in heard if v["located"] is False and not v["confusable_with"]),
        "false_incidents": sum(r["false_incidents"] for r in reports),
        "error_m_p50": round(float(np.percentile(errors, 50)), 1) if errors else None,
        "error_m_p95": round(float(np.percentile(errors, 95)), 1) if errors else None,
        "failures": [
            {"seed": r["seed"], **v} for r in reports for v in r.get("shots", []) if v["devices"] and not v["ok"]
        ],
        "reports": reports,
    }
