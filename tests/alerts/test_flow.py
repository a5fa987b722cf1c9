"""The whole path once: a device uploads, the pipeline classifies, the map hears, people are told."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import mail

from alerts.models import Incident
from gunwatch.asgi import application
from tests.detection import pipeline
from tests.factories import TrustedContactFactory


@pytest.fixture
def cast(positive_model, paired_device, police_user) -> dict[str, Any]:
    device, _ = paired_device
    TrustedContactFactory(owner=device.owner, name="Mum", email="mum@example.org", channels=["email"])
    return {
        "owner_email": device.owner.email,
        "station_email": police_user.police_station.contact_email,
        "police": police_user,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.usefixtures("close_thread_connections")
async def test_upload_to_incident_to_map_and_notifications(cast, device_client, settings) -> None:
    communicator = WebsocketCommunicator(application, "/ws/incidents/", headers=[(b"origin", b"http://127.0.0.1")])
    communicator.scope["user"] = cast["police"]
    assert (await communicator.connect(timeout=5))[0]

    fields = pipeline.upload_fields(
        pipeline.encode(pipeline.impulses()),
        latitude=52.5201,
        longitude=13.4051,
        accuracy_m=6,
        clock_source="gps",
        trigger_offset_s=0.5,
    )
    response = await database_sync_to_async(device_client.post)("/api/v1/clips", fields, format="multipart")
    assert response.status_code in (201, 202), response.json()

    message = await communicator.receive_json_from(timeout=30)
    assert message["type"] == "incident.opened"
    incident = await database_sync_to_async(Incident.objects.get)(code=message["incident"]["id"])
    assert (incident.latitude, incident.longitude) == (52.5201, 13.4051)
    assert incident.radius_m == pytest.approx(6 + settings.ALERT_HEARING_RANGE_M)
    assert incident.max_confidence > 0.99
    recipients = {m.to[0] for m in mail.outbox}
    assert {"mum@example.org", cast["owner_email"], cast["station_email"]} <= recipients
    await communicator.disconnect()
