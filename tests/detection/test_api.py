"""The detection API: clip upload and results, active model, prediction, device data purge."""

from __future__ import annotations

import hashlib
import io
import struct
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from django.conf import settings as django_settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from core import audio
from detection.models import Classification, Clip, ModelVersion
from devices.models import Device
from tests.conftest import client_for
from tests.detection.pipeline import encode, impulses, media_files, sine, upload_fields
from tests.factories import DeviceFactory, UserFactory

pytestmark = pytest.mark.django_db

CLIPS = "/api/v1/clips"


def post_clip(client: APIClient, data: bytes, **fields: Any) -> Any:
    return client.post(CLIPS, upload_fields(data, **fields), format="multipart")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"message", "code", "extra"}
    assert body["code"] == code, body
    assert body["message"]
    return body


def assert_nothing_written() -> None:
    assert Clip.objects.count() == 0
    assert media_files(Path(django_settings.MEDIA_ROOT) / "clips") == []


# --- Upload -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "subtype", "sr", "container"),
    [
        ("WAV", "PCM_16", 16000, "wav"),
        ("WAV", "FLOAT", 44100, "wav"),
        ("FLAC", "PCM_16", 16000, "flac"),
        ("OGG", "VORBIS", 22050, "ogg"),
        ("OGG", "OPUS", 48000, "ogg"),
        ("MP3", "MPEG_LAYER_III", 16000, "mp3"),
    ],
)
def test_upload_accepts_each_supported_format(
    device_client: APIClient, fmt: str, subtype: str, sr: int, container: str
) -> None:
    data = encode(sine(1.5, sr=sr), sr=sr, fmt=fmt, subtype=subtype)
    response = post_clip(device_client, data, name=f"clip.{container}")
    assert response.status_code == 202, response.content
    body = response.json()
    clip = Clip.objects.get()
    assert body == {"id": str(clip.code), "status": "queued", "url": f"http://testserver{CLIPS}/{clip.code}"}
    assert response["Location"] == body["url"]
    assert clip.audio_format == container
    assert clip.sample_rate == sr
    assert clip.duration_s == pytest.approx(1.5, abs=0.08)  # lossy codecs pad a little
    assert clip.audio_sha256 == hashlib.sha256(data).hexdigest()
    assert clip.size_bytes == len(data)
    with default_storage.open(clip.audio.name, "rb") as stored:
        assert stored.read() == data


def test_upload_records_the_device_fields(device_client: APIClient, paired_device: tuple[Device, str]) -> None:
    recorded = timezone.now() - timedelta(seconds=3)
    client_id = uuid.uuid4()
    response = post_clip(
        device_client,
        encode(sine()),
        client_id=client_id,
        recorded_at=recorded,
        latitude=48.1,
        longitude=11.5,
        accuracy_m=12.5,
        trigger_offset_s=0.5,
        clock_source="gps",
    )
    assert response.status_code == 202
    clip = Clip.objects.get()
    assert clip.device == paired_device[0]
    assert clip.client_id == client_id
    # Millisecond precision survives the round trip.
    assert abs((clip.recorded_at - recorded).total_seconds()) < 0.001
    assert (clip.latitude, clip.longitude, clip.accuracy_m) == (48.1, 11.5, 12.5)
    assert (clip.trigger_offset_s, clip.clock_source, clip.status) == (0.5, "gps", "queued")


def test_home_device_without_coordinates_gets_its_installed_location(device_client: APIClient) -> None:
    assert post_clip(device_client, encode(sine())).status_code == 202
    clip = Clip.objects.get()
    assert (clip.latitude, clip.longitude, clip.accuracy_m) == (52.52, 13.405, None)


def test_vehicle_without_a_fix_uses_its_last_heartbeat_position_widened_by_its_age(
    device_client: APIClient, paired_device: tuple[Device, str]
) -> None:
    """A car whose GPS has no fix may still have heard a gunshot: the clip is never refused for that."""
    reported = timezone.now() - timedelta(seconds=20)
    Device.objects.filter(pk=paired_device[0].pk).update(
        kind=Device.Kind.VEHICLE, last_latitude=52.5, last_longitude=13.3, last_accuracy_m=10, last_position_at=reported
    )
    assert post_clip(device_client, encode(sine())).status_code == 202
    clip = Clip.objects.get()
    assert (clip.latitude, clip.longitude) == (52.5, 13.3)
    assert 10 + 15 * 20 <= clip.accuracy_m < 10 + 15 * 25


def test_vehicle_that_never_reported_a_position_still_uploads(
    device_client: APIClient, paired_device: tuple[Device, str]
) -> None:
    Device.objects.filter(pk=paired_device[0].pk).update(kind=Device.Kind.VEHICLE)
    assert post_clip(device_client, encode(sine())).status_code == 202
    clip = Clip.objects.get()
    assert (clip.latitude, clip.longitude, clip.accuracy_m) == (None, None, None)
    assert post_clip(device_client, encode(sine()), latitude=1.0, longitude=2.0).status_code == 202


def test_retry_with_the_same_client_id_returns_the_same_clip(device_client: APIClient) -> None:
    data, client_id = encode(sine()), uuid.uuid4()
    first = post_clip(device_client, data, client_id=client_id)
    second = post_clip(device_client, data, client_id=client_id)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert Clip.objects.count() == 1
    assert len(media_files(Path(django_settings.MEDIA_ROOT) / "clips")) == 1


def test_client_id_reused_for_other_audio_is_a_conflict(device_client: APIClient) -> None:
    client_id = uuid.uuid4()
    first = post_clip(device_client, encode(sine(freq=440)), client_id=client_id)
    body = assert_error(
        post_clip(device_client, encode(sine(freq=880)), client_id=client_id), 409, "client_id_conflict"
    )
    assert body["extra"]["id"] == first.json()["id"]
    assert Clip.objects.count() == 1


def test_the_same_client_id_on_two_devices_makes_two_clips(device_client: APIClient, owner: Any) -> None:
    from devices import services as device_services

    _, issued = device_services.device_create(owner=owner, name="Garage", latitude=1.0, longitude=1.0)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Device {device_services.device_pair(pairing_code=issued.code).token}")
    data, client_id = encode(sine()), uuid.uuid4()
    assert post_clip(device_client, data, client_id=client_id).status_code == 202
    assert post_clip(other, data, client_id=client_id).status_code == 202
    assert Clip.objects.count() == 2


def _wav_with_format_tag(tag: int) -> bytes:
    data = bytearray(encode(sine(), fmt="WAV", subtype="PCM_16"))
    data[20:22] = struct.pack("<H", tag)
    return bytes(data)


def _nan_wav() -> bytes:
    y = sine()
    y[100] = np.nan
    return encode(y, fmt="WAV", subtype="FLOAT")


def _silence_flac(seconds: float, *, sr: int = 48000, channels: int = 1) -> bytes:
    """Seconds of digital silence as FLAC: an hour of it is about half a megabyte (a decompression bomb)."""
    buffer = io.BytesIO()
    block = np.zeros((sr * 60, channels), dtype=np.int16)
    with sf.SoundFile(buffer, "w", sr, channels, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)
    return buffer.getvalue()


def _hide_flac_length(data: bytes) -> bytes:
    # STREAMINFO's 36-bit total-samples field set to 0, as a streaming encoder writes it: "length unknown".
    out = bytearray(data)
    out[18:26] = (int.from_bytes(out[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(out)


HOUR_OF_SILENCE = _silence_flac(3600)


def _wav_rate(sr: int, seconds: float = 1.0) -> bytes:
    """A tone lasting ``seconds`` at sample rate ``sr`` (1 Hz x 10 s = the 10-sample file from the report)."""
    n = max(10, int(sr * seconds))
    return encode(np.resize(sine(), n), sr=sr, fmt="WAV", subtype="PCM_16")


BAD_AUDIO = {
    "rate-1-hz": (_wav_rate(1, 10.0), 400, "unsupported_sample_rate"),
    "rate-4-khz": (_wav_rate(4000), 400, "unsupported_sample_rate"),
    "rate-384-khz": (_wav_rate(384_000), 400, "unsupported_sample_rate"),
    "eight-channels": (encode(np.tile(sine()[:, None], (1, 8))), 400, "too_many_channels"),
    "bomb-hour-of-silence": (HOUR_OF_SILENCE, 400, "too_long"),
    "bomb-length-hidden": (_hide_flac_length(HOUR_OF_SILENCE), 400, "too_long"),
    "text": (b"this is not audio at all " * 20, 415, "not_audio"),
    "html": (b"<!doctype html><html><body>oops</body></html>", 415, "not_audio"),
    "aiff": (encode(sine(), fmt="AIFF", subtype="PCM_16"), 415, "unsupported_format"),
    "m4a": (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 200, 415, "unsupported_format"),
    "wav-unknown-sample-format": (_wav_with_format_tag(0x1234), 415, "unsupported_format"),
    "empty-file": (b"", 400, "empty"),
    "truncated-flac": (encode(impulses(3.0))[:20000], 400, "corrupt"),
    "truncated-wav": (encode(sine(), fmt="WAV", subtype="PCM_16")[:30000], 400, "corrupt"),
    "header-only-wav": (encode(sine(), fmt="WAV", subtype="PCM_16")[:44], 400, "corrupt"),
    "all-zero": (encode(np.zeros(32000, dtype=np.float32)), 400, "silent"),
    "nan-samples": (_nan_wav(), 400, "non_finite"),
    "too-long": (encode(sine(31.0, sr=8000), sr=8000), 400, "too_long"),
    "too-short": (encode(sine(0.05)), 400, "too_short"),
}


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_is_refused_and_nothing_is_written(device_client: APIClient, case: str) -> None:
    data, status, code = BAD_AUDIO[case]
    body = assert_error(post_clip(device_client, data), status, code)
    assert body["message"].startswith("audio: ")
    assert_nothing_written()


def test_a_bomb_is_refused_from_its_header_without_decoding(device_client: APIClient, monkeypatch: Any) -> None:
    assert len(HOUR_OF_SILENCE) < 1_000_000  # small on the wire, ~700 MB as float samples
    decoded: list[int] = []
    real_decode = audio.decode

    def counting_decode(*a: Any, **k: Any) -> Any:
        decoded.append(1)
        return real_decode(*a, **k)

    monkeypatch.setattr(audio, "decode", counting_decode)
    body = assert_error(post_clip(device_client, HOUR_OF_SILENCE), 400, "too_long")
    assert "3600" in body["message"]
    assert decoded == []
    assert_nothing_written()


def test_a_bomb_that_hides_its_length_is_decoded_only_up_to_the_limit(monkeypatch: Any) -> None:
    # No header length to check: the decoder is asked for at most max_s x rate + 1 samples, never the hour.
    asked: list[int] = []
    real_read = sf.SoundFile.read

    def read(self: sf.SoundFile, frames: int = -1, *args: Any, **kwargs: Any) -> Any:
        asked.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", read)
    with pytest.raises(audio.AudioError) as caught:
        audio.inspect(_hide_flac_length(HOUR_OF_SILENCE), min_s=0.1, max_s=30.0)
    assert caught.value.code == "too_long"
    assert asked == [30 * 48000 + 1]


def test_sample_rate_and_channel_limits_come_from_settings(device_client: APIClient, settings: Any) -> None:
    stereo = encode(np.tile(sine()[:, None], (1, 2)))
    assert post_clip(device_client, stereo).status_code == 202
    assert post_clip(device_client, _wav_rate(8000)).status_code == 202
    settings.CLIP_MAX_CHANNELS = 1
    body = assert_error(
        post_clip(device_client, encode(np.tile(sine(freq=500)[:, None], (1, 2)))), 400, "too_many_channels"
    )
    assert body["extra"]["field"] == "audio"
    settings.CLIP_MIN_SAMPLE_RATE = 16000
    assert_error(post_clip(device_client, _wav_rate(11025)), 400, "unsupported_sample_rate")
    settings.CLIP_MAX_SAMPLE_RATE = 384_000
    assert post_clip(device_client, _wav_rate(384_000)).status_code == 202
    assert Clip.objects.count() == 3


def test_predict_refuses_a_bomb_too(owner_client: APIClient, negative_model: ModelVersion) -> None:
    response = owner_client.post(
        "/api/v1/predict", {"audio": SimpleUploadedFile("bomb.flac", HOUR_OF_SILENCE)}, format="multipart"
    )
    assert_error(response, 400, "too_long")


def test_clip_length_limits_come_from_settings(device_client: APIClient, settings: Any) -> None:
    settings.CLIP_MAX_SECONDS = 1.0
    assert_error(post_clip(device_client, encode(sine(1.5))), 400, "too_long")
    settings.CLIP_MIN_SECONDS = 0.01
    assert post_clip(device_client, encode(sine(0.05))).status_code == 202


def test_file_over_the_byte_limit_is_413(device_client: APIClient, settings: Any) -> None:
    settings.CLIP_MAX_BYTES = 50_000
    data = encode(sine(2.0), fmt="WAV", subtype="PCM_16")  # 64 kB: under the body allowance, over the file limit
    body = assert_error(post_clip(device_client, data), 413, "too_large")
    assert body["extra"]["max_bytes"] == 50_000
    assert_nothing_written()


def test_body_over_the_byte_limit_is_413_before_parsing(device_client: APIClient, settings: Any) -> None:
    settings.CLIP_MAX_BYTES = 10_000
    data = encode(sine(10.0), fmt="WAV", subtype="PCM_16")  # 320 kB
    assert_error(post_clip(device_client, data), 413, "too_large")
    assert_nothing_written()


def test_default_byte_limit_is_ten_megabytes(device_client: APIClient) -> None:
    assert django_settings.CLIP_MAX_BYTES == 10 * 1024 * 1024
    data = b"RIFF" + b"\x00" * (10 * 1024 * 1024 + 1)
    assert_error(post_clip(device_client, data, name="big.wav"), 413, "too_large")
    assert_nothing_written()


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"latitude": 91, "longitude": 0}, "max_value", "latitude"),
        ({"latitude": -90.5, "longitude": 0}, "min_value", "latitude"),
        ({"latitude": 0, "longitude": 180.01}, "max_value", "longitude"),
        ({"latitude": "north", "longitude": 0}, "invalid", "latitude"),
        ({"latitude": "nan", "longitude": 0}, "invalid", "latitude"),
        ({"latitude": 45.0}, "invalid_location", "latitude"),
        ({"accuracy_m": -1}, "min_value", "accuracy_m"),
        ({"trigger_offset_s": -0.1}, "min_value", "trigger_offset_s"),
        ({"trigger_offset_s": 9.0}, "invalid_trigger_offset", "trigger_offset_s"),
        ({"clock_source": "sundial"}, "invalid_choice", "clock_source"),
        ({"client_id": "not-a-uuid"}, "invalid", "client_id"),
        ({"recorded_at": "yesterday"}, "invalid", "recorded_at"),
        ({"recorded_at": "2026-01-31T12:00:00.123"}, "naive", "recorded_at"),
        # An unset device clock: year 1 crashed the worker's date arithmetic, 1970 opened an incident in 1970.
        ({"recorded_at": "0001-01-01T00:00:00Z"}, "recorded_too_old", "recorded_at"),
        ({"recorded_at": "1970-01-01T00:00:07.250Z"}, "recorded_too_old", "recorded_at"),
        ({"recorded_at": "2000-01-01T00:00:00+05:00"}, "recorded_too_old", "recorded_at"),
    ],
)
def test_invalid_fields_are_refused(device_client: APIClient, fields: dict[str, Any], code: str, field: str) -> None:
    body = assert_error(post_clip(device_client, encode(sine()), **fields), 400, code)
    assert field in body["message"] or body["extra"].get("field") == field or field in body["extra"].get("fields", {})
    assert_nothing_written()


def test_timestamp_far_in_the_future_is_refused(device_client: APIClient, settings: Any) -> None:
    ahead = timezone.now() + timedelta(minutes=6)
    body = assert_error(post_clip(device_client, encode(sine()), recorded_at=ahead), 400, "recorded_in_future")
    assert body["extra"]["field"] == "recorded_at"
    assert_nothing_written()
    # Within the allowed skew a slightly fast clock is fine, and the skew is a setting.
    slightly_ahead = timezone.now() + timedelta(minutes=4)
    assert post_clip(device_client, encode(sine()), recorded_at=slightly_ahead).status_code == 202
    settings.CLIP_MAX_CLOCK_SKEW = timedelta(seconds=10)
    assert_error(
        post_clip(device_client, encode(sine(freq=300)), recorded_at=timezone.now() + timedelta(minutes=1)),
        400,
        "recorded_in_future",
    )


def test_timestamp_older_than_the_max_age_is_refused(device_client: APIClient, settings: Any) -> None:
    # A device that queued its clips offline for days still delivers them; beyond CLIP_MAX_AGE it is a clock fault.
    assert timedelta(days=7) == django_settings.CLIP_MAX_AGE
    six_days = timezone.now() - timedelta(days=6)
    assert post_clip(device_client, encode(sine()), recorded_at=six_days).status_code == 202
    eight_days = timezone.now() - timedelta(days=8)
    body = assert_error(
        post_clip(device_client, encode(sine(freq=400)), recorded_at=eight_days), 400, "recorded_too_old"
    )
    assert "recorded_at" in body["extra"]["fields"]
    settings.CLIP_MAX_AGE = timedelta(hours=1)
    assert_error(
        post_clip(device_client, encode(sine(freq=600)), recorded_at=timezone.now() - timedelta(hours=2)),
        400,
        "recorded_too_old",
    )
    assert Clip.objects.count() == 1


@pytest.mark.parametrize("missing", ["audio", "recorded_at", "client_id"])
def test_missing_fields_are_refused(device_client: APIClient, missing: str) -> None:
    fields = upload_fields(encode(sine()))
    del fields[missing]
    body = assert_error(device_client.post(CLIPS, fields, format="multipart"), 400, "required")
    assert missing in body["extra"]["fields"]
    assert_nothing_written()


def test_upload_needs_a_device_token(owner_client: APIClient, api_client: APIClient) -> None:
    assert_error(post_clip(owner_client, encode(sine())), 403, "permission_denied")
    assert post_clip(api_client, encode(sine())).status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Device gw_0000.nope")
    assert post_clip(bad, encode(sine())).status_code == 401
    assert_nothing_written()


# --- Results ----------------------------------------------------------------------------------------


def test_upload_is_classified_and_the_result_is_served(
    device_client: APIClient,
    owner_client: APIClient,
    negative_model: ModelVersion,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = post_clip(device_client, encode(impulses()))
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    detail = owner_client.get(response.json()["url"]).json()
    assert detail["status"] == "done"
    result = detail["result"]
    assert result["label"] == "other"
    assert result["model_version"] == negative_model.label
    assert result["threshold"] == pytest.approx(0.5)
    assert result["score"] == pytest.approx(1 / (1 + np.exp(8.0)), rel=1e-3)
    assert result["shots"] == 0 and result["offset_s"] is None
    # 1 s windows every 0.5 s over the 2 s clip, each scored by the pinned network.
    offsets = [window["offset_s"] for window in result["windows"]]
    assert len(offsets) >= 3 and np.allclose(np.diff(offsets), 0.5)
    assert all(window["score"] == pytest.approx(result["score"]) for window in result["windows"])
    assert detail["audio_available"] is False  # privacy: non-gunshot audio is gone
    assert Classification.objects.get().model_version == negative_model


def test_result_is_null_until_classified(device_client: APIClient) -> None:
    response = post_clip(device_client, encode(sine()))  # no on-commit run: the task never started
    detail = device_client.get(response.json()["url"]).json()
    assert detail["status"] == "queued"
    assert detail["result"] is None
    assert detail["recorded_at"].endswith("Z") or "+" in detail["recorded_at"]


def test_clip_is_visible_to_its_device_and_owner_only(
    device_client: APIClient,
    owner_client: APIClient,
    other_client: APIClient,
    other_owner: Any,
) -> None:
    url = post_clip(device_client, encode(sine())).json()["url"]
    assert device_client.get(url).status_code == 200
    assert owner_client.get(url).status_code == 200
    assert_error(other_client.get(url), 404, "not_found")
    # Another owner's device cannot read it either.
    from devices import services as device_services

    _, issued = device_services.device_create(owner=other_owner, name="Theirs", latitude=1.0, longitude=1.0)
    theirs = APIClient()
    theirs.credentials(HTTP_AUTHORIZATION=f"Device {device_services.device_pair(pairing_code=issued.code).token}")
    assert_error(theirs.get(url), 404, "not_found")
    assert APIClient().get(url).status_code == 401


def test_unknown_clip_is_404(owner_client: APIClient) -> None:
    assert_error(owner_client.get(f"{CLIPS}/{uuid.uuid4()}"), 404, "not_found")


def _make_clip(
    device: Device,
    *,
    status: str = "done",
    label: str | None = None,
    model: ModelVersion | None = None,
    recorded_at: Any = None,
) -> Clip:
    clip = Clip.objects.create(
        device=device,
        client_id=uuid.uuid4(),
        audio_sha256="0" * 64,
        status=status,
        recorded_at=recorded_at or timezone.now(),
    )
    if label is not None:
        assert model is not None
        Classification.objects.create(
            clip=clip, model_version=model, label=label, score=0.9 if label == "gunshot" else 0.1, threshold=0.5
        )
    return clip


def test_owner_lists_their_clips_with_filters(
    owner: Any, owner_client: APIClient, other_owner: Any, negative_model: ModelVersion
) -> None:
    home = DeviceFactory(owner=owner, name="Home")
    car = DeviceFactory(owner=owner, name="Car", kind=Device.Kind.VEHICLE)
    theirs = DeviceFactory(owner=other_owner)
    old = timezone.now() - timedelta(days=3)
    shot = _make_clip(home, label="gunshot", model=negative_model)
    other = _make_clip(car, label="other", model=negative_model, recorded_at=old)
    queued = _make_clip(home, status="queued")
    _make_clip(theirs, label="gunshot", model=negative_model)

    def ids(query: str = "") -> set[str]:
        response = owner_client.get(f"{CLIPS}{query}")
        assert response.status_code == 200
        return {row["id"] for row in response.json()["results"]}

    assert ids() == {str(shot.code), str(other.code), str(queued.code)}
    assert ids(f"?device={car.code}") == {str(other.code)}
    assert ids("?label=gunshot") == {str(shot.code)}
    assert ids("?status=queued") == {str(queued.code)}
    after = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(f"?recorded_after={after.replace('+', '%2B')}") == {str(shot.code), str(queued.code)}
    assert ids(f"?recorded_before={after.replace('+', '%2B')}") == {str(other.code)}
    page = owner_client.get(f"{CLIPS}?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    listed = owner_client.get(f"{CLIPS}?label=gunshot").json()["results"][0]
    assert listed["result"]["label"] == "gunshot" and listed["device"] == str(home.code)


def test_clip_list_query_count_does_not_grow_with_clips(
    owner: Any, owner_client: APIClient, negative_model: ModelVersion, django_assert_max_num_queries: Any
) -> None:
    device = DeviceFactory(owner=owner)
    for _ in range(15):
        _make_clip(device, label="other", model=negative_model)
    with django_assert_max_num_queries(4):
        assert owner_client.get(CLIPS).status_code == 200


# --- Active model ----------------------------------------------------------------------------------


def test_active_model_is_404_without_one(device_client: APIClient, owner_client: APIClient) -> None:
    assert_error(device_client.get("/api/v1/models/active"), 404, "no_active_model")
    assert_error(owner_client.get("/api/v1/models/active/download"), 404, "no_active_model")


def test_active_model_metadata_for_devices_and_users(
    device_client: APIClient, owner_client: APIClient, api_client: APIClient, negative_model: ModelVersion
) -> None:
    for client in (device_client, owner_client):
        body = client.get("/api/v1/models/active").json()
        assert body["id"] == negative_model.pk
        assert (body["name"], body["version"], body["architecture"]) == ("never", negative_model.version, "gwcnn-tiny")
        assert body["sha256"] == negative_model.sha256
        assert body["sample_rate"] == 16000 and body["feature_params"]["n_mels"] == 40
        assert body["threshold"] == 0.5
        assert {"metrics", "created_at"} <= set(body)
    assert api_client.get("/api/v1/models/active").status_code == 401


def test_model_download_is_torchscript_with_checksum_headers(
    device_client: APIClient, owner_client: APIClient, negative_model: ModelVersion, monkeypatch: Any
) -> None:
    response = device_client.get("/api/v1/models/active/download")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]  # a FileResponse
    assert response["X-Model-SHA256"] == hashlib.sha256(body).hexdigest()
    assert response["X-Model-Version"] == negative_model.label
    scripted = torch.jit.load(io.BytesIO(body))
    logits = scripted(torch.full((2, 1, 40, 50), -40.0))
    assert logits.shape == (2,)
    assert torch.allclose(torch.sigmoid(logits), torch.full((2,), 1 / (1 + np.exp(8.0))), rtol=1e-3)

    # The export is cached per version: the second download serves the same file without exporting again.
    from core.classifier import Classifier

    def no_export(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("exported twice")

    monkeypatch.setattr(Classifier, "export_torchscript", no_export)
    again = owner_client.get("/api/v1/models/active/download")
    assert b"".join(again.streaming_content) == body  # type: ignore[attr-defined]  # a FileResponse
    assert again["X-Model-SHA256"] == response["X-Model-SHA256"]
    exports = media_files(Path(django_settings.MEDIA_ROOT) / "models" / "torchscript")
    assert [p.name for p in exports] == [f"{negative_model.pk}-{negative_model.sha256[:16]}.pt"]


# --- Predict ---------------------------------------------------------------------------------------

PREDICT = "/api/v1/predict"


def predict(client: APIClient, data: bytes, path: str = PREDICT, **extra: Any) -> Any:
    fields = {"audio": SimpleUploadedFile("x.flac", data)}
    fields.update(extra.pop("fields", {}))
    return client.post(path, fields, format="multipart", **extra)


def test_predict_answers_json_synchronously(owner_client: APIClient, positive_model: ModelVersion) -> None:
    data = encode(impulses())
    response = predict(owner_client, data)
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == "gunshot"
    assert body["score"] == pytest.approx(1 / (1 + np.exp(-8.0)), rel=1e-4)
    assert body["model_version"] == positive_model.label
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["duration_s"] == pytest.approx(2.0)
    assert body["shots"] >= 1 and body["offset_s"] is not None
    assert Clip.objects.count() == 0  # nothing stored


def test_predict_threshold_override(owner_client: APIClient, negative_model: ModelVersion) -> None:
    body = predict(owner_client, encode(impulses()), fields={"threshold": "0.0001"}).json()
    assert body["label"] == "gunshot" and body["threshold"] == 0.0001


def test_predict_answers_xml_on_request(owner_client: APIClient, negative_model: ModelVersion) -> None:
    import xml.etree.ElementTree as ET

    for response in (
        predict(owner_client, encode(sine()), HTTP_ACCEPT="application/xml"),
        predict(owner_client, encode(sine()), path=f"{PREDICT}?format=xml"),
    ):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/xml")
        root = ET.fromstring(response.content)
        assert root.findtext("label") == "other"
        assert root.findtext("model_version") == negative_model.label
        assert float(root.findtext("score")) < 0.01
        assert len(root.find("windows")) == len(predict(owner_client, encode(sine())).json()["windows"])


def test_predict_errors_keep_the_error_shape(owner_client: APIClient, negative_model: ModelVersion) -> None:
    assert_error(predict(owner_client, b"not audio" * 50), 415, "not_audio")
    assert_error(predict(owner_client, encode(np.zeros(16000, dtype=np.float32))), 400, "silent")
    xml = predict(owner_client, b"", HTTP_ACCEPT="application/xml")
    assert xml.status_code == 400 and b"<code>empty</code>" in xml.content


def test_predict_without_a_model_is_503(owner_client: APIClient) -> None:
    assert_error(predict(owner_client, encode(sine())), 503, "no_model")


def test_predict_is_for_people_not_devices(
    device_client: APIClient, api_client: APIClient, negative_model: ModelVersion
) -> None:
    assert predict(device_client, encode(sine())).status_code in (401, 403)
    assert predict(api_client, encode(sine())).status_code in (401, 403)


def test_predict_accepts_a_user_token(owner: Any, negative_model: ModelVersion) -> None:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    assert predict(client, encode(sine())).status_code == 200


def test_predict_is_throttled(owner_client: APIClient, negative_model: ModelVersion) -> None:
    from rest_framework.throttling import ScopedRateThrottle

    saved = ScopedRateThrottle.THROTTLE_RATES
    # DRF copies the rates onto the class at import time, so the override has to go there too.
    ScopedRateThrottle.THROTTLE_RATES = {**saved, "predict": "2/min"}
    try:
        statuses = [predict(owner_client, encode(sine())).status_code for _ in range(3)]
    finally:
        ScopedRateThrottle.THROTTLE_RATES = saved
    assert statuses == [200, 200, 429]


# --- Device data purge -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix"), [("delete", "data"), ("post", "purge")])
def test_owner_deletes_all_data_of_a_device(
    device_client: APIClient,
    owner_client: APIClient,
    paired_device: tuple[Device, str],
    positive_model: ModelVersion,
    django_capture_on_commit_callbacks: Any,
    method: str,
    suffix: str,
) -> None:
    device = paired_device[0]
    with django_capture_on_commit_callbacks(execute=True):
        for freq in (300, 600):
            assert post_clip(device_client, encode(sine(freq=freq))).status_code == 202
    assert len(media_files(Path(django_settings.MEDIA_ROOT) / "clips")) == 2  # gunshots keep their audio
    response = getattr(owner_client, method)(f"/api/v1/devices/{device.code}/{suffix}")
    assert response.status_code == 200
    assert response.json() == {"device": str(device.code), "clips_deleted": 2, "audio_files_deleted": 2}
    assert Clip.objects.count() == 0 and Classification.objects.count() == 0
    assert media_files(Path(django_settings.MEDIA_ROOT) / "clips") == []
    assert Device.objects.filter(pk=device.pk).exists()


def test_purging_another_owners_device_is_404(
    owner: Any, other_client: APIClient, device_client: APIClient, paired_device: tuple[Device, str]
) -> None:
    post_clip(device_client, encode(sine()))
    assert_error(other_client.delete(f"/api/v1/devices/{paired_device[0].code}/data"), 404, "not_found")
    assert Clip.objects.count() == 1
    # A device cannot wipe itself either: the owner decides.
    assert device_client.delete(f"/api/v1/devices/{paired_device[0].code}/data").status_code in (401, 403)


def test_stranger_token_cannot_reach_other_data(negative_model: ModelVersion) -> None:
    stranger = client_for(UserFactory(username="mallory"))
    assert stranger.get(CLIPS).json()["results"] == []
