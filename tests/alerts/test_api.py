from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from alerts.models import Incident
from alerts.services import incident_record_detection
from tests.alerts.helpers import classify
from tests.conftest import client_for
from tests.factories import DeviceFactory, PoliceStationFactory, PoliceUserFactory, UserFactory

PRECISE = (52.523456, 13.412345)


@pytest.fixture
def incident(owner, station) -> Incident:
    device = DeviceFactory(owner=owner, name="Balcony", latitude=PRECISE[0], longitude=PRECISE[1])
    return incident_record_detection(classification=classify(device, shots=2, score=0.91))


@pytest.fixture
def munich_incident(db) -> Incident:
    PoliceStationFactory(name="Munich", latitude=48.14, longitude=11.58)
    device = DeviceFactory(owner=UserFactory(username="dave"), latitude=48.14, longitude=11.58)
    return incident_record_detection(classification=classify(device))


def test_police_list_shows_their_stations_incidents_precisely(police_user, incident, munich_incident) -> None:
    response = client_for(police_user).get("/api/v1/incidents")
    assert response.status_code == 200
    body = response.json()
    assert [row["id"] for row in body["results"]] == [str(incident.code)]
    row = body["results"][0]
    assert (row["latitude"], row["longitude"]) == PRECISE
    assert row["shots"] == 2 and row["max_confidence"] == 0.91 and row["status"] == "new"
    assert row["stations"] == ["Mitte"]


def test_police_see_all_setting(police_user, incident, munich_incident, settings) -> None:
    settings.POLICE_SEE_ALL_INCIDENTS = True
    body = client_for(police_user).get("/api/v1/incidents").json()
    assert {row["id"] for row in body["results"]} == {str(incident.code), str(munich_incident.code)}


def test_owner_sees_only_their_incidents_with_a_coarse_location(owner, incident, munich_incident) -> None:
    body = client_for(owner).get("/api/v1/incidents").json()
    assert [row["id"] for row in body["results"]] == [str(incident.code)]
    row = body["results"][0]
    assert (row["latitude"], row["longitude"]) == (52.52, 13.41)
    assert row["radius_m"] >= 1000
    assert row["evidence"] is None and row["stations"] == []
    detail = client_for(owner).get(f"/api/v1/incidents/{incident.code}").json()
    assert detail["latitude"] == 52.52
    assert detail["timeline"] == [] and detail["actions"] == []
    assert [d["device_name"] for d in detail["detections"]] == ["Balcony"]
    assert {n["recipient_kind"] for n in detail["notifications"]} == {"owner"}


def test_owner_bbox_filter_cannot_narrow_below_the_coarse_location(owner, incident) -> None:
    client = client_for(owner)

    def ids(bbox: str) -> list[str]:
        return [row["id"] for row in client.get(f"/api/v1/incidents?bbox={bbox}").json()["results"]]

    # The precise point (52.523456, 13.412345) lies in this tiny box, its coarse one (52.52, 13.41) does not.
    assert ids("13.4123,52.5234,13.4124,52.5235") == []
    assert ids("13.409,52.519,13.411,52.521") == [str(incident.code)]


def test_other_people_get_404_for_incidents_they_may_not_see(other_owner, incident, munich_incident) -> None:
    assert client_for(other_owner).get(f"/api/v1/incidents/{incident.code}").status_code == 404
    munich_officer = PoliceUserFactory(username="m", police_station=munich_incident.stations.get())
    assert client_for(munich_officer).get(f"/api/v1/incidents/{incident.code}").status_code == 404


def test_anonymous_and_devices_are_rejected(incident, device_client) -> None:
    assert APIClient().get("/api/v1/incidents").status_code in (401, 403)
    response = device_client.get("/api/v1/incidents")
    assert response.status_code == 403
    assert set(response.json()) == {"message", "code", "extra"}


def test_police_detail_has_timeline_detections_and_actions(police_user, incident) -> None:
    body = client_for(police_user).get(f"/api/v1/incidents/{incident.code}").json()
    assert [event["kind"] for event in body["timeline"]] == ["opened"]
    assert body["detections"][0]["latitude"] == PRECISE[0]
    assert body["actions"] == ["acknowledge", "en_route", "on_scene", "close"]
    # Police see who was told, never the contacts' addresses.
    assert all("target" not in n for n in body["notifications"])


def test_filters_by_status_time_update_and_bbox(police_user, incident, owner) -> None:
    old_device = DeviceFactory(owner=owner, latitude=52.50, longitude=13.30)
    old = incident_record_detection(
        classification=classify(old_device, recorded_at=timezone.now() - timedelta(hours=30))
    )
    client = client_for(police_user)

    def ids(query: str) -> set[str]:
        response = client.get(f"/api/v1/incidents?{query}")
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    since = (timezone.now() - timedelta(hours=24)).isoformat()
    assert ids(f"since={since.replace('+', '%2B')}") == {str(incident.code)}
    assert ids("status=new,acknowledged") == {str(incident.code), str(old.code)}
    assert ids("status=closed") == set()
    assert ids("bbox=13.40,52.52,13.42,52.53") == {str(incident.code)}
    assert ids("bbox=13.29,52.49,13.31,52.51") == {str(old.code)}
    Incident.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(hours=2))
    after = (timezone.now() - timedelta(hours=1)).isoformat().replace("+", "%2B")
    assert ids(f"updated_after={after}") == {str(incident.code)}
    bad = client.get("/api/v1/incidents?bbox=1,2,3")
    assert bad.status_code == 400
    assert "bbox" in bad.json()["message"]


def test_transition_flow_logs_every_step(police_user, incident) -> None:
    client = client_for(police_user)
    url = f"/api/v1/incidents/{incident.code}/transition"
    for action, status in [("acknowledge", "acknowledged"), ("en_route", "en_route"), ("on_scene", "on_scene")]:
        response = client.post(url, {"action": action})
        assert response.status_code == 200, response.json()
        assert response.json()["status"] == status
    response = client.post(url, {"action": "note", "note": "Shell casings found"})
    assert response.status_code == 200
    response = client.post(url, {"action": "close", "disposition": "confirmed_gunfire", "note": "Report 123"})
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["disposition"]) == ("closed", "confirmed_gunfire")
    assert body["closed_at"] is not None
    assert [e["kind"] for e in body["timeline"]][-5:] == ["acknowledged", "en_route", "on_scene", "note", "closed"]
    assert {e["actor"] for e in body["timeline"][-5:]} == {"officer"}
    assert "Report 123" in body["timeline"][-1]["message"]


def test_invalid_transitions_answer_400_with_a_clear_message(police_user, incident) -> None:
    client = client_for(police_user)
    url = f"/api/v1/incidents/{incident.code}/transition"
    response = client.post(url, {"action": "close"})
    assert response.status_code == 400
    assert response.json()["code"] == "disposition_required"
    client.post(url, {"action": "close", "disposition": "false_alarm"})
    response = client.post(url, {"action": "acknowledge"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_transition"
    assert response.json()["message"] == "Cannot acknowledge an incident that is closed."
    response = client.post(url, {"action": "fly"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_choice"


def test_en_route_before_acknowledge_is_refused_with_what_is_possible(police_user, incident) -> None:
    client = client_for(police_user)
    url = f"/api/v1/incidents/{incident.code}/transition"
    client.post(url, {"action": "on_scene"})
    response = client.post(url, {"action": "en_route"})
    assert response.status_code == 400
    assert "possible now: close" in response.json()["message"]


def test_only_approved_police_may_transition(owner, pending_police, incident) -> None:
    url = f"/api/v1/incidents/{incident.code}/transition"
    assert client_for(owner).post(url, {"action": "acknowledge"}).status_code == 403
    assert client_for(pending_police).post(url, {"action": "acknowledge"}).status_code == 403
    incident.refresh_from_db()
    assert incident.status == "new"


def test_list_query_count_does_not_grow_with_incidents(police_user, owner, django_assert_max_num_queries) -> None:
    for i in range(5):
        device = DeviceFactory(owner=owner, latitude=52.52 + i * 0.1, longitude=13.405)
        incident_record_detection(classification=classify(device))
    with django_assert_max_num_queries(8):
        response = client_for(police_user).get("/api/v1/incidents")
    assert response.status_code == 200
