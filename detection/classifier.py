"""Framework-free gunshot classifier loaded from a single weights file.

The weights file is one ``torch.save``d dict (see ``save_weights``) holding the architecture id, the
feature parameters, the decision threshold and the state_dict, loaded with ``weights_only=True`` so
a weights file can never run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import librosa
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from detection import audio
from detection.audio import FeatureParams
from detection.network import ARCHITECTURES, build

WEIGHTS_FORMAT = 1  # bump when the weights dict layout changes; load() refuses other versions


@contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Cap torch and BLAS/OpenMP threads for a block, then restore them.

    Per-clip work is a few milliseconds, so thread hand-offs dominate: on a busy 2-core host, one
    thread evaluated 1,000 clips in 7 s and the defaults took 138 s.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


class ModelLoadError(Exception):
    """A weights file could not be turned into a working classifier."""


class ModelChecksumError(ModelLoadError):
    """The weights file's sha256 is not the one recorded for it."""


class ModelIncompatibleError(ModelLoadError):
    """Unknown format version or architecture, or a state_dict that does not fit the network."""


class ModelIOError(ModelLoadError):
    """The weights file is missing, unreadable or not a torch file."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(
    path: str | Path,
    *,
    architecture: str,
    params: FeatureParams,
    threshold: float,
    state_dict: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> str:
    """Write a weights file atomically (temp file in the same folder + rename); return its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "architecture": architecture,
        "features": params.to_dict(),
        "threshold": float(threshold),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        # A JSON round trip keeps meta to plain types that weights_only loading accepts.
        "meta": json.loads(json.dumps(meta, default=str)),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; workers running as another user must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def _read_payload(data: bytes) -> dict[str, Any]:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for junk files
        raise ModelIOError(f"not a readable weights file: {exc}") from exc
    if not isinstance(payload, dict):
        raise ModelIncompatibleError("weights file does not hold a dict")
    return payload


class Classifier:
    """A loaded network plus the preprocessing it was trained with."""

    def __init__(
        self,
        network: nn.Module,
        *,
        architecture: str,
        params: FeatureParams,
        threshold: float,
        meta: dict[str, Any] | None = None,
        sha256: str | None = None,
    ) -> None:
        self.network = network.eval()
        self.architecture = architecture
        self.params = params
        self.threshold = float(threshold)
        self.meta = meta or {}
        self.sha256 = sha256

    @classmethod
    def load(cls, path: str | Path, *, expected_sha256: str | None = None) -> Classifier:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelIOError(f"cannot read weights file {path}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise ModelChecksumError(f"sha256 of {path} is {digest}, expected {expected_sha256}")
        payload = _read_payload(data)
        if payload.get("format") != WEIGHTS_FORMAT:
            raise ModelIncompatibleError(f"weights format {payload.get('format')!r}, need {WEIGHTS_FORMAT}")
        architecture = payload.get("architecture")
        if architecture not in ARCHITECTURES:
            raise ModelIncompatibleError(f"unknown architecture {architecture!r}")
        try:
            params = FeatureParams.from_dict(payload["features"])
            threshold = float(payload["threshold"])
            network = build(architecture, params)
            network.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelIncompatibleError(f"weights do not fit {architecture}: {exc}") from exc
        return cls(
            network,
            architecture=architecture,
            params=params,
            threshold=threshold,
            meta=dict(payload.get("meta") or {}),
            sha256=digest,
        )

    def window_scores(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a (n, 1, n_mels, frames) batch, in one forward pass."""
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(batch))
            return torch.sigmoid(logits).numpy().astype(np.float64)

    def classify_waveform(self, y: np.ndarray, sr: int, *, threshold: float | None = None) -> dict[str, Any]:
        return self._classify(y, sr, threshold=threshold, decode_ms=0.0)

    def classify_file(self, source: bytes | str | Path | BinaryIO, *, threshold: float | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        y, sr = audio.decode(source)
        return self._classify(y, sr, threshold=threshold, decode_ms=(time.perf_counter() - t0) * 1000)

    def _classify(self, y: np.ndarray, sr: int, *, threshold: float | None, decode_ms: float) -> dict[str, Any]:
        thr = self.threshold if threshold is None else float(threshold)
        p = self.params
        t0 = time.perf_counter()
        y_mono = audio.to_mono(y)
        if y_mono.size == 0:
            raise audio.AudioError("empty", "the audio contains no samples")
        if not np.isfinite(y_mono).all():
            raise audio.AudioError("non_finite", "the audio contains NaN or infinite samples")
        clean, trim_start_s = audio.prepare(y_mono, sr, p)
        mel = audio.log_mel(clean, p)
        batch, offsets = audio.frame_windows(mel, p)
        t1 = time.perf_counter()
        scores = self.window_scores(batch)
        t2 = time.perf_counter()
        best = int(np.argmax(scores))
        score = float(scores[best])
        positive = score >= thr
        shots, shot_time = self._shots(mel, offsets, scores, thr) if positive else (0, None)
        offset_s = None
        if positive:
            local = shot_time if shot_time is not None else float(offsets[best])
            offset_s = round(trim_start_s + local, 3)
        return {
            "label": "gunshot" if positive else "other",
            "score": score,
            "threshold": thr,
            "shots": shots,
            "offset_s": offset_s,
            "windows": [
                {"offset_s": round(float(trim_start_s + o), 3), "score": float(s)}
                for o, s in zip(offsets, scores, strict=True)
            ],
            "timings_ms": {
                "decode": round(decode_ms, 3),
                "features": round((t1 - t0) * 1000, 3),
                "network": round((t2 - t1) * 1000, 3),
            },
        }

    def _shots(self, mel: np.ndarray, offsets: np.ndarray, scores: np.ndarray, thr: float) -> tuple[int, float | None]:
        """Count onsets inside positive windows; return the count and the strongest onset's time (s)."""
        p = self.params
        envelope = librosa.onset.onset_strength(S=mel, sr=p.sample_rate, hop_length=p.hop_length)
        onsets = librosa.onset.onset_detect(
            onset_envelope=envelope, sr=p.sample_rate, hop_length=p.hop_length, units="frames"
        )
        if onsets.size == 0:
            return 0, None
        times = onsets * p.hop_length / p.sample_rate
        inside = np.zeros(onsets.shape, dtype=bool)
        for start, s in zip(offsets, scores, strict=True):
            if s >= thr:
                inside |= (times >= start) & (times < start + p.window_s)
        if not inside.any():
            return 0, None
        chosen = onsets[inside]
        strongest = chosen[int(np.argmax(envelope[chosen]))]
        return int(inside.sum()), float(strongest * p.hop_length / p.sample_rate)

    def export_torchscript(self, path: str | Path) -> None:
        """Save a TorchScript of the network (input: log-mel batch in dB) for devices."""
        example = torch.zeros(1, 1, self.params.n_mels, self.params.frames_per_window)
        with torch.inference_mode():
            traced = torch.jit.trace(self.network, example)
        traced.save(str(path))
