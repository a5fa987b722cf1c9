"""The exact websocket messages police map clients receive, pinned field by field.

The map (static/js) and any dispatch integration parse these; a serializer change that adds,
drops or reformats a field must fail here first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from alerts.models import Incident
from alerts.services import incident_record_detection, incident_transition
from gunwatch.asgi import application
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio,
    pytest.mark.usefixtures("close_thread_connections"),
]

NOW = datetime(2026, 3, 14, 21, 30, 0, tzinfo=UTC)


@database_sync_to_async
def _open(owner: Any) -> Incident:
    device = DeviceFactory(owner=owner, name="Balcony", latitude=52.523456, longitude=13.412345)
    classification = classify(device, recorded_at=NOW, shots=2, score=0.91, audio=b"RIFF-evidence")
    return incident_record_detection(classification=classification)


async def test_opened_and_updated_messages_are_exactly_these(police_user, owner) -> None:  # type: ignore[no-untyped-def]
    with time_machine.travel(NOW + timedelta(seconds=2), tick=False):
        communicator = WebsocketCommunicator(application, "/ws/incidents/", headers=[(b"origin", b"http://127.0.0.1")])
        communicator.scope["user"] = police_user
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        incident = await _open(owner)
        opened = await communicator.receive_json_from(timeout=5)
        await database_sync_to_async(incident_transition)(incident=incident, user=police_user, action="acknowledge")
        updated = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
    code = str(incident.code)
    clip = await database_sync_to_async(lambda: str(Incident.objects.get(pk=incident.pk).evidence_clip.code))()
    incident_fields = {
        "id": code,
        "status": "new",
        "status_display": "New",
        "disposition": "",
        "first_detected_at": "2026-03-14T21:30:00.500000Z",  # recording start + the shot's offset in the clip
        "last_detected_at": "2026-03-14T21:30:00.500000Z",
        "opened_at": "2026-03-14T21:30:02Z",
        "updated_at": "2026-03-14T21:30:02Z",
        "closed_at": None,
        "latitude": 52.523456,
        "longitude": 13.412345,
        "radius_m": 1525.0,
        "location_method": "single",
        "residual_m": None,
        "shots": 2,
        "max_confidence": 0.91,
        "device_count": 1,
        "revision": 2,
        "url": f"/incidents/{code}/",
        "evidence": {
            "clip": clip,
            "audio_url": f"/clips/{clip}/audio",
            "spectrogram_url": f"/clips/{clip}/spectrogram.png",
        },
        "stations": ["Mitte"],
        # Issue 11: how sure we are, and how it reached police (the station has no policy: immediate).
        "evidence_score": 0.607,
        "evidence_summary": "Moderate evidence (0.61): single device, noisy location (±1525 m)",
        "dispatch": "dispatched",
        "dispatch_reason": "policy",
        "dispatched_at": "2026-03-14T21:30:02Z",
    }
    assert opened == {"type": "incident.opened", "incident": incident_fields}
    assert updated == {
        "type": "incident.updated",
        "incident": {**incident_fields, "status": "acknowledged", "status_display": "Acknowledged", "revision": 3},
    }
