"""The seed-style baseline: a ResNet-34 on spectrogram images, trained on the same windows for comparison."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core import evaluation, features
from core.features import FeatureParams
from core.networks import ResNet34, SeedImageInput, count_parameters
from core.training.augment import AugmentConfig, WindowSampler
from core.training.data import ClipRecord
from core.training.loop import configure_determinism, fit_network


def run_baseline(
    records: list[ClipRecord],
    waves: list[np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    config: AugmentConfig,
    seed: int,
    epochs: int,
    steps: int,
    threads: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Seed-style ResNet-34 on spectrogram images, same windows and augmentation, far fewer steps (CPU)."""
    rng = configure_determinism(seed, threads)
    sampler = WindowSampler(waves, records, train_idx, params, config, rng)
    to_img = SeedImageInput()
    net = ResNet34()
    t0 = time.perf_counter()
    fit_network(
        net, sampler, to_input=to_img, epochs=epochs, steps_per_epoch=steps, batch_size=batch_size,
        lr=1e-3, config=config, rng=rng, desc="resnet34", ema_decay=0.9,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    net.eval()
    scores = []
    with torch.inference_mode():
        for i in tqdm(val_idx, desc="resnet34 val", unit="clip", leave=False):
            clean, _ = features.prepare(waves[i], params.sample_rate, params)
            wins = features.waveform_windows(clean, params)
            scores.append(float(torch.sigmoid(net(to_img(torch.from_numpy(wins)))).max()))
    s = np.array(scores)
    y = np.array([records[i].positive for i in val_idx], dtype=np.int64)
    thr = evaluation.threshold_for_fpr(s[y == 0], 0.01)
    return {
        "architecture": "resnet34-224 (seed style)",
        "parameters": count_parameters(net),
        "train_windows": epochs * steps * batch_size,
        "epochs": epochs,
        "train_seconds": round(train_s, 1),
        "auc": evaluation.auc(y, s),
        "accuracy_at_0.5": float(np.mean((s >= 0.5) == y)),
        "recall_at_fpr_1pct": evaluation.recall_at_fpr(y, s, 0.01),
        "recall_at_threshold": float(np.mean(s[y == 1] >= thr)),
    }
