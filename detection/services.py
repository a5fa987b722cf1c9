"""Detection flows: clip upload and classification, audio retention, the model registry, prediction.

Upload validates everything (fields, then the whole audio decoded) before it writes anything, so bad
input leaves no row and no file. Classification runs in a Celery task that claims its clip with a
conditional update, so a redelivered or duplicated task does the work once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.models import User
from detection import audio, inference, uploads
from detection.audio import AudioError, FeatureParams
from detection.classifier import Classifier, ModelLoadError
from detection.models import Classification, Clip, ModelVersion
from devices.models import Device
from gunwatch.exceptions import ApplicationError
from gunwatch.tasks import enqueue

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


def audio_inspect(upload: IO[bytes] | bytes, *, size: int | None = None) -> uploads.InspectedAudio:
    """Read and fully decode an uploaded file within the configured limits, or raise ApplicationError."""
    if size is not None and size > settings.CLIP_MAX_BYTES:
        raise _too_large(size)
    data = upload if isinstance(upload, bytes) else upload.read(settings.CLIP_MAX_BYTES + 1)
    if len(data) > settings.CLIP_MAX_BYTES:
        raise _too_large(len(data))
    try:
        return uploads.inspect(data, min_s=settings.CLIP_MIN_SECONDS, max_s=settings.CLIP_MAX_SECONDS)
    except AudioError as exc:
        raise _audio_error(exc) from exc


# --- Upload ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipUploadResult:
    clip: Clip
    created: bool


# A car in town covers about this much ground per second; a stale fix gets this much less certain.
VEHICLE_DRIFT_M_PER_S = 15.0
STALE_FIX_CAP_M = 5000.0


def _resolve_location(
    device: Device, latitude: float | None, longitude: float | None, accuracy_m: float | None
) -> tuple[float | None, float | None, float | None]:
    """Where the clip was recorded: the clip's own fix, the installed location, or the last heartbeat fix.

    A clip without a position is never refused: a car whose GPS has no fix yet may just have heard a
    gunshot. It gets the last reported fix with its accuracy widened by how far the car may have
    driven since, or no position at all (the incident then takes the device's best known position).
    """
    if (latitude is None) != (longitude is None):
        raise ApplicationError("Give both latitude and longitude, or neither.", code="invalid_location",
                               extra={"field": "latitude"})
    if latitude is not None and longitude is not None:
        return latitude, longitude, accuracy_m
    if device.kind == Device.Kind.HOME and device.latitude is not None and device.longitude is not None:
        # A home unit does not move: its installed location is better than any phone-grade fix.
        return device.latitude, device.longitude, accuracy_m
    if device.last_latitude is not None and device.last_longitude is not None:
        age_s = (timezone.now() - device.last_position_at).total_seconds() if device.last_position_at else 0.0
        drift = VEHICLE_DRIFT_M_PER_S * max(age_s, 0.0) if device.kind == Device.Kind.VEHICLE else 0.0
        widened = min((device.last_accuracy_m or 0.0) + drift, STALE_FIX_CAP_M)
        return device.last_latitude, device.last_longitude, widened
    return None, None, None


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
            transaction.on_commit(lambda: enqueue(_classify_task(), clip.pk))
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
    # Imported late: tasks import this module.
    from detection.tasks import classify_clip

    return classify_clip


def _delete_stored(name: str | None) -> None:
    if not name:
        return
    try:
        default_storage.delete(name)
    except OSError:
        logger.exception("Could not delete %s from storage", name)


def spectrogram_name(clip: Clip) -> str:
    return f"spectrograms/{clip.code}.png"


# --- Classification -------------------------------------------------------------------------------


class ClipRetryLater(Exception):
    """The clip was put back in the queue (no usable model, or a transient failure); try again later."""


def _claim(clip_id: int, now: datetime) -> bool:
    stale = now - settings.CLIP_PROCESSING_STALE_AFTER
    claimable = Q(status=Clip.Status.QUEUED) | Q(status=Clip.Status.PROCESSING, processing_started_at__lt=stale)
    claimed = (
        Clip.objects.filter(claimable, pk=clip_id)
        .update(status=Clip.Status.PROCESSING, processing_started_at=now, attempts=F("attempts") + 1)
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
            status=Clip.Status.FAILED, error=message[:2000], finished_at=now, audio="", audio_deleted_at=now,
            retain_until=None,
        )
        if changed:
            name = clip.audio.name
            transaction.on_commit(lambda: _delete_stored(name))
    logger.warning("Clip %s failed: %s", clip.code, message)


def _release(clip: Clip, claimed_at: datetime, message: str) -> None:
    _ours(clip, claimed_at).update(status=Clip.Status.QUEUED, processing_started_at=None, error=message[:2000])


def _read_audio(clip: Clip) -> bytes:
    if not clip.audio:
        raise AudioError("empty", "the clip has no stored audio")
    try:
        with clip.audio.open("rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise AudioError("not_audio", f"the stored audio file is missing: {clip.audio.name}") from exc


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


def _classify_audio(clip: Clip, model: inference.LoadedModel) -> dict[str, Any]:
    data = _read_audio(clip)
    samples, sample_rate = audio.decode(data)
    threshold = clip.device.sensitivity_threshold
    return model.classifier.classify_waveform(
        samples, sample_rate, threshold=model.threshold if threshold is None else threshold
    )


def _record(
    clip: Clip, claimed_at: datetime, model: inference.LoadedModel, result: dict[str, Any]
) -> Classification | None:
    now = timezone.now()
    positive = result["label"] == Classification.Label.GUNSHOT
    if positive:
        privacy: dict[str, Any] = {"retain_until": now + timedelta(days=settings.EVIDENCE_RETENTION_DAYS)}
    else:
        # Privacy by default: audio that is not a gunshot is deleted as soon as it is judged.
        privacy = {"audio": "", "audio_deleted_at": now, "retain_until": None}
    with transaction.atomic():
        classification = Classification.objects.create(
            clip=clip,
            model_version_id=model.version_id,
            label=result["label"],
            score=result["score"],
            threshold=result["threshold"],
            shots=result["shots"],
            offset_s=result["offset_s"],
            windows=result["windows"],
            timings_ms=result["timings_ms"],
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


# --- Audio retention ------------------------------------------------------------------------------


def _audio_forget(clips: Any, now: datetime) -> int:
    """Delete the files of these clips, then blank the fields (files first: a crash leaves rows to retry)."""
    count = 0
    for clip in clips:
        _delete_stored(clip.audio.name)
        _delete_stored(spectrogram_name(clip))
        count += Clip.objects.filter(pk=clip.pk).update(audio="", audio_deleted_at=now)
    return count


def clips_with_expired_audio(*, now: datetime) -> QuerySet[Clip]:
    """Clips still holding audio they should not: evidence past retain_until, failed or non-evidence clips.

    The last two normally lose their audio when classified; a crash between the commit and the file
    deletion leaves some behind.
    """
    return Clip.objects.exclude(audio="").filter(
        Q(retain_until__lt=now) | Q(status=Clip.Status.FAILED) | Q(status=Clip.Status.DONE, retain_until__isnull=True)
    )


def clips_purge_expired_audio(*, now: datetime | None = None) -> int:
    """Delete the audio (and spectrograms) of clips_with_expired_audio; return how many."""
    now = now or timezone.now()
    return _audio_forget(clips_with_expired_audio(now=now).only("pk", "code", "audio").iterator(), now)


@dataclass(frozen=True)
class PurgeReport:
    clips: int
    audio_files: int


def device_data_purge(*, device: Device) -> PurgeReport:
    """Delete every clip, result and audio file of a device; the device itself stays."""
    clips = list(device.clips.only("pk", "code", "audio"))
    files = 0
    for clip in clips:
        if clip.audio:
            _delete_stored(clip.audio.name)
            files += 1
        _delete_stored(spectrogram_name(clip))
    with transaction.atomic():
        deleted = Clip.objects.filter(pk__in=[clip.pk for clip in clips]).delete()[1].get(Clip._meta.label, 0)
    return PurgeReport(clips=deleted, audio_files=files)


def clip_spectrogram(*, clip: Clip) -> str:
    """The storage name of the clip's spectrogram PNG, rendering and caching it the first time."""
    from detection import spectrogram

    name = spectrogram_name(clip)
    if default_storage.exists(name):
        return name
    data = _read_audio(clip)
    samples, sample_rate = audio.decode(data)
    params = _display_params(clip)
    png = spectrogram.render_png(samples, sample_rate, params, title=f"{clip.recorded_at:%Y-%m-%d %H:%M:%S} UTC")
    _store_cache_file(name, ContentFile(png))
    return name


def _store_cache_file(name: str, content: File) -> None:
    """Store a derived file (spectrogram, export) so no reader ever sees it half written.

    Readers test ``exists(name)`` and then read; on the filesystem the file is written under a
    temporary name and renamed into place, atomically. A concurrent writer's identical copy just
    replaces it. Other storages get a plain save, and a duplicate from a race is dropped.
    """
    try:
        final_path = default_storage.path(name)
    except NotImplementedError:
        saved = default_storage.save(name, content)
        if saved != name:
            _delete_stored(saved)
        return
    partial = default_storage.save(f"{name}.part", content)  # a unique name, in the same folder
    os.replace(default_storage.path(partial), final_path)


def _display_params(clip: Clip) -> FeatureParams:
    try:
        return FeatureParams.from_dict(clip.classification.model_version.feature_params)
    except (Classification.DoesNotExist, ValueError, TypeError):
        return FeatureParams()


# --- Model registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsInfo:
    sha256: str
    architecture: str
    feature_params: dict[str, Any]
    sample_rate: int
    threshold: float
    meta: dict[str, Any]


def model_weights_inspect(path: str | Path) -> WeightsInfo:
    """Load a weights file to prove it works, and read what the registry records about it."""
    try:
        classifier = Classifier.load(path)
    except ModelLoadError as exc:
        raise ApplicationError(f"These weights cannot be used: {exc}", code="model_incompatible") from exc
    assert classifier.sha256 is not None
    return WeightsInfo(
        sha256=classifier.sha256,
        architecture=classifier.architecture,
        feature_params=classifier.params.to_dict(),
        sample_rate=classifier.params.sample_rate,
        threshold=classifier.threshold,
        meta=classifier.meta,
    )


def _weights_on_disk(weights_path: str | Path | None, file: File | IO[bytes] | None) -> tuple[Path, Any]:
    """A local path for the weights, plus a temp file to close afterwards (None for a given path)."""
    if (weights_path is None) == (file is None):
        raise ValueError("give exactly one of weights_path and file")
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise ApplicationError(f"No weights file at {path}.", code="model_file_missing")
        return path, None
    assert file is not None
    tmp = tempfile.NamedTemporaryFile(suffix=".pt")  # noqa: SIM115 - closed by the caller
    if hasattr(file, "seek"):
        file.seek(0)
    chunks = file.chunks() if hasattr(file, "chunks") else iter(lambda: file.read(1 << 20), b"")
    for chunk in chunks:
        tmp.write(chunk)
    tmp.flush()
    return Path(tmp.name), tmp


def model_weights_inspect_file(file: File | IO[bytes]) -> WeightsInfo:
    """model_weights_inspect for an uploaded file (the admin form checks uploads with it)."""
    path, tmp = _weights_on_disk(None, file)
    try:
        return model_weights_inspect(path)
    finally:
        tmp.close()
        if hasattr(file, "seek"):
            file.seek(0)


def model_version_register(
    *,
    name: str,
    version: str,
    weights_path: str | Path | None = None,
    file: File | IO[bytes] | None = None,
    metrics: dict[str, Any] | None = None,
    model_card: str = "",
    activate: bool = False,
    created_by: User | None = None,
) -> ModelVersion:
    """Register a weights file as a model version (its checksum and parameters read from it)."""
    if ModelVersion.objects.filter(name=name, version=version).exists():
        raise ApplicationError(f"{name} {version} is already registered.", code="model_version_exists", status=409)
    path, tmp = _weights_on_disk(weights_path, file)
    try:
        info = model_weights_inspect(path)
        model_version = ModelVersion(
            name=name,
            version=version,
            architecture=info.architecture,
            sha256=info.sha256,
            sample_rate=info.sample_rate,
            feature_params=info.feature_params,
            threshold=info.threshold,
            metrics=metrics if metrics is not None else dict(info.meta.get("metrics") or {}),
            model_card=model_card or str(info.meta.get("model_card") or ""),
            created_by=created_by,
        )
        model_version.full_clean(exclude=["weights"])
        with path.open("rb") as handle:
            model_version.weights.save(f"{name}-{version}-{info.sha256[:12]}.pt", File(handle), save=False)
    finally:
        if tmp is not None:
            tmp.close()
    try:
        with transaction.atomic():
            model_version.save()
    except BaseException:
        _delete_stored(model_version.weights.name)
        raise
    if activate:
        model_version_activate(model_version=model_version)
    return model_version


def _activate(target: ModelVersion, *, remember_previous: bool) -> ModelVersion:
    now = timezone.now()
    with transaction.atomic():
        current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE).first()
        if current is not None and current.pk == target.pk:
            return target
        if current is not None:
            # Retire first: the one-active constraint is checked statement by statement.
            ModelVersion.objects.filter(pk=current.pk).update(status=ModelVersion.Status.RETIRED)
        fields: dict[str, Any] = {"status": ModelVersion.Status.ACTIVE, "activated_at": now}
        if remember_previous:
            fields["previous_active"] = current
        ModelVersion.objects.filter(pk=target.pk).update(**fields)
    inference.invalidate()
    target.refresh_from_db()
    logger.info("Model %s is now active (was %s)", target.label, current.label if current else "none")
    return target


def model_version_activate(*, model_version: ModelVersion) -> ModelVersion:
    """Make this version the active one and retire the previous, after proving its file loads."""
    try:
        inference.load_version(model_version)
    except (ModelLoadError, OSError, ValueError) as exc:
        raise ApplicationError(f"{model_version.label} cannot be activated: {exc}", code="model_incompatible") from exc
    return _activate(model_version, remember_previous=True)


def model_version_rollback() -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    current = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).select_related("previous_active").first()
    if current is None or current.previous_active is None:
        raise ApplicationError("There is no previously active model version to roll back to.", code="no_rollback")
    target = current.previous_active
    try:
        inference.load_version(target)
    except (ModelLoadError, OSError, ValueError) as exc:
        raise ApplicationError(f"{target.label} cannot be re-activated: {exc}", code="model_incompatible") from exc
    # Keep the target's own history, so a second roll-back steps further back instead of undoing this one.
    return _activate(target, remember_previous=False)


def torchscript_name(model_version: ModelVersion) -> str:
    return f"models/torchscript/{model_version.pk}-{model_version.sha256[:16]}.pt"


@dataclass(frozen=True)
class TorchScriptExport:
    name: str
    sha256: str
    size: int
    # Open at its start; the checksum describes exactly these bytes even if another process
    # replaces the cached file meanwhile. The caller closes it (a FileResponse does).
    handle: IO[bytes]


_EXPORT_LOCK = threading.Lock()


def model_version_torchscript(*, model_version: ModelVersion) -> TorchScriptExport:
    """The TorchScript export of a version for devices, exported once and then served from storage."""
    name = torchscript_name(model_version)
    # A fleet asks for a new model all at once; torch.jit.trace of one module from several
    # threads at the same time fails its own sanity check, so exports in a process take turns.
    with _EXPORT_LOCK:
        if not default_storage.exists(name):
            classifier = inference.classifier_for(model_version)
            with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
                classifier.export_torchscript(tmp.name)
                with open(tmp.name, "rb") as handle:
                    # Another web process may be serving this name already: never show it half written.
                    _store_cache_file(name, File(handle))
    handle = default_storage.open(name, "rb")
    digest, size = hashlib.sha256(), 0
    for chunk in handle.chunks():
        digest.update(chunk)
        size += len(chunk)
    handle.seek(0)
    return TorchScriptExport(name=name, sha256=digest.hexdigest(), size=size, handle=handle)


# --- Prediction -----------------------------------------------------------------------------------


def audio_predict(*, upload: IO[bytes], size: int | None, threshold: float | None = None) -> dict[str, Any]:
    """Classify an uploaded file synchronously with the active model; nothing is stored."""
    inspected = audio_inspect(upload, size=size)
    try:
        model = inference.active_model()
    except inference.NoModelAvailable as exc:
        raise ApplicationError(f"No model is available: {exc}", code="no_model", status=503) from exc
    result = model.classifier.classify_waveform(
        inspected.samples, inspected.sample_rate, threshold=model.threshold if threshold is None else threshold
    )
    return {
        "label": result["label"],
        "score": result["score"],
        "threshold": result["threshold"],
        "model_version": model.label,
        "shots": result["shots"],
        "offset_s": result["offset_s"],
        "windows": result["windows"],
        "duration_s": round(inspected.duration_s, 4),
        "sha256": inspected.sha256,
        "timings_ms": result["timings_ms"],
    }
