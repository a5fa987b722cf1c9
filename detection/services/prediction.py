"""Prediction: classify an uploaded file at once with the active model, storing nothing."""

from __future__ import annotations

from typing import IO, Any

from detection import inference
from detection.services.clips import audio_inspect
from gunwatch.exceptions import ApplicationError


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
    stored = result.as_dict()
    return {
        "label": result.label,
        "score": result.score,
        "threshold": result.threshold,
        "model_version": model.label,
        "shots": result.shots,
        "offset_s": result.offset_s,
        "windows": stored["windows"],
        "duration_s": round(inspected.duration_s, 4),
        "sha256": inspected.sha256,
        "timings_ms": stored["timings_ms"],
    }
