"""Celery tasks for alerts: thin wrappers that fetch by id, call the service and decide retries."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.utils import timezone

from alerts.delivery import Outcome, backoff_cap, max_attempts, notification_attempt, retry_countdown
from alerts.models import Notification
from gunwatch.tasks import enqueue


@shared_task(bind=True, name="alerts.tasks.send_notification", acks_late=True, max_retries=None)
def send_notification(self: Any, notification_id: int) -> str:
    attempt = notification_attempt(notification_id=notification_id)
    if self.request.is_eager and not getattr(self.request, "embedded", False):
        # Celery's own eager emulation cannot wait out a countdown (it re-raises the Retry), and its
        # caller wants the outcome now: try again at once until the row is sent or given up on.
        # A police row retried for hours would spin here, so it gets the ordinary budget of attempts and
        # is then left queued for the requeue sweep, which keeps going for the whole retry window.
        tries = 1
        while attempt.outcome is Outcome.RETRY and tries < max_attempts():
            attempt = notification_attempt(notification_id=notification_id)
            tries += 1
        if attempt.outcome is Outcome.RETRY:
            return attempt.outcome.value
    if attempt.outcome is Outcome.RETRY:
        # Jitter spreads retries of one gateway outage so they do not all land in the same second; a
        # receiver's Retry-After is a floor the jitter must not undercut.
        countdown = max(attempt.backoff_s * (0.8 + 0.4 * random.random()), attempt.retry_after_s or 0.0)
        raise self.retry(countdown=countdown)
    return attempt.outcome.value


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
        for pk, attempts, kind, updated_at in Notification.objects.filter(
            status=Notification.Status.QUEUED, updated_at__lt=now - timedelta(seconds=60)
        )
        .order_by("updated_at")
        .values_list("pk", "attempts", "recipient_kind", "updated_at")[:500]
        if updated_at
        < now - timedelta(seconds=60 + (retry_countdown(attempts, cap=backoff_cap(kind)) * 1.2 if attempts else 0))
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
