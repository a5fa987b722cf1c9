"""The one way producers tell live map viewers about incidents.

Messages go to the group of every station the incident is routed to and to the "all" group
(administrators, or every officer when POLICE_SEE_ALL_INCIDENTS is on); each consumer joins one
of them and re-checks access per message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from alerts.models import Incident

logger = logging.getLogger(__name__)

ALL_GROUP = "incidents.all"
EventKind = Literal["incident.opened", "incident.updated"]


class IncidentMessage(TypedDict):
    type: EventKind  # names the consumer handler: incident.opened -> incident_opened
    incident: dict[str, Any]
    station_ids: list[int]


def station_group(station_id: int) -> str:
    return f"incidents.station.{station_id}"


def incident_message(incident: Incident, *, kind: EventKind) -> IncidentMessage:
    from alerts.api.serializers import IncidentSerializer

    station_ids = sorted(station.pk for station in incident.stations.all())
    payload = dict(IncidentSerializer(incident, context={"precise": True}).data)
    return {"type": kind, "incident": payload, "station_ids": station_ids}


def incident_changed(incident: Incident, *, kind: EventKind) -> None:
    """Push an incident to every viewer who may see it. Never raises: the map is best effort,
    the incident is already committed and the list API has it for clients that missed this."""
    try:
        message = incident_message(incident, kind=kind)
        layer = get_channel_layer()
        if layer is None:
            return
        groups = [ALL_GROUP, *(station_group(pk) for pk in message["station_ids"])]
        # One event loop for all groups: outside a loop each async_to_sync call starts a new one,
        # and channels-redis opens a fresh connection per loop.
        async_to_sync(_send_all)(layer, groups, message)
    except Exception:
        logger.exception("Could not broadcast %s for incident %s", kind, incident.code)


async def _send_all(layer: Any, groups: list[str], message: IncidentMessage) -> None:
    await asyncio.gather(*(layer.group_send(group, message) for group in groups))


def incident_changed_by_pk(pk: int, *, kind: EventKind) -> None:
    incident = (
        Incident.objects.select_related("evidence_clip").prefetch_related("stations").filter(pk=pk).first()
    )
    if incident is not None:
        incident_changed(incident, kind=kind)
