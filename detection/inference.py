"""The per-process model cache: each worker loads the active model once and follows activations.

The cache is keyed by (ModelVersion id, sha256). Every call asks the database which version is
active, at most once per ``MODEL_ACTIVE_CHECK_TTL_S`` (a one-row indexed query, so the TTL only saves
a fraction of a millisecond per clip), and loads a new version when that answer changes, with no
restart. A weights file that fails its checksum or does not fit its architecture is refused: the
error is logged and noted on the version, and the previously loaded model keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import Value
from django.db.models.fields.files import FieldFile
from django.db.models.functions import Concat
from django.utils import timezone

from core.classifier import BatchItem, Classifier, classify_batch
from core.weights import ModelLoadError
from detection.models import ModelVersion
from detection.selectors import model_versions_active

logger = logging.getLogger(__name__)

# A refused version is tried again after this long, in case its file was put right.
REFUSED_RETRY_S = 300.0


class NoModelAvailable(Exception):
    """There is no active model, or it cannot be loaded and nothing else was loaded before."""


@dataclass(frozen=True)
class LoadedModel:
    version_id: int
    sha256: str
    name: str
    version: str
    threshold: float
    classifier: Classifier

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass
class _State:
    loaded: LoadedModel | None = None
    active_key: tuple[int, str] | None = None
    checked_at: float = float("-inf")
    # (version id, sha256) -> (monotonic time of the refusal, reason)
    refused: dict[tuple[int, str], tuple[float, str]] | None = None
    threads_set: bool = False
    # (monotonic time, the active ModelVersion row) for callers that only report it (device heartbeats)
    active_version: tuple[float, ModelVersion | None] = (float("-inf"), None)


_state = _State(refused={})
# Request threads (predict API) and the worker thread may ask at the same moment; one loads.
_lock = threading.RLock()


def reset() -> None:
    """Forget everything (tests, and after a fork that must not share the parent's model)."""
    global _state
    with _lock:
        _state = _State(refused={})


def invalidate() -> None:
    """Make the next call ask the database again (this process just changed the active version)."""
    with _lock:
        _state.checked_at = float("-inf")
        _state.active_version = (float("-inf"), None)


def active_version() -> ModelVersion | None:
    """The active version's row, read at most once per ``MODEL_ACTIVE_CHECK_TTL_S`` in this process.

    Every device heartbeat reports it: the fleet learns of an activation a couple of seconds later
    instead of the database answering the same question hundreds of times a second.
    """
    checked_at, version = _state.active_version
    if time.monotonic() - checked_at >= settings.MODEL_ACTIVE_CHECK_TTL_S:
        version = model_versions_active().first()
        _state.active_version = (time.monotonic(), version)
    return version


def _active_key() -> tuple[int, str] | None:
    now = time.monotonic()
    if now - _state.checked_at >= settings.MODEL_ACTIVE_CHECK_TTL_S:
        row = model_versions_active().values_list("id", "sha256").first()
        _state.active_key = (row[0], row[1]) if row else None
        _state.checked_at = now
    return _state.active_key


@contextlib.contextmanager
def local_weights_path(field: FieldFile) -> Iterator[Path]:
    """A filesystem path for a stored weights file, copying it out of non-local storage if needed."""
    try:
        local = field.path
    except NotImplementedError:  # remote storage has no paths: fetch a temporary copy
        local = None
    if local is not None:
        yield Path(local)
        return
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp, field.open("rb") as source:
        for chunk in source.chunks():
            tmp.write(chunk)
        tmp.flush()
        yield Path(tmp.name)


def load_version(model_version: ModelVersion) -> Classifier:
    """Load a version's weights, verifying the recorded sha256; raise ModelLoadError subclasses."""
    with local_weights_path(model_version.weights) as path:
        return Classifier.load(path, expected_sha256=model_version.sha256)


def load_for_serving(model_version: ModelVersion) -> Classifier:
    """load_version, then its frozen graph (kept in compiled_path) when INFERENCE_COMPILE is on.

    For a model that will classify: the active one, and one being activated (whose graph a worker
    following the activation then finds kept). A TorchScript export for devices needs the plain network.
    """
    classifier = load_version(model_version)
    if settings.INFERENCE_COMPILE:
        started = time.perf_counter()
        difference = classifier.compile_for_serving(compiled_path(model_version))
        if difference != float("inf"):  # else compile_for_serving said why the network serves itself
            logger.info(
                "Model %s:%s serves from its frozen graph (max |diff| %.1e) after %.0f ms",
                model_version.name, model_version.version, difference, (time.perf_counter() - started) * 1000,
            )  # fmt: skip
    return classifier


def compiled_path(model_version: ModelVersion) -> Path:
    """Where a version's frozen graph is kept: per weights file and torch version (graphs don't travel)."""
    import torch

    return Path(settings.INFERENCE_COMPILED_DIR) / f"{model_version.sha256}-torch{torch.__version__}.pt"


def compile_active_model() -> None:
    """Build the active version's frozen graph now unless it is kept already (load_for_serving uses it).

    Tracing takes seconds; ./gw serve and a Celery worker's parent do it before any pool process starts,
    so a (re)started worker loads the graph in ~50 ms and its first clip does not wait for a trace.
    """
    if not settings.INFERENCE_COMPILE:
        return
    version = model_versions_active().first()
    if version is None or compiled_path(version).exists():
        return
    try:
        load_for_serving(version)
    except ModelLoadError as exc:
        logger.warning("Could not compile model %s: %s", version.label, exc)


def _set_torch_threads() -> None:
    if _state.threads_set or settings.INFERENCE_TORCH_THREADS <= 0:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(settings.INFERENCE_TORCH_THREADS)
    # numpy's BLAS too: the features are small matrix products, and OpenBLAS's own threads spinning on a
    # busy 2-core host made them 50x slower (measured: 68 ms against 1.2 ms per clip).
    threadpool_limits(settings.INFERENCE_TORCH_THREADS)
    _state.threads_set = True


def _refuse(key: tuple[int, str], reason: str) -> None:
    assert _state.refused is not None
    _state.refused[key] = (time.monotonic(), reason)
    logger.error("Refusing to load model version %s (sha256 %s): %s", key[0], key[1][:12], reason)
    stamp = timezone.now().isoformat(timespec="seconds")
    # Appending in SQL keeps notes an operator typed meanwhile.
    ModelVersion.objects.filter(pk=key[0]).update(
        notes=Concat("notes", Value(f"\n[{stamp}] refused to load: {reason}"))
    )


def _recently_refused(key: tuple[int, str]) -> str | None:
    assert _state.refused is not None
    entry = _state.refused.get(key)
    if entry is None or time.monotonic() - entry[0] >= REFUSED_RETRY_S:
        return None
    return entry[1]


def _fallback(reason: str) -> LoadedModel:
    if _state.loaded is None:
        raise NoModelAvailable(reason)
    return _state.loaded


def active_model() -> LoadedModel:
    """The active model, loaded once per process; the previous one if the active file is refused."""
    with _lock:
        key = _active_key()
        if key is None:
            # No active version at all (never registered, or deactivated): nothing may classify.
            raise NoModelAvailable("no model version is active; register one with register_bundled_model")
        loaded = _state.loaded
        if loaded is not None and (loaded.version_id, loaded.sha256) == key:
            return loaded
        reason = _recently_refused(key)
        if reason is not None:
            return _fallback(f"the active model cannot be loaded: {reason}")
        model_version = ModelVersion.objects.filter(pk=key[0]).first()
        if model_version is None:
            invalidate()
            return _fallback("the active model version disappeared")
        try:
            _set_torch_threads()
            classifier = load_for_serving(model_version)
        except ModelLoadError as exc:
            _refuse(key, f"{type(exc).__name__}: {exc}")
            return _fallback(f"the active model cannot be loaded: {exc}")
        _state.loaded = LoadedModel(
            version_id=model_version.pk,
            sha256=model_version.sha256,
            name=model_version.name,
            version=model_version.version,
            threshold=model_version.threshold,
            classifier=classifier,
        )
        logger.info("Loaded model %s (sha256 %s)", _state.loaded.label, model_version.sha256[:12])
        return _state.loaded


def warm_up() -> None:
    """Load the active model and run it once, so the first real clip pays no start-up cost.

    What the first clip paid otherwise: loading the weights, and JIT compilation inside librosa's onset
    detection (numba), which only a positive verdict reaches, hence threshold 0 here.
    """
    try:
        model = active_model()
    except NoModelAvailable as exc:
        logger.info("No model to warm up yet: %s", exc)
        return
    sr = model.classifier.params.sample_rate
    noise = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    started = time.perf_counter()
    classify_batch(model.classifier, [BatchItem(noise, sr, threshold=0.0), BatchItem(noise, sr, threshold=0.0)])
    logger.info("Model %s warmed up in %.0f ms", model.label, (time.perf_counter() - started) * 1000)


def warm_features() -> None:
    """JIT-compile the feature pipeline (librosa's numba code) with no model and no torch.

    Celery calls it in the worker's parent process, before the pool forks: the children inherit the
    compiled code, which took a pool process 18 s to compile on a busy host when each did it itself.
    """
    import librosa

    from core.features import FeatureParams, extract

    params = FeatureParams()
    noise = np.random.default_rng(0).standard_normal(params.sample_rate).astype(np.float32) * 0.1
    feats = extract(noise, params.sample_rate, params)
    envelope = librosa.onset.onset_strength(S=feats.mel, sr=params.sample_rate, hop_length=params.hop_length)
    librosa.onset.onset_detect(onset_envelope=envelope, sr=params.sample_rate, hop_length=params.hop_length)


def classifier_for(model_version: ModelVersion) -> Classifier:
    """The cached classifier if it is this version, else a fresh (uncached) load."""
    loaded = _state.loaded
    if loaded is not None and (loaded.version_id, loaded.sha256) == (model_version.pk, model_version.sha256):
        return loaded.classifier
    return load_version(model_version)
