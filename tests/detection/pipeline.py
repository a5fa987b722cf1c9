"""Fixtures and helpers for the Django side of detection: tiny models, generated audio, uploads.

Test modules take the fixtures with ``from tests.detection.pipeline import *``. Models are tiny
random-weight networks saved to tmp_path; the production weights are never loaded here.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from django.utils import timezone

from core.features import FeatureParams
from core.networks import build
from core.weights import save_weights
from detection import inference, services
from detection.models import ModelVersion
from gunwatch.celery import app as celery_app

__all__ = [
    "SR",
    "clean_inference",
    "eager_celery",
    "encode",
    "impulses",
    "make_weights",
    "media_files",
    "model_factory",
    "negative_model",
    "positive_model",
    "sine",
    "upload_fields",
]

SR = 16000
ARCH = "gwcnn-tiny"


def make_weights(path: Path, *, logit: float | None = None, threshold: float = 0.5, seed: int = 0,
                 architecture: str = ARCH, meta: dict[str, Any] | None = None) -> Path:
    """A tiny random network; with ``logit`` its output is pinned to that value for every window."""
    torch.manual_seed(seed)
    params = FeatureParams()
    network = build(architecture, params)
    if logit is not None:
        # Zero weights and a fixed bias make the score sigmoid(logit) whatever the audio.
        with torch.no_grad():
            network.head.weight.zero_()
            network.head.bias.fill_(logit)
    save_weights(path, architecture=architecture, params=params, threshold=threshold,
                 state_dict=network.state_dict(), meta=meta or {"seed": seed})
    return path


def sine(seconds: float = 2.0, *, sr: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def impulses(seconds: float = 2.0, *, sr: int = SR, at: tuple[float, ...] = (0.5, 1.2)) -> np.ndarray:
    """Quiet noise with sharp decaying bangs: the shape of a gunshot, not its sound."""
    rng = np.random.default_rng(1)
    y = 0.01 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
    decay = np.exp(-np.arange(int(0.1 * sr)) / (0.01 * sr)).astype(np.float32)
    for t in at:
        start = int(t * sr)
        burst = 0.9 * rng.standard_normal(decay.size).astype(np.float32) * decay
        y[start : start + decay.size] += burst[: max(0, y.size - start)]
    return np.clip(y, -1, 1)


def encode(y: np.ndarray, *, sr: int = SR, fmt: str = "FLAC", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def upload_fields(data: bytes, *, name: str = "clip.flac", client_id: uuid.UUID | str | None = None,
                  recorded_at: datetime | str | None = None, **extra: Any) -> dict[str, Any]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    stamp = recorded_at or timezone.now()
    fields: dict[str, Any] = {
        "audio": SimpleUploadedFile(name, data, content_type="application/octet-stream"),
        "recorded_at": stamp if isinstance(stamp, str) else stamp.isoformat(timespec="milliseconds"),
        "client_id": str(client_id or uuid.uuid4()),
    }
    fields.update({key: value for key, value in extra.items() if value is not None})
    return fields


def media_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def eager_celery(settings: Any) -> Iterator[None]:
    """Tasks run in the calling thread (the settings' eager mode is read once by Celery, so set it here)."""
    saved = (celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.GUNWATCH_EAGER_IN_THREAD = False
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = saved


@pytest.fixture(autouse=True)
def clean_inference(settings: Any) -> Iterator[None]:
    """Each test starts with an empty model cache that asks the database on every call."""
    settings.MODEL_ACTIVE_CHECK_TTL_S = 0
    inference.reset()
    yield
    inference.reset()


@pytest.fixture
def model_factory(db: None, tmp_path: Path) -> Callable[..., ModelVersion]:
    counter = iter(range(1, 1000))

    def make(*, logit: float | None = None, threshold: float = 0.5, activate: bool = True,
             name: str = "tiny", version: str | None = None, seed: int = 0, **kwargs: Any) -> ModelVersion:
        number = next(counter)
        path = make_weights(tmp_path / "weights" / f"w{number}.pt", logit=logit, threshold=threshold, seed=seed)
        return services.model_version_register(
            weights_path=path, name=name, version=version or f"1.{number}", activate=activate, **kwargs
        )

    return make


@pytest.fixture
def negative_model(model_factory: Callable[..., ModelVersion]) -> ModelVersion:
    """Active, and scores every window sigmoid(-8) ≈ 0.0003: everything is 'other'."""
    return model_factory(logit=-8.0, name="never")


@pytest.fixture
def positive_model(model_factory: Callable[..., ModelVersion]) -> ModelVersion:
    """Active, and scores every window sigmoid(8) ≈ 0.9997: everything is a 'gunshot'."""
    return model_factory(logit=8.0, name="always")
