"""Leave-one-gun-model-out: does the detector recognise a gun model it never heard?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core import evaluation
from core.features import FeatureParams
from core.training.augment import AugmentConfig
from core.training.data import KAGGLE_SOURCE, ClipRecord, logo_folds
from core.training.loop import train_one
from core.training.settings import LoopSettings


def run_logo(
    records: list[ClipRecord],
    waves: list[np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    settings: LoopSettings,
    config: AugmentConfig,
    seed: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Train one model per held-out Kaggle gun model; threshold from that fold's negatives at target FPR."""
    results: dict[str, Any] = {}
    for gun, tr, va in logo_folds(records, train_idx, val_idx):
        _, _, scores = train_one(
            records, waves, tr, va, params=params, settings=settings, config=config, seed=seed,
            desc=f"logo {gun}",
        )  # fmt: skip
        y = np.array([records[i].positive for i in va], dtype=np.int64)
        held = np.array([records[i].source == KAGGLE_SOURCE and records[i].category == gun for i in va])
        thr = evaluation.threshold_for_fpr(scores[y == 0], settings.target_fpr)
        results[gun] = {
            "auc": evaluation.auc(y, scores),
            "recall_at_fpr_1pct": evaluation.recall_at_fpr(y, scores, 0.01),
            "threshold": thr,
            "held_out_recall": float(np.mean(scores[held] >= thr)),
            "held_out_n": int(held.sum()),
            "fpr": float(np.mean(scores[y == 0] >= thr)),
        }
        tqdm.write(f"LOGO {gun}: {json.dumps(results[gun])}")
        (out_dir / "logo.json").write_text(json.dumps(results, indent=2))
    return results
