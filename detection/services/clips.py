"""The clip lifecycle: upload (validate all, then store), classification (claimed once), requeueing.

Upload validates everything (fields, then the whole audio decoded) before it writes anything, so bad
input leaves no row and no file. Classification runs in a Celery task that claims its clip with a
conditional update, so a redelivered or duplicated task does the work once.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from core import audio
from core.audio import AudioError
from core.classifier import ClipResult
from detection import inference
from detection.models import Classification, Clip
from detection.services.files import _delete_stored, _read_audio
from devices.models import Device
from devices.selectors import device_fix
from gunwatch.exceptions import ApplicationError
from gunwatch.tasks import enqueue, enqueue_on_commit

logger = logging.getLogger(__name__)

# The two audio codes that mean "this is not something we can take" rather than "this audio is bad".
_UNSUPPORTED_CODES = {"not_audio", "unsupported_format"}


def _audio_error(exc: AudioError) -> ApplicationError:
    status = 415 if exc.code in _UNSUPPORTED_CODES else 400
    return ApplicationError(f"audio: {exc.message}", code=exc.code, extra={"field": "audio"}, status=status)


def _too_large(size: int) -> ApplicationError:
    limit = settings.CLIP_MAX_BYTES
    return ApplicationError(
        f"audio: the file is {size} bytes; at most {limit} bytes are accepted",
        code="too_large",
        extra={"field": "audio", "max_bytes": limit},
        status=413,
    )


def audio_inspect(upload: IO[bytes] | bytes, *, size: int | None = None) -> audio.InspectedAudio:
    """Read and fully decode an uploaded file within the configured limits, or raise ApplicationError."""
    if size is not None and size > settings.CLIP_MAX_BYTES:
        raise _too_large(size)
    data = upload if isinstance(upload, bytes) else upload.read(settings.CLIP_MAX_BYTES + 1)
    if len(data) > settings.CLIP_MAX_BYTES:
        raise _too_large(len(data))
    try:
        return audio.inspect(
            data,
            min_s=settings.CLIP_MIN_SECONDS,
            max_s=settings.CLIP_MAX_SECONDS,
            min_rate=settings.CLIP_MIN_SAMPLE_RATE,
            max_rate=settings.CLIP_MAX_SAMPLE_RATE,
            max_channels=settings.CLIP_MAX_CHANNELS,
        )
    except AudioError as exc:
        raise _audio_error(exc) from exc


# --- Upload ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipUploadResult:
    clip: Clip
    created: bool


def _resolve_location(
    device: Device, latitude: float | None, longitude: float | None, accuracy_m: float | None
) -> tuple[float | None, float | None, float | None]:
    """Where the clip was recorded: the clip's own fix, else where the device is (``device_fix``).

    A clip without a position is never refused: a car whose GPS has no fix yet may just have heard a
    gunshot. It gets the device's position, a stale vehicle fix widened by how far the car may have
    driven since, or no position at all (the incident then takes the device's best known position).
    """
    if (latitude is None) != (longitude is None):
        raise ApplicationError(
            "Give both latitude and longitude, or neither.", code="invalid_location", extra={"field": "latitude"}
        )
    if latitude is not None and longitude is not None:
        return latitude, longitude, accuracy_m
    fix = device_fix(device, at=timezone.now())
    if fix is None:
        return None, None, None
    if fix.installed:
        return fix.latitude, fix.longitude, accuracy_m
    return fix.latitude, fix.longitude, fix.accuracy_m if fix.accuracy_m is not None else 0.0


def _check_recorded_at(recorded_at: datetime) -> None:
    if timezone.is_naive(recorded_at):
        raise ApplicationError(
            "recorded_at needs a UTC offset (e.g. 2026-01-31T12:00:00.123Z).",
            code="naive_timestamp",
            extra={"field": "recorded_at"},
        )
    ahead = recorded_at - timezone.now()
    if ahead > settings.CLIP_MAX_CLOCK_SKEW:
        raise ApplicationError(
            f"recorded_at is {ahead.total_seconds():.0f} s in the future; check the device clock.",
            code="recorded_in_future",
            extra={"field": "recorded_at", "max_skew_s": settings.CLIP_MAX_CLOCK_SKEW.total_seconds()},
        )


def _replayed(clip: Clip, sha256: str) -> ClipUploadResult:
    if clip.audio_sha256 != sha256:
        raise ApplicationError(
            "This client_id was already used for a different recording.",
            code="client_id_conflict",
            extra={"field": "client_id", "id": str(clip.code)},
            status=409,
        )
    return ClipUploadResult(clip=clip, created=False)


def clip_upload(
    *,
    device: Device,
    audio_file: IO[bytes],
    audio_size: int | None,
    client_id: uuid.UUID,
    recorded_at: datetime,
    latitude: float | None = None,
    longitude: float | None = None,
    accuracy_m: float | None = None,
    trigger_offset_s: float | None = None,
    clock_source: str = "",
) -> ClipUploadResult:
    """Accept a device's clip: validate all of it, store the audio, queue classification.

    A retry with the same ``client_id`` and the same audio returns the clip made the first time.
    """
    if audio_size is not None and audio_size > settings.CLIP_MAX_BYTES:
        raise _too_large(audio_size)
    data = audio_file.read(settings.CLIP_MAX_BYTES + 1)
    if len(data) > settings.CLIP_MAX_BYTES:
        raise _too_large(len(data))
    sha256 = hashlib.sha256(data).hexdigest()
    existing = Clip.objects.filter(device=device, client_id=client_id).first()
    if existing is not None:
        return _replayed(existing, sha256)

    _check_recorded_at(recorded_at)
    latitude, longitude, accuracy_m = _resolve_location(device, latitude, longitude, accuracy_m)
    inspected = audio_inspect(data)
    if trigger_offset_s is not None and trigger_offset_s > inspected.duration_s:
        raise ApplicationError(
            f"trigger_offset_s ({trigger_offset_s:g} s) lies beyond the end of the {inspected.duration_s:.2f} s clip.",
            code="invalid_trigger_offset",
            extra={"field": "trigger_offset_s"},
        )

    clip = Clip(
        device=device,
        client_id=client_id,
        audio_sha256=sha256,
        audio_format=inspected.container,
        size_bytes=inspected.size_bytes,
        duration_s=round(inspected.duration_s, 4),
        sample_rate=inspected.sample_rate,
        recorded_at=recorded_at,
        latitude=latitude,
        longitude=longitude,
        accuracy_m=accuracy_m,
        trigger_offset_s=trigger_offset_s,
        clock_source=clock_source,
    )
    clip.audio.save(f"{clip.code}.{inspected.container}", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            clip.save()
            enqueue_on_commit(_classify_task(), clip.pk)
    except IntegrityError:
        # A concurrent retry with the same client_id won the race: answer with its clip.
        _delete_stored(clip.audio.name)
        winner = Clip.objects.filter(device=device, client_id=client_id).first()
        if winner is None:
            raise
        return _replayed(winner, sha256)
    except BaseException:
        _delete_stored(clip.audio.name)
        raise
    return ClipUploadResult(clip=clip, created=True)


def _classify_task() -> Any:
    # Imported late: the task imports this module (the accepted services <-> tasks pair).
    from detection.tasks import classify_clip

    return classify_clip


# --- Classification -------------------------------------------------------------------------------


class ClipRetryLater(Exception):
    """The clip was put back in the queue (no usable model, or a transient failure); try again later."""


def _claim(clip_id: int, now: datetime) -> bool:
    stale = now - settings.CLIP_PROCESSING_STALE_AFTER
    claimable = Q(status=Clip.Status.QUEUED) | Q(status=Clip.Status.PROCESSING, processing_started_at__lt=stale)
    claimed = Clip.objects.filter(claimable, pk=clip_id).update(
        status=Clip.Status.PROCESSING, processing_started_at=now, attempts=F("attempts") + 1
    )
    return claimed == 1


def _ours(clip: Clip, claimed_at: datetime) -> Any:
    # processing_started_at is the claim token: a worker whose stale claim was taken over must not
    # overwrite the new owner's outcome.
    return Clip.objects.filter(pk=clip.pk, status=Clip.Status.PROCESSING, processing_started_at=claimed_at)


def _fail(clip: Clip, claimed_at: datetime, message: str) -> None:
    """Give up on a clip: keep the error, delete its audio (a failed clip is not evidence)."""
    now = timezone.now()
    with transaction.atomic():
        changed = _ours(clip, claimed_at).update(
            status=Clip.Status.FAILED,
            error=message[:2000],
            finished_at=now,
            audio="",
            audio_deleted_at=now,
            retain_until=None,
        )
        if changed:
            name = clip.audio.name
            transaction.on_commit(lambda: _delete_stored(name))
    logger.warning("Clip %s failed: %s", clip.code, message)


def _release(clip: Clip, claimed_at: datetime, message: str) -> None:
    _ours(clip, claimed_at).update(status=Clip.Status.QUEUED, processing_started_at=None, error=message[:2000])


def clip_classify(*, clip_id: int) -> Classification | None:
    """Classify one clip if this call wins its claim; return the classification (None if not ours).

    Permanent problems (undecodable audio) fail the clip. A missing model puts it back in the queue
    and raises ClipRetryLater; other errors do too until CLIP_MAX_ATTEMPTS, then fail it.
    """
    claimed_at = timezone.now()
    if not _claim(clip_id, claimed_at):
        return None
    clip = Clip.objects.select_related("device").get(pk=clip_id)
    try:
        model = inference.active_model()
    except inference.NoModelAvailable as exc:
        _release(clip, claimed_at, f"waiting for a model: {exc}")
        raise ClipRetryLater(str(exc)) from exc
    try:
        result = _classify_audio(clip, model)
    except AudioError as exc:
        _fail(clip, claimed_at, f"{exc.code}: {exc.message}")
        return None
    except Exception as exc:
        if clip.attempts >= settings.CLIP_MAX_ATTEMPTS:
            _fail(clip, claimed_at, f"gave up after {clip.attempts} attempts: {type(exc).__name__}: {exc}")
            return None
        _release(clip, claimed_at, f"attempt {clip.attempts}: {type(exc).__name__}: {exc}")
        raise
    return _record(clip, claimed_at, model, result)


def _classify_audio(clip: Clip, model: inference.LoadedModel) -> ClipResult:
    data = _read_audio(clip)
    samples, sample_rate = audio.decode(data)
    threshold = clip.device.sensitivity_threshold
    return model.classifier.classify_waveform(
        samples, sample_rate, threshold=model.threshold if threshold is None else threshold
    )


def _record(
    clip: Clip, claimed_at: datetime, model: inference.LoadedModel, result: ClipResult
) -> Classification | None:
    now = timezone.now()
    positive = result.positive
    stored = result.as_dict()  # the JSON fields hold plain lists and dicts
    if positive:
        privacy: dict[str, Any] = {"retain_until": now + timedelta(days=settings.EVIDENCE_RETENTION_DAYS)}
    else:
        # Privacy by default: audio that is not a gunshot is deleted as soon as it is judged.
        privacy = {"audio": "", "audio_deleted_at": now, "retain_until": None}
    with transaction.atomic():
        classification = Classification.objects.create(
            clip=clip,
            model_version_id=model.version_id,
            label=result.label,
            score=result.score,
            threshold=result.threshold,
            shots=result.shots,
            offset_s=result.offset_s,
            windows=stored["windows"],
            timings_ms=stored["timings_ms"],
        )
        finished = _ours(clip, claimed_at).update(status=Clip.Status.DONE, finished_at=now, error="", **privacy)
        if finished != 1:
            # Our claim went stale and another worker took the clip over; it records the result.
            transaction.set_rollback(True)
            logger.warning("Clip %s was reclaimed while being classified; discarding this result", clip.code)
            return None
        if positive:
            transaction.on_commit(lambda: _record_detection(classification), robust=True)
        else:
            name = clip.audio.name
            transaction.on_commit(lambda: _delete_stored(name))
    for field, value in privacy.items():
        setattr(clip, field, value)
    clip.status, clip.finished_at = Clip.Status.DONE, now
    return classification


def _record_detection(classification: Classification) -> None:
    from alerts.services import incident_record_detection

    incident_record_detection(classification=classification)


def clip_result(clip: Clip) -> dict[str, Any] | None:
    """The result block of the clip API (None until classified)."""
    try:
        classification = clip.classification
    except Classification.DoesNotExist:
        return None
    return {
        "label": classification.label,
        "score": classification.score,
        "threshold": classification.threshold,
        "model_version": classification.model_version.label,
        "shots": classification.shots,
        "offset_s": classification.offset_s,
        "windows": classification.windows,
    }


def clips_requeue_stuck(*, now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue clips whose task was lost: long queued, or processing with a stale claim.

    A clip merely waiting behind a backlog may be enqueued twice; the claim makes the copy a no-op.
    """
    now = now or timezone.now()
    stale = now - settings.CLIP_PROCESSING_STALE_AFTER
    stuck = Clip.objects.filter(
        Q(status=Clip.Status.QUEUED, received_at__lt=stale)
        | Q(status=Clip.Status.PROCESSING, processing_started_at__lt=stale)
    ).values_list("pk", flat=True)[:limit]
    ids = list(stuck)
    task = _classify_task()
    for clip_id in ids:
        enqueue(task, clip_id)
    return len(ids)
