"""The owner's pages in a real browser: log in, add a device, read its pairing code, pair it, see it."""

from __future__ import annotations

import pytest

from devices.models import Device
from devices.services import device_pair, heartbeat_record
from tests.conftest import ARTIFACTS
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_owner_adds_and_pairs_a_device_in_the_browser(live_server, browser_page) -> None:
    UserFactory(username="olivia")
    page = browser_page
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "olivia")
    page.fill("input[name=password]", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")
    assert "No devices yet" in page.content()

    page.click("text=Add a device")
    page.fill("input[name=name]", "Balcony")
    page.select_option("select[name=kind]", "home")
    page.fill("input[name=latitude]", "52.52")
    page.fill("input[name=longitude]", "13.40")
    page.click("button[type=submit]")
    code = page.inner_text("#pairing-code").strip()
    assert len(code) == 8

    device = Device.objects.get(name="Balcony")
    paired = device_pair(pairing_code=code)
    assert paired.device == device
    heartbeat_record(device=paired.device, data={"battery_pct": 88})

    page.goto(f"{live_server.url}/dashboard/")
    row = page.locator("#device-table tr", has_text="Balcony")
    assert "online" in row.inner_text()
    assert "88 %" in row.inner_text()
    # The Leaflet map rendered the device as a marker.
    page.wait_for_selector("#device-map path.leaflet-interactive")
    page.screenshot(path=str(ARTIFACTS / "owner-dashboard.png"), full_page=True)
