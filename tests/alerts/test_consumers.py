from __future__ import annotations

import asyncio
import os
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from alerts import consumers
from alerts.models import Incident
from alerts.services import incident_record_detection, incident_transition
from gunwatch.asgi import application
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory, PoliceStationFactory, PoliceUserFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("close_thread_connections"),
]

ORIGIN = [(b"origin", b"http://127.0.0.1")]


async def _connect(
    user: Any = None, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[WebsocketCommunicator, bool, int | None]:
    communicator = WebsocketCommunicator(application, "/ws/incidents/", headers=ORIGIN + (headers or []))
    if user is not None:
        communicator.scope["user"] = user
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


@database_sync_to_async
def _open_incident(owner: Any, lat: float = 52.52, lon: float = 13.405) -> Incident:
    device = DeviceFactory(owner=owner, latitude=lat, longitude=lon)
    return incident_record_detection(classification=classify(device))


async def test_anonymous_is_refused() -> None:
    _, connected, code = await _connect()
    assert not connected
    assert code == consumers.CLOSE_FORBIDDEN


async def test_owner_is_refused(owner) -> None:
    _, connected, code = await _connect(owner)
    assert (connected, code) == (False, consumers.CLOSE_FORBIDDEN)


async def test_police_awaiting_approval_is_refused(pending_police) -> None:
    _, connected, code = await _connect(pending_police)
    assert (connected, code) == (False, consumers.CLOSE_FORBIDDEN)


async def test_approved_police_receive_opened_and_updated(police_user, owner) -> None:
    communicator, connected, _ = await _connect(police_user)
    assert connected
    incident = await _open_incident(owner)
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "incident.opened"
    assert message["incident"]["id"] == str(incident.code)
    assert message["incident"]["latitude"] == 52.52  # police get the precise location
    assert message["incident"]["status"] == "new"
    assert set(message) == {"type", "incident"}  # routing details stay on the server
    await database_sync_to_async(incident_transition)(incident=incident, user=police_user, action="acknowledge")
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "incident.updated"
    assert message["incident"]["status"] == "acknowledged"
    assert message["incident"]["revision"] > 1
    await communicator.disconnect()


async def test_police_of_another_station_hear_nothing(owner) -> None:
    far = await database_sync_to_async(PoliceStationFactory)(name="Munich", latitude=48.1, longitude=11.6)
    officer = await database_sync_to_async(PoliceUserFactory)(username="munich", police_station=far)
    await database_sync_to_async(PoliceStationFactory)(name="Berlin", latitude=52.52, longitude=13.405)
    communicator, connected, _ = await _connect(officer)
    assert connected
    await _open_incident(owner)
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_see_all_setting_shows_every_incident(owner, settings) -> None:
    settings.POLICE_SEE_ALL_INCIDENTS = True
    far = await database_sync_to_async(PoliceStationFactory)(name="Munich", latitude=48.1, longitude=11.6)
    officer = await database_sync_to_async(PoliceUserFactory)(username="munich", police_station=far)
    await database_sync_to_async(PoliceStationFactory)(name="Berlin", latitude=52.52, longitude=13.405)
    communicator, connected, _ = await _connect(officer)
    assert connected
    incident = await _open_incident(owner)
    message = await communicator.receive_json_from(timeout=5)
    assert message["incident"]["id"] == str(incident.code)
    await communicator.disconnect()


async def test_access_is_rechecked_per_event(police_user, owner) -> None:
    communicator, connected, _ = await _connect(police_user)
    assert connected
    police_user.police_approved = False
    await database_sync_to_async(police_user.save)()
    with mock.patch.object(consumers, "RECHECK_S", 0.0):
        await _open_incident(owner)
        output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": consumers.CLOSE_FORBIDDEN}


async def test_real_session_cookie_through_auth_middleware(police_user) -> None:
    client = Client()
    await sync_to_async(client.force_login)(police_user)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"
    communicator, connected, _ = await _connect(headers=[(b"cookie", cookie.encode())])
    assert connected
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()


async def test_foreign_origin_is_refused(police_user) -> None:
    communicator = WebsocketCommunicator(application, "/ws/incidents/", headers=[(b"origin", b"https://evil.example")])
    communicator.scope["user"] = police_user
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


@pytest.mark.redis
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs a real Redis (REDIS_URL)")
async def test_idle_connection_outlives_the_redis_read_timeout(police_user, owner) -> None:
    # redis-py 8's default 5 s socket timeout used to kill idle consumers (channels-redis blocks 5 s).
    communicator, connected, _ = await _connect(police_user)
    assert connected
    await asyncio.sleep(7)
    incident = await _open_incident(owner)
    message = await communicator.receive_json_from(timeout=5)
    assert message["incident"]["id"] == str(incident.code)
    await communicator.disconnect()
