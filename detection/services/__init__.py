"""Detection flows, one module per entity; this package re-exports the names other code calls.

- ``clips``: the clip lifecycle: upload (validated whole before anything is written), classification
  (claimed once per clip, several clips per forward pass), the requeue and incident-outbox sweeps.
- ``files``: stored files: audio retention and purging, spectrograms, derived files written atomically.
- ``registry``: model versions: register, activate, roll back, the TorchScript export for devices.
- ``prediction``: classify an uploaded file at once, storing nothing.

Tests that replace a helper patch it in its own module (``detection.services.clips._classify_audio``).
"""

from __future__ import annotations

from detection.services.clips import (
    ClipRetryLater,
    ClipUploadResult,
    audio_inspect,
    classifications_record_pending,
    clip_classify,
    clip_result,
    clip_upload,
    clips_classify_batch,
    clips_requeue_stuck,
)
from detection.services.files import (
    PurgeReport,
    clip_spectrogram,
    clips_purge_expired_audio,
    clips_with_expired_audio,
    device_data_purge,
    spectrogram_name,
)
from detection.services.prediction import audio_predict
from detection.services.registry import (
    TorchScriptExport,
    WeightsInfo,
    model_version_activate,
    model_version_register,
    model_version_rollback,
    model_version_torchscript,
    model_weights_inspect,
    model_weights_inspect_file,
    torchscript_name,
)

__all__ = [
    "ClipRetryLater",
    "ClipUploadResult",
    "PurgeReport",
    "TorchScriptExport",
    "WeightsInfo",
    "audio_inspect",
    "audio_predict",
    "classifications_record_pending",
    "clip_classify",
    "clip_result",
    "clip_spectrogram",
    "clip_upload",
    "clips_classify_batch",
    "clips_purge_expired_audio",
    "clips_requeue_stuck",
    "clips_with_expired_audio",
    "device_data_purge",
    "model_version_activate",
    "model_version_register",
    "model_version_rollback",
    "model_version_torchscript",
    "model_weights_inspect",
    "model_weights_inspect_file",
    "spectrogram_name",
    "torchscript_name",
]
