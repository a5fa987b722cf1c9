"""Issue 12 item 9: the evidence cell (player, spectrogram, caption) stays inside its column."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.utils import timezone

from detection import services
from detection.models import ModelVersion
from devices.models import Device
from tests.browser import log_in
from tests.conftest import ARTIFACTS
from tests.detection.pipeline import encode, impulses

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_evidence_cell_is_laid_out_in_its_column(
    live_server: Any, browser_page: Any, positive_model: ModelVersion, device: Device
) -> None:
    payload = encode(impulses())
    clip = services.clip_upload(
        device=device,
        audio_file=io.BytesIO(payload),
        audio_size=len(payload),
        client_id=uuid.uuid4(),
        recorded_at=timezone.now(),
    ).clip
    clip.refresh_from_db()
    assert clip.audio, "the positive model keeps the clip as evidence"
    page = browser_page
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/devices/{device.code}/")
    page.wait_for_selector("td.evidence-col img")
    page.wait_for_function("document.querySelector('td.evidence-col img').complete")
    boxes = page.evaluate("""() => {
      const cell = document.querySelector('td.evidence-col .evidence').closest('td').getBoundingClientRect();
      return ['audio', 'img', 'small'].map(sel => {
        const r = document.querySelector('td.evidence-col ' + sel).getBoundingClientRect();
        return {sel, inside: r.left >= cell.left - 1 && r.right <= cell.right + 1};
      });
    }""")
    assert all(box["inside"] for box in boxes), boxes
    page.screenshot(path=str(ARTIFACTS / "ux-device-evidence.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth <= 390")
    page.screenshot(path=str(ARTIFACTS / "ux-device-evidence-390px.png"), full_page=True)
