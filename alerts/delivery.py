"""Sending one notification exactly once, with the decision whether to try again."""

from __future__ import annotations

import logging
from enum import StrEnum

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from alerts.models import Notification
from alerts.services.timeline import notification_outcome_event
from alerts.transports import TransportError, deliver

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"  # not ours to send: already sent, being sent, or given up on


def max_attempts() -> int:
    return 1 + settings.ALERT_NOTIFY_MAX_RETRIES


def retry_countdown(attempts: int) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped at an hour."""
    return float(min(3600, settings.ALERT_NOTIFY_BACKOFF_S * 2 ** max(0, attempts - 1)))


def notification_deliver(*, notification_id: int) -> Outcome:
    """Claim the row (queued → sending), send it, and record how it went.

    The claim is a conditional update that changes one row only for the first caller, so a task
    redelivered after a worker crash, or enqueued twice, never sends the message a second time.
    A row left in ``sending`` by a crash mid-send stays there: whether it went out is unknown,
    and repeating an alert is worse for the recipient than an operator looking at it.
    """
    now = timezone.now()
    claimed = Notification.objects.filter(pk=notification_id, status=Notification.Status.QUEUED).update(
        status=Notification.Status.SENDING, attempts=F("attempts") + 1, updated_at=now
    )
    if claimed != 1:
        return Outcome.SKIPPED
    notification = Notification.objects.select_related("incident", "station", "owner").get(pk=notification_id)
    try:
        deliver(notification)
    except TransportError as exc:
        return _failed(notification, str(exc), permanent=exc.permanent)
    except Exception as exc:  # a bug or an unexpected library error: retry, but log it loudly
        logger.exception("Notification %s raised unexpectedly", notification_id)
        return _failed(notification, f"{type(exc).__name__}: {exc}", permanent=False)
    notification.status = Notification.Status.SENT
    notification.sent_at = timezone.now()
    notification.last_error = ""
    notification.save(update_fields=["status", "sent_at", "last_error", "updated_at"])
    notification_outcome_event(notification)
    return Outcome.SENT


def _failed(notification: Notification, error: str, *, permanent: bool) -> Outcome:
    give_up = permanent or notification.attempts >= max_attempts()
    notification.status = Notification.Status.FAILED if give_up else Notification.Status.QUEUED
    notification.last_error = error[:2000]
    notification.save(update_fields=["status", "last_error", "updated_at"])
    logger.warning(
        "Notification %s (%s to %s) attempt %s failed%s: %s",
        notification.pk, notification.channel, notification.recipient_key, notification.attempts,
        " permanently" if give_up else "", error,
    )
    if give_up:
        notification_outcome_event(notification)
        return Outcome.FAILED
    return Outcome.RETRY
