"""The model registry: register weights as a version, activate and roll back, export for devices."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.classifier import Classifier
from core.weights import ModelLoadError
from detection import inference
from detection.models import ModelVersion
from detection.selectors import model_versions_active
from detection.services.files import _delete_stored, _store_cache_file
from gunwatch.exceptions import ApplicationError

logger = logging.getLogger(__name__)


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
        current = model_versions_active().select_for_update().first()
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
        inference.load_for_serving(model_version)
    except (ModelLoadError, OSError, ValueError) as exc:
        raise ApplicationError(f"{model_version.label} cannot be activated: {exc}", code="model_incompatible") from exc
    return _activate(model_version, remember_previous=True)


def model_version_rollback() -> ModelVersion:
    """Re-activate the version that was active before the current one."""
    current = model_versions_active().select_related("previous_active").first()
    if current is None or current.previous_active is None:
        raise ApplicationError("There is no previously active model version to roll back to.", code="no_rollback")
    target = current.previous_active
    try:
        inference.load_for_serving(target)
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
                with open(tmp.name, "rb") as exported:
                    # Another web process may be serving this name already: never show it half written.
                    _store_cache_file(name, File(exported))
    handle = default_storage.open(name, "rb")
    digest, size = hashlib.sha256(), 0
    for chunk in handle.chunks():
        digest.update(chunk)
        size += len(chunk)
    handle.seek(0)
    return TorchScriptExport(name=name, sha256=digest.hexdigest(), size=size, handle=handle)
