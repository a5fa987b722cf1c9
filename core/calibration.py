"""Calibrated scores and named operating points, fitted on held-out (out-of-fold) predictions.

A calibration maps a network's logit z to P(gunshot) = sigmoid(a * z + b) (Platt scaling, a > 0, so the order
of scores never changes); it is stored in the weights file's metadata and applied by the classifier, so a
score of 0.9 means the same thing for every model version. Operating points are thresholds on that calibrated
score, chosen on held-out folds: ``high_recall`` (clip FPR <= 5 %), ``balanced`` (<= 1 %) and
``low_false_alarm`` (<= 0.25 % and <= 1 alarm per hour of background behind the device trigger).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_EPS = 1e-6
OPERATING_POINTS: dict[str, float] = {"high_recall": 0.05, "balanced": 0.01, "low_false_alarm": 0.0025}
DEFAULT_OPERATING_POINT = "balanced"


def logit(p: np.ndarray | Sequence[float] | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def fit_platt(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[int]) -> dict[str, Any]:
    """Fit sigmoid(a * logit(score) + b) to held-out labels; a non-increasing fit falls back to the identity."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels).astype(int)
    if y.min(initial=1) == y.max(initial=0):
        raise ValueError("calibration needs held-out scores of both classes")
    model = LogisticRegression(C=1e6, max_iter=1000).fit(logit(scores)[:, None], y)
    a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
    if a <= 0:
        a, b = 1.0, 0.0
    return {"method": "platt", "a": a, "b": b, "fitted_on": int(y.size), "positives": int(y.sum())}


def apply_to_logits(z: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if calibration:
        z = float(calibration["a"]) * z + float(calibration["b"])
    return 1.0 / (1.0 + np.exp(-z))


def apply(scores: np.ndarray | Sequence[float] | float, calibration: dict[str, Any] | None) -> np.ndarray:
    """Calibrate uncalibrated probabilities (the network's sigmoid)."""
    return apply_to_logits(logit(scores), calibration) if calibration else np.asarray(scores, dtype=np.float64)


def threshold_for_fpr(negative_scores: np.ndarray | Sequence[float], max_fpr: float) -> float:
    """Lowest threshold (score >= threshold is positive) whose FPR on these negatives is <= max_fpr."""
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if neg.size == 0:
        return 0.5
    allowed = int(np.floor(max_fpr * neg.size + 1e-9))
    return float(neg[-1]) if allowed >= neg.size else float(np.nextafter(neg[allowed], np.inf))


def count_alarms(times: np.ndarray | Sequence[float], refractory_s: float) -> int:
    n, last = 0, -np.inf
    for t in np.sort(np.asarray(times, dtype=np.float64)):
        if t - last >= refractory_s:
            n, last = n + 1, t
    return n


def threshold_for_alarm_rate(
    streams: Sequence[tuple[np.ndarray, np.ndarray]], hours: float, max_per_hour: float, refractory_s: float = 5.0
) -> float:
    """Lowest threshold keeping the alarms of these (times, scores) streams at or below max_per_hour."""
    allowed = int(np.floor(max_per_hour * hours + 1e-9))
    pooled = [np.asarray(s, dtype=np.float64) for _, s in streams]
    candidates = np.unique(np.concatenate(pooled)) if pooled else np.zeros(0)
    best = float(np.nextafter(candidates[-1], np.inf)) if candidates.size else 0.5
    for c in candidates[::-1]:
        alarms = sum(count_alarms(np.asarray(t)[np.asarray(s) >= c], refractory_s) for t, s in streams)
        if alarms > allowed:
            break
        best = float(c)
    return best


def operating_points(
    scores: np.ndarray | Sequence[float],
    labels: np.ndarray | Sequence[int],
    *,
    trigger_streams: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    hours: float = 0.0,
    max_alarms_per_hour: float = 1.0,
) -> dict[str, dict[str, float]]:
    """Named thresholds on held-out scores, with the recall and FPR they had there."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    out: dict[str, dict[str, float]] = {}
    for name, fpr in OPERATING_POINTS.items():
        t = threshold_for_fpr(s[~y], fpr)
        if name == "low_false_alarm" and trigger_streams and hours > 0:
            t = max(t, threshold_for_alarm_rate(trigger_streams, hours, max_alarms_per_hour))
        out[name] = {
            "threshold": t,
            "max_clip_fpr": fpr,
            "recall": float(np.mean(s[y] >= t)) if y.any() else 0.0,
            "fpr": float(np.mean(s[~y] >= t)) if (~y).any() else 0.0,
        }
    return out
