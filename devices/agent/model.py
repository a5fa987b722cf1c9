"""The server's active model on the device: download it when it changes, and optionally score with it.

On-device scoring is an optional filter on top of the energy trigger. It needs torch and the project's
feature pipeline (``core.features``, which brings librosa and scipy: requirements-scoring.txt); a bare
Raspberry Pi install has neither, and then every triggered clip is uploaded and the server decides.
Scoring fails open: if the model cannot run, the clip is uploaded rather than lost.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from devices.agent.client import ApiClient

log = logging.getLogger(__name__)


def model_identity(active: dict[str, Any] | None) -> str | None:
    """What changes when the server activates another model (version and registry checksum)."""
    if not active:
        return None
    return f"{active.get('name')}:{active.get('version')}:{active.get('sha256')}"


class ModelStore:
    def __init__(self, directory: Path, *, keep: int = 2) -> None:
        self.directory = directory
        self.keep = keep

    def path_for(self, active: dict[str, Any]) -> Path:
        stem = f"{active.get('name')}-{active.get('version')}-{str(active.get('sha256'))[:12]}"
        return self.directory / (re.sub(r"[^A-Za-z0-9._-]+", "_", stem) + ".pt")

    def fetch(self, client: ApiClient, active: dict[str, Any]) -> Path:
        """Download the active model unless that exact file is already here; return its path."""
        path = self.path_for(active)
        if not path.exists():
            client.download_model(path, expected_sha256=active.get("sha256"))
            self._prune(keep=path)
        return path

    def _prune(self, *, keep: Path) -> None:
        models = sorted(self.directory.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in models if p != keep][self.keep - 1 :]:
            old.unlink(missing_ok=True)


class OnboardScorer:
    """TorchScript network over the same log-mel windows the server computes.

    The server's export folds the calibration in and may store the weights as float16 (the module casts them
    to float32 itself), so a plain torch.jit.load and a sigmoid give the server's calibrated score."""

    def __init__(self, module: Any, features: Any, params: Any, threshold: float) -> None:
        self._module = module
        self._features = features
        self._params = params
        self.threshold = threshold

    @classmethod
    def load(cls, path: Path, active: dict[str, Any]) -> OnboardScorer | None:
        try:
            import torch
        except ImportError:
            log.info("torch is not installed: on-device scoring is off, every triggered clip is uploaded")
            return None
        try:
            from core import features
        except ImportError:
            log.info("the feature code (core.features, librosa) is missing: on-device scoring is off")
            return None
        try:
            with warnings.catch_warnings():
                # torch 2.x flags TorchScript as deprecated; the server still exports it for devices.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu").eval()
            params = _feature_params(features.FeatureParams, active)
        except Exception as exc:  # a model we cannot run must not stop the agent
            log.warning("cannot load the on-device model %s: %s", path, exc)
            return None
        threshold = active.get("threshold")
        # 0.0 is a real threshold (score everything as positive), not a missing one.
        return cls(module, features, params, 0.5 if threshold is None else float(threshold))

    def score(self, samples: np.ndarray, sample_rate: int) -> float | None:
        """Highest window probability, or None when the model could not score this clip."""
        try:
            import torch

            batch = self._features.windows(samples, sample_rate, self._params)
            with torch.inference_mode():
                logits = self._module(torch.from_numpy(batch))
            return float(torch.sigmoid(logits).max())
        except Exception as exc:  # fail open: the server re-scores everything we send
            log.warning("on-device scoring failed, uploading unscored: %s", exc)
            return None


def _feature_params(cls: Any, active: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    given = dict(active.get("feature_params") or {})
    if "sample_rate" in active:
        given.setdefault("sample_rate", active["sample_rate"])
    return cls.from_dict({k: v for k, v in given.items() if k in known})
