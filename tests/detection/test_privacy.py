"""Privacy by default: what audio is kept, for how long, who may hear it, and deleting it all."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from detection import services, tasks
from detection.models import Classification, Clip, ModelVersion
from detection.services import clips
from devices.models import Device
from tests.detection.pipeline import encode, impulses, sine

pytestmark = pytest.mark.django_db


@pytest.fixture
def classified(device: Device, django_capture_on_commit_callbacks: Any) -> Callable[..., Clip]:
    """Upload a clip and classify it with whatever model is active; return it fresh from the database."""

    def make(data: bytes | None = None) -> Clip:
        payload = data if data is not None else encode(impulses())
        with django_capture_on_commit_callbacks(execute=True):
            clip = services.clip_upload(
                device=device,
                audio_file=io.BytesIO(payload),
                audio_size=len(payload),
                client_id=uuid.uuid4(),
                recorded_at=timezone.now(),
            ).clip
        clip.refresh_from_db()
        return clip

    return make


def test_non_gunshot_audio_is_deleted_once_classified(
    device: Device, negative_model: ModelVersion, django_capture_on_commit_callbacks: Any
) -> None:
    data = encode(sine())
    with django_capture_on_commit_callbacks(execute=False) as upload_callbacks:
        clip = services.clip_upload(
            device=device,
            audio_file=io.BytesIO(data),
            audio_size=len(data),
            client_id=uuid.uuid4(),
            recorded_at=timezone.now(),
        ).clip
    name = clip.audio.name
    assert default_storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        for callback in upload_callbacks:
            callback()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.DONE
    assert not clip.audio and clip.audio_deleted_at is not None and clip.retain_until is None
    assert not default_storage.exists(name)
    # The verdict and the hash stay: the owner still sees what was heard, and can prove it.
    assert clip.classification.label == "other" and clip.audio_sha256


def test_gunshot_audio_is_kept_as_evidence_for_the_retention_period(
    classified: Callable[..., Clip], positive_model: ModelVersion, settings: Any
) -> None:
    settings.EVIDENCE_RETENTION_DAYS = 7
    clip = classified()
    assert clip.classification.label == "gunshot"
    assert clip.audio and default_storage.exists(clip.audio.name)
    assert clip.audio_deleted_at is None
    assert clip.retain_until - clip.finished_at == timedelta(days=7)


def test_default_retention_is_ninety_days(classified: Callable[..., Clip], positive_model: ModelVersion) -> None:
    clip = classified()
    assert (clip.retain_until - clip.finished_at).days == 90


def test_purge_deletes_expired_evidence_and_keeps_the_rest(
    classified: Callable[..., Clip], positive_model: ModelVersion
) -> None:
    expired, current = classified(), classified(encode(impulses(at=(0.3,))))
    services.clip_spectrogram(clip=expired)
    Clip.objects.filter(pk=expired.pk).update(retain_until=timezone.now() - timedelta(seconds=1))
    assert tasks.purge_expired_audio.apply().get() == 1
    expired.refresh_from_db()
    current.refresh_from_db()
    assert not expired.audio and expired.audio_deleted_at is not None
    assert not default_storage.exists(services.spectrogram_name(expired))
    assert current.audio and default_storage.exists(current.audio.name)
    assert Classification.objects.count() == 2  # results outlive the audio


def test_purge_also_catches_audio_left_behind_by_a_crash(device: Device, negative_model: ModelVersion) -> None:
    data = encode(sine())
    clip = services.clip_upload(
        device=device,
        audio_file=io.BytesIO(data),
        audio_size=len(data),
        client_id=uuid.uuid4(),
        recorded_at=timezone.now(),
    ).clip
    # Classified as 'other', but the process died before the file deletion ran.
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.DONE)
    queued = services.clip_upload(
        device=device,
        audio_file=io.BytesIO(encode(sine(freq=200))),
        audio_size=None,
        client_id=uuid.uuid4(),
        recorded_at=timezone.now(),
    ).clip
    assert services.clips_purge_expired_audio() == 1
    assert not default_storage.exists(clip.audio.name)
    assert default_storage.exists(queued.audio.name)  # still waiting for its verdict


def test_purge_audio_command(classified: Callable[..., Clip], positive_model: ModelVersion) -> None:
    clip = classified()
    Clip.objects.filter(pk=clip.pk).update(retain_until=timezone.now() - timedelta(days=1))
    out = io.StringIO()
    call_command("purge_audio", "--dry-run", stdout=out)
    assert "1 audio file(s) would be deleted" in out.getvalue()
    assert default_storage.exists(clip.audio.name)
    call_command("purge_audio", stdout=out)
    assert "1 audio file(s) deleted" in out.getvalue()
    assert not default_storage.exists(clip.audio.name)


def test_failed_clips_keep_the_error_and_lose_the_audio(
    classified: Callable[..., Clip], negative_model: ModelVersion, monkeypatch: Any
) -> None:
    from core.audio import AudioError

    monkeypatch.setattr(clips, "_classify_audio", mock.Mock(side_effect=AudioError("corrupt", "bad frame")))
    clip = classified()
    assert clip.status == Clip.Status.FAILED and clip.error == "corrupt: bad frame"
    assert not clip.audio and clip.audio_deleted_at is not None


# --- Evidence pages -------------------------------------------------------------------------------


def page_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_owner_hears_and_sees_the_evidence(
    classified: Callable[..., Clip], positive_model: ModelVersion, owner: Any
) -> None:
    clip = classified()
    client = page_client(owner)
    audio = client.get(f"/clips/{clip.code}/audio")
    assert audio.status_code == 200 and audio["Content-Type"] == "audio/flac"
    with default_storage.open(clip.audio.name, "rb") as stored:
        assert b"".join(audio.streaming_content) == stored.read()  # type: ignore[attr-defined]  # a FileResponse
    assert audio["X-Content-SHA256"] == clip.audio_sha256
    image = client.get(f"/clips/{clip.code}/spectrogram.png")
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    png = b"".join(image.streaming_content)  # type: ignore[attr-defined]  # a FileResponse
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert default_storage.exists(services.spectrogram_name(clip))


def test_the_spectrogram_is_rendered_once(
    classified: Callable[..., Clip], positive_model: ModelVersion, owner: Any
) -> None:
    from core import spectrogram

    clip = classified()
    client = page_client(owner)
    with mock.patch.object(spectrogram, "render_png", wraps=spectrogram.render_png) as render:
        first = b"".join(client.get(f"/clips/{clip.code}/spectrogram.png").streaming_content)  # type: ignore[attr-defined]  # a FileResponse
        second = b"".join(client.get(f"/clips/{clip.code}/spectrogram.png").streaming_content)  # type: ignore[attr-defined]  # a FileResponse
    assert render.call_count == 1 and first == second
    # Written under a temporary name and renamed into place: nothing half written is left beside it.
    folder = Path(default_storage.path(services.spectrogram_name(clip))).parent
    assert [p.name for p in folder.iterdir()] == [f"{clip.code}.png"]


def test_approved_police_see_gunshot_evidence(
    classified: Callable[..., Clip], positive_model: ModelVersion, police_user: Any
) -> None:
    clip = classified()
    assert page_client(police_user).get(f"/clips/{clip.code}/audio").status_code == 200


@pytest.mark.parametrize("who", ["other_owner", "pending_police"])
def test_everyone_else_gets_404(
    classified: Callable[..., Clip], positive_model: ModelVersion, who: str, request: Any
) -> None:
    clip = classified()
    client = page_client(request.getfixturevalue(who))
    assert client.get(f"/clips/{clip.code}/audio").status_code == 404
    assert client.get(f"/clips/{clip.code}/spectrogram.png").status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(classified: Callable[..., Clip], positive_model: ModelVersion) -> None:
    clip = classified()
    response = Client().get(f"/clips/{clip.code}/audio")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_police_do_not_get_audio_of_non_gunshots(
    device: Device, police_user: Any, owner: Any, negative_model: ModelVersion
) -> None:
    # A clip still waiting for its verdict has audio, but it is the owner's business only.
    clip = services.clip_upload(
        device=device,
        audio_file=io.BytesIO(encode(sine())),
        audio_size=None,
        client_id=uuid.uuid4(),
        recorded_at=timezone.now(),
    ).clip
    assert page_client(police_user).get(f"/clips/{clip.code}/audio").status_code == 404
    assert page_client(owner).get(f"/clips/{clip.code}/audio").status_code == 200


def test_deleted_audio_is_404(classified: Callable[..., Clip], negative_model: ModelVersion, owner: Any) -> None:
    clip = classified()
    assert not clip.audio
    assert page_client(owner).get(f"/clips/{clip.code}/audio").status_code == 404
    assert page_client(owner).get(f"/clips/{clip.code}/spectrogram.png").status_code == 404


def test_device_page_shows_the_evidence_player_for_gunshots(
    classified: Callable[..., Clip], positive_model: ModelVersion, owner: Any, device: Device
) -> None:
    clip = classified()
    html = page_client(owner).get(f"/devices/{device.code}/").content.decode()
    assert f'src="/clips/{clip.code}/audio"' in html
    assert f'src="/clips/{clip.code}/spectrogram.png"' in html
    assert "Kept as evidence until" in html


def test_device_data_purge_removes_clips_audio_and_spectrograms(
    classified: Callable[..., Clip], positive_model: ModelVersion, device: Device
) -> None:
    clip = classified()
    spectrogram = services.clip_spectrogram(clip=clip)
    report = services.device_data_purge(device=device)
    assert (report.clips, report.audio_files) == (1, 1)
    assert not default_storage.exists(clip.audio.name) and not default_storage.exists(spectrogram)
    assert not Clip.objects.exists()
    assert Device.objects.filter(pk=device.pk).exists()
