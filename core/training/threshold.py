"""Choosing the shipped decision threshold on validation: by clip false-positive rate and by streamed alarm rate."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from core import evaluation
from core.classifier import Classifier
from core.features import FeatureParams


def choose_threshold(
    network: nn.Module,
    params: FeatureParams,
    architecture: str,
    waves: list[np.ndarray],
    val_idx: np.ndarray,
    y_val: np.ndarray,
    val_scores: np.ndarray,
    *,
    target_fpr: float,
    max_alarms_per_hour: float,
    rule: str = "clip_fpr",
) -> dict[str, Any]:
    """Threshold candidates on validation: clip FPR <= target_fpr, and <= max_alarms_per_hour of streamed negatives.

    rule "clip_fpr" ships the first, "stricter" the higher of the two. Both are reported, because the
    validation stream is short (minutes) and dense in bangs, so its alarm-rate threshold hinges on the
    single highest-scoring window.
    """
    if rule not in {"clip_fpr", "stricter"}:
        raise ValueError(f"unknown threshold rule {rule!r}")
    lowest = evaluation.threshold_for_fpr(val_scores[y_val == 0], target_fpr)
    # Validation recall is flat from that lowest admissible threshold up to the next gunshot's score, so
    # sit halfway: same validation recall, more margin against the negatives just below.
    above = val_scores[(y_val == 1) & (val_scores >= lowest)]
    by_fpr = float((lowest + above.min()) / 2) if above.size else lowest
    clf = Classifier(network, architecture=architecture, params=params, threshold=by_fpr)
    negatives = [waves[i] for i, y in zip(val_idx, y_val, strict=True) if not y]
    stream = evaluation.build_stream(negatives, params.sample_rate)
    hours = stream.size / params.sample_rate / 3600
    windows = evaluation.stream_windows(clf, stream, params.sample_rate)
    by_rate = evaluation.threshold_for_alarm_rate(windows, hours, max_alarms_per_hour)
    result: dict[str, Any] = {
        "rule": rule,
        "lowest_by_clip_fpr": lowest,
        "by_clip_fpr": by_fpr,
        "by_alarm_rate": by_rate,
        "max_alarms_per_hour": max_alarms_per_hour,
        "stream_hours": hours,
        "threshold": by_fpr if rule == "clip_fpr" else max(by_fpr, by_rate),
    }
    positives = val_scores[y_val == 1]
    for key in ("by_clip_fpr", "by_alarm_rate", "threshold"):
        if result[key] is not None:
            result[f"recall_{key}"] = float(np.mean(positives >= result[key])) if positives.size else None
    return result
