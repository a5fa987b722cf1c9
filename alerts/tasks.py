"""Celery tasks for alerts: thin wrappers that fetch by id, call the service and decide retries."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.utils import timezone

from alerts.delivery import Outcome, notification_deliver, retry_countdown
from alerts.models import Notification
from gunwatch.tasks import enqueue


@shared_task(bind=True, name="alerts.tasks.send_notification", acks_late=True, max_retries=None)
def send_notification(self: Any, notification_id: int) -> str:
    outcome = notification_deliver(notification_id=notification_id)
    if self.request.is_eager and not getattr(self.request, "embedded", False):
        # Celery's own eager emulation cannot wait out a countdown (it re-raises the Retry), and its
        # caller wants the outcome now: try again at once until the row is sent or given up on.
        while outcome is Outcome.RETRY:
            outcome = notification_deliver(notification_id=notification_id)
    if outcome is Outcome.RETRY:
        attempts = Notification.objects.values_list("attempts", flat=True).get(pk=notification_id)
        # Jitter spreads retries of one gateway outage so they do not all land in the same second.
        countdown = retry_countdown(attempts) * (0.8 + 0.4 * random.random())
        raise self.retry(countdown=countdown)
    return outcome.value


def enqueue_notifications(notification_ids: Iterable[int]) -> None:
    """Hand notifications to the workers (or, without a broker, to the embedded runner)."""
    for notification_id in notification_ids:
        # A broker that is down is logged by enqueue; the row stays queued and the sweep below resends it.
        enqueue(send_notification, notification_id)


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


@shared_task(name="alerts.tasks.escalate_review")
def escalate_review(incident_id: int) -> bool:
    """Countdown task: dispatch the incident unreviewed if its review deadline passed undecided."""
    from alerts.services.review import incident_escalate

    return incident_escalate(incident_id=incident_id)


@shared_task(name="alerts.tasks.escalate_overdue_reviews")
def escalate_overdue_reviews() -> int:
    """Periodic: the sweep behind the countdowns (a lost task, a broker outage, a restart)."""
    from alerts.services.review import incidents_escalate_overdue

    return incidents_escalate_overdue()


@shared_task(name="alerts.tasks.calibrate_devices")
def calibrate_devices() -> int:
    """Periodic: adapt every active device's alert threshold to the false-alarm budget."""
    from alerts.services.calibration import devices_calibrate

    return len(devices_calibrate())
