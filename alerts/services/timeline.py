"""The incident timeline: every entry police and owners read on an incident's page is written here."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from alerts.models import Incident, IncidentEvent, Notification


def incident_event_add(
    incident: Incident, kind: str, message: str, *, actor: User | None = None, data: dict[str, Any] | None = None
) -> IncidentEvent:
    return IncidentEvent.objects.create(
        incident=incident, kind=kind, message=message[:500], actor=actor, data=data or {}
    )


def notification_outcome_event(notification: Notification) -> None:
    """Put a sent or finally failed notification on the incident's timeline."""
    if notification.status == Notification.Status.SENT:
        kind, verb = IncidentEvent.Kind.NOTIFIED, "sent"
    else:
        kind, verb = IncidentEvent.Kind.NOTIFICATION_FAILED, "failed"
    who = (
        notification.recipient_name
        if notification.recipient_kind == Notification.RecipientKind.STATION
        else notification.get_recipient_kind_display().lower()
    )
    incident_event_add(
        notification.incident,
        kind,
        f"{notification.get_channel_display()} to {who} {verb}"
        + (f": {notification.last_error[:200]}" if verb == "failed" else ""),
        data={"notification": notification.pk, "attempts": notification.attempts},
    )
