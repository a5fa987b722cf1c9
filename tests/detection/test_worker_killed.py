"""Fault test: a real worker process SIGKILLed at each step from a positive verdict to its incident.

The worker is a separate Python process running the classification task against this test's
database, killed by itself at a chosen point (the kill point is patched in by the script below, not
shipped in the code). Whatever the point, after the sweeps the gunshot has exactly one incident.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from alerts.models import Detection, Incident
from detection import tasks
from detection.models import Classification, Clip, ModelVersion
from detection.services import clips as services
from devices.models import Device
from tests.detection.pipeline import *  # noqa: F403
from tests.detection.pipeline import encode, impulses

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]

WORKER = r"""
import os, signal, sys
import django
django.setup()
from detection.models import Classification
from detection import tasks

where, clip_id = sys.argv[1], int(sys.argv[2])

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if where == "inside-the-verdict-transaction":
    original = Classification.objects.bulk_create
    def bulk_create(*args, **kwargs):
        original(*args, **kwargs)
        die()  # the verdicts are written but not committed
    Classification.objects.bulk_create = bulk_create
elif where == "after-the-commit":
    import alerts.services
    alerts.services.incident_record_detection = lambda **kwargs: die()
elif where == "after-the-incident":
    import alerts.services
    real = alerts.services.incident_record_detection
    def record_then_die(**kwargs):
        real(**kwargs)
        die()  # the incident is committed (with its outbox flag cleared), the task has not returned
    alerts.services.incident_record_detection = record_then_die
print("result", tasks.classify_clip.apply(args=(clip_id,)).get())
"""


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}"


def _run_worker(where: str, clip_id: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gunwatch.settings",
        "DATABASE_URL": _database_url(),
        "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        "REDIS_URL": "",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "GUNWATCH_EAGER_IN_THREAD": "false",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-c", WORKER, where, str(clip_id)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize("where", ["inside-the-verdict-transaction", "after-the-commit", "after-the-incident"])
def test_a_worker_killed_anywhere_leaves_exactly_one_incident(
    where: str, device: Device, positive_model: ModelVersion, monkeypatch: Any, settings: Any
) -> None:
    # Stored and queued; the task is handed to the worker process below, not run here.
    monkeypatch.setattr(services, "enqueue_on_commit", lambda *args, **kwargs: None)
    payload = encode(impulses())
    clip = services.clip_upload(
        device=device,
        audio_file=io.BytesIO(payload),
        audio_size=len(payload),
        client_id=uuid.uuid4(),
        recorded_at=timezone.now(),
    ).clip

    worker = _run_worker(where, clip.pk)
    assert worker.returncode == -signal.SIGKILL, worker.stdout + worker.stderr
    assert "result" not in worker.stdout  # it died before the task returned
    clip.refresh_from_db()
    if where == "inside-the-verdict-transaction":
        # Nothing done: the clip is still claimed by the dead worker, no verdict, no incident.
        assert clip.status == Clip.Status.PROCESSING and not Classification.objects.exists()
    else:
        assert clip.status == Clip.Status.DONE
        # The outbox holds the unfinished step; the flag is cleared in the incident's own transaction.
        assert Classification.objects.get().incident_pending == (where != "after-the-incident")
    assert Detection.objects.count() == (1 if where == "after-the-incident" else 0)

    # The periodic sweeps of a restarted deployment, once the lease and the outbox grace have passed.
    later = timezone.now() + settings.CLIP_PROCESSING_STALE_AFTER + timedelta(seconds=1)
    sent: list[int] = []
    monkeypatch.setattr(services, "enqueue", lambda task, clip_id: sent.append(clip_id))
    monkeypatch.setattr(services.timezone, "now", lambda: later)
    assert services.clips_requeue_stuck() == (1 if where == "inside-the-verdict-transaction" else 0)
    for clip_id in sent:
        assert tasks.classify_clip.apply(args=(clip_id,)).get() == "gunshot"
    services.classifications_record_pending(now=later + timedelta(minutes=1))
    services.classifications_record_pending(now=later + timedelta(minutes=2))  # a second sweep changes nothing

    classification = Classification.objects.get()
    assert classification.label == "gunshot" and not classification.incident_pending
    assert Detection.objects.filter(classification=classification).count() == 1
    assert Incident.objects.count() == 1
    clip.refresh_from_db()
    assert clip.status == Clip.Status.DONE
