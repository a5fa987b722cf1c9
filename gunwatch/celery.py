"""The Celery application: ``celery -A gunwatch worker -Q audio,default``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gunwatch.settings")
# Celery's Django fixup runs the system checks again in every worker it starts: ~0.25 s (they import the
# whole URLconf and its views) on the way to the first clip. The web processes and `migrate` run them.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

app = Celery("gunwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Inference gets its own queue so a burst of uploads never delays notifications.
app.conf.task_queues = (Queue("default", routing_key="default"), Queue("audio", routing_key="audio"))
app.autodiscover_tasks()


@worker_ready.connect
def _announce_ready(**_: Any) -> None:
    """Write GUNWATCH_WORKER_READY_FILE once this worker consumes: ./gw serve's reload stops the previous
    workers only then, so no clip waits for a cold start (README "Restarting the workers without a gap")."""
    path = os.environ.get("GUNWATCH_WORKER_READY_FILE")
    if path:
        Path(path).write_text(f"{os.getpid()}\n")
