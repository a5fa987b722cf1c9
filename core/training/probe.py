"""A linear probe on the frozen AudioSet embedding: hard-negative mining before fine-tuning, and the second
member of the shipped ensemble (``MN04Ensemble``).

The probe sees every production window of every training negative, the loudest window of every training
gunshot, and K field-augmented windows per clip (the same augmentation as fine-tuning, backgrounds drawn from
the training clips only). A first fit finds the negatives it confuses most (jackhammers, door slams, impacts,
fireworks...); those weigh 5x in a second fit and are drawn 5x as often while fine-tuning. About 10 minutes
of one CPU core for the whole data set; scoring every negative with the network being trained would cost as
much as a few hundred training steps.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core import features
from core.features import FeatureParams
from core.networks import MobileNetV3
from core.training.augment import AugmentConfig, WindowSampler
from core.training.data import ClipRecord
from core.training.synthetic import synthetic_negative

SYNTHETIC_CLIP_S = 3.0  # a generated probe negative: long enough for a few bursts, windowed like any clip

TOP_FRACTION = 0.1  # the highest-scoring tenth of the training negatives...
FACTOR = 5.0  # ...weighs (and is drawn) this many times as much
AUGMENTED_PER_POSITIVE = 6
AUGMENTED_PER_NEGATIVE = 3
C = 0.5  # inverse L2 strength of the logistic regression on standardised embeddings


@dataclass
class Probe:
    weight: np.ndarray  # (384,) on the raw embedding (the standardisation is folded in)
    bias: float
    hard_negatives: dict[int, float] = field(default_factory=dict)  # record index -> draw factor


def _backbone(pretrained: str | Path) -> torch.nn.Module:
    net = MobileNetV3()
    net.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
    return net.features.eval()


def _embed(backbone: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return backbone(torch.from_numpy(np.ascontiguousarray(batch))).mean(dim=(2, 3)).numpy()


def _first_window(x: np.ndarray, params: FeatureParams) -> np.ndarray:
    return features.frame_windows(features.log_mel(x, params), params)[0][:1]


@dataclass
class ClipEmbeddings:
    """The frozen embedding of every production window of one clip, and which window is the loudest."""

    windows: np.ndarray  # (n_windows, 384) float32
    loudest: int


def _clip_embedding(backbone: torch.nn.Module, wave: np.ndarray, params: FeatureParams) -> ClipEmbeddings:
    batch = features.windows(wave, params.sample_rate, params)
    return ClipEmbeddings(_embed(backbone, batch), int(np.argmax(batch.max(axis=(1, 2, 3)))))


def _embedding_cache_key(records: list[ClipRecord], params: FeatureParams, pretrained: str | Path) -> str:
    h = hashlib.sha256("\n".join(str(r.path) for r in records).encode())
    h.update(repr(params.to_dict()).encode())
    h.update(Path(pretrained).read_bytes())
    return h.hexdigest()[:16]


def clip_embeddings(
    records: list[ClipRecord], waves: list[np.ndarray], *, params: FeatureParams, pretrained: str | Path,
    cache_dir: Path,
) -> list[ClipEmbeddings]:  # fmt: skip
    """The unaugmented frozen embeddings of every clip of the data set, computed once and cached in cache_dir.

    They depend on the clip, the features and the checkpoint only, never on a fold, so a validation protocol
    fits every fold's probe from the same cache instead of re-embedding the whole training set per fold.
    """
    cache = Path(cache_dir) / f"embeddings-{_embedding_cache_key(records, params, pretrained)}.npz"
    if cache.exists():
        with np.load(cache) as z:
            bounds = np.cumsum(z["counts"])[:-1]
            return [
                ClipEmbeddings(w, int(k))
                for w, k in zip(np.split(z["windows"], bounds), z["loudest"], strict=True)
            ]  # fmt: skip
    backbone = _backbone(pretrained)
    out = [_clip_embedding(backbone, w, params) for w in tqdm(waves, desc="probe: embed all clips", unit="clip")]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".part.npz")
    np.savez(
        tmp, windows=np.concatenate([e.windows for e in out]), counts=np.array([len(e.windows) for e in out]),
        loudest=np.array([e.loudest for e in out]),
    )  # fmt: skip
    os.replace(tmp, cache)
    return out


def fit_probe(
    records: list[ClipRecord], waves: list[np.ndarray], train_idx: np.ndarray, *, params: FeatureParams,
    config: AugmentConfig, pretrained: str | Path, seed: int = 0, augmented: bool = True,
    cache_dir: Path | None = None, c: float = C,
) -> Probe:  # fmt: skip
    """Fit the probe on the training clips (see the module docstring); also return the mined hard negatives.
    With cache_dir the unaugmented embeddings come from (and go to) the cache of ``clip_embeddings``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    idx = np.asarray(train_idx, dtype=np.int64)
    labels = np.array([records[i].positive for i in idx])
    backbone = _backbone(pretrained)
    xs, ys = [], []
    if augmented:
        sampler = WindowSampler(waves, records, idx, params, config, np.random.default_rng(seed + 1))
        for i, positive in tqdm(list(zip(idx, labels, strict=True)), desc="probe: augmented", unit="clip", leave=False):
            k = AUGMENTED_PER_POSITIVE if positive else AUGMENTED_PER_NEGATIVE
            wins = [_first_window(sampler.window(int(i), bool(positive)), params) for _ in range(k)]
            xs.append(_embed(backbone, np.concatenate(wins)))
            ys.append(np.full(k, float(positive)))
    cached = (
        clip_embeddings(records, waves, params=params, pretrained=pretrained, cache_dir=cache_dir)
        if cache_dir is not None
        else None
    )
    neg_rows: list[np.ndarray] = []
    neg_owner: list[int] = []
    for i, positive in tqdm(list(zip(idx, labels, strict=True)), desc="probe: clips", unit="clip", leave=False):
        e = cached[i] if cached is not None else _clip_embedding(backbone, waves[i], params)
        emb = e.windows
        if positive:  # the loudest window holds the shot; quiet lead-ins are not "gunshot"
            xs.append(emb[[e.loudest]])
            ys.append(np.ones(1))
        else:
            neg_rows.append(emb)
            neg_owner += [int(i)] * len(emb)
    if config.synthetic_probe_clips:
        # Every production window of each generated clip (core.training.synthetic), like a real negative; its
        # own seed, so the rest of the probe does not change with the count. Owner -1: never a mined clip.
        rng = np.random.default_rng(seed + 2)
        for _ in tqdm(range(config.synthetic_probe_clips), desc="probe: synthetic", unit="clip", leave=False):
            y = synthetic_negative(SYNTHETIC_CLIP_S, params.sample_rate, rng)[0]
            neg_rows.append(_embed(backbone, features.windows(y, params.sample_rate, params)))
            neg_owner += [-1] * len(neg_rows[-1])
    x_neg = np.concatenate(neg_rows) if neg_rows else np.zeros((0, 384), np.float32)
    x = np.concatenate([*xs, x_neg])
    y = np.concatenate([*ys, np.zeros(len(x_neg))])
    if y.all() or not y.any():
        raise ValueError("the probe needs gunshots and other sounds in the training clips")
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    model.fit(scaler.transform(x), y)
    weights = np.ones(len(y))
    hard: dict[int, float] = {}
    if len(x_neg):
        s = model.predict_proba(scaler.transform(x_neg))[:, 1]
        confusing = s >= np.quantile(s, 1 - TOP_FRACTION)
        weights[len(y) - len(x_neg) :] += (FACTOR - 1) * confusing
        model.fit(scaler.transform(x), y, sample_weight=weights)
        owners = np.array(neg_owner)
        clip_max = {int(o): float(s[owners == o].max()) for o in np.unique(owners) if o >= 0}
        if clip_max:
            cut = np.quantile(list(clip_max.values()), 1 - TOP_FRACTION)
            hard = {o: FACTOR for o, v in clip_max.items() if v >= cut}
    w = model.coef_[0] / scaler.scale_
    b = float(model.intercept_[0] - np.sum(model.coef_[0] * scaler.mean_ / scaler.scale_))
    return Probe(weight=w.astype(np.float32), bias=b, hard_negatives=hard)
