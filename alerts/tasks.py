"""Celery tasks for alerts: thin wrappers that fetch by id, call the service and decide retries."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from alerts.delivery import Outcome, notification_deliver, retry_countdown
from alerts.models import Notification

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="alerts.tasks.send_notification", acks_late=True, max_retries=None)
def send_notification(self: Any, notification_id: int) -> str:
    outcome = notification_deliver(notification_id=notification_id)
    if outcome is Outcome.RETRY:
        attempts = Notification.objects.values_list("attempts", flat=True).get(pk=notification_id)
        # Jitter spreads retries of one gateway outage so they do not all land in the same second.
        countdown = retry_countdown(attempts) * (0.8 + 0.4 * random.random())
        raise self.retry(countdown=countdown)
    return outcome.value


def _run_eagerly(notification_ids: list[int], *, wait: bool) -> None:
    """Without a broker there is no worker to retry later, so retry here, waiting out the
    backoff only when running in the background thread."""
    try:
        for notification_id in notification_ids:
            while notification_deliver(notification_id=notification_id) is Outcome.RETRY:
                if wait:
                    attempts = Notification.objects.values_list("attempts", flat=True).get(pk=notification_id)
                    time.sleep(retry_countdown(attempts))
    finally:
        if wait:
            close_old_connections()


def enqueue_notifications(notification_ids: Iterable[int]) -> None:
    """Hand notifications to the workers (or, without a broker, to a background thread)."""
    ids = list(notification_ids)
    if settings.CELERY_TASK_ALWAYS_EAGER:
        if settings.GUNWATCH_EAGER_IN_THREAD:
            # Embedded mode: a slow mail server must not hold up whatever opened the incident.
            threading.Thread(
                target=_run_eagerly, args=(ids,), kwargs={"wait": True}, name="gunwatch-notify", daemon=True
            ).start()
        else:
            _run_eagerly(ids, wait=False)
        return
    for notification_id in ids:
        try:
            send_notification.delay(notification_id)
        except Exception:  # the broker is down: the row stays queued and the sweep below resends it
            logger.exception("Could not enqueue notification %s", notification_id)


@shared_task(name="alerts.tasks.requeue_stale_notifications")
def requeue_stale_notifications() -> int:
    """Periodic: enqueue queued rows nobody is working on (broker was down, a retry got lost).

    A row is stale once its retry delay plus a minute has passed without anyone touching it; the
    claim in ``notification_deliver`` makes an extra enqueue harmless.
    """
    now = timezone.now()
    stale = [
        pk
        for pk, attempts, updated_at in Notification.objects.filter(
            status=Notification.Status.QUEUED, updated_at__lt=now - timedelta(seconds=60)
        ).values_list("pk", "attempts", "updated_at")[:500]
        if updated_at < now - timedelta(seconds=60 + (retry_countdown(attempts) * 1.2 if attempts else 0))
    ]
    enqueue_notifications(stale)
    return len(stale)
