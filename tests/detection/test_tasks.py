"""classify_clip and the other detection tasks: claiming, idempotency, failures, the enqueue helper."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from celery import shared_task
from django.core.files.storage import default_storage
from django.utils import timezone

from detection import tasks
from detection.models import Classification, Clip, ModelVersion
from detection.services import clips as services
from devices.models import Device
from gunwatch import tasks as gunwatch_tasks
from tests.detection.pipeline import encode, impulses, sine

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued_clip(device: Device) -> Callable[..., Clip]:
    def make(data: bytes | None = None, **fields: Any) -> Clip:
        payload = data if data is not None else encode(impulses())
        result = services.clip_upload(
            device=device,
            audio_file=io.BytesIO(payload),
            audio_size=len(payload),
            client_id=uuid.uuid4(),
            recorded_at=timezone.now(),
            **fields,
        )
        return result.clip

    return make


def test_task_classifies_a_queued_clip(queued_clip: Callable[..., Clip], negative_model: ModelVersion) -> None:
    clip = queued_clip()
    assert tasks.classify_clip.apply(args=(clip.pk,)).get() == "other"
    clip.refresh_from_db()
    assert clip.status == Clip.Status.DONE and clip.attempts == 1 and clip.finished_at is not None
    classification = clip.classification
    assert classification.model_version == negative_model
    assert classification.label == "other" and classification.score < 0.01
    assert set(classification.timings_ms) == {"decode", "features", "network"}


def test_the_task_claimed_twice_runs_once(
    queued_clip: Callable[..., Clip], negative_model: ModelVersion, monkeypatch: Any
) -> None:
    clip = queued_clip()
    calls: list[int] = []
    original = services._classify_audio

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "_classify_audio", counting)
    assert tasks.classify_clip.apply(args=(clip.pk,)).get() == "other"
    assert tasks.classify_clip.apply(args=(clip.pk,)).get() is None  # redelivery: the claim fails
    assert len(calls) == 1
    assert Classification.objects.filter(clip=clip).count() == 1
    clip.refresh_from_db()
    assert clip.attempts == 1


def test_a_fresh_processing_claim_is_left_alone(queued_clip: Callable[..., Clip], negative_model: ModelVersion) -> None:
    clip = queued_clip()
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.PROCESSING, processing_started_at=timezone.now())
    assert services.clip_classify(clip_id=clip.pk) is None
    assert not Classification.objects.exists()


def test_a_stale_processing_claim_is_taken_over(
    queued_clip: Callable[..., Clip], negative_model: ModelVersion, settings: Any
) -> None:
    clip = queued_clip()
    long_ago = timezone.now() - settings.CLIP_PROCESSING_STALE_AFTER - timedelta(seconds=1)
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.PROCESSING, processing_started_at=long_ago, attempts=1)
    assert services.clip_classify(clip_id=clip.pk) is not None
    clip.refresh_from_db()
    assert clip.status == Clip.Status.DONE and clip.attempts == 2


def test_a_worker_whose_claim_was_taken_over_discards_its_result(
    queued_clip: Callable[..., Clip], negative_model: ModelVersion, monkeypatch: Any
) -> None:
    clip = queued_clip()
    original = services._classify_audio
    newer_claim = timezone.now() + timedelta(minutes=1)

    def slow_worker(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        # Meanwhile our claim went stale and another worker claimed the clip.
        Clip.objects.filter(pk=clip.pk).update(processing_started_at=newer_claim)
        return result

    monkeypatch.setattr(services, "_classify_audio", slow_worker)
    assert services.clip_classify(clip_id=clip.pk) is None
    clip.refresh_from_db()
    assert clip.status == Clip.Status.PROCESSING and clip.processing_started_at == newer_claim
    assert not Classification.objects.exists()
    assert clip.audio  # the new owner still needs the audio


def test_positive_calls_the_incident_seam_after_commit(
    queued_clip: Callable[..., Clip], positive_model: ModelVersion, django_capture_on_commit_callbacks: Any
) -> None:
    clip = queued_clip()
    with mock.patch("alerts.services.incident_record_detection") as seam:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            classification = services.clip_classify(clip_id=clip.pk)
        seam.assert_not_called()  # not before the classification is committed
        for callback in callbacks:
            callback()
    seam.assert_called_once_with(classification=classification)
    assert classification is not None and classification.label == "gunshot"


def test_negative_does_not_call_the_incident_seam(
    queued_clip: Callable[..., Clip], negative_model: ModelVersion, django_capture_on_commit_callbacks: Any
) -> None:
    clip = queued_clip()
    with (
        mock.patch("alerts.services.incident_record_detection") as seam,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.clip_classify(clip_id=clip.pk)
    seam.assert_not_called()


def test_a_failing_incident_seam_does_not_undo_the_classification(
    queued_clip: Callable[..., Clip], positive_model: ModelVersion, django_capture_on_commit_callbacks: Any
) -> None:
    clip = queued_clip()
    with (
        mock.patch("alerts.services.incident_record_detection", side_effect=RuntimeError("alerts down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.clip_classify(clip_id=clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.DONE and clip.classification.label == "gunshot"


def test_device_sensitivity_overrides_the_model_threshold(
    queued_clip: Callable[..., Clip], device: Device, model_factory: Callable[..., ModelVersion]
) -> None:
    model_factory(logit=0.0, threshold=0.6)  # every window scores exactly 0.5
    below = queued_clip()
    services.clip_classify(clip_id=below.pk)
    assert Classification.objects.get(clip=below).label == "other"
    Device.objects.filter(pk=device.pk).update(sensitivity_threshold=0.4)
    above = queued_clip(encode(impulses(at=(0.7,))))
    classification = services.clip_classify(clip_id=above.pk)
    assert classification is not None
    assert (classification.label, classification.threshold) == ("gunshot", 0.4)


def test_without_a_model_the_clip_waits_in_the_queue(queued_clip: Callable[..., Clip]) -> None:
    clip = queued_clip()
    with pytest.raises(services.ClipRetryLater):
        services.clip_classify(clip_id=clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.QUEUED and "no model version is active" in clip.error
    assert clip.audio  # nothing deleted while waiting
    # The eager task does not spin on retries; it leaves the clip for the sweep.
    assert tasks.classify_clip.apply(args=(clip.pk,)).get() is None


def test_a_worker_retries_later_when_no_model_is_available(queued_clip: Callable[..., Clip]) -> None:
    clip = queued_clip()
    # Calling the task object directly runs it the way a worker does (not eager), minus the broker.
    with (
        mock.patch.object(tasks.classify_clip, "retry", side_effect=RuntimeError("retry scheduled")) as retry,
        pytest.raises(RuntimeError, match="retry scheduled"),
    ):
        tasks.classify_clip(clip.pk)
    assert retry.call_args.kwargs["countdown"] == tasks.NO_MODEL_RETRY_S


def test_undecodable_stored_audio_fails_the_clip_and_deletes_it(
    queued_clip: Callable[..., Clip], negative_model: ModelVersion, django_capture_on_commit_callbacks: Any
) -> None:
    clip = queued_clip()
    name = clip.audio.name
    with default_storage.open(name, "wb") as handle:
        handle.write(b"garbage, not the uploaded audio")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.clip_classify(clip_id=clip.pk) is None
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and clip.error.startswith("not_audio")
    assert not clip.audio and clip.audio_deleted_at is not None
    assert not default_storage.exists(name)


def test_a_missing_audio_file_fails_the_clip(queued_clip: Callable[..., Clip], negative_model: ModelVersion) -> None:
    clip = queued_clip()
    default_storage.delete(clip.audio.name)
    services.clip_classify(clip_id=clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and "missing" in clip.error


def test_unexpected_errors_are_retried_then_fail_the_clip(
    queued_clip: Callable[..., Clip], negative_model: ModelVersion, monkeypatch: Any, settings: Any
) -> None:
    settings.CLIP_MAX_ATTEMPTS = 2
    clip = queued_clip()
    monkeypatch.setattr(services, "_classify_audio", mock.Mock(side_effect=MemoryError("out of memory")))
    with pytest.raises(MemoryError):
        services.clip_classify(clip_id=clip.pk)
    clip.refresh_from_db()
    assert clip.status == Clip.Status.QUEUED and clip.attempts == 1 and "out of memory" in clip.error
    assert services.clip_classify(clip_id=clip.pk) is None
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED and "gave up after 2 attempts" in clip.error


def test_requeue_sweep_enqueues_lost_clips(queued_clip: Callable[..., Clip], monkeypatch: Any, settings: Any) -> None:
    fresh, lost, stale, done = queued_clip(), queued_clip(), queued_clip(), queued_clip()
    now = timezone.now()
    Clip.objects.filter(pk=lost.pk).update(received_at=now - settings.CLIP_PROCESSING_STALE_AFTER * 2)
    Clip.objects.filter(pk=stale.pk).update(
        status=Clip.Status.PROCESSING, processing_started_at=now - settings.CLIP_PROCESSING_STALE_AFTER * 2
    )
    Clip.objects.filter(pk=done.pk).update(status=Clip.Status.DONE, received_at=now - timedelta(days=1))
    queued: list[int] = []
    monkeypatch.setattr(services, "enqueue", lambda task, clip_id: queued.append(clip_id))
    assert tasks.requeue_stuck_clips.apply().get() == 2
    assert sorted(queued) == sorted([lost.pk, stale.pk])
    assert fresh.pk not in queued


# --- gunwatch.tasks.enqueue -----------------------------------------------------------------------

ran: list[tuple[str, int]] = []


@shared_task(name="tests.detection.record_thread")
def record_thread(value: int) -> int:
    ran.append((threading.current_thread().name, value))
    return value


def test_enqueue_runs_eager_tasks_in_one_background_thread(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.GUNWATCH_EAGER_IN_THREAD = True
    ran.clear()
    futures = [gunwatch_tasks.enqueue(record_thread, n) for n in range(3)]
    assert all(future is not None for future in futures)
    assert [future.result(timeout=10) for future in futures if future is not None] == [0, 1, 2]
    assert [value for _, value in ran] == [0, 1, 2]  # in order: one worker thread
    assert {name for name, _ in ran} == {next(iter(ran))[0]} and ran[0][0].startswith("gunwatch-eager")


def test_enqueue_without_thread_mode_uses_delay(settings: Any) -> None:
    settings.GUNWATCH_EAGER_IN_THREAD = False
    with mock.patch.object(record_thread, "delay") as delay:
        assert gunwatch_tasks.enqueue(record_thread, 7) is None
    delay.assert_called_once_with(7)


def test_enqueue_never_raises_when_the_broker_is_down(settings: Any, caplog: Any) -> None:
    settings.GUNWATCH_EAGER_IN_THREAD = False
    with mock.patch.object(record_thread, "delay", side_effect=ConnectionError("redis down")):
        gunwatch_tasks.enqueue(record_thread, 1)
    assert "Could not enqueue tests.detection.record_thread" in caplog.text


def test_a_failing_background_task_is_logged_not_raised(settings: Any, caplog: Any) -> None:
    settings.GUNWATCH_EAGER_IN_THREAD = True
    future = gunwatch_tasks.enqueue(tasks.classify_clip, "not-an-id")
    assert future is not None
    assert future.result(timeout=10) is None
    assert "Background task detection.tasks.classify_clip" in caplog.text


def test_upload_answers_before_classification_in_thread_mode(
    device: Device, negative_model: ModelVersion, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.GUNWATCH_EAGER_IN_THREAD = True
    gate = threading.Event()
    original = services._classify_audio

    def gated(*args: Any, **kwargs: Any) -> Any:
        gate.wait(10)
        return original(*args, **kwargs)

    with (
        mock.patch.object(services, "_classify_audio", gated),
        mock.patch.object(gunwatch_tasks, "_background") as background,
    ):
        with django_capture_on_commit_callbacks(execute=True):
            result = services.clip_upload(
                device=device,
                audio_file=io.BytesIO(encode(sine())),
                audio_size=None,
                client_id=uuid.uuid4(),
                recorded_at=timezone.now(),
            )
        # The upload returned while the task sits with the background executor, not in this thread.
        background.return_value.submit.assert_called_once()
        assert background.return_value.submit.call_args.args[1] is tasks.classify_clip
    gate.set()
    assert Clip.objects.get(pk=result.clip.pk).status == Clip.Status.QUEUED
