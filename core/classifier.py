"""The gunshot classifier: a loaded network plus the features it was trained with, and its typed verdict.

``Classifier.load`` reads a weights file (see ``core.weights``); ``classify_file`` / ``classify_waveform``
run the one feature pipeline (``core.features``), score every window in one forward pass, count the shots
inside positive windows and return a frozen ``ClipResult``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import librosa
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from core import audio, calibration, features
from core.features import FeatureParams
from core.weights import load_weights

logger = logging.getLogger(__name__)

Label = Literal["gunshot", "other"]


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


@dataclass(frozen=True)
class WindowScore:
    offset_s: float  # where the window starts in the input audio, seconds
    score: float


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent decoding, computing features and running the network."""

    decode: float
    features: float
    network: float


@dataclass(frozen=True)
class ClipResult:
    """The verdict on one clip. ``as_dict`` gives the JSON shape stored with a classification and served by the API."""

    label: Label
    score: float  # the highest window probability
    threshold: float
    shots: int  # onsets inside positive windows; 0 for "other"
    offset_s: float | None  # the strongest shot's time in the input audio; None for "other"
    windows: tuple[WindowScore, ...]
    timings_ms: Timings

    @property
    def positive(self) -> bool:
        return self.label == "gunshot"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "threshold": self.threshold,
            "shots": self.shots,
            "offset_s": self.offset_s,
            "windows": [{"offset_s": w.offset_s, "score": w.score} for w in self.windows],
            "timings_ms": {
                "decode": self.timings_ms.decode,
                "features": self.timings_ms.features,
                "network": self.timings_ms.network,
            },
        }


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
        # What window_scores runs: the network itself, or its frozen TorchScript graph (compile_for_serving).
        self._serving: Callable[[torch.Tensor], torch.Tensor] = self.network
        self.architecture = architecture
        self.params = params
        self.threshold = float(threshold)
        self.meta = meta or {}
        self.sha256 = sha256

    @classmethod
    def load(cls, path: str | Path, *, expected_sha256: str | None = None) -> Classifier:
        """Raise a ``core.weights.ModelLoadError`` subclass when the file cannot become a classifier."""
        w = load_weights(path, expected_sha256=expected_sha256)
        return cls(
            w.network, architecture=w.architecture, params=w.params, threshold=w.threshold, meta=w.meta,
            sha256=w.sha256,
        )  # fmt: skip

    @property
    def calibration(self) -> dict[str, Any] | None:
        """Platt scaling fitted on held-out folds (weights meta ``calibration``), or None."""
        cal = self.meta.get("calibration")
        return cal if isinstance(cal, dict) and "a" in cal and "b" in cal else None

    @property
    def operating_points(self) -> dict[str, float]:
        """Named thresholds on the calibrated score (weights meta ``operating_points``)."""
        points = self.meta.get("operating_points") or {}
        return {k: float(v["threshold"] if isinstance(v, dict) else v) for k, v in points.items()}

    def window_scores(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for a (n, 1, n_mels, frames) batch, in one forward pass."""
        with torch.inference_mode():
            logits = self._serving(torch.from_numpy(batch)).numpy()
        return calibration.apply_to_logits(logits, self.calibration)

    def compile_for_serving(self, cache: Path | None = None) -> float:
        """Score windows with a frozen TorchScript graph of the network instead of the module itself.

        Freezing folds each BatchNorm into its convolution and runs the layers without Python: a 2-s clip's
        three windows cost mn04-ensemble 12 ms of CPU instead of 20-22 ms (batches of 24 windows gain 7 %),
        and a worker mostly sees small batches. Tracing takes seconds, so the graph is kept in ``cache`` (a
        file the caller names per weights and torch version) and loaded from there in ~50 ms next time. The
        graph must give the network's logits on a fixed input within 1e-4 (it does to ~3e-6): otherwise, or
        if it cannot be built, the network keeps serving. Returns that largest difference (inf: not used).
        """
        example = torch.from_numpy(
            np.random.default_rng(0).standard_normal((3, 1, self.params.n_mels, self.params.frames_per_window))
        ).float()
        with torch.inference_mode():
            expected = self.network(example)
            try:
                graph = _load_graph(cache) if cache is not None and cache.exists() else None
                if graph is None:
                    graph = torch.jit.freeze(torch.jit.trace(self.network, example).eval())
                    if cache is not None:
                        _save_graph(graph, cache)
                difference = float((graph(example) - expected).abs().max())
            except Exception as exc:  # an optimisation: whatever fails, the network still serves
                logger.warning("Serving the network uncompiled: %s", exc)
                return math.inf
        if not difference <= 1e-4:
            logger.warning("Serving the network uncompiled: its frozen graph differs by %.3g", difference)
            return math.inf
        self._serving = graph
        return difference

    def classify_waveform(self, y: np.ndarray, sr: int, *, threshold: float | None = None) -> ClipResult:
        return self._classify(y, sr, threshold=threshold, decode_ms=0.0)

    def classify_file(self, source: bytes | str | Path | BinaryIO, *, threshold: float | None = None) -> ClipResult:
        t0 = time.perf_counter()
        y, sr = audio.decode(source)
        return self._classify(y, sr, threshold=threshold, decode_ms=(time.perf_counter() - t0) * 1000)

    def _classify(self, y: np.ndarray, sr: int, *, threshold: float | None, decode_ms: float) -> ClipResult:
        t0 = time.perf_counter()
        feats = self._features(y, sr)
        t1 = time.perf_counter()
        scores = self.window_scores(feats.batch)
        t2 = time.perf_counter()
        return self._verdict(feats, scores, threshold, decode_ms, (t1 - t0) * 1000, (t2 - t1) * 1000)

    def _features(self, y: np.ndarray, sr: int) -> features.Features:
        y_mono = features.to_mono(y)
        if y_mono.size == 0:
            raise audio.AudioError("empty", "the audio contains no samples")
        if not np.isfinite(y_mono).all():
            raise audio.AudioError("non_finite", "the audio contains NaN or infinite samples")
        return features.extract(y_mono, sr, self.params)

    def _verdict(
        self,
        feats: features.Features,
        scores: np.ndarray,
        threshold: float | None,
        decode_ms: float,
        features_ms: float,
        network_ms: float,
    ) -> ClipResult:
        thr = self.threshold if threshold is None else float(threshold)
        best = int(np.argmax(scores))
        score = float(scores[best])
        positive = score >= thr
        shots, shot_time = self._shots(feats.mel, feats.offsets_s, scores, thr) if positive else (0, None)
        offset_s = None
        if positive:
            local = shot_time if shot_time is not None else float(feats.offsets_s[best])
            offset_s = round(feats.trim_start_s + local, 3)
        return ClipResult(
            label="gunshot" if positive else "other",
            score=score,
            threshold=thr,
            shots=shots,
            offset_s=offset_s,
            windows=tuple(
                WindowScore(offset_s=round(float(feats.trim_start_s + o), 3), score=float(s))
                for o, s in zip(feats.offsets_s, scores, strict=True)
            ),
            timings_ms=Timings(
                decode=round(decode_ms, 3),
                features=round(features_ms, 3),
                network=round(network_ms, 3),
            ),
        )

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
        """Save a TorchScript of the network (input: log-mel windows) for devices.

        The calibration is folded into the exported logit, so the device's sigmoid gives the same calibrated
        score the server compares with the version's threshold. Weights are stored as float16 (and cast to
        float32 inside the module, so any torch.jit.load runs it unchanged) when that loses nothing, as for
        weights files saved in float16, or when float32 would not fit the device download budget.
        """
        example = torch.zeros(1, 1, self.params.n_mels, self.params.frames_per_window)
        cal = self.calibration
        network = self.network.eval()
        a, b = (float(cal["a"]), float(cal["b"])) if cal else (1.0, 0.0)
        module: nn.Module = _CalibratedLogit(network, a, b) if cal else network
        if _store_float16(network):
            module = _Float16Stored(network, a, b)
        with torch.inference_mode():
            traced = torch.jit.trace(module.eval(), example)
        traced.save(str(path))


def _load_graph(path: Path) -> torch.jit.ScriptModule | None:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a cache: whatever is wrong with it (torch raises many kinds), rebuild
        logger.warning("Ignoring the compiled graph %s: %s", path, exc)
        return None


def _save_graph(graph: torch.jit.ScriptModule, path: Path) -> None:
    # Written aside and renamed: a worker starting meanwhile reads a whole file or none.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.jit.save(graph, str(partial))
    os.replace(partial, path)


@dataclass(frozen=True)
class BatchItem:
    """One clip of a ``classify_batch`` call: its decoded samples and its threshold (None: the model's)."""

    samples: np.ndarray
    sample_rate: int
    threshold: float | None = None
    decode_ms: float = 0.0


def classify_batch(classifier: Classifier, items: list[BatchItem]) -> list[ClipResult | audio.AudioError]:
    """Classify several clips with ONE forward pass over all their windows.

    A worker that finds several clips queued calls this instead of ``classify_waveform`` per clip: the
    network's fixed cost per call is paid once. Features are computed per clip (clips differ in length
    and rate). An unusable clip gets its ``AudioError`` in its slot and the others are still classified.
    Each result's timings are the clip's own features plus its share of the batched forward pass.
    """
    prepared: list[tuple[int, features.Features, float]] = []
    results: list[ClipResult | audio.AudioError] = [audio.AudioError("empty", "not classified")] * len(items)
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        try:
            feats = classifier._features(item.samples, item.sample_rate)
        except audio.AudioError as exc:
            results[i] = exc
            continue
        prepared.append((i, feats, (time.perf_counter() - t0) * 1000))
    if not prepared:
        return results
    t0 = time.perf_counter()
    scores = classifier.window_scores(np.concatenate([feats.batch for _, feats, _ in prepared]))
    network_ms = (time.perf_counter() - t0) * 1000 / len(prepared)
    start = 0
    for i, feats, features_ms in prepared:
        n = feats.batch.shape[0]
        item = items[i]
        results[i] = classifier._verdict(
            feats, scores[start : start + n], item.threshold, item.decode_ms, features_ms, network_ms
        )
        start += n
    return results


DEVICE_DOWNLOAD_BYTES = 5_000_000  # every weights file a device downloads stays within this (issue #10)


def _store_float16(network: nn.Module) -> bool:
    tensors = [t for t in network.state_dict().values() if t.is_floating_point()]
    lossless = all(torch.equal(t.half().float(), t.float()) for t in tensors)
    return lossless or sum(4 * t.numel() for t in tensors) > 0.8 * DEVICE_DOWNLOAD_BYTES


class _Float16Stored(nn.Module):
    """The network's parameters and buffers stored as float16, cast to float32 on every call (about a
    millisecond for mn04-ensemble's 1.2 M, once per clip's batch of windows), then the calibrated logit.

    A copy of the network, held outside the module tree, has its parameters and buffers removed; each call
    sets them from the float16 copies, so tracing records the casts and saves only the float16 tensors
    (torch.func.functional_call refuses to run under the tracer)."""

    def __init__(self, network: nn.Module, a: float, b: float) -> None:
        super().__init__()
        shell = copy.deepcopy(network).eval()
        self._slots: list[tuple[nn.Module, str]] = []
        for module in shell.modules():
            for store in (module._parameters, module._buffers):
                for name in [n for n, t in store.items() if t is not None]:
                    tensor = store.pop(name)
                    assert tensor is not None  # filtered above; mypy cannot see it through pop
                    stored = tensor.detach().half() if tensor.is_floating_point() else tensor.detach().clone()
                    self.register_buffer(f"t{len(self._slots)}", stored)
                    self._slots.append((module, name))
        self._shell = [shell]  # a list, so the module tree (and the saved file) does not include it
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (module, name) in enumerate(self._slots):
            stored = getattr(self, f"t{i}")
            object.__setattr__(module, name, stored.float() if stored.dtype == torch.float16 else stored)
        return self._shell[0](x) * self.a + self.b


class _CalibratedLogit(nn.Module):
    def __init__(self, network: nn.Module, a: float, b: float) -> None:
        super().__init__()
        self.network = network
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x) * self.a + self.b
