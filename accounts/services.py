"""Account flows."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from alerts.models import PoliceStation
from gunwatch.exceptions import ApplicationError


def police_account_approve(*, user: User, station: PoliceStation | None, approved_by: User) -> User:
    """Grant police access; an officer always belongs to a station (it scopes their map)."""
    if user.role != User.Role.POLICE:
        raise ApplicationError(f"{user.username} did not ask for a police account.", code="not_police")
    station = station or user.police_station
    if station is None:
        raise ApplicationError(
            f"Link {user.username} to a police station before approving.", code="station_required"
        )
    user.police_station = station
    user.police_approved = True
    user.police_approved_at = timezone.now()
    user.police_approved_by = approved_by
    user.save(update_fields=["police_station", "police_approved", "police_approved_at", "police_approved_by"])
    return user


def police_accounts_pending() -> QuerySet[User]:
    return User.objects.filter(role=User.Role.POLICE, police_approved=False, is_active=True)
