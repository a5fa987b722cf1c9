"""Account flows."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from alerts.models import PoliceStation
from gunwatch.exceptions import ApplicationError

logger = logging.getLogger(__name__)


def _mail(*, to: list[str], subject: str, body: str) -> None:
    """Account emails are a courtesy: a mail server that is down must not undo the sign-up or approval."""
    to = [address for address in to if address]
    if not to:
        return
    try:
        send_mail(subject=subject, message=body, from_email=None, recipient_list=to)
    except Exception:
        logger.exception("Could not send %r to %s", subject, to)


def police_account_requested(*, user: User) -> None:
    """Tell the officer the request arrived, and the administrators that one waits for them."""
    station = f" for {user.police_station}" if user.police_station else ""
    _mail(
        to=[user.email],
        subject="GunWatch: your police account request was received",
        body=(
            f"Hello {user.get_full_name() or user.username},\n\n"
            f"we received your request for police access{station}. An administrator checks every request "
            "and links it to your station; you get another email when it is approved. Until then the "
            f"incident map stays hidden.\n\n{settings.SITE_URL}/"
        ),
    )
    admins = User.objects.filter(is_active=True, is_superuser=True).exclude(email="").values_list("email", flat=True)
    _mail(
        to=list(admins),
        subject=f"GunWatch: police account request from {user.username}",
        body=(
            f"{user.get_full_name() or user.username} ({user.email}, badge {user.badge_number or '—'}) asks for "
            f"police access{station}.\n\nReview it: {settings.SITE_URL}/admin/accounts/user/{user.pk}/change/"
        ),
    )


def police_account_approve(*, user: User, station: PoliceStation | None, approved_by: User) -> User:
    """Grant police access; an officer always belongs to a station (it scopes their map)."""
    if user.role != User.Role.POLICE:
        raise ApplicationError(f"{user.username} did not ask for a police account.", code="not_police")
    station = station or user.police_station
    if station is None:
        raise ApplicationError(f"Link {user.username} to a police station before approving.", code="station_required")
    user.police_station = station
    user.police_approved = True
    user.police_approved_at = timezone.now()
    user.police_approved_by = approved_by
    user.save(update_fields=["police_station", "police_approved", "police_approved_at", "police_approved_by"])
    _mail(
        to=[user.email],
        subject="GunWatch: your police account is approved",
        body=(
            f"Hello {user.get_full_name() or user.username},\n\n"
            f"your police account is approved and linked to {station}. The live incident map shows the "
            f"incidents in your station's area:\n\n{settings.SITE_URL}/map/"
        ),
    )
    return user


def police_accounts_pending() -> QuerySet[User]:
    return User.objects.filter(role=User.Role.POLICE, police_approved=False, is_active=True)
