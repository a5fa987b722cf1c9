"""Training data: the manifest's clips, the group-aware split, the leave-one-gun-model-out folds, decoding."""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from core import audio, evaluation, features
from core.features import FeatureParams

POSITIVE = "gunshot"
KAGGLE_SOURCE = "kaggle_gunshot"
GUN_MODELS = ("ak12", "ak47", "desert_eagle_pistol", "m16", "m249", "mg42")
# Impulsive sounds a gunshot detector must not fire on; they are rare in the data, so oversample them.
HARD_NEGATIVES = frozenset(
    {
        "door_slam", "knock", "door_knock", "clapping", "fireworks", "firecracker", "explosion",
        "metal_impact", "thunder", "keys_drop", "drawer", "window_slam", "wood_impact", "ball_impact",
        "car_door", "crash", "desk_impact", "drum_hit", "dumpster_lid", "pop", "dog_bark", "jackhammer",
        "drilling",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ClipRecord:
    file: str
    path: Path
    label: str
    category: str
    source: str
    group: str
    split_unit: str
    duration_s: float

    @property
    def positive(self) -> bool:
        return self.label == POSITIVE


def load_manifest(path: str | Path) -> list[ClipRecord]:
    rows = evaluation.read_manifest(path)
    return [
        ClipRecord(
            file=r["file"],
            path=Path(r["path"]),
            label=r["label"],
            category=r["category"],
            source=r["source"],
            group=r["group"],
            split_unit=r.get("split_unit") or r["group"],
            duration_s=float(r.get("duration_s") or 0.0),
        )
        for r in rows
    ]


def split_train_val(records: list[ClipRecord], *, seed: int, n_folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Group-aware (split_unit), label+source-stratified split; one fold of n_folds becomes validation.

    Of the seeded folds, the first whose validation holds both Kaggle and field gunshots is used,
    so validation always measures both kinds of positives.
    """
    strata = [f"{r.label}:{r.source}" for r in records]
    groups = [r.split_unit for r in records]
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(records)), strata, groups))
    for train_idx, val_idx in folds:
        val = [records[i] for i in val_idx]
        if any(r.positive and r.source == KAGGLE_SOURCE for r in val) and any(
            r.positive and r.source != KAGGLE_SOURCE for r in val
        ):
            return np.sort(train_idx), np.sort(val_idx)
    train_idx, val_idx = folds[0]
    return np.sort(train_idx), np.sort(val_idx)


def logo_folds(
    records: list[ClipRecord], train_idx: np.ndarray, val_idx: np.ndarray
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Leave-one-gun-model-out: hold out every clip of one Kaggle gun model plus the non-Kaggle validation."""
    folds = []
    for gun in GUN_MODELS:
        held = {i for i, r in enumerate(records) if r.source == KAGGLE_SOURCE and r.category == gun}
        if not held:
            continue
        base_val = {int(i) for i in val_idx if records[i].source != KAGGLE_SOURCE}
        val = np.array(sorted(held | base_val))
        train = np.array(sorted(i for i in range(len(records)) if i not in held and i not in base_val))
        folds.append((gun, train, val))
    return folds


def _cache_key(manifest: Path, params: FeatureParams) -> str:
    h = hashlib.sha256(manifest.read_bytes())
    h.update(str(params.sample_rate).encode())
    return h.hexdigest()[:16]


def load_waves(
    records: list[ClipRecord], params: FeatureParams, *, cache_dir: Path | None, manifest: Path
) -> list[np.ndarray]:
    """Decode every clip once to mono float32 at params.sample_rate (pickled cache: ~0.5 GB per data set)."""
    cache = cache_dir / f"waves-{_cache_key(manifest, params)}.pkl" if cache_dir else None
    if cache and cache.exists():
        with cache.open("rb") as f:
            return pickle.load(f)
    waves = []
    for r in tqdm(records, desc="decode", unit="clip"):
        y, sr = audio.decode(r.path)
        waves.append(features.resample(y, sr, params.sample_rate))
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part")
        with tmp.open("wb") as f:
            pickle.dump(waves, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)
    return waves


def write_split_manifest(path: Path, records: list[ClipRecord], splits: dict[str, np.ndarray]) -> None:
    """A copy of the manifest with absolute paths and split = train/val, for evaluation.evaluate(split=...)."""
    names = {int(i): name for name, idx in splits.items() for i in idx}
    fields = ["file", "label", "category", "source", "group", "split_unit", "duration_s", "split"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for i, r in enumerate(records):
            if i in names:
                writer.writerow(
                    {
                        "file": str(r.path), "label": r.label, "category": r.category, "source": r.source,
                        "group": r.group, "split_unit": r.split_unit, "duration_s": r.duration_s,
                        "split": names[i],
                    }
                )  # fmt: skip


def limited(records: list[ClipRecord], limit: int, seed: int) -> list[ClipRecord]:
    """A small label-balanced subset (smoke tests, quick experiments)."""
    rng = np.random.default_rng(seed)
    pos = [r for r in records if r.positive]
    neg = [r for r in records if not r.positive]
    k = max(1, limit // 2)

    def pick(rs: list[ClipRecord]) -> list[ClipRecord]:
        return [rs[i] for i in sorted(rng.choice(len(rs), min(k, len(rs)), replace=False))]

    return pick(pos) + pick(neg)


def data_summary(records: list[ClipRecord], train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
    def count(idx: np.ndarray) -> dict[str, Any]:
        rows = [records[i] for i in idx]
        by_source: dict[str, dict[str, int]] = {}
        for r in rows:
            by_source.setdefault(r.source, {"gunshot": 0, "other": 0})[r.label if r.positive else "other"] += 1
        return {
            "clips": len(rows),
            "gunshot": sum(r.positive for r in rows),
            "minutes": round(sum(r.duration_s for r in rows) / 60, 1),
            "split_units": len({r.split_unit for r in rows}),
            "by_source": by_source,
            "gun_models": sorted({r.category for r in rows if r.source == KAGGLE_SOURCE}),
        }

    return {"train": count(train_idx), "val": count(val_idx)}
