"""Classification capacity: clips/s per worker process for the active (shipped) model, and 1 → N processes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gw_bench .venv/bin/python bench/worker.py --clips 400 \
        --processes 1 2 --batch 1 16

Queues --clips generated 2 s FLAC clips (noise with bangs, as bench/upload.py sends) straight into the
database, then runs P worker processes that each loop the worker's own service
(``clips_classify_batch``, claim → one forward pass → one transaction) until the queue is empty. No
broker and no web server, so the figure is the classification tier alone. The incident step is left
out (``--with-incidents`` keeps it: every clip then opens or joins an incident, the e2e benchmark's
case). Prints, per (processes, batch size): clips/s wall-clock, CPU ms per clip (user+system of the
workers; on a shared machine the wall figure understates capacity, the CPU figure does not) and the
mean batch size. The active model must be registered (``manage.py register_bundled_model``).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKER = r"""
import os, sys, resource, time
import django
django.setup()
from detection.services import clips
from detection import inference
if sys.argv[2] == "0":
    clips._record_detections = lambda classifications: None  # classification tier only
inference.warm_up()
batch = int(sys.argv[1])
done = batches = 0
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
while True:
    got = clips.clips_classify_batch(limit=batch)
    if not got:
        break
    done += len(got); batches += 1
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
print("RESULT", done, batches, cpu, time.perf_counter() - start, flush=True)
"""


def queue_clips(count: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gunwatch.settings")
    import django

    django.setup()
    from django.utils import timezone

    from accounts.models import User
    from bench.upload import generated_clips
    from detection.models import Clip
    from detection.services import clips
    from devices import services as device_services
    from devices.models import Device

    Clip.objects.filter(device__name__startswith="bench-worker").delete()
    owner, _ = User.objects.get_or_create(username="bench-worker-owner")
    device = Device.objects.filter(name="bench-worker").first()
    if device is None:
        device, _ = device_services.device_create(
            owner=owner, name="bench-worker", kind=Device.Kind.HOME, latitude=52.52, longitude=13.405
        )
        Device.objects.filter(pk=device.pk).update(status=Device.Status.ACTIVE)
        device.refresh_from_db()
    payloads = generated_clips(32, seconds=2.0, sample_rate=16000)
    enqueue = clips.enqueue_on_commit
    clips.enqueue_on_commit = lambda *args, **kwargs: None  # queued in the table only, no task messages
    try:
        for n in range(count):
            data = payloads[n % len(payloads)]
            clips.clip_upload(
                device=device,
                audio_file=io.BytesIO(data),
                audio_size=len(data),
                client_id=uuid.uuid4(),
                recorded_at=timezone.now(),
            )
    finally:
        clips.enqueue_on_commit = enqueue


def run(processes: int, batch: int, incidents: bool) -> tuple[int, float, float, float]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gunwatch.settings",
        "PYTHONPATH": str(REPO),
        "LOG_LEVEL": "WARNING",
        "INFERENCE_TORCH_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(batch), "1" if incidents else "0"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    done = batches = 0
    cpu = work_wall = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        d, b, c, w = line.split()[1:]
        done, batches, cpu, work_wall = done + int(d), batches + int(b), cpu + float(c), max(work_wall, float(w))
    return done, batches, cpu, work_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--with-incidents", action="store_true")
    args = parser.parse_args()
    for processes in args.processes:
        for batch in args.batch:
            queue_clips(args.clips)
            load = os.getloadavg()[0]
            done, batches, cpu, wall = run(processes, batch, args.with_incidents)
            print(
                f"processes={processes} batch<={batch}: {done} clips in {wall:.1f} s = {done / wall:.1f} clips/s; "
                f"CPU {cpu * 1000 / max(1, done):.1f} ms/clip (after warm-up) -> "
                f"{1000 / (cpu * 1000 / max(1, done)):.0f} clips/s per core; "
                f"mean batch {done / max(1, batches):.1f}; "
                f"load {load:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
