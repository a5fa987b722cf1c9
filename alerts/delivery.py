"""Sending one notification exactly once, with the decision whether to try again and when.

Owners and contacts get ``1 + ALERT_NOTIFY_MAX_RETRIES`` attempts. A police station's alert is the one
that must not be lost to a dispatch system being down for a while: it is retried with backoff capped
at ``ALERT_NOTIFY_POLICE_BACKOFF_MAX_S`` until ``ALERT_NOTIFY_POLICE_RETRY_HOURS`` have passed, its
failures are counted on the station's open ``ChannelOutage`` (which tells the admins once), and the
first delivery that gets through again sends whatever that outage held up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from alerts.models import Notification
from alerts.services.outages import channel_outage_failure, channel_outage_resolve
from alerts.services.timeline import notification_outcome_event
from alerts.transports import TransportError, deliver

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"  # not ours to send: already sent, being sent, or given up on


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    # For RETRY: the backoff before the next attempt, and the wait the receiver asked for (Retry-After).
    backoff_s: float = 0.0
    retry_after_s: float | None = None


def max_attempts() -> int:
    return 1 + settings.ALERT_NOTIFY_MAX_RETRIES


def retry_countdown(attempts: int, *, cap: float = 3600) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped (an hour unless said otherwise)."""
    # min() on the exponent first: 2**attempts for a police row retried for days is a very large int.
    return float(min(cap, settings.ALERT_NOTIFY_BACKOFF_S * 2 ** min(max(0, attempts - 1), 32)))


def is_police(recipient_kind: str) -> bool:
    return recipient_kind == Notification.RecipientKind.STATION


def backoff_cap(recipient_kind: str) -> float:
    """Police rows wait at most this long between attempts, so a recovered dispatch system hears soon."""
    return float(settings.ALERT_NOTIFY_POLICE_BACKOFF_MAX_S) if is_police(recipient_kind) else 3600.0


def notification_deliver(*, notification_id: int) -> Outcome:
    """Send one notification (see ``notification_attempt``) and say how it went."""
    return notification_attempt(notification_id=notification_id).outcome


def notification_attempt(*, notification_id: int) -> Attempt:
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
        return Attempt(Outcome.SKIPPED)
    notification = Notification.objects.select_related("incident", "station", "owner").get(pk=notification_id)
    try:
        deliver(notification)
    except TransportError as exc:
        return _failed(notification, str(exc), permanent=exc.permanent, retry_after_s=exc.retry_after_s)
    except Exception as exc:  # a bug or an unexpected library error: retry, but log it loudly
        logger.exception("Notification %s raised unexpectedly", notification_id)
        return _failed(notification, f"{type(exc).__name__}: {exc}", permanent=False)
    notification.status = Notification.Status.SENT
    notification.sent_at = timezone.now()
    notification.last_error = ""
    notification.save(update_fields=["status", "sent_at", "last_error", "updated_at"])
    notification_outcome_event(notification)
    if is_police(notification.recipient_kind):
        try:
            channel_outage_resolve(notification=notification)
        except Exception:  # the alert went out; the outage row closes with the next delivery
            logger.exception("Could not close the channel outage after notification %s", notification.pk)
    return Attempt(Outcome.SENT)


def police_retry_until(notification: Notification) -> datetime:
    return notification.created_at + timedelta(hours=settings.ALERT_NOTIFY_POLICE_RETRY_HOURS)


def _gives_up(notification: Notification, *, permanent: bool) -> bool:
    if permanent:
        return True
    if notification.attempts < max_attempts():
        return False
    # Police keep the ordinary budget at least, and beyond it for as long as the retry window is open.
    return not (is_police(notification.recipient_kind) and timezone.now() < police_retry_until(notification))


def _failed(notification: Notification, error: str, *, permanent: bool, retry_after_s: float | None = None) -> Attempt:
    give_up = _gives_up(notification, permanent=permanent)
    notification.status = Notification.Status.FAILED if give_up else Notification.Status.QUEUED
    notification.last_error = error[:2000]
    notification.save(update_fields=["status", "last_error", "updated_at"])
    logger.warning(
        "Notification %s (%s to %s) attempt %s failed%s: %s",
        notification.pk,
        notification.channel,
        notification.recipient_key,
        notification.attempts,
        " permanently" if give_up else "",
        error,
    )
    if is_police(notification.recipient_kind):
        try:
            channel_outage_failure(notification=notification, error=error, permanent=permanent)
        except Exception:  # bookkeeping must not turn a retry into a lost alert
            logger.exception("Could not record the channel outage of notification %s", notification.pk)
    if give_up:
        notification_outcome_event(notification)
        return Attempt(Outcome.FAILED)
    if retry_after_s is not None:
        retry_after_s = min(retry_after_s, float(settings.ALERT_NOTIFY_RETRY_AFTER_MAX_S))
    backoff = retry_countdown(notification.attempts, cap=backoff_cap(notification.recipient_kind))
    return Attempt(Outcome.RETRY, backoff_s=backoff, retry_after_s=retry_after_s)
