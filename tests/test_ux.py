"""Issue 12, items 4-13 that need no browser: settings, API errors, pages, emails, the police map's data."""

from __future__ import annotations

import importlib
import logging.config
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import User
from accounts.services import police_account_approve
from devices.models import Device
from devices.services import devices_mark_offline, heartbeat_record
from gunwatch.timefmt import when
from tests.factories import DeviceFactory, IncidentFactory, PoliceStationFactory, UserFactory

pytestmark = pytest.mark.django_db


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- 4: links follow HOST/PORT ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"PORT": "9123"}, "http://127.0.0.1:9123"),
        ({"HOST": "0.0.0.0", "PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"HOST": "gunwatch.lan", "PORT": "8080"}, "http://gunwatch.lan:8080"),
        ({"PORT": "9123", "SITE_URL": "https://gw.example.org/"}, "https://gw.example.org"),
    ],
)
def test_site_url_defaults_to_host_and_port(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name in ("HOST", "PORT", "SITE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import gunwatch.settings as settings_module

    try:
        assert expected == importlib.reload(settings_module).SITE_URL
    finally:
        for name in env:
            monkeypatch.delenv(name)
        importlib.reload(settings_module)


# --- 5: one access-log line per request; no offline mail for a parked demo fleet ---------------


def test_a_request_log_line_is_printed_once(settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from django.utils.log import DEFAULT_LOGGING

    settings.DEBUG = True  # Django's own "django" console handler prints only with DEBUG on, as in ./gw run
    logging.config.dictConfig(DEFAULT_LOGGING)  # what Django applies before ours
    logging.config.dictConfig(settings.LOGGING)
    try:
        logging.getLogger("django.channels.server").info("HTTP GET /health 200")
        assert capsys.readouterr().err.count("HTTP GET /health 200") == 1
    finally:
        logging.config.dictConfig(settings.LOGGING)


def test_access_log_goes_to_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("ACCESS_LOG", str(tmp_path / "access.log"))
    import gunwatch.settings as settings_module

    try:
        config = importlib.reload(settings_module).LOGGING
        assert config["loggers"]["django.channels.server"]["handlers"] == ["access"]
        assert config["handlers"]["access"]["filename"] == str(tmp_path / "access.log")
    finally:
        monkeypatch.delenv("ACCESS_LOG")
        importlib.reload(settings_module)


def test_parked_demo_devices_never_mail_their_owner(settings: Any) -> None:
    from django.core.management import call_command

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    owner = UserFactory(username="owner", email="owner@example.org")
    sim = DeviceFactory(owner=owner, name="Sim home 1")
    real = DeviceFactory(owner=owner, name="Balcony")
    for device in (sim, real):
        heartbeat_record(device=device, data={})
    Device.objects.update(offline_after=timezone.now() - timedelta(minutes=1))
    call_command("simulate_fleet", "--park-only", "--owner", "owner")
    flipped = devices_mark_offline()
    assert [device.name for device in flipped] == ["Balcony"]  # a real outage is still announced
    assert [message.subject for message in mail.outbox] == ["GunWatch: Balcony is offline"]


# --- 6: API docs offline ----------------------------------------------------------------------


def test_api_docs_load_swagger_ui_from_our_static_files(admin_user: User) -> None:
    html = login(admin_user).get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn.jsdelivr" not in html and "@latest" not in html
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


# --- 8: the police map's data, scope and confirmations -----------------------------------------


@pytest.fixture
def station():
    return PoliceStationFactory(name="Mitte", latitude=52.52, longitude=13.405, jurisdiction_radius_km=2)


@pytest.fixture
def officer(station) -> User:
    return UserFactory(username="officer", role=User.Role.POLICE, police_station=station, police_approved=True)


def test_map_says_it_is_scoped_to_the_officers_station(officer: User) -> None:
    html = login(officer).get("/map/").content.decode()
    assert "in the area of Mitte, the station your account is linked to" in html
    assert 'id="mute-toggle"' in html and 'id="new-incident-banner"' in html
    assert "gw_tiles.js" in html


def test_device_layer_shows_nearby_devices_coarsely_with_their_state(officer: User) -> None:
    online = DeviceFactory(name="Near", latitude=52.521234, longitude=13.406789)
    heartbeat_record(device=online, data={})
    DeviceFactory(name="Near, off", latitude=52.53, longitude=13.41)
    DeviceFactory(name="Far away", latitude=48.13, longitude=11.57)
    DeviceFactory(name="Unpaired", status=Device.Status.PENDING)
    body = login(officer).get("/map/devices").json()
    assert (body["online"], body["offline"]) == (1, 1)
    assert {"lat": 52.521, "lon": 13.407, "kind": "home", "online": True} in body["devices"]
    assert all("name" not in device for device in body["devices"])
    assert login(UserFactory()).get("/map/devices").status_code == 403


def test_address_uses_the_geocoder_when_configured(
    officer: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = login(officer)
    settings.GEOCODER_URL = ""
    plain = client.get("/map/address?lat=52.52&lon=13.405").json()
    assert plain == {"address": None, "coordinates": "52.52000, 13.40500"}
    settings.GEOCODER_URL = "http://geocoder.local/reverse"
    calls: list[dict[str, Any]] = []

    class Answer:
        def raise_for_status(self) -> None:
            return None

        def json(self) -> dict[str, str]:
            return {"display_name": "Alexanderplatz 1, Berlin"}

    def fake_get(url: str, **kwargs: Any) -> Answer:
        calls.append({"url": url, **kwargs})
        return Answer()

    monkeypatch.setattr("alerts.views.requests.get", fake_get)
    assert client.get("/map/address?lat=52.52&lon=13.405").json()["address"] == "Alexanderplatz 1, Berlin"
    client.get("/map/address?lat=52.52&lon=13.405")
    assert len(calls) == 1  # cached
    assert calls[0]["params"]["lat"] == 52.52
    assert client.get("/map/address?lat=x").status_code == 400


def test_every_workflow_action_is_confirmed(officer: User, station) -> None:
    incident = IncidentFactory(radius_m=30, shots=1, max_confidence=0.9, device_count=3)
    incident.stations.add(station)
    client = login(officer)
    url = f"/incidents/{incident.code}/transition/"
    page = client.post(url, {"action": "acknowledge"}, follow=True).content.decode()
    assert "Acknowledged: other officers see that you have this incident." in page
    page = client.post(url, {"action": "note", "note": "Two units sent"}, follow=True).content.decode()
    assert "Note added to the timeline." in page
    page = client.post(url, {"action": "close", "disposition": "false_alarm"}, follow=True).content.decode()
    assert "Incident closed." in page


# --- 10: password and error pages in GunWatch's style --------------------------------------------


@pytest.mark.parametrize("url", ["/accounts/password_change/", "/accounts/password_change/done/"])
def test_password_change_pages_are_gunwatch_pages(url: str) -> None:
    owner = UserFactory(username="olivia")
    html = login(owner).get(url).content.decode()
    assert 'class="topbar"' in html and "Back to GunWatch" in html
    assert "/admin/" not in html  # no link into the admin for an owner


def test_password_reset_flow_is_in_gunwatch_style_and_mails_a_link(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    UserFactory(username="olivia", email="olivia@example.org")
    client = Client()
    assert 'class="topbar"' in client.get("/accounts/password_reset/").content.decode()
    done = client.post("/accounts/password_reset/", {"email": "olivia@example.org"}, follow=True).content.decode()
    assert "Check your email" in done and "Back to log in" in done
    assert mail.outbox[0].subject == "GunWatch: reset your password"
    link = re.search(r"http://testserver(/accounts/reset/\S+)", str(mail.outbox[0].body)).group(1)
    form = client.get(link, follow=True).content.decode()
    assert "Choose a new password" in form and 'class="topbar"' in form
    assert "already used or has expired" in client.get("/accounts/reset/MQ/bad-token/").content.decode()


def test_forbidden_page_is_gunwatch_style_with_a_way_back() -> None:
    owner = UserFactory(username="olivia")
    response = login(owner).get("/map/")
    assert response.status_code == 403
    html = response.content.decode()
    assert 'class="topbar"' in html and "Back to GunWatch" in html and "/admin/" not in html


# --- 11: police sign-up and approval emails; admin links ---------------------------------------


def test_police_sign_up_and_approval_send_emails(settings: Any, station) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    root = UserFactory(
        username="root", email="root@example.org", role=User.Role.ADMIN, is_staff=True, is_superuser=True
    )
    response = Client().post(
        "/accounts/signup/police/",
        {
            "username": "rookie",
            "email": "rookie@police.example",
            "first_name": "Rita",
            "last_name": "Rook",
            "badge_number": "B-7",
            "police_station": station.pk,
            "password1": "a-long-Passphrase-42",
            "password2": "a-long-Passphrase-42",
        },
    )
    assert response.status_code == 302
    subjects = {message.to[0]: message.subject for message in mail.outbox}
    assert subjects == {
        "rookie@police.example": "GunWatch: your police account request was received",
        "root@example.org": "GunWatch: police account request from rookie",
    }
    mail.outbox.clear()
    police_account_approve(user=User.objects.get(username="rookie"), station=None, approved_by=root)
    assert [m.subject for m in mail.outbox] == ["GunWatch: your police account is approved"]
    assert "http://127.0.0.1:8000/map/" in mail.outbox[0].body or "/map/" in mail.outbox[0].body


def test_admin_home_links_model_versions(admin_user: User) -> None:
    html = login(admin_user).get("/").content.decode()
    assert "/admin/detection/modelversion/" in html


def test_incident_admin_rounds_numbers(admin_user: User) -> None:
    now = timezone.now()
    incident = IncidentFactory(
        latitude=52.520012345678,
        longitude=13.40498765432,
        radius_m=12.3456789,
        residual_m=1.23456,
        shots=2,
        max_confidence=0.912345678,
        device_count=3,
    )
    from alerts.models import Detection
    from tests.alerts.helpers import classify

    device = DeviceFactory()
    classification = classify(device)
    Detection.objects.create(
        incident=incident,
        device=device,
        classification=classification,
        clip=classification.clip,
        event_at=now,
        latitude=52.5212345678,
        longitude=13.4012345678,
        accuracy_m=4.56789,
        score=0.876543,
        shots=1,
    )
    client = login(admin_user)
    listing = client.get("/admin/alerts/incident/").content.decode()
    assert "0.91" in listing and "±12 m" in listing and "0.912345678" not in listing
    change = client.get(f"/admin/alerts/incident/{incident.pk}/change/").content.decode()
    assert "52.520012, 13.404988" in change and "1.2 m" in change and "12.3456789" not in change
    assert "52.521235, 13.401235 ±5 m" in change and "0.88" in change and "0.876543" not in change


# --- 12: one time format, with the zone ---------------------------------------------------------


def test_one_time_format_with_the_zone(settings: Any) -> None:
    moment = datetime(2026, 12, 7, 4, 18, 27, 345678, tzinfo=UTC)
    assert when(moment) == "2026-12-07 04:18:27 UTC"
    assert when(moment, "ms") == "2026-12-07 04:18:27.345 UTC"
    assert when(None) == "—"
    settings.TIME_ZONE = "Europe/Berlin"
    timezone.activate("Europe/Berlin")
    try:
        assert when(moment) == "2026-12-07 05:18:27 CET"
    finally:
        timezone.deactivate()


# --- 13: unknown API paths answer the one error shape ------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/devices/x/y/z", "/api/v2/incidents", "/api/"])
def test_unknown_api_path_answers_json(path: str, settings: Any) -> None:
    settings.DEBUG = True  # the HTML technical 404 page is what used to come back
    response = Client().get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"message": f"No API endpoint at {path}.", "code": "not_found", "extra": {}}


# --- 9: the device form reads like a form, not like model field names ---------------------------


def test_device_settings_have_units_and_rounded_coordinates() -> None:
    owner = UserFactory(username="olivia")
    device = DeviceFactory(owner=owner, latitude=52.522000000000006, longitude=13.4025)
    html = login(owner).get(f"/devices/{device.code}/").content.decode()
    assert "Heartbeat every (seconds)" in html and "Sensitivity threshold (0 to 1)" in html
    assert 'value="52.522"' in html and "52.522000000000006" not in html
