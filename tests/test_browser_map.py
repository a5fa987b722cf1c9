"""A police officer watches the live map in real headless Chromium while a device uploads a clip.

The server is the real ASGI stack (``manage.py runserver`` is Daphne's here) in a subprocess, on a
file SQLite database with the in-process channel layer and background-thread tasks: the embedded
mode a newcomer runs. The active model is a tiny network pinned to "gunshot", so any upload is a
positive and the test does not depend on the shared data set.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.browser import upload
from tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser

STACK_SETUP = """
import json, sys
from pathlib import Path
from accounts.models import User
from alerts.models import PoliceStation
from detection import services as detection_services
from devices import services as device_services
from devices.models import Device
from tests.core.helpers_audio import make_weights

station = PoliceStation.objects.create(name="Mitte", latitude=52.52, longitude=13.405, jurisdiction_radius_km=5)
officer = User.objects.create_user("officer", password=sys.argv[2], role="police", police_approved=True,
                                   police_station=station)
owner = User.objects.create_user("alice", email="alice@example.org", password=sys.argv[2])
device, issued = device_services.device_create(owner=owner, name="Balcony", kind=Device.Kind.HOME,
                                              latitude=52.5205, longitude=13.4095)
token = device_services.device_pair(pairing_code=issued.code).token
far, issued = device_services.device_create(owner=owner, name="Cabin", kind=Device.Kind.HOME,
                                           latitude=52.60, longitude=13.30)
far_token = device_services.device_pair(pairing_code=issued.code).token
weights = make_weights(Path(sys.argv[1]) / "always.pt", logit=8.0)
detection_services.model_version_register(weights_path=weights, name="always", version="1", activate=True)
print(json.dumps({"token": token, "far_token": far_token}))
"""


def test_new_incident_appears_on_the_map_without_reload(asgi_stack: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    base = asgi_stack["base"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            # Every map websocket passes through here, so the test can cut the line like a flaky network.
            link: dict[str, Any] = {"blocked": False, "current": None}

            def route_socket(ws: Any) -> None:
                if link["blocked"]:
                    ws.close()
                    return
                ws.connect_to_server()
                link["current"] = ws

            page.route_web_socket(re.compile(r".*/ws/incidents/$"), route_socket)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            console: list[str] = []
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.goto(f"{base}/accounts/login/")
            page.fill("input[name=username]", "officer")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_url(f"{base}/map/")
            try:
                page.wait_for_function("document.body.dataset.live === 'ok'", timeout=15000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "incident_map_failed.png"))
                server_log = asgi_stack["log"].read_text().splitlines()[-40:]
                raise AssertionError(
                    f"map never went live; errors: {errors}; console: {console}; server: {server_log}"
                ) from None
            assert page.locator(".gw-incident-icon").count() == 0
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))

            view_before = page.evaluate("[gwMap.getCenter().lat, gwMap.getCenter().lng, gwMap.getZoom()]")
            # The device layer: Balcony is in the station's area (paired, no heartbeat yet); Cabin is not.
            page.wait_for_function("document.getElementById('device-layer-count').textContent.includes('online')")
            assert page.inner_text("#device-layer-count") == "0 online, 1 offline"

            upload(base, asgi_stack["token"])

            page.wait_for_selector(".gw-incident-icon, .gw-cluster", timeout=60000)
            item = page.locator("#incident-list li.gw-incident")
            assert item.count() == 1
            assert "New" in item.inner_text()
            # Issue 12 item 8: a visible and audible cue, and the view stays where the officer left it.
            assert page.locator("#new-incident-banner").is_visible()
            assert page.title().startswith("(1) ")
            assert page.evaluate("document.body.dataset.beeps") == "1"
            assert page.evaluate("[gwMap.getCenter().lat, gwMap.getCenter().lng, gwMap.getZoom()]") == view_before
            assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", item.inner_text())
            assert "52.52" in item.locator(".gw-place").inner_text()  # no geocoder: coordinates
            page.screenshot(path=str(ARTIFACTS / "incident_map_new_incident_cue.png"))
            page.click(".gw-fit-control")
            page.wait_for_selector(".gw-incident-icon", timeout=5000)
            assert not page.locator("#new-incident-banner").is_visible()
            assert page.title() == "Incident map · GunWatch"
            assert page.locator("path.gw-uncertainty").count() == 1
            assert navigations == []  # it arrived over the websocket, not by a reload
            page.screenshot(path=str(ARTIFACTS / "incident_map.png"))

            # Another officer's action arrives live too: acknowledge through the API in this session.
            incident_id = item.get_attribute("data-id")
            csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
            result = page.request.post(
                f"{base}/api/v1/incidents/{incident_id}/transition",
                data={"action": "acknowledge"},
                headers={"X-CSRFToken": csrf, "Referer": f"{base}/map/"},
            )
            assert result.status == 200, result.text()
            page.wait_for_selector("#incident-list li.gw-active", timeout=10000)

            # The connection drops; an incident opens while the map is offline; the map comes back
            # and catches up without a reload.
            link["blocked"] = True
            link["current"].close()
            page.wait_for_function("document.body.dataset.live === 'bad'", timeout=10000)
            upload(base, asgi_stack["far_token"])
            time.sleep(3)  # long enough for the incident to be opened and broadcast to nobody
            assert page.locator("#incident-list li.gw-incident").count() == 1
            link["blocked"] = False
            page.wait_for_function("document.body.dataset.live === 'ok'", timeout=30000)
            page.wait_for_function(
                "document.querySelectorAll('#incident-list li.gw-incident').length === 2", timeout=10000
            )
            # The new marker may sit outside the view (markercluster leaves those out of the DOM).
            markers = page.evaluate("Object.values(window.gwIncidents).filter(e => e.marker).length")
            assert markers == 2
            assert navigations == []
            page.screenshot(path=str(ARTIFACTS / "incident_map_after_reconnect.png"))
            # Zoomed out the two incidents cluster, in incident colours, never markercluster's green.
            page.evaluate("gwMap.setView([52.56, 13.35], 6, {animate: false})")
            page.wait_for_selector(".gw-cluster", timeout=5000)
            colour = page.evaluate("getComputedStyle(document.querySelector('.gw-cluster')).backgroundColor")
            assert colour in ("rgb(215, 25, 28)", "rgb(46, 107, 211)"), colour
            assert page.locator(".marker-cluster-small, .marker-cluster-medium").count() == 0
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)
            assert page.evaluate("document.documentElement.scrollWidth <= 390")
            page.screenshot(path=str(ARTIFACTS / "incident_map-390px.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
