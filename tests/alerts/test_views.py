from __future__ import annotations

import json

import pytest
from django.test import Client

from alerts.models import Incident
from alerts.services import incident_record_detection
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory, UserFactory


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def incident(owner, station) -> Incident:
    device = DeviceFactory(owner=owner, name="Balcony", latitude=52.523456, longitude=13.412345)
    return incident_record_detection(classification=classify(device))


def test_home_sends_approved_police_to_the_map(police_user) -> None:
    response = login(police_user).get("/")
    assert response.status_code == 302
    assert response["Location"] == "/map/"


def test_map_page_is_for_approved_police_only(police_user, owner, pending_police) -> None:
    response = login(police_user).get("/map/")
    assert response.status_code == 200
    html = response.content.decode()
    config = json.loads(html.split('id="incident-map-config" type="application/json">')[1].split("</script>")[0])
    assert config["ws_path"] == "/ws/incidents/"
    assert config["api_url"] == "/api/v1/incidents"
    assert "vendor/leaflet.markercluster/leaflet.markercluster.js" in html
    assert "alerts/map.js" in html
    assert 'href="/map/"' in html  # the nav link
    assert login(owner).get("/map/").status_code == 403
    assert login(pending_police).get("/map/").status_code == 403
    assert Client().get("/map/").status_code == 302


def test_police_detail_page_has_precise_location_workflow_and_evidence_links(police_user, incident) -> None:
    html = login(police_user).get(f"/incidents/{incident.code}/").content.decode()
    assert "52.523456, 13.412345" in html
    assert 'data-action="acknowledge"' in html
    assert 'data-action="close"' in html
    assert "Timeline" in html
    assert "Balcony" in html


def test_detail_page_shows_evidence_player_when_audio_is_kept(police_user, owner, station) -> None:
    device = DeviceFactory(owner=owner)
    incident = incident_record_detection(classification=classify(device, audio=b"RIFF....WAVE"))
    clip = incident.detections.get().clip
    html = login(police_user).get(f"/incidents/{incident.code}/").content.decode()
    assert f'src="/clips/{clip.code}/audio"' in html
    assert f'src="/clips/{clip.code}/spectrogram.png"' in html


def test_owner_detail_page_is_coarse(owner, incident) -> None:
    html = login(owner).get(f"/incidents/{incident.code}/").content.decode()
    assert "52.52, 13.41" in html
    assert "52.523456" not in html and "13.412345" not in html
    assert 'data-action="acknowledge"' not in html


def test_strangers_get_404(incident) -> None:
    assert login(UserFactory(username="eve")).get(f"/incidents/{incident.code}/").status_code == 404


def test_transition_form_changes_status_and_reports_errors(police_user, owner, incident) -> None:
    client = login(police_user)
    url = f"/incidents/{incident.code}/transition/"
    response = client.post(url, {"action": "acknowledge"})
    assert response.status_code == 302
    incident.refresh_from_db()
    assert incident.status == "acknowledged"
    response = client.post(url, {"action": "close"}, follow=True)
    assert "Closing needs a disposition" in response.content.decode()
    assert login(owner).post(url, {"action": "close", "disposition": "false_alarm"}).status_code == 403
    incident.refresh_from_db()
    assert incident.status == "acknowledged"


def test_owner_incident_list_shows_notifications(owner, incident) -> None:
    response = login(owner).get("/incidents/mine/")
    html = response.content.decode()
    assert response.status_code == 200
    assert f"/incidents/{incident.code}/" in html
    assert "52.52, 13.41" in html
    assert "Email" in html  # the owner's own email notification row
    assert 'href="/incidents/mine/"' in html  # the nav link
