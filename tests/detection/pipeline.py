"""Helpers for the Django side of detection: generated audio, encoded clips, upload fields.

Tiny random-weight models come from ``tests.core.helpers_audio.make_weights``; the production
weights are never loaded in tests. The fixtures built on these (``model_factory``,
``positive_model``, ``negative_model``, eager Celery, an empty model cache) are in tests/conftest.py.
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from django.utils import timezone

SR = 16000


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


def upload_fields(
    data: bytes,
    *,
    name: str = "clip.flac",
    client_id: uuid.UUID | str | None = None,
    recorded_at: datetime | str | None = None,
    **extra: Any,
) -> dict[str, Any]:
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
