"""The owner's pages in a real browser: log in, add a device, read its pairing code, pair it, see it."""

from __future__ import annotations

import pytest

from devices.models import Device
from devices.services import device_pair, heartbeat_record
from tests.browser import add_home_device, log_in
from tests.conftest import ARTIFACTS
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_owner_adds_and_pairs_a_device_in_the_browser(live_server, browser_page) -> None:
    UserFactory(username="olivia")
    page = browser_page
    log_in(page, live_server.url, "olivia")
    page.wait_for_url("**/dashboard/")
    assert "No devices yet" in page.content()

    add_home_device(page, "Balcony")
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
