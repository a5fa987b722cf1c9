"""The clip lifecycle: upload (validate all, then store), classification (claimed once), requeueing.

Upload validates everything (fields, then the whole audio decoded) before it writes anything, so bad
input leaves no row and no file. Classification runs in a Celery task that claims its clip with a
conditional update, so a redelivered or duplicated task does the work once.

Why ~570 lines: the batched claim, the lease renewal, the verdicts and the incident outbox are one
transaction story about a clip's status; retention and files live in files.py, the registry in registry.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from core import audio
from core.audio import AudioError
from core.classifier import BatchItem, ClipResult, classify_batch
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
    # No look-up for an earlier upload with this client_id: retries are rare, and the unique
    # constraint finds them at the insert below (a query less on every first upload).
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
        # A retry (or a concurrent one) with the same client_id: answer with the clip made first.
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
#
# A claim is a lease: ``processing_started_at`` is both its token and its start, a worker renews it
# (``_Lease``) while it classifies, and a claim older than CLIP_PROCESSING_STALE_AFTER lost its worker
# and may be taken over. A worker claims the clip its task names plus whatever else is queued (up to
# CLIP_BATCH_SIZE), classifies them with one forward pass and stores all verdicts in one transaction.
# A positive verdict is stored with ``incident_pending`` set (the outbox); the incident step runs just
# after the commit and clears it, and ``classifications_record_pending`` finishes it if the worker died.


class ClipRetryLater(Exception):
    """The clip was put back in the queue (no usable model, or a transient failure); try again later."""


def _claimable(now: datetime) -> Q:
    stale = now - settings.CLIP_PROCESSING_STALE_AFTER
    return Q(status=Clip.Status.QUEUED) | Q(status=Clip.Status.PROCESSING, processing_started_at__lt=stale)


def _claim(clip_id: int | None, now: datetime, *, limit: int) -> list[Clip]:
    """Claim ``clip_id`` (if still claimable) and, with ``limit`` > 1, the oldest other claimable clips.

    Two statements: a locking read that skips rows another worker is claiming right now (PostgreSQL;
    SQLite's IMMEDIATE transactions serialise claimers instead), and the update that takes them.
    """
    if clip_id is not None:
        clip_id = int(clip_id)  # a malformed message fails here, before the claim's transaction
    candidates = Clip.objects.filter(_claimable(now))
    ordering: list[Any] = ["received_at"]
    if clip_id is not None and limit <= 1:
        candidates = candidates.filter(pk=clip_id)
    elif clip_id is not None:
        ordering.insert(0, Case(When(pk=clip_id, then=Value(0)), default=Value(1)))
    with transaction.atomic():
        clips = list(
            candidates.select_related("device")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by(*ordering)[:limit]
        )
        if not clips:
            return []
        Clip.objects.filter(pk__in=[clip.pk for clip in clips]).update(
            status=Clip.Status.PROCESSING, processing_started_at=now, attempts=F("attempts") + 1
        )
    for clip in clips:
        clip.status, clip.processing_started_at, clip.attempts = Clip.Status.PROCESSING, now, clip.attempts + 1
    return clips


class _Lease:
    """Renews a batch's claim every third of the lease while the batch is classified.

    The renewal moves the claim token (``processing_started_at``) forward, so recording reads the
    current token under the same lock: a renewal never races the commit that ends the claim.
    """

    def __init__(self, clips: list[Clip], token: datetime) -> None:
        self.ids = [clip.pk for clip in clips]
        self.token = token
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Lease:
        every = settings.CLIP_PROCESSING_STALE_AFTER.total_seconds() / 3
        if every > 0:
            self._thread = threading.Thread(
                target=self._renew_every, args=(every,), daemon=True, name="gunwatch-clip-lease"
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _renew_every(self, every: float) -> None:
        try:
            while not self._stop.wait(every):
                self.renew()
        finally:
            connection.close()  # the renewal thread's own connection

    def renew(self) -> None:
        with self.lock:
            if self._stop.is_set():
                return
            now = timezone.now()
            renewed = Clip.objects.filter(
                pk__in=self.ids, status=Clip.Status.PROCESSING, processing_started_at=self.token
            ).update(processing_started_at=now)
            # None renewed: every clip was taken over (or this connection cannot see the claim); the
            # old token still names whatever may remain ours.
            if renewed:
                self.token = now


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
    classifications = clips_classify_batch(clip_id=clip_id, limit=1)
    return classifications[0] if classifications else None


def clips_classify_batch(*, clip_id: int | None = None, limit: int | None = None) -> list[Classification]:
    """Claim ``clip_id`` plus up to ``limit`` - 1 other queued clips, classify them together, store the verdicts.

    Returns the classifications this call recorded (``clip_id``'s first when it was among them). With
    fewer clips than ``limit`` it waits up to CLIP_BATCH_WAIT_MS once for more, so a lone clip is never
    held back longer than that.
    """
    limit = settings.CLIP_BATCH_SIZE if limit is None else max(1, limit)
    claimed_at = timezone.now()
    clips = _claim(clip_id, claimed_at, limit=limit)
    if not clips:
        return []
    wait_s = settings.CLIP_BATCH_WAIT_MS / 1000
    if limit > 1 and len(clips) < limit and wait_s > 0:
        time.sleep(wait_s)
        clips += _claim(None, claimed_at, limit=limit - len(clips))  # the same token: one lease per batch
    try:
        model = inference.active_model()
    except inference.NoModelAvailable as exc:
        for clip in clips:
            _release(clip, claimed_at, f"waiting for a model: {exc}")
        raise ClipRetryLater(str(exc)) from exc
    with _Lease(clips, claimed_at) as lease:
        try:
            outcomes = _classify_many(clips, model)
        except Exception as exc:
            with lease.lock:
                released = _give_back(clips, lease.token, exc)
            if released:
                raise
            return []
        with lease.lock:
            return _record(clips, lease.token, model, outcomes)


def _give_back(clips: list[Clip], claimed_at: datetime, exc: Exception) -> int:
    """An unexpected error: put the clips back in the queue, or fail those out of attempts; count the former."""
    released = 0
    for clip in clips:
        if clip.attempts >= settings.CLIP_MAX_ATTEMPTS:
            _fail(clip, claimed_at, f"gave up after {clip.attempts} attempts: {type(exc).__name__}: {exc}")
        else:
            _release(clip, claimed_at, f"attempt {clip.attempts}: {type(exc).__name__}: {exc}")
            released += 1
    return released


def _threshold(clip: Clip, model: inference.LoadedModel) -> float:
    threshold = clip.device.sensitivity_threshold
    return model.threshold if threshold is None else threshold


def _classify_audio(clip: Clip, model: inference.LoadedModel) -> ClipResult:
    data = _read_audio(clip)
    samples, sample_rate = audio.decode(data)
    return model.classifier.classify_waveform(samples, sample_rate, threshold=_threshold(clip, model))


def _classify_many(clips: list[Clip], model: inference.LoadedModel) -> list[ClipResult | AudioError]:
    """Each clip's verdict or its AudioError; several clips share one forward pass."""
    if len(clips) == 1:
        try:
            return [_classify_audio(clips[0], model)]
        except AudioError as exc:
            return [exc]
    items: list[BatchItem | AudioError] = []
    for clip in clips:
        started = time.perf_counter()
        try:
            samples, sample_rate = audio.decode(_read_audio(clip))
        except AudioError as exc:
            items.append(exc)
            continue
        items.append(BatchItem(samples, sample_rate, _threshold(clip, model), (time.perf_counter() - started) * 1000))
    batch = [item for item in items if isinstance(item, BatchItem)]
    verdicts = iter(classify_batch(model.classifier, batch))
    return [item if isinstance(item, AudioError) else next(verdicts) for item in items]


def _record(
    clips: list[Clip], claimed_at: datetime, model: inference.LoadedModel, outcomes: list[ClipResult | AudioError]
) -> list[Classification]:
    """Store the verdicts of a batch in one transaction: 4 statements however many clips."""
    judged = [(clip, result) for clip, result in zip(clips, outcomes, strict=True) if isinstance(result, ClipResult)]
    for clip, result in zip(clips, outcomes, strict=True):
        if isinstance(result, AudioError):
            _fail(clip, claimed_at, f"{result.code}: {result.message}")
    if not judged:
        return []
    now = timezone.now()
    retain_until = now + timedelta(days=settings.EVIDENCE_RETENTION_DAYS)
    with transaction.atomic():
        # Ours is what still carries our token: a clip whose stale claim another worker took over is
        # left to that worker, which records its own result.
        ours = set(
            Clip.objects.filter(
                pk__in=[clip.pk for clip, _ in judged], status=Clip.Status.PROCESSING, processing_started_at=claimed_at
            )
            .select_for_update()
            .values_list("pk", flat=True)
        )
        for clip, _ in judged:
            if clip.pk not in ours:
                logger.warning("Clip %s was reclaimed while being classified; discarding this result", clip.code)
        judged = [(clip, result) for clip, result in judged if clip.pk in ours]
        if not judged:
            return []
        classifications = Classification.objects.bulk_create(
            [
                Classification(
                    clip=clip,
                    model_version_id=model.version_id,
                    label=result.label,
                    score=result.score,
                    threshold=result.threshold,
                    shots=result.shots,
                    offset_s=result.offset_s,
                    windows=[{"offset_s": w.offset_s, "score": w.score} for w in result.windows],
                    timings_ms=result.as_dict()["timings_ms"],
                    incident_pending=result.positive,
                )
                for clip, result in judged
            ]
        )
        positives = [clip for clip, result in judged if result.positive]
        negatives = [clip for clip, result in judged if not result.positive]
        done = {"status": Clip.Status.DONE, "finished_at": now, "error": ""}
        if positives:
            Clip.objects.filter(pk__in=[clip.pk for clip in positives]).update(**done, retain_until=retain_until)
        if negatives:
            # Privacy by default: audio that is not a gunshot is deleted as soon as it is judged.
            Clip.objects.filter(pk__in=[clip.pk for clip in negatives]).update(
                **done, audio="", audio_deleted_at=now, retain_until=None
            )
            names = [clip.audio.name for clip in negatives]

            def delete_audio() -> None:
                for name in names:
                    _delete_stored(name)

            transaction.on_commit(delete_audio)
        pending = [c for c in classifications if c.incident_pending]
        if pending:
            transaction.on_commit(lambda: _record_detections(pending), robust=True)
    for clip, _ in judged:
        clip.status, clip.finished_at, clip.error = Clip.Status.DONE, now, ""
        if clip in negatives:
            clip.audio, clip.audio_deleted_at, clip.retain_until = "", now, None
        else:
            clip.retain_until = retain_until
    return classifications


def _record_detections(classifications: list[Classification]) -> None:
    # A failure here is logged and left to the sweep: the verdicts are committed with the flag set.
    for classification in classifications:
        try:
            _record_detection(classification)
        except Exception:
            logger.exception("Incident step of classification %s failed; the sweep retries it", classification.pk)


def _record_detection(classification: Classification) -> None:
    from alerts.services import incident_record_detection

    # Recording clears the flag in its own transaction; only what it does not record (a negative) is left.
    incident_record_detection(classification=classification)
    if classification.incident_pending:
        Classification.objects.filter(pk=classification.pk).update(incident_pending=False)
        classification.incident_pending = False


def classifications_record_pending(*, now: datetime | None = None, limit: int = 200) -> int:
    """The outbox sweep: finish the incident step of positive verdicts whose worker died before it.

    ``incident_record_detection`` is idempotent (one detection per classification), so a verdict the
    worker is just finishing is recorded once even if the sweep reaches it too.
    """
    now = now or timezone.now()
    grace = now - timedelta(seconds=settings.INCIDENT_OUTBOX_GRACE_S)
    pending = list(
        Classification.objects.filter(incident_pending=True, created_at__lt=grace).order_by("created_at")[:limit]
    )
    for classification in pending:
        logger.warning("Recording the incident of classification %s, left pending by its worker", classification.pk)
        _record_detection(classification)
    return len(pending)


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
