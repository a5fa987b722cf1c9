"""The police workflow on an incident: acknowledge → en route → on scene → closed, and notes.

The table of allowed transitions lives with the model (``alerts.models.TRANSITIONS``).
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from alerts import broadcast
from alerts.models import ACTIONS, TRANSITIONS, Incident, IncidentEvent
from alerts.services.timeline import incident_event_add
from gunwatch.exceptions import ApplicationError


def incident_actions_available(incident: Incident) -> list[str]:
    return incident.actions_available()


@transaction.atomic
def incident_transition(
    *, incident: Incident, user: User, action: str, disposition: str = "", note: str = ""
) -> Incident:
    """Move an incident along acknowledge → en route → on scene → closed, or add a note.

    The row is locked so two officers pressing buttons at once both see the state the other left.
    """
    note = note.strip()
    if action not in ACTIONS:
        raise ApplicationError(f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}.", code="invalid_action")
    incident = Incident.objects.select_for_update().get(pk=incident.pk)
    if action == "note":
        if not note:
            raise ApplicationError("A note needs some text.", code="note_required")
        incident_event_add(incident, IncidentEvent.Kind.NOTE, note, actor=user)
    else:
        sources, target, kind = TRANSITIONS[action]
        if incident.status not in sources:
            raise ApplicationError(
                f"Cannot {action.replace('_', ' ')} an incident that is {incident.get_status_display().lower()}"
                + (f"; possible now: {', '.join(incident_actions_available(incident))}." if incident.is_open else "."),
                code="invalid_transition",
                extra={"status": incident.status, "allowed": incident_actions_available(incident)},
            )
        if action == "close":
            if disposition not in Incident.Disposition.values:
                raise ApplicationError(
                    "Closing needs a disposition: " + ", ".join(Incident.Disposition.values) + ".",
                    code="disposition_required",
                )
            incident.disposition = disposition
            incident.closed_at = timezone.now()
        elif disposition:
            raise ApplicationError("A disposition is given only when closing.", code="disposition_unexpected")
        incident.status = target
        message = f"{user.username}: {kind.replace('_', ' ')}"
        if action == "close":
            message += f" ({incident.get_disposition_display()})"
        if note:
            message += f" — {note}"
        data = {"disposition": disposition} if disposition else {}
        incident_event_add(incident, kind, message, actor=user, data=data)
    incident.revision += 1  # the row is locked
    incident.save()
    update = broadcast.incident_message(incident, kind="incident.updated")
    transaction.on_commit(lambda: broadcast.publish(update))
    return incident
