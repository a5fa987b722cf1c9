"""The incident step alone: ms and database queries per recorded detection, as e2e_latency.py loads it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gw_bench REDIS_URL=redis://127.0.0.1:6379/5 \
        .venv/bin/python bench/recording.py --devices 20 --detections 1200 [--profile 30]

Makes --devices devices 5 km apart (each device's clips follow up on its own incident, as in the e2e
benchmark) and --detections positive classifications, one a second per device, then records them in
order with ``incident_record_detection`` (no model, no broker, no web server). Prints the mean, p50 and
p95 time per detection, split into the first and last tenth (the incidents grow: 60 s of follow-ups at
one clip a second per device is 60 detections), the recording process's own CPU per detection (steadier than
wall time on a shared machine: PostgreSQL's share is not in it), and the queries per detection. ``--profile N`` prints
the N most expensive functions (cProfile, cumulative). The REDIS_URL database is emptied at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--detections", type=int, default=1200)
    parser.add_argument("--profile", type=int, default=0, help="print this many functions of a cProfile")
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gw_bench")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gunwatch.settings")
    # The notification tasks the incidents enqueue land here and are flushed at the end: a database of
    # its own, not the e2e benchmark's (which refuses a Redis database holding someone else's keys).
    redis_url = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    if "bench" not in os.environ["DATABASE_URL"].rsplit("/", 1)[-1]:
        raise SystemExit("refusing to run against a database whose name lacks 'bench' (its incidents are deleted)")
    from bench.e2e_latency import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    from accounts.models import User
    from alerts.models import Detection, Incident, Notification, PoliceStation
    from alerts.services import incident_record_detection
    from core.geo import destination_point
    from detection.models import Classification, Clip, ModelVersion
    from devices.models import Device

    Notification.objects.all().delete()
    Detection.objects.all().delete()
    Incident.objects.all().delete()
    Classification.objects.all().delete()
    Clip.objects.all().delete()
    Device.objects.filter(name__startswith="bench-rec-").delete()
    PoliceStation.objects.get_or_create(
        name="Bench", defaults={"latitude": 52.52, "longitude": 13.405, "jurisdiction_radius_km": 200}
    )
    owner, _ = User.objects.get_or_create(username="bench-rec-owner", defaults={"email": "bench@example.org"})
    version, _ = ModelVersion.objects.get_or_create(
        name="bench-rec", version="1", defaults={"architecture": "bench", "sha256": "0" * 64, "weights": "x.pt"}
    )
    devices = []
    for i in range(args.devices):
        row = destination_point(52.52, 13.405, 0.0, 5000.0 * (i // 10))
        lat, lon = destination_point(*row, 90.0, 5000.0 * (i % 10))
        device = Device(owner=owner, name=f"bench-rec-{i}", kind=Device.Kind.HOME, latitude=lat, longitude=lon)
        device.save()
        devices.append(device)
    start = timezone.now() - timedelta(seconds=args.detections / args.devices)
    classifications = []
    for n in range(args.detections):
        device = devices[n % args.devices]
        clip = Clip.objects.create(
            device=device,
            client_id=uuid.uuid4(),
            audio_sha256="0" * 64,
            audio_format="flac",
            recorded_at=start + timedelta(seconds=n / args.devices),
            latitude=device.latitude,
            longitude=device.longitude,
            accuracy_m=10,
            clock_source="ntp",
            status=Clip.Status.DONE,
            duration_s=2.0,
            audio=f"clips/bench-{n}.flac",  # kept evidence, as a positive clip's audio is (no file needed)
        )
        classifications.append(
            Classification.objects.create(
                clip=clip, model_version=version, label="gunshot", score=0.97, threshold=0.5, shots=1, offset_s=0.5
            )
        )
    times: list[float] = []
    cpu: list[float] = []  # this process's CPU: steadier than wall time on a shared machine
    queries: list[int] = []
    profile = cProfile.Profile() if args.profile else None
    for classification in classifications:
        connection.queries_log.clear()  # the log keeps 9,000 queries; a full one miscounts
        with CaptureQueriesContext(connection) as captured:
            began, began_cpu = time.perf_counter(), time.process_time()
            if profile:
                profile.enable()
            incident_record_detection(classification=classification)
            if profile:
                profile.disable()
            times.append((time.perf_counter() - began) * 1000)
            cpu.append((time.process_time() - began_cpu) * 1000)
        queries.append(len(captured.captured_queries))
        if os.environ.get("BENCH_SHOW_QUERIES") and len(queries) == len(classifications) - 1:
            for query in captured.captured_queries:
                print(query["sql"][:150])
    tenth = max(1, len(times) // 10)
    incidents = Incident.objects.count()
    print(f"detections={len(times)} devices={args.devices} incidents={incidents} load={os.getloadavg()[0]:.1f}")
    for name, part in (("all", times), ("first tenth", times[:tenth]), ("last tenth", times[-tenth:])):
        ordered = sorted(part)
        print(
            f"{name}: ms per detection mean={statistics.fmean(part):.1f} p50={ordered[len(ordered) // 2]:.1f} "
            f"p95={ordered[int(len(ordered) * 0.95)]:.1f}"
        )
    print(
        f"CPU of this process ms per detection: mean={statistics.fmean(cpu):.1f} "
        f"first tenth={statistics.fmean(cpu[:tenth]):.1f} last tenth={statistics.fmean(cpu[-tenth:]):.1f}"
    )
    print(f"queries per detection: mean={statistics.fmean(queries):.1f} max={max(queries)} min={min(queries)}")
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    if profile:
        pstats.Stats(profile).sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
