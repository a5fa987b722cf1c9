"""Issue 11 pages and exports: the review queue, outcome figures on known data, feedback labels."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import soundfile
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import User
from alerts.models import DispatchPolicy, Incident, IncidentEvent
from alerts.selectors import outcomes
from alerts.services import incident_record_detection, incident_transition
from alerts.services.review import incident_review
from tests.alerts.helpers import classify
from tests.conftest import client_for
from tests.factories import DeviceFactory

CENTRE = (52.52, 13.405)


def _wav() -> bytes:
    buffer = io.BytesIO()
    samples = 0.01 * np.random.default_rng(1).standard_normal(16000)
    samples[4000:4400] += 0.8 * np.exp(-np.arange(400) / 60.0)
    soundfile.write(buffer, samples, 16000, format="WAV")
    return buffer.getvalue()


def _web(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


_made = iter(range(1000))


def _queued(owner: User, name: str = "Balcony", lat: float = CENTRE[0]) -> Incident:
    """A single-device incident waiting for review, ten minutes from any other (so none join)."""
    device = DeviceFactory(owner=owner, name=name, latitude=lat, longitude=CENTRE[1])
    heard = timezone.now() - timedelta(minutes=10 * next(_made))
    incident = incident_record_detection(classification=classify(device, recorded_at=heard, audio=_wav()))
    incident.refresh_from_db()
    return incident


def test_review_queue_lists_clips_and_decides(reviewed_station, owner, reviewer, police_user) -> None:
    incident = _queued(owner)
    clip = incident.detections.get().clip
    assert _web(police_user).get("/review/").status_code == 403  # police, but not a reviewer
    assert _web(owner).get(f"/review/clips/{clip.code}/audio").status_code == 403
    page = _web(reviewer).get("/review/")
    assert page.status_code == 200
    body = page.content.decode()
    assert f'data-code="{incident.code}"' in body
    assert "single device, noisy location" in body
    for kind, content_type in (("audio", "audio/wav"), ("waveform.png", "image/png"), ("spectrogram.png", "image/png")):
        response = _web(reviewer).get(f"/review/clips/{clip.code}/{kind}")
        assert response.status_code == 200, kind
        assert response["Content-Type"] == content_type
        # streaming_content exists on streaming responses only (the audio); the images are plain responses.
        chunks = response.streaming_content if response.streaming else [response.content]  # type: ignore[attr-defined]
        assert b"".join(chunks)[:4] in (b"RIFF", b"\x89PNG")
    response = _web(reviewer).post(
        f"/review/{incident.code}/decide", {"decision": "dismiss", "reason": "false_alarm", "note": "door slam"}
    )
    assert response.status_code == 302
    incident.refresh_from_db()
    assert (incident.dispatch, incident.disposition, incident.review_note) == ("dismissed", "false_alarm", "door slam")
    assert f'data-code="{incident.code}"' not in _web(reviewer).get("/review/items").content.decode()
    # Police: not on the list, and its page is a 404.
    assert client_for(police_user).get("/api/v1/incidents").json()["count"] == 0
    assert _web(police_user).get(f"/incidents/{incident.code}/").status_code == 404


def _close(incident: Incident, user: User, disposition: str, *, ack_after_s: float | None = None) -> None:
    if ack_after_s is not None:
        incident_transition(incident=incident, user=user, action="acknowledge")
        event = incident.events.get(kind=IncidentEvent.Kind.ACKNOWLEDGED)
        start = Incident.objects.get(pk=incident.pk).dispatched_at
        IncidentEvent.objects.filter(pk=event.pk).update(at=start + timedelta(seconds=ack_after_s))
    incident_transition(incident=incident, user=user, action="close", disposition=disposition)


def test_outcome_figures_on_known_data(reviewed_station, owner, reviewer, police_user, admin_user) -> None:
    # Five incidents from two devices; three reach police through review, one is dismissed, one escalates.
    incidents = [_queued(owner, "North", CENTRE[0] + 0.01 * i) for i in range(3)]
    incidents += [_queued(owner, "South", CENTRE[0] - 0.01 * i - 0.05) for i in range(2)]
    for incident in incidents[:3]:
        incident_review(incident=incident, user=reviewer, decision="confirm")
    for incident in incidents[:3]:
        Incident.objects.filter(pk=incident.pk).update(reviewed_at=incident.opened_at + timedelta(seconds=20))
    _close(incidents[0], police_user, "confirmed_gunfire", ack_after_s=30)
    _close(incidents[1], police_user, "other_source", ack_after_s=90)
    incident_review(incident=incidents[3], user=reviewer, decision="dismiss", reason="false_alarm")
    Incident.objects.filter(pk=incidents[3].pk).update(reviewed_at=incidents[3].opened_at + timedelta(seconds=10))
    Incident.objects.filter(pk=incidents[4].pk).update(review_deadline_at=timezone.now() - timedelta(seconds=1))
    from alerts.services.review import incidents_escalate_overdue

    assert incidents_escalate_overdue() == 1

    by_device = {row.key: row.as_dict() for row in outcomes("device")}
    assert by_device["North"] == {
        "key": "North",
        "incidents": 3,
        "dispatched": 3,
        "confirmed_gunfire": 1,
        "false_alarms": 0,
        "other_sources": 1,
        "no_evidence": 0,
        "dismissed_in_review": 0,
        "unreviewed": 0,
        "open": 1,
        "confirmed_share": 0.5,
        "median_review_s": 20.0,
        "median_ack_s": 60.0,
    }
    assert by_device["South"] == {
        "key": "South",
        "incidents": 2,
        "dispatched": 1,
        "confirmed_gunfire": 0,
        "false_alarms": 0,
        "other_sources": 0,
        "no_evidence": 0,
        "dismissed_in_review": 1,
        "unreviewed": 1,
        "open": 1,
        "confirmed_share": 0.0,
        "median_review_s": 10.0,
        "median_ack_s": None,
    }
    (by_model,) = outcomes("model")
    assert (by_model.key, by_model.incidents, by_model.dismissed_in_review) == ("test-model:1", 5, 1)
    (by_station,) = outcomes("station")
    assert (by_station.key, by_station.incidents, by_station.confirmed_gunfire) == ("Mitte", 5, 1)

    staff = _web(admin_user)
    page = staff.get("/outcomes/")
    assert page.status_code == 200 and b'data-key="North"' in page.content
    assert staff.get("/outcomes/plot/device.png").content[:4] == b"\x89PNG"
    rows = list(csv.DictReader(io.StringIO(staff.get("/outcomes/outcomes.csv").content.decode())))
    north = next(row for row in rows if row["by"] == "device" and row["key"] == "North")
    assert (north["confirmed_gunfire"], north["confirmed_share"], north["median_ack_s"]) == ("1", "0.5", "60.0")
    api = client_for(admin_user).get("/api/v1/outcomes", {"by": "device"}).json()
    assert {row["key"]: row["incidents"] for row in api["results"]} == {"North": 3, "South": 2}
    assert client_for(police_user).get("/api/v1/outcomes").status_code == 403
    assert _web(police_user).get("/outcomes/").status_code == 403


def test_review_decisions_flow_into_export_feedback(
    reviewed_station, owner, reviewer, police_user, tmp_path: Path
) -> None:
    confirmed, dismissed, waiting, closed = (_queued(owner, f"D{i}", CENTRE[0] + 0.02 * i) for i in range(4))
    incident_review(incident=confirmed, user=reviewer, decision="confirm")
    incident_review(incident=dismissed, user=reviewer, decision="dismiss", reason="other_source")
    incident_review(incident=closed, user=reviewer, decision="confirm")
    _close(closed, police_user, "false_alarm")  # police's verdict overrides the reviewer's
    call_command("export_feedback", "--out", str(tmp_path / "fb"), stdout=io.StringIO())
    with (tmp_path / "fb" / "manifest.csv").open() as handle:
        rows = {row["group"]: (row["label"], row["category"]) for row in csv.DictReader(handle)}
    assert rows == {
        f"incident:{confirmed.code}": ("gunshot", "review_confirmed"),
        f"incident:{dismissed.code}": ("other", "review_dismissed_other_source"),
        f"incident:{closed.code}": ("other", "false_alarm"),
    }
    assert f"incident:{waiting.code}" not in rows


def test_seed_demo_sets_up_the_review_demo(db, settings) -> None:
    from alerts.services.review import user_can_review
    from devices.models import Device
    from tests.alerts.helpers import model_version

    settings.DEBUG = True
    version = model_version()
    version.status, version.threshold = "active", 0.88
    version.save()
    call_command("seed_demo", "--quiet")
    call_command("seed_demo", "--quiet")  # idempotent
    assert user_can_review(User.objects.get(username="reviewer"))
    assert DispatchPolicy.objects.filter(mode="evidence").count() == 4
    site = Device.objects.get(name="Demo building site")
    assert 0.88 < site.alert_threshold <= settings.ALERT_THRESHOLD_MAX
    assert site.nuisance_per_day <= settings.ALERT_FALSE_ALARM_BUDGET_PER_DAY
    assert "alert threshold moved from 0.88" in site.calibration_flag
    (row,) = outcomes("device")
    assert (row.key, row.incidents, row.dismissed_in_review) == ("Demo building site", 30, 30)
    assert row.median_review_s == 23.0


def test_device_page_shows_its_calibrated_threshold_and_flag(owner, other_owner) -> None:
    from alerts.services.calibration import device_calibrate

    device = DeviceFactory(owner=owner, name="Scaffolding", latitude=CENTRE[0], longitude=CENTRE[1])
    device.paired_at = timezone.now() - timedelta(days=30)
    device.save()
    for i, score in enumerate([0.9, 0.92, 0.95] * 10):
        heard = timezone.now() - timedelta(hours=10 * i + 1)
        incident = incident_record_detection(classification=classify(device, recorded_at=heard, score=score))
        Incident.objects.filter(pk=incident.pk).update(status="closed", disposition="false_alarm")
    result = device_calibrate(device, model_threshold=0.5)
    assert result.flag

    page = _web(owner).get(f"/devices/{device.code}/").content.decode()
    threshold = page.split('id="device-threshold">', 1)[1].split("</dd>", 1)[0]
    assert threshold.startswith(f"{result.new:.2f} (calibrated ")
    assert "false alarm(s) a day at it" in threshold
    flag = page.split('id="device-calibration-flag">', 1)[1].split("</dd>", 1)[0]
    assert f"alert threshold moved from 0.50 to {result.new:.2f}" in flag
    # Another owner's device page is not theirs to read.
    assert _web(other_owner).get(f"/devices/{device.code}/").status_code == 404
