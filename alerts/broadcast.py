"""The one way producers tell live map viewers about incidents.

Messages go to the group of every station the incident is routed to and to the "all" group
(administrators, or every officer when POLICE_SEE_ALL_INCIDENTS is on); each consumer joins one
of them and re-checks access per message. Police groups hear of an incident only once it is
dispatched (``alerts.services.review``); the reviewers' group hears of every change, so the review
queue is live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db.models import prefetch_related_objects

from alerts.api.serializers import IncidentSerializer
from alerts.models import Incident

logger = logging.getLogger(__name__)

ALL_GROUP = "incidents.all"
REVIEW_GROUP = "incidents.review"
EventKind = Literal["incident.opened", "incident.updated"]


class IncidentMessage(TypedDict):
    type: EventKind  # names the consumer handler: incident.opened -> incident_opened
    incident: dict[str, Any]
    station_ids: list[int]
    dispatched: bool


def station_group(station_id: int) -> str:
    return f"incidents.station.{station_id}"


def incident_message(incident: Incident, *, kind: EventKind) -> IncidentMessage:
    """The message for one incident: the list API's precise shape (what police see), plus its stations."""
    if incident.just_dispatched:
        kind = "incident.opened"  # new to police, whatever it was to the reviewers
    # One read of the stations for the ids and the serializer's names (unless the caller prefetched them).
    prefetch_related_objects([incident], "stations")
    station_ids = sorted(station.pk for station in incident.stations.all())
    payload = dict(IncidentSerializer(incident, context={"precise": True}).data)
    return {"type": kind, "incident": payload, "station_ids": station_ids, "dispatched": incident.is_dispatched}


def publish(message: IncidentMessage) -> None:
    """Push a built message to every viewer who may see it. Never raises: the map is best effort,
    the incident is already committed, and clients that miss this catch up through the API."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        groups = [REVIEW_GROUP]
        if message["dispatched"]:
            groups += [ALL_GROUP, *(station_group(pk) for pk in message["station_ids"])]
        if isinstance(layer, InMemoryChannelLayer):
            # Its queues belong to the server's own loop, which async_to_sync finds for us.
            async_to_sync(_send_all)(layer, groups, message)
        else:
            _sender.run(_send_all(layer, groups, message), timeout=SEND_TIMEOUT_S)
    except Exception:
        logger.exception("Could not broadcast %s for incident %s", message["type"], message["incident"].get("id"))


class _LoopThread:
    """One long-lived event loop per process for publishing to Redis.

    channels-redis keeps a connection pool per event loop; async_to_sync would start a new loop,
    and so open new connections, for every broadcast. Re-created after a fork (Celery's prefork
    children must not share the parent's loop or sockets).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def _get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="gunwatch-broadcast", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, None], *, timeout: float) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._get()).result(timeout=timeout)


_sender = _LoopThread()
SEND_TIMEOUT_S = 5.0


async def _send_all(layer: Any, groups: list[str], message: IncidentMessage) -> None:
    await asyncio.gather(*(layer.group_send(group, message) for group in groups))
