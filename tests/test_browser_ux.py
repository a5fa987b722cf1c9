"""Issue 12's pages in headless Chromium, at desktop width and on a 390 px phone, with screenshots.

Map tiles cannot load here (no internet; the fixture answers tile requests with an empty 204),
which is exactly the offline case item 7 is about. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import User
from devices.models import Device
from devices.services import heartbeat_record
from tests.browser import add_home_device, log_in
from tests.conftest import ARTIFACTS
from tests.factories import DeviceFactory, IncidentFactory, PoliceStationFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def _login(page: Any, base: str, username: str) -> None:
    log_in(page, base, username)
    page.wait_for_load_state("networkidle")


def _fits_phone(page: Any, name: str) -> None:
    """At 390 px nothing makes the page itself scroll sideways; wide tables scroll inside themselves."""
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    page.screenshot(path=str(ARTIFACTS / f"{name}-390px.png"), full_page=True)
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than a 390 px phone"
    page.set_viewport_size({"width": 1280, "height": 900})


def _fleet(owner: User) -> None:
    for index in (1, 2, 10):
        device = DeviceFactory(
            owner=owner, name=f"Sim home {index}", latitude=52.52 + index / 500, longitude=13.40 + index / 400
        )
        if index != 10:
            heartbeat_record(
                device=device,
                data={"battery_pct": 60 + index, "queue_length": 0, "free_storage_mb": 900, "clock_source": "gps"},
            )
    DeviceFactory(owner=owner, name="New sensor", status=Device.Status.PENDING, latitude=None, longitude=None)
    stale = Device.objects.get(name="Sim home 10")
    stale.last_heartbeat_at = timezone.now() - timedelta(hours=2)
    stale.save(update_fields=["last_heartbeat_at"])


def test_owner_dashboard_health_view_and_phone_layout(live_server: Any, browser_page: Any) -> None:
    owner = UserFactory(username="olivia")
    _fleet(owner)
    page = browser_page
    _login(page, live_server.url, "olivia")
    page.wait_for_url("**/dashboard/")
    names = page.locator("#device-table tbody tr td:first-child").all_inner_texts()
    assert names == ["New sensor", "Sim home 1", "Sim home 2", "Sim home 10"]
    assert page.locator("[data-count=online]").inner_text() == "2"
    assert page.locator("[data-count=offline]").inner_text() == "1"
    assert page.locator("[data-count=awaiting_pairing]").inner_text() == "1"
    assert "awaiting pairing" in page.locator("tr[data-health=awaiting_pairing]").inner_text()
    # Without tiles the map says so, keeps a scale and still draws the devices.
    page.wait_for_selector("#device-map .gw-tiles-notice")
    assert page.locator("#device-map .leaflet-control-scale").count() == 1
    assert page.locator("#device-map path.leaflet-interactive").count() == 3
    assert "OpenStreetMap" not in page.locator("#device-map .leaflet-control-attribution").inner_text()

    # Live refresh: a device comes online and the page shows it without a reload.
    heartbeat_record(device=Device.objects.get(name="Sim home 10"), data={"battery_pct": 12})
    page.evaluate("window.gwDashboardRefresh()")
    page.wait_for_function("document.querySelector('[data-count=online]').textContent === '3'")
    assert "12 %" in page.locator("tr", has_text="Sim home 10").inner_text()
    page.screenshot(path=str(ARTIFACTS / "ux-owner-dashboard.png"), full_page=True)
    _fits_phone(page, "ux-owner-dashboard")

    page.click("text=Sim home 1")
    page.wait_for_selector("#device-health-badge")
    assert "Free storage" in page.content() and "900 MB" in page.content()
    page.screenshot(path=str(ARTIFACTS / "ux-device-detail.png"), full_page=True)
    _fits_phone(page, "ux-device-detail")


def test_pairing_page_is_post_redirect_get_with_a_copy_button(live_server: Any, browser_page: Any) -> None:
    UserFactory(username="olivia")
    page = browser_page
    _login(page, live_server.url, "olivia")
    add_home_device(page, "Balcony")
    page.wait_for_url("**/pairing/")
    code = page.inner_text("#pairing-code").strip()
    command = page.inner_text("#pairing-command")
    assert command == f"python -m devices.agent pair {code} --server {live_server.url}"
    page.reload()
    assert page.inner_text("#pairing-code").strip() == code
    assert Device.objects.filter(name="Balcony").count() == 1
    page.click("#copy-command")
    page.wait_for_function("document.getElementById('copy-command').textContent !== 'Copy command'")
    page.screenshot(path=str(ARTIFACTS / "ux-pairing.png"), full_page=True)
    _fits_phone(page, "ux-pairing")


def test_password_and_forbidden_pages_lead_back_into_gunwatch(live_server: Any, browser_page: Any) -> None:
    UserFactory(username="olivia")
    page = browser_page
    _login(page, live_server.url, "olivia")
    page.click("text=Password")
    page.wait_for_url("**/password_change/")
    assert page.locator("header.topbar").count() == 1
    page.screenshot(path=str(ARTIFACTS / "ux-password-change.png"), full_page=True)
    page.click("text=Back to GunWatch")
    page.wait_for_url("**/dashboard/")
    response = page.goto(f"{live_server.url}/map/")
    assert response.status == 403
    assert page.locator("header.topbar").count() == 1
    page.screenshot(path=str(ARTIFACTS / "ux-403.png"), full_page=True)
    _fits_phone(page, "ux-403")
    page.click("text=Back to GunWatch")
    page.wait_for_url("**/dashboard/")


def test_police_map_controls_and_incident_page_on_a_phone(live_server: Any, browser_page: Any) -> None:
    station = PoliceStationFactory(name="Mitte", latitude=52.52, longitude=13.405, jurisdiction_radius_km=3)
    UserFactory(username="officer", role=User.Role.POLICE, police_station=station, police_approved=True)
    owner = UserFactory(username="olivia")
    _fleet(owner)
    page = browser_page
    _login(page, live_server.url, "officer")
    page.wait_for_url("**/map/")
    # The test server has no websockets; the page's own parts must work regardless.
    assert "in the area of Mitte, the station your account is linked to" in page.inner_text("#incident-empty")
    page.wait_for_selector(".gw-tiles-notice")
    page.wait_for_function("document.getElementById('device-layer-count').textContent.includes('online')")
    assert page.inner_text("#device-layer-count") == "2 online, 1 offline"
    assert page.locator("#incident-map .leaflet-control-scale").count() == 1
    assert page.locator(".gw-fit-control").count() == 1
    assert page.locator("path.gw-device-online").count() == 2
    page.click("#mute-toggle")
    assert page.inner_text("#mute-toggle").endswith("Sound off")
    assert page.evaluate("localStorage.getItem('gw-mute')") == "1"
    page.screenshot(path=str(ARTIFACTS / "ux-police-map.png"))
    _fits_phone(page, "ux-police-map")

    incident = IncidentFactory(radius_m=40, shots=2, device_count=3)
    incident.stations.add(station)
    page.goto(f"{live_server.url}/incidents/{incident.code}/")
    page.click("button[data-action=acknowledge]")
    page.wait_for_selector(".msg.success")
    assert "Acknowledged" in page.inner_text(".messages")
    assert " UTC" in page.inner_text("h1")
    page.screenshot(path=str(ARTIFACTS / "ux-incident.png"), full_page=True)
    _fits_phone(page, "ux-incident")


def test_every_list_page_fits_a_phone(live_server: Any, browser_page: Any) -> None:
    from alerts.models import Notification
    from devices.models import TrustedContact

    owner = UserFactory(username="olivia")
    _fleet(owner)
    TrustedContact.objects.create(
        owner=owner,
        name="Grandmother Henriette von Berg",
        relation="family",
        email="henriette.von.berg@example.org",
        phone="+4930123456789",
        channels=["email", "sms"],
    )
    device = Device.objects.get(name="Sim home 1")
    now = timezone.now()
    incident = IncidentFactory(radius_m=40, shots=2, device_count=3)
    from alerts.models import Detection
    from tests.alerts.helpers import classify

    classification = classify(device)
    Detection.objects.create(
        incident=incident,
        device=device,
        classification=classification,
        clip=classification.clip,
        event_at=now,
        score=0.93,
        shots=2,
    )
    Notification.objects.create(
        incident=incident,
        owner=owner,
        recipient_kind="contact",
        recipient_key="c1",
        recipient_name="Grandmother Henriette von Berg",
        channel="email",
        target="henriette.von.berg@example.org",
    )
    page = browser_page
    _login(page, live_server.url, "olivia")
    for path, name in [
        ("/contacts/", "ux-contacts"),
        ("/incidents/mine/", "ux-my-incidents"),
        ("/accounts/password_change/", "ux-password-change"),
    ]:
        page.goto(f"{live_server.url}{path}")
        _fits_phone(page, name)
    UserFactory(username="root", role=User.Role.ADMIN, is_staff=True, is_superuser=True)
    UserFactory(username="rookie.with.a.long.name", role=User.Role.POLICE, email="rookie.long@police.example.org")
    page.context.clear_cookies()
    _login(page, live_server.url, "root")
    _fits_phone(page, "ux-admin-home")
