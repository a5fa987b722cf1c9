"""The TorchScript a device downloads for the shipped model: within the 5 MB budget, and the device agent
scores with it what the server scores."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command

from core import audio
from core.classifier import DEVICE_DOWNLOAD_BYTES, Classifier
from detection.api.serializers import ModelVersionSerializer
from detection.classify import BUNDLED_WEIGHTS
from detection.models import ModelVersion
from detection.services import model_version_torchscript
from devices.agent.model import OnboardScorer
from tests.conftest import SHARED_DATA

REAL_GUNSHOT = SHARED_DATA / "clips" / "shotspotter_pgh__FP1_test_001_SCP-00-BNG-5567__gun.flac"


def _bursts(seconds: float = 3.0, sr: int = 16000) -> np.ndarray:
    """Decaying noise bursts over a quiet floor: scores well away from both 0 and 1 matter here."""
    rng = np.random.default_rng(7)
    y = 0.005 * rng.standard_normal(int(seconds * sr))
    for start in (0.4, 1.3, 2.2):
        i = int(start * sr)
        n = int(0.25 * sr)
        y[i : i + n] += 0.8 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.03 * sr))
    return y.astype(np.float32)


@pytest.fixture
def bundled_download(db: None, tmp_path: Path) -> tuple[ModelVersion, Path]:
    if not BUNDLED_WEIGHTS.is_file():
        pytest.skip(f"bundled weights not shipped at {BUNDLED_WEIGHTS}")
    call_command("register_bundled_model", stdout=io.StringIO())
    version = ModelVersion.objects.get(status="active")
    export = model_version_torchscript(model_version=version)
    path = tmp_path / "device-model.pt"
    with export.handle as handle:
        path.write_bytes(handle.read())
    assert path.stat().st_size == export.size
    return version, path


def test_the_shipped_models_device_download_fits_5_mb(bundled_download: tuple[ModelVersion, Path]) -> None:
    version, path = bundled_download
    assert version.architecture == "mn04-ensemble"
    assert path.stat().st_size <= DEVICE_DOWNLOAD_BYTES
    # float16 storage: every floating tensor in the file is half precision.
    module = torch.jit.load(str(path))
    floats = [t for t in module.state_dict().values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)


def test_the_device_agent_scores_the_download_like_the_server(bundled_download: tuple[ModelVersion, Path]) -> None:
    version, path = bundled_download
    active = dict(ModelVersionSerializer(version).data)
    scorer = OnboardScorer.load(path, active)
    assert scorer is not None and scorer.threshold == pytest.approx(version.threshold)
    server = Classifier.load(BUNDLED_WEIGHTS)
    clips = [(_bursts(), 16000)]
    if REAL_GUNSHOT.is_file():
        clips.append(audio.decode(REAL_GUNSHOT))
    for samples, sr in clips:
        expected = server.classify_waveform(samples, sr).score  # calibrated, like the threshold
        assert scorer.score(samples, sr) == pytest.approx(expected, abs=1e-4)
