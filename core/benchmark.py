"""CPU cost of the detector per second of audio, next to the seed-style ResNet-34 (used by bench/ and the card)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from core import features
from core.features import FeatureParams
from core.networks import ResNet34, SeedImageInput, build


def synthetic_clip(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Noise with a few decaying impulses: a realistic workload (trimming, onsets) without real data."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(int(seconds * sr)).astype(np.float32) * 0.02
    for t in rng.uniform(0, seconds - 0.3, size=3):
        n = int(0.3 * sr)
        s = int(t * sr)
        y[s : s + n] += rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / (0.03 * sr))
    return y


def _cpu_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: numba/librosa caches, torch allocator
    t0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - t0) * 1000 / repeats


def _ours(params: FeatureParams, net: nn.Module, clips: list[np.ndarray]) -> None:
    batch = np.concatenate([features.windows(y, params.sample_rate, params) for y in clips])
    with torch.inference_mode():
        torch.sigmoid(net(torch.from_numpy(batch)))


def _seed(params: FeatureParams, net: nn.Module, clip: np.ndarray) -> None:
    clean, _ = features.prepare(clip, params.sample_rate, params)
    wins = features.waveform_windows(clean, params)
    with torch.inference_mode():
        torch.sigmoid(net(SeedImageInput()(torch.from_numpy(wins))))


def speed_profile(
    params: FeatureParams,
    architecture: str,
    *,
    network: nn.Module | None = None,
    clip_s: float = 10.0,
    batch: int = 16,
    repeats: int = 10,
    seed_repeats: int = 2,
) -> dict[str, Any]:
    """ms of CPU per second of audio (features + network) with one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # numpy's BLAS (mel filterbank product) would otherwise spin extra threads and bill their CPU time.
    limiter = threadpool_limits(1)
    try:
        net = (network or build(architecture, params)).eval()
        clip = synthetic_clip(clip_s, params.sample_rate)
        clips = [synthetic_clip(clip_s, params.sample_rate, seed=k) for k in range(batch)]
        single = _cpu_ms(lambda: _ours(params, net, [clip]), repeats) / clip_s
        batched = _cpu_ms(lambda: _ours(params, net, clips), max(1, repeats // 4)) / (clip_s * batch)
        resnet = ResNet34().eval()
        seed_single = _cpu_ms(lambda: _seed(params, resnet, clip), seed_repeats) / clip_s
    finally:
        torch.set_num_threads(threads)
        limiter.restore_original_limits()
    return {
        "clip_s": clip_s,
        "threads": 1,
        "ours_ms_per_audio_s_single": round(single, 4),
        "ours_ms_per_audio_s_batched": round(batched, 4),
        "seed_resnet34_ms_per_audio_s": round(seed_single, 2),
        "speedup_single": round(seed_single / single, 1),
    }
