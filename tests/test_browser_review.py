"""Issue 11 in real headless Chromium: a reviewer plays a clip and confirms; police see the incident only
then; a dismissed one never reaches them.

Same stack as ``test_browser_map``: the ASGI server in a subprocess on a file SQLite database with the
in-process channel layer and background-thread tasks. The station's policy sends single-device
incidents to review; the review deadline is long so nothing escalates during the test.
"""

from __future__ import annotations

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
from django.contrib.auth.models import Permission
from accounts.models import User
from alerts.models import DispatchPolicy, PoliceStation
from detection import services as detection_services
from devices import services as device_services
from devices.models import Device
from tests.core.helpers_audio import make_weights

station = PoliceStation.objects.create(name="Mitte", latitude=52.52, longitude=13.405, jurisdiction_radius_km=5)
DispatchPolicy.objects.create(station=station, mode="evidence", strong_evidence=0.9)
User.objects.create_user("officer", password=sys.argv[2], role="police", police_approved=True, police_station=station)
reviewer = User.objects.create_user("reviewer", password=sys.argv[2], role="police", police_approved=True,
                                    police_station=station)
reviewer.user_permissions.add(Permission.objects.get(codename="reviewer", content_type__app_label="alerts"))
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
# Long enough that nothing escalates while the test runs.
STACK_ENV = {"ALERT_REVIEW_DEADLINE_S": "600"}


def _login(page: Any, base: str, username: str, landing: str) -> None:
    page.goto(f"{base}/accounts/login/?next={landing}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(f"{base}{landing}")


def test_reviewer_confirms_and_only_then_police_see_it(asgi_stack: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    base = asgi_stack["base"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            errors: list[str] = []
            police = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            police.on("pageerror", lambda exc: errors.append(f"map: {exc}"))
            _login(police, base, "officer", "/map/")
            police.wait_for_function("document.body.dataset.live === 'ok'", timeout=15000)
            review = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            review.on("pageerror", lambda exc: errors.append(f"review: {exc}"))
            _login(review, base, "reviewer", "/review/")
            review.wait_for_function("document.getElementById('review-live').dataset.state === 'live'", timeout=15000)
            assert review.locator(".review-item").count() == 0

            # One device hears a shot: weak evidence under this station's policy, so it goes to review.
            upload(base, asgi_stack["token"])
            review.wait_for_selector(".review-item", timeout=60000)
            item = review.locator(".review-item").first
            assert "single device, noisy location" in item.inner_text()
            assert "dispatched unreviewed in" in item.inner_text()
            time.sleep(1.5)
            assert police.locator("#incident-list li.gw-incident").count() == 0  # not police business yet

            # The reviewer plays the clip, sees its waveform and spectrogram, and confirms.
            item.locator(".review-play").first.click()
            review.wait_for_function(
                "(() => { const a = document.querySelector('.review-item audio'); return a && a.currentTime > 0; })()",
                timeout=15000,
            )
            for image in (".review-waveform", ".review-spectrogram"):
                review.wait_for_function(
                    f"(() => {{ const i = document.querySelector('{image}'); return i && i.complete && "
                    "i.naturalWidth > 0; })()",
                    timeout=30000,
                )
            review.screenshot(path=str(ARTIFACTS / "review_queue.png"), full_page=True)
            item.locator(".review-confirm").click()
            review.wait_for_url(f"{base}/review/")
            assert "Confirmed: dispatched to police." in review.inner_text("body")
            assert review.locator(".review-item").count() == 0

            police.wait_for_selector("#incident-list li.gw-incident", timeout=10000)
            listed = police.locator("#incident-list li.gw-incident")
            assert listed.count() == 1
            assert "single device" in listed.inner_text()
            police.screenshot(path=str(ARTIFACTS / "review_confirmed_on_map.png"))

            # Another, from the far device: the reviewer dismisses it and police never see it.
            upload(base, asgi_stack["far_token"])
            review.wait_for_selector(".review-item", timeout=60000)
            dismiss = review.locator(".review-item form").nth(1)
            dismiss.locator("select[name=reason]").select_option("other_source")
            dismiss.locator("input[name=note]").fill("fireworks over the lake")
            dismiss.locator(".review-dismiss").click()
            review.wait_for_url(f"{base}/review/")
            assert "Dismissed: police will not see it." in review.inner_text("body")
            assert "fireworks over the lake" in review.inner_text("body")  # recent decisions, with who and when
            time.sleep(2)
            assert police.locator("#incident-list li.gw-incident").count() == 1
            police.reload()
            police.wait_for_function("document.body.dataset.live === 'ok'", timeout=15000)
            police.wait_for_selector("#incident-list li.gw-incident", timeout=10000)
            assert police.locator("#incident-list li.gw-incident").count() == 1
            assert errors == []
        finally:
            browser.close()
