"""The Celery application: ``celery -A gunwatch worker -Q audio,default``."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gunwatch.settings")

app = Celery("gunwatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Inference gets its own queue so a burst of uploads never delays notifications.
app.conf.task_queues = (Queue("default", routing_key="default"), Queue("audio", routing_key="audio"))
app.autodiscover_tasks()
