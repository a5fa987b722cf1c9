"""A police station's channel that keeps failing: one open outage per station and channel, admins told once.

Delivery calls ``channel_outage_failure`` after each failed attempt to a station and
``channel_outage_resolve`` after each one that got through. Both are single conditional UPDATEs (or an
INSERT guarded by the one-open-outage constraint), so concurrent workers agree on one outage and on
one email without locks.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from alerts.models import ChannelOutage, Notification, PoliceStation

logger = logging.getLogger(__name__)


def _open(station_id: int, channel: str) -> Q:
    return Q(station_id=station_id, channel=channel, resolved_at__isnull=True)


def channel_outage_failure(*, notification: Notification, error: str, permanent: bool) -> ChannelOutage | None:
    """Count one failed attempt to a station; tell the admins when this outage crosses the threshold.

    A permanent failure (the receiver refuses the message: a wrong URL, a revoked secret) needs a person
    at once, so it tells them on the first attempt.
    """
    if notification.station_id is None:
        return None
    now = timezone.now()
    station_id, channel = notification.station_id, notification.channel
    error = error[:2000]
    changes = {"failures": F("failures") + 1, "last_failure_at": now, "last_error": error}
    if not ChannelOutage.objects.filter(_open(station_id, channel)).update(**changes):
        try:
            with transaction.atomic():
                ChannelOutage.objects.create(
                    station_id=station_id,
                    channel=channel,
                    started_at=now,
                    last_failure_at=now,
                    failures=1,
                    last_error=error,
                )
        except IntegrityError:  # another worker opened it a moment ago
            ChannelOutage.objects.filter(_open(station_id, channel)).update(**changes)
    outage = ChannelOutage.objects.filter(_open(station_id, channel)).first()
    if outage is None:  # resolved in between by a delivery that got through
        return None
    due = outage.admins_told_at is None and (permanent or outage.failures >= settings.ALERT_OUTAGE_ADMIN_AFTER_FAILURES)
    # Only the worker whose UPDATE flips the column sends: one email per outage.
    if due and ChannelOutage.objects.filter(pk=outage.pk, admins_told_at__isnull=True).update(admins_told_at=now):
        outage.admins_told_at = now
        _tell_admins(outage, notification)
    return outage


def channel_outage_resolve(*, notification: Notification) -> ChannelOutage | None:
    """Close the station's open outage on this channel, and send what it held up now, not at its next retry."""
    if notification.station_id is None:
        return None
    now = timezone.now()
    outage = ChannelOutage.objects.filter(_open(notification.station_id, notification.channel)).first()
    if outage is None or not ChannelOutage.objects.filter(pk=outage.pk, resolved_at__isnull=True).update(
        resolved_at=now
    ):
        return None
    outage.resolved_at = now
    logger.info("%s recovered after %s failed attempts", outage, outage.failures)
    held = list(
        Notification.objects.filter(
            station_id=notification.station_id, channel=notification.channel, status=Notification.Status.QUEUED
        )
        .exclude(pk=notification.pk)
        .values_list("pk", flat=True)[:500]
    )
    if held:
        # Imported late: the task module imports delivery, which imports this module.
        from alerts.tasks import enqueue_notifications

        # The claim in delivery makes this harmless for a row whose own retry fires at the same time.
        transaction.on_commit(lambda: enqueue_notifications(held))
    return outage


def _admin_addresses() -> list[str]:
    admins = User.objects.filter(is_active=True).filter(Q(is_superuser=True) | Q(role=User.Role.ADMIN))
    return sorted(set(admins.exclude(email="").values_list("email", flat=True)))


def _tell_admins(outage: ChannelOutage, notification: Notification) -> None:
    station: PoliceStation = notification.station  # type: ignore[assignment]
    to = _admin_addresses()
    if not to:
        logger.error("%s and no administrator has an email address to be told", outage)
        return
    hours = settings.ALERT_NOTIFY_POLICE_RETRY_HOURS
    body = (
        f"Alerts to {station.name} over {outage.get_channel_display().lower()} ({notification.target}) keep failing:\n"
        f"{outage.failures} failed attempts since {_fmt(outage.started_at)}.\n"
        f"Last error: {outage.last_error}\n\n"
        f"GunWatch keeps retrying police alerts for {hours} hours and sends everything held up as soon as the "
        "channel answers again; you get this email once for this outage.\n\n"
        f"Outage: {settings.SITE_URL}/admin/alerts/channeloutage/{outage.pk}/change/\n"
        f"Station: {settings.SITE_URL}/admin/alerts/policestation/{station.pk}/change/\n"
    )
    try:
        send_mail(
            subject=f"GunWatch: alerts to {station.name} are not getting through ({outage.channel})",
            message=body,
            from_email=None,
            recipient_list=to,
        )
    except Exception:
        # The outage row (and the admin's outage list) still shows it; the email is the nudge.
        logger.exception("Could not email the administrators about %s", outage)


def _fmt(when: datetime) -> str:
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S %Z")
