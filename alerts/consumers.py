"""Live incident feed for the police map: ``/ws/incidents/``.

Server → client: ``{"type": "incident.opened" | "incident.updated", "incident": {...}}`` with
the same incident shape as ``GET /api/v1/incidents/{id}``'s list fields. The client sends
nothing; after a reconnect it catches up with ``GET /api/v1/incidents?updated_after=<last
updated_at seen>`` and keeps, per incident, the copy with the highest ``revision``.
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.models import User
from accounts.permissions import has_police_access
from alerts.broadcast import ALL_GROUP, REVIEW_GROUP, station_group
from alerts.selectors import police_see_all, station_ids_see_incident

# Access is re-read from the database at most this often per connection: a revoked officer
# stops receiving within seconds, without a query for every message during a burst.
RECHECK_S = 5.0
# Close code for "not allowed" (the 4000-4999 range is the application's own).
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _reload_user(pk: int) -> User | None:
    return User.objects.filter(pk=pk).select_related("police_station").first()


class IncidentMapConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    user: User | None = None
    checked_at: float = 0.0

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not has_police_access(user):
            # Anonymous users, owners and police awaiting approval get nothing.
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user = user
        self.checked_at = time.monotonic()
        self.group = ALL_GROUP if police_see_all(user) else station_group(user.police_station_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def _allowed(self, station_ids: list[int]) -> bool:
        if self.user is None:
            return False
        if time.monotonic() - self.checked_at > RECHECK_S:
            user = await _reload_user(self.user.pk)
            self.checked_at = time.monotonic()
            if not has_police_access(user):
                self.user = None
                await self.close(code=CLOSE_FORBIDDEN)
                return False
            self.user = user
        return station_ids_see_incident(station_ids, self.user)

    async def _forward(self, event: dict[str, Any]) -> None:
        # Police groups only get dispatched incidents; this is the second lock on that door.
        if not event.get("dispatched", False):
            return
        if await self._allowed(event.get("station_ids", [])):
            await self.send_json({"type": event["type"], "incident": event["incident"]})

    async def incident_opened(self, event: dict[str, Any]) -> None:
        await self._forward(event)

    async def incident_updated(self, event: dict[str, Any]) -> None:
        await self._forward(event)


@database_sync_to_async
def _can_review(pk: int) -> bool:
    from alerts.services.review import user_can_review

    return user_can_review(User.objects.filter(pk=pk).first())


class ReviewQueueConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/review/``: every incident change, for reviewers; the page re-reads its queue on each."""

    user_pk: int | None = None
    checked_at: float = 0.0

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (getattr(user, "is_authenticated", False) and await _can_review(user.pk)):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user_pk, self.checked_at = user.pk, time.monotonic()
        await self.channel_layer.group_add(REVIEW_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.user_pk is not None:
            await self.channel_layer.group_discard(REVIEW_GROUP, self.channel_name)

    async def _forward(self, event: dict[str, Any]) -> None:
        if self.user_pk is None:
            return
        if time.monotonic() - self.checked_at > RECHECK_S:
            self.checked_at = time.monotonic()
            if not await _can_review(self.user_pk):
                self.user_pk = None
                await self.close(code=CLOSE_FORBIDDEN)
                return
        incident = event["incident"]
        await self.send_json(
            {
                "type": event["type"],
                "incident": {
                    "id": incident["id"],
                    "dispatch": incident.get("dispatch"),
                    "revision": incident.get("revision"),
                },
            }
        )

    async def incident_opened(self, event: dict[str, Any]) -> None:
        await self._forward(event)

    async def incident_updated(self, event: dict[str, Any]) -> None:
        await self._forward(event)
