from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import soundfile
from django.core.management import CommandError, call_command

from alerts.models import PoliceStation
from alerts.services import incident_record_detection, incident_transition
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory

CSV_TEXT = """name,latitude,longitude,address,jurisdiction_radius_km,contact_email,webhook_url,webhook_secret
Mitte,52.52,13.405,Keibelstr. 36,4,mitte@police.example.org,https://cad.example.org/hook,abc
Kreuzberg,52.497,13.41,,3,,,
"""


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_stations", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_csv_import_creates_then_is_idempotent(tmp_path: Path, db) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(CSV_TEXT)
    out, _ = _run(str(path))
    assert "2 created" in out
    mitte = PoliceStation.objects.get(name="Mitte")
    assert (mitte.latitude, mitte.jurisdiction_radius_km, mitte.webhook_secret) == (52.52, 4.0, "abc")
    out, _ = _run(str(path))
    assert "0 created, 0 updated, 2 unchanged" in out
    path.write_text(CSV_TEXT.replace("52.497,13.41,,3", "52.498,13.41,,3"))
    out, _ = _run(str(path))
    assert "1 updated" in out
    assert PoliceStation.objects.count() == 2
    assert PoliceStation.objects.get(name="Kreuzberg").latitude == 52.498


def test_bad_rows_are_reported_one_by_one_and_good_rows_imported(tmp_path: Path, db) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(
        "name,latitude,longitude,contact_email\n"
        "Good,52.5,13.4,\n"
        ",52.5,13.4,\n"
        "NoLat,,13.4,\n"
        "North,95,13.4,\n"
        "Mail,52.5,13.4,not-an-email\n"
        "Words,fifty,13.4,\n"
    )
    err = io.StringIO()
    with pytest.raises(CommandError, match="5 row"):
        call_command("import_stations", str(path), stdout=io.StringIO(), stderr=err)
    messages = err.getvalue().splitlines()
    assert messages == [
        "line 3: name is required",
        "line 4: latitude is required",
        "line 5: latitude: Ensure this value is less than or equal to 90.",
        "line 6: contact_email: Enter a valid email address.",
        "line 7: latitude must be a number, got 'fifty'",
    ]
    assert list(PoliceStation.objects.values_list("name", flat=True)) == ["Good"]


def test_csv_without_required_columns_is_refused(tmp_path: Path, db) -> None:
    path = tmp_path / "stations.csv"
    path.write_text("title,lat,lon\nA,1,2\n")
    with pytest.raises(CommandError, match="lacks latitude, longitude, name"):
        _run(str(path))


def test_geojson_import_with_polygon_jurisdiction(tmp_path: Path, db) -> None:
    ring = [[13.3, 52.4], [13.5, 52.4], [13.5, 52.6], [13.3, 52.6], [13.3, 52.4]]
    square = {"type": "Polygon", "coordinates": [ring]}
    data = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [13.405, 52.52]},
                "properties": {"name": "Mitte", "contact_phone": "+49301234", "jurisdiction": square},
            },
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
                "properties": {"name": "Line"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [11.5, 48.1]},
                "properties": {"name": "Broken", "jurisdiction": {"type": "Polygon", "coordinates": [[[0, 0]]]}},
            },
        ],
    }
    path = tmp_path / "stations.geojson"
    path.write_text(json.dumps(data))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_stations", str(path), stdout=io.StringIO(), stderr=err)
    assert "feature 2: geometry must be a Point" in err.getvalue()
    assert "feature 3: every polygon ring needs at least 4" in err.getvalue()
    mitte = PoliceStation.objects.get()
    assert (mitte.name, mitte.longitude, mitte.latitude) == ("Mitte", 13.405, 52.52)
    assert mitte.jurisdiction_geojson == square


def test_dry_run_changes_nothing(tmp_path: Path, db) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(CSV_TEXT)
    out, _ = _run(str(path), "--dry-run")
    assert "would import 2" in out
    assert PoliceStation.objects.count() == 0


def _wav_bytes() -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, [0.0, 0.5, -0.5, 0.0] * 4000, 16000, format="WAV")
    return buffer.getvalue()


def test_export_feedback_writes_reviewed_clips_in_manifest_format(tmp_path: Path, owner, police_user) -> None:
    outcomes = {"confirmed_gunfire": "gunshot", "other_source": "other", "false_alarm": "other", "no_evidence": None}
    incidents = {}
    for index, disposition in enumerate(outcomes):
        device = DeviceFactory(owner=owner, latitude=52.0 + index, longitude=13.0)
        incident = incident_record_detection(classification=classify(device, audio=_wav_bytes()))
        incident_transition(incident=incident, user=police_user, action="close", disposition=disposition)
        incidents[disposition] = incident
    # Still open, and closed but with its audio already deleted: neither is exported.
    open_device = DeviceFactory(owner=owner, latitude=40.0, longitude=13.0)
    incident_record_detection(classification=classify(open_device, audio=_wav_bytes()))
    gone_device = DeviceFactory(owner=owner, latitude=41.0, longitude=13.0)
    gone = incident_record_detection(classification=classify(gone_device, audio=_wav_bytes()))
    incident_transition(incident=gone, user=police_user, action="close", disposition="confirmed_gunfire")
    clip = gone.detections.get().clip
    clip.audio_deleted_at = clip.recorded_at
    clip.save()

    out = io.StringIO()
    call_command("export_feedback", "--out", str(tmp_path / "feedback"), stdout=out)
    assert "exported 3 clip(s)" in out.getvalue()
    with (tmp_path / "feedback" / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "label", "category", "source", "group", "split_unit", "license", "duration_s"]
    by_category = {row["category"]: row for row in rows}
    assert set(by_category) == {"confirmed_gunfire", "other_source", "false_alarm"}
    for disposition, row in by_category.items():
        assert row["label"] == outcomes[disposition]
        assert row["group"] == f"incident:{incidents[disposition].code}"
        audio = tmp_path / "feedback" / row["file"]
        assert audio.suffix == ".wav"
        assert soundfile.info(str(audio)).frames == 16000
    call_command("export_feedback", "--out", str(tmp_path / "feedback"), stdout=io.StringIO())
    assert len(list((tmp_path / "feedback" / "clips").iterdir())) == 3
