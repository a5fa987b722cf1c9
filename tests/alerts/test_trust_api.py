"""Issue 11 over the API: reviewers list the review queue and confirm or dismiss under /api/v1/review,
through the same service as the page (notifications once, every decision on the timeline); and owners
and their trusted contacts are told at once whatever the stations' policy."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from accounts.models import User
from alerts.models import DispatchPolicy, Incident, IncidentEvent, Notification, PoliceStation
from alerts.selectors import incidents_for_police
from alerts.services import incident_record_detection
from alerts.services.review import incidents_escalate_overdue
from tests.alerts.helpers import classify
from tests.conftest import client_for
from tests.factories import DeviceFactory, TrustedContactFactory

CENTRE = (52.52, 13.405)


def _single_shot(owner: User, *, audio: bytes | None = None) -> Incident:
    device = DeviceFactory(owner=owner, name="Balcony", latitude=CENTRE[0], longitude=CENTRE[1])
    incident = incident_record_detection(classification=classify(device, score=0.93, audio=audio))
    assert incident is not None
    incident.refresh_from_db()
    return incident


def _station_rows(incident: Incident) -> list[Notification]:
    return list(incident.notifications.filter(recipient_kind=Notification.RecipientKind.STATION))


def test_reviewer_lists_the_queue_with_every_clip(reviewed_station, owner, reviewer) -> None:
    incident = _single_shot(owner, audio=b"RIFF0000WAVEfmt ")
    response = client_for(reviewer).get("/api/v1/review")
    assert response.status_code == 200
    [item] = response.json()
    assert item["id"] == str(incident.code)
    assert item["dispatch"] == "review"
    assert item["review_deadline_at"] is not None
    assert "single device, noisy location" in item["evidence_summary"]
    [clip] = item["clips"]
    assert clip["device_name"] == "Balcony"
    assert clip["score"] == pytest.approx(0.93)
    code = clip["clip_id"]
    assert (clip["audio_url"], clip["waveform_url"], clip["spectrogram_url"]) == (
        f"/review/clips/{code}/audio",
        f"/review/clips/{code}/waveform.png",
        f"/review/clips/{code}/spectrogram.png",
    )


def test_confirm_over_the_api_dispatches_once_and_logs_who(
    reviewed_station, owner, reviewer, police_user, django_capture_on_commit_callbacks
) -> None:
    incident = _single_shot(owner)
    api = client_for(reviewer)
    assert not incidents_for_police(police_user).filter(pk=incident.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/review/{incident.code}/confirm", {"note": "clear muzzle blast"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["dispatch"], body["dispatch_reason"]) == ("dispatched", "reviewed")
    assert (body["reviewed_by"], body["review_note"]) == ("reviewer", "clear muzzle blast")
    assert body["reviewed_at"] is not None
    incident.refresh_from_db()
    assert incident.reviewed_by == reviewer
    event = incident.events.get(kind=IncidentEvent.Kind.CONFIRMED)
    assert event.actor == reviewer and "clear muzzle blast" in event.message
    assert incidents_for_police(police_user).filter(pk=incident.pk).exists()
    assert [(n.recipient_key, n.channel) for n in _station_rows(incident)] == [
        (f"station:{reviewed_station.pk}", "email")
    ]
    assert [m.to for m in mail.outbox].count(["desk@mitte.example"]) == 1

    # A second decision, by the API or by the deadline, changes nothing and sends nothing.
    with django_capture_on_commit_callbacks(execute=True):
        again = api.post(f"/api/v1/review/{incident.code}/confirm", {}, format="json")
        late = api.post(f"/api/v1/review/{incident.code}/dismiss", {"reason": "false_alarm"}, format="json")
        with time_machine.travel(timezone.now() + timedelta(minutes=5)):
            assert incidents_escalate_overdue() == 0
    assert again.status_code == 409
    assert again.json()["code"] == "already_decided"
    assert "confirmed by a reviewer" in again.json()["message"]
    assert (late.status_code, late.json()["code"]) == (409, "already_decided")
    assert len(_station_rows(incident)) == 1
    assert [m.to for m in mail.outbox].count(["desk@mitte.example"]) == 1
    assert incident.events.filter(kind=IncidentEvent.Kind.CONFIRMED).count() == 1


def test_dismiss_needs_a_known_reason_and_police_never_see_it(reviewed_station, owner, reviewer, police_user) -> None:
    incident = _single_shot(owner)
    api = client_for(reviewer)
    url = f"/api/v1/review/{incident.code}/dismiss"

    missing = api.post(url, {}, format="json")
    assert missing.status_code == 400
    assert "reason" in missing.json()["extra"]["fields"]
    unknown = api.post(url, {"reason": "confirmed_gunfire"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "invalid_choice"
    incident.refresh_from_db()
    assert incident.dispatch == "review"  # bad input decided nothing

    response = api.post(url, {"reason": "other_source", "note": "fireworks"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["dispatch"], response.json()["status"]) == ("dismissed", "closed")
    incident.refresh_from_db()
    assert (incident.disposition, incident.reviewed_by) == ("other_source", reviewer)
    dismissed = incident.events.get(kind=IncidentEvent.Kind.DISMISSED)
    assert dismissed.actor == reviewer and "fireworks" in dismissed.message
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        assert incidents_escalate_overdue() == 0
    assert _station_rows(incident) == []
    assert not incidents_for_police(police_user).filter(pk=incident.pk).exists()
    assert api.get("/api/v1/review").json() == []


def test_an_incident_dispatched_by_policy_is_not_in_review(reviewed_station, owner, reviewer) -> None:
    DispatchPolicy.objects.filter(station=reviewed_station).update(mode=DispatchPolicy.Mode.IMMEDIATE)
    incident = _single_shot(owner)
    assert incident.dispatch == "dispatched"
    response = client_for(reviewer).post(f"/api/v1/review/{incident.code}/confirm", {}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "not_in_review"
    assert response.json()["extra"]["dispatch_reason"] == "policy"


def test_unknown_incident_is_404_and_only_reviewers_may_decide(
    reviewed_station, owner, reviewer, police_user, admin_user
) -> None:
    incident = _single_shot(owner)
    unknown = client_for(reviewer).post(
        "/api/v1/review/00000000-0000-0000-0000-000000000000/confirm", {}, format="json"
    )
    assert unknown.status_code == 404
    for user in (owner, police_user):  # an officer without the reviewer permission is refused too
        refused = client_for(user).post(f"/api/v1/review/{incident.code}/confirm", {}, format="json")
        assert refused.status_code == 403
        assert "reviewer" in refused.json()["message"]
        assert client_for(user).get("/api/v1/review").status_code == 403
    incident.refresh_from_db()
    assert incident.dispatch == "review"
    # Superusers are reviewers.
    assert client_for(admin_user).get("/api/v1/review").status_code == 200


def test_review_endpoints_are_documented(api_client) -> None:
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert "get" in paths["/api/v1/review"]
    for decision in ("confirm", "dismiss"):
        operation = paths[f"/api/v1/review/{{id}}/{decision}"]["post"]
        assert {"200", "400", "403", "404", "409"} <= set(operation["responses"])
    dismiss_body = paths["/api/v1/review/{id}/dismiss"]["post"]["requestBody"]["content"]["application/json"]
    ref = dismiss_body["schema"]["$ref"].rsplit("/", 1)[-1]
    reason = schema["components"]["schemas"][ref]["properties"]["reason"]
    assert reason.get("enum") or "$ref" in reason


# --- Owners and trusted contacts are told at once, whatever the policy -------------------------------


@pytest.mark.parametrize("mode", [DispatchPolicy.Mode.IMMEDIATE, DispatchPolicy.Mode.EVIDENCE, "review_all"])
def test_owner_and_trusted_contacts_are_told_at_once_whatever_the_policy(
    station: PoliceStation, owner: User, mode: str, django_capture_on_commit_callbacks
) -> None:
    station.jurisdiction_radius_km = 10
    station.contact_email = "desk@mitte.example"
    station.save()
    DispatchPolicy.objects.create(station=station, mode=mode, strong_evidence=0.9)
    contact = TrustedContactFactory(owner=owner, name="Neighbour", email="neighbour@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        incident = _single_shot(owner)

    expected_dispatch = "dispatched" if mode == DispatchPolicy.Mode.IMMEDIATE else "review"
    assert incident.dispatch == expected_dispatch
    household = incident.notifications.exclude(recipient_kind=Notification.RecipientKind.STATION)
    assert {(n.recipient_key, n.channel, n.status) for n in household} == {
        (f"user:{owner.pk}", "email", Notification.Status.SENT),
        (f"contact:{contact.pk}", "email", Notification.Status.SENT),
    }
    told = {address for message in mail.outbox for address in message.to}
    assert {owner.email, "neighbour@example.org"} <= told
    # Police are told only when dispatched; the household did not wait for that.
    assert ("desk@mitte.example" in told) is (expected_dispatch == "dispatched")


# --- The live queue: /ws/review/ hears what the API decides ------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.usefixtures("close_thread_connections")
async def test_review_socket_hears_the_queue_and_an_api_dismissal_police_never_do(
    reviewed_station, owner, reviewer, police_user
) -> None:
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from gunwatch.asgi import application

    origin = [(b"origin", b"http://127.0.0.1")]
    queue = WebsocketCommunicator(application, "/ws/review/", headers=origin)
    queue.scope["user"] = reviewer
    police = WebsocketCommunicator(application, "/ws/incidents/", headers=origin)
    police.scope["user"] = police_user
    assert (await queue.connect(timeout=5))[0] and (await police.connect(timeout=5))[0]

    incident = await database_sync_to_async(_single_shot)(owner)
    queued = await queue.receive_json_from(timeout=5)
    assert queued["incident"] == {
        "id": str(incident.code),
        "dispatch": "review",
        "revision": queued["incident"]["revision"],
    }

    def dismiss() -> int:
        return (
            client_for(reviewer)
            .post(f"/api/v1/review/{incident.code}/dismiss", {"reason": "false_alarm"}, format="json")
            .status_code
        )

    assert await database_sync_to_async(dismiss)() == 200
    decided = await queue.receive_json_from(timeout=5)
    assert (decided["type"], decided["incident"]["dispatch"]) == ("incident.updated", "dismissed")
    assert await police.receive_nothing(timeout=0.5)
    await queue.disconnect()
    await police.disconnect()
