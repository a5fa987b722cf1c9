"""Incident flows, one module per job; this package re-exports the names other apps call.

- ``recording``: a positive detection opens an incident or joins the open one it belongs to.
- ``locating``: an incident's aggregates, its location (the same-shot group) and its stations.
- ``recipients``: who is told (owner, trusted contacts, stations) and handing the rows to the tasks.
- ``workflow``: the police transitions (the table itself is ``alerts.models.TRANSITIONS``).
- ``timeline``: the incident's events, including each notification's outcome.
"""

from __future__ import annotations

from alerts.models import ACTIONS, TRANSITIONS
from alerts.services.locating import SPEED_OF_SOUND_M_S
from alerts.services.recording import (
    JOIN_LOCK_NAME,
    Sighting,
    detection_event_time,
    incident_record_detection,
    sighting_from,
)
from alerts.services.timeline import incident_event_add, notification_outcome_event
from alerts.services.workflow import incident_actions_available, incident_transition

__all__ = [
    "ACTIONS",
    "JOIN_LOCK_NAME",
    "SPEED_OF_SOUND_M_S",
    "TRANSITIONS",
    "Sighting",
    "detection_event_time",
    "incident_actions_available",
    "incident_event_add",
    "incident_record_detection",
    "incident_transition",
    "notification_outcome_event",
    "sighting_from",
]
