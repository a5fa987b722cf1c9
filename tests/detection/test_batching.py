"""Batched classification, its database round trips, the claim lease and the incident outbox."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from unittest import mock

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from alerts.models import Detection, Incident
from core.classifier import BatchItem, Classifier, classify_batch
from detection import inference, tasks
from detection.models import Classification, Clip, ModelVersion
from detection.services import clips as services
from devices.models import Device
from gunwatch.tasks import periodic_jobs
from tests.detection.pipeline import *  # noqa: F403
from tests.detection.pipeline import SR, encode, impulses, sine

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(device: Device, monkeypatch: Any) -> Callable[..., list[Clip]]:
    """Clips stored and queued but not yet handed to a task (as if the worker were busy)."""
    monkeypatch.setattr(services, "enqueue_on_commit", lambda *args, **kwargs: None)

    def make(n: int = 1, data: bytes | None = None) -> list[Clip]:
        payload = data if data is not None else encode(impulses())
        return [
            services.clip_upload(
                device=device,
                audio_file=io.BytesIO(payload),
                audio_size=len(payload),
                client_id=uuid.uuid4(),
                recorded_at=timezone.now(),
            ).clip
            for _ in range(n)
        ]

    return make


def _forward_passes(monkeypatch: Any) -> list[int]:
    """Record the batch size (windows) of every forward pass."""
    calls: list[int] = []
    original = Classifier.window_scores

    def counting(self: Classifier, batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return original(self, batch)

    monkeypatch.setattr(Classifier, "window_scores", counting)
    return calls


def test_one_task_classifies_the_queued_clips_in_one_forward_pass(
    queued: Callable[..., list[Clip]], negative_model: ModelVersion, monkeypatch: Any
) -> None:
    clips = queued(5)
    passes = _forward_passes(monkeypatch)
    assert tasks.classify_clip.apply(args=(clips[2].pk,)).get() == "other"
    assert len(passes) == 1 and passes[0] >= 5  # every window of the five clips at once
    assert Clip.objects.filter(status=Clip.Status.DONE).count() == 5
    assert Classification.objects.count() == 5
    # The other four messages find nothing left to claim.
    for clip in clips:
        if clip.pk != clips[2].pk:
            assert tasks.classify_clip.apply(args=(clip.pk,)).get() is None
    assert len(passes) == 1


def test_the_batch_size_caps_a_claim(
    queued: Callable[..., list[Clip]], negative_model: ModelVersion, settings: Any
) -> None:
    settings.CLIP_BATCH_SIZE = 3
    clips = queued(5)
    assert len(services.clips_classify_batch(clip_id=clips[4].pk)) == 3
    assert Clip.objects.get(pk=clips[4].pk).status == Clip.Status.DONE  # the task's own clip comes first
    assert Clip.objects.filter(status=Clip.Status.QUEUED).count() == 2
    assert len(services.clips_classify_batch(limit=1)) == 1  # no clip named: the oldest queued one
    assert Clip.objects.get(pk=clips[0].pk).status == Clip.Status.DONE


def test_batched_verdicts_equal_one_by_one_verdicts(negative_model: ModelVersion) -> None:
    classifier = inference.active_model().classifier
    waves = [impulses(at=(0.4,)), sine(1.5), impulses(3.0, at=(0.3, 2.2))]
    single = [classifier.classify_waveform(y, SR, threshold=0.0) for y in waves]
    batched = classify_batch(classifier, [BatchItem(y, SR, threshold=0.0) for y in waves])
    for one, many in zip(single, batched, strict=True):
        assert not isinstance(many, Exception)
        assert (many.label, many.shots, many.offset_s) == (one.label, one.shots, one.offset_s)
        assert [w.score for w in many.windows] == pytest.approx([w.score for w in one.windows], abs=1e-6)


def test_a_bad_clip_in_a_batch_fails_alone(queued: Callable[..., list[Clip]], negative_model: ModelVersion) -> None:
    good, bad, other = queued(3)
    with default_storage.open(bad.audio.name, "wb") as handle:
        handle.write(b"not audio any more")
    done = services.clips_classify_batch(clip_id=good.pk)
    assert sorted(c.clip_id for c in done) == sorted([good.pk, other.pk])
    bad.refresh_from_db()
    assert bad.status == Clip.Status.FAILED and bad.error.startswith("not_audio")


def test_a_lone_clip_waits_at_most_the_batch_wait(
    queued: Callable[..., list[Clip]], negative_model: ModelVersion, settings: Any, monkeypatch: Any
) -> None:
    settings.CLIP_BATCH_WAIT_MS = 50
    (first,) = queued(1)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        queued(1)  # a clip arriving during the wait joins the batch

    monkeypatch.setattr(services.time, "sleep", sleep)
    done = services.clips_classify_batch(clip_id=first.pk)
    assert slept == [0.05]
    assert len(done) == 2 and done[0].clip_id == first.pk
    settings.CLIP_BATCH_WAIT_MS = 0
    queued(1)
    assert len(services.clips_classify_batch()) == 1 and slept == [0.05]  # no wait at all by default


def test_database_round_trips_per_batch_do_not_grow_with_the_batch(
    queued: Callable[..., list[Clip]],
    negative_model: ModelVersion,
    django_assert_max_num_queries: Any,
    django_assert_num_queries: Any,
) -> None:
    inference.active_model()  # loaded at worker start (worker_process_init), not per clip
    queued(1)
    # active model (1), claim: locking read + update (2), record: ours (1), insert (1), update (1),
    # and two savepoints (4) that the test's own transaction adds (in a worker they are BEGIN/COMMIT).
    with django_assert_num_queries(10):
        assert len(services.clips_classify_batch()) == 1
    queued(8)
    with django_assert_max_num_queries(10):
        assert len(services.clips_classify_batch()) == 8


# --- The lease ------------------------------------------------------------------------------------


def test_a_killed_workers_clips_are_back_in_work_within_two_minutes(settings: Any) -> None:
    lease = settings.CLIP_PROCESSING_STALE_AFTER
    sweep = next(interval for name, _, interval in periodic_jobs() if name == "requeue-stuck-clips")
    assert lease + timedelta(seconds=sweep) <= timedelta(minutes=1, seconds=30)


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_while_a_slow_batch_runs(
    queued: Callable[..., list[Clip]], negative_model: ModelVersion, settings: Any, monkeypatch: Any
) -> None:
    settings.CLIP_PROCESSING_STALE_AFTER = timedelta(seconds=0.6)  # renewed every 0.2 s
    (clip,) = queued(1)
    original = services._classify_audio
    seen: dict[str, Any] = {}

    def slow(*args: Any, **kwargs: Any) -> Any:
        claimed = Clip.objects.get(pk=clip.pk).processing_started_at
        time.sleep(1.2)  # twice the lease
        seen["renewed"] = Clip.objects.get(pk=clip.pk).processing_started_at > claimed
        seen["another worker got it"] = bool(services._claim(clip.pk, timezone.now(), limit=1))
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "_classify_audio", slow)
    classification = services.clip_classify(clip_id=clip.pk)
    assert seen == {"renewed": True, "another worker got it": False}
    assert classification is not None
    clip.refresh_from_db()
    assert clip.status == Clip.Status.DONE and clip.attempts == 1


def test_a_renewal_moves_the_token_only_for_clips_still_ours(queued: Callable[..., list[Clip]]) -> None:
    (clip,) = queued(1)
    token = timezone.now()
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.PROCESSING, processing_started_at=token)
    lease = services._Lease([clip], token)
    taken_over = token + timedelta(seconds=1)
    Clip.objects.filter(pk=clip.pk).update(processing_started_at=taken_over)
    lease.renew()
    assert lease.token == token  # nothing renewed: the other worker's claim stands, ours is not moved
    assert Clip.objects.get(pk=clip.pk).processing_started_at == taken_over
    Clip.objects.filter(pk=clip.pk).update(processing_started_at=token)
    lease.renew()
    assert lease.token > token and Clip.objects.get(pk=clip.pk).processing_started_at == lease.token


def test_the_sweep_requeues_an_expired_lease(
    queued: Callable[..., list[Clip]], settings: Any, monkeypatch: Any
) -> None:
    (clip,) = queued(1)
    claimed = timezone.now()
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.PROCESSING, processing_started_at=claimed)
    sent: list[int] = []
    monkeypatch.setattr(services, "enqueue", lambda task, clip_id: sent.append(clip_id))
    assert services.clips_requeue_stuck(now=claimed + settings.CLIP_PROCESSING_STALE_AFTER / 2) == 0
    assert services.clips_requeue_stuck(now=claimed + settings.CLIP_PROCESSING_STALE_AFTER * 1.1) == 1
    assert sent == [clip.pk]


# --- The incident outbox --------------------------------------------------------------------------


def test_a_positive_verdict_is_stored_with_its_incident_pending(
    queued: Callable[..., list[Clip]], positive_model: ModelVersion, django_capture_on_commit_callbacks: Any
) -> None:
    (clip,) = queued(1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        classification = services.clip_classify(clip_id=clip.pk)
    assert classification is not None
    assert Classification.objects.get(pk=classification.pk).incident_pending  # committed with the verdict
    for callback in callbacks:
        callback()
    assert not Classification.objects.get(pk=classification.pk).incident_pending
    assert Detection.objects.filter(classification=classification).count() == 1


def test_the_sweep_records_an_incident_its_worker_never_did(
    queued: Callable[..., list[Clip]], positive_model: ModelVersion, django_capture_on_commit_callbacks: Any
) -> None:
    (clip,) = queued(1)
    with (
        mock.patch("alerts.services.incident_record_detection", side_effect=RuntimeError("worker died")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        classification = services.clip_classify(clip_id=clip.pk)
    assert classification is not None and not Detection.objects.exists()
    now = timezone.now()
    assert services.classifications_record_pending(now=now) == 0  # within the grace: the worker may be on it
    later = now + timedelta(minutes=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.record_pending_incidents.apply().get() == 0  # the task uses the real clock
        assert services.classifications_record_pending(now=later) == 1
    assert Detection.objects.get().classification_id == classification.pk
    assert Incident.objects.count() == 1
    assert services.classifications_record_pending(now=later) == 0
    assert not Classification.objects.get(pk=classification.pk).incident_pending


def test_the_outbox_sweep_is_on_the_one_schedule(settings: Any) -> None:
    jobs = {name: (task.name, interval) for name, task, interval in periodic_jobs()}
    assert jobs["record-pending-incidents"] == ("detection.tasks.record_pending_incidents", 15.0)
