"""Temporary shim, removed after the restructure merge: moved to core.classifier and core.weights.

Until the apps read the typed ``core.classifier.ClipResult``, this ``Classifier`` returns its ``as_dict()``
from ``classify_waveform`` / ``classify_file``, the dict the old callers (detection.services) read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from core import classifier as _core
from core.classifier import *  # noqa: F403
from core.weights import *  # noqa: F403
from core.weights import _read_payload  # noqa: F401


class Classifier(_core.Classifier):
    def classify_waveform(  # type: ignore[override]
        self, y: np.ndarray, sr: int, *, threshold: float | None = None
    ) -> dict[str, Any]:
        return super().classify_waveform(y, sr, threshold=threshold).as_dict()

    def classify_file(  # type: ignore[override]
        self, source: bytes | str | Path | BinaryIO, *, threshold: float | None = None
    ) -> dict[str, Any]:
        return super().classify_file(source, threshold=threshold).as_dict()
