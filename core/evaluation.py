"""Evaluation of a Classifier on a manifest, exactly as production classifies clips.

``file`` paths in a manifest are relative to the manifest's
folder (absolute paths also work).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from core import audio, features
from core.classifier import Classifier, limit_threads

POSITIVE = "gunshot"
STREAM_CHUNK_S = 10.0  # devices upload fixed-length recordings; each is preprocessed on its own
REFRACTORY_S = 5.0  # positive windows closer than this to the previous alarm belong to the same event
CROSSFADE_S = 0.01  # joins between unrelated clips must not create an artificial click


def read_manifest(path: str | Path, *, split: str | None = None) -> list[dict[str, str]]:
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    for r in rows:
        r["path"] = str((path.parent / r["file"]).resolve())
    return rows


def auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    y = np.asarray(y_true)
    if y.min(initial=1) == y.max(initial=0):
        return None  # undefined with one class
    return float(roc_auc_score(y, scores))


def average_precision(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    y = np.asarray(y_true)
    if not y.any():
        return None
    return float(average_precision_score(y, scores))


def recall_at_fpr(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, max_fpr: float = 0.01
) -> float | None:
    """Best recall over all thresholds whose false positive rate is <= max_fpr."""
    y = np.asarray(y_true)
    if y.min(initial=1) == y.max(initial=0):
        return None
    fpr, tpr, _ = roc_curve(y, scores)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_for_fpr(negative_scores: Sequence[float] | np.ndarray, max_fpr: float) -> float:
    """Lowest threshold (score >= threshold is positive) whose FPR on these negatives is <= max_fpr."""
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(max_fpr * len(neg) + 1e-9))  # how many negatives may score above
    if len(neg) == 0:
        return 0.5
    if allowed >= len(neg):
        return float(neg[-1])
    # Just above the (allowed+1)-th highest negative score.
    return float(np.nextafter(neg[allowed], np.inf))


def rates(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float) -> dict[str, Any]:
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "recall": tp / (tp + fn) if tp + fn else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
    }


def event_times(times_s: Iterable[float], refractory_s: float = REFRACTORY_S) -> list[float]:
    """Alarm times from positive-window times: a window within the refractory period of the last alarm
    belongs to that alarm."""
    events: list[float] = []
    for t in sorted(times_s):
        if not events or t - events[-1] >= refractory_s:
            events.append(t)
    return events


def count_events(times_s: Iterable[float], refractory_s: float = REFRACTORY_S) -> int:
    return len(event_times(times_s, refractory_s))


def build_stream(waves: Iterable[np.ndarray], sample_rate: int) -> np.ndarray:
    fade = max(1, int(CROSSFADE_S * sample_rate))
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    pieces: list[np.ndarray] = []
    for w in waves:
        w = w.astype(np.float32, copy=True)
        if w.size > 2 * fade:
            w[:fade] *= ramp
            w[-fade:] *= ramp[::-1]
        pieces.append(w)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def stream_windows(
    classifier: Classifier, stream: np.ndarray, sr: int, *, chunk_s: float = STREAM_CHUNK_S
) -> list[tuple[float, float]]:
    """(time in the stream, score) of every production window over a stream cut into device-sized chunks."""
    chunk = int(chunk_s * sr)
    windows: list[tuple[float, float]] = []
    for start in range(0, len(stream), chunk):
        piece = stream[start : start + chunk]
        if piece.size < sr // 10 or float(np.max(np.abs(piece))) <= 1e-6:
            continue
        result = classifier.classify_waveform(piece, sr, threshold=1.0)
        windows += [(start / sr + w.offset_s, w.score) for w in result.windows]
    return windows


def threshold_for_alarm_rate(
    windows: list[tuple[float, float]],
    hours: float,
    max_per_hour: float,
    refractory_s: float = REFRACTORY_S,
) -> float:
    """Lowest threshold (scanning down from the top score) keeping stream alarms <= max_per_hour."""
    allowed = int(np.floor(max_per_hour * hours + 1e-9))
    candidates = sorted({s for _, s in windows}, reverse=True)
    threshold = float(np.nextafter(candidates[0], np.inf)) if candidates else 0.5
    for c in candidates:
        if count_events([t for t, s in windows if s >= c], refractory_s) > allowed:
            break
        threshold = c
    return float(threshold)


def false_alarms_per_hour(
    classifier: Classifier,
    stream: np.ndarray,
    sr: int,
    *,
    threshold: float | None = None,
    chunk_s: float = STREAM_CHUNK_S,
    refractory_s: float = REFRACTORY_S,
) -> dict[str, Any]:
    """Run production classification over a continuous non-gunshot stream cut into device-sized chunks."""
    thr = classifier.threshold if threshold is None else threshold
    hits = [t for t, s in stream_windows(classifier, stream, sr, chunk_s=chunk_s) if s >= thr]
    hours = len(stream) / sr / 3600
    alarms = event_times(hits, refractory_s)
    return {
        "events": len(alarms),
        "hours": hours,
        "per_hour": len(alarms) / hours if hours else 0.0,
        "event_times_s": [round(t, 2) for t in alarms],
    }


def evaluate(
    manifest_path: str | Path,
    *,
    classifier: Classifier,
    split: str | None = None,
    threshold: float | None = None,
    progress: bool = False,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Classify every clip like production and compute the detection metrics (see limit_threads for threads)."""
    with limit_threads(threads):
        return _evaluate(manifest_path, classifier=classifier, split=split, threshold=threshold, progress=progress)


def _evaluate(
    manifest_path: str | Path,
    *,
    classifier: Classifier,
    split: str | None,
    threshold: float | None,
    progress: bool,
) -> dict[str, Any]:
    rows = read_manifest(manifest_path, split=split)
    if not rows:
        raise ValueError(f"no clips in {manifest_path} (split={split!r})")
    thr = classifier.threshold if threshold is None else float(threshold)
    iterator: Iterable[dict[str, str]] = rows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(rows, desc="evaluate", unit="clip")
    scores, labels, errors, other_waves = [], [], [], []
    kept_rows = []
    for r in iterator:
        try:
            y, sr = audio.decode(r["path"])
            result = classifier.classify_waveform(y, sr, threshold=thr)
        except audio.AudioError as exc:
            errors.append({"file": r["file"], "code": exc.code, "error": str(exc)})
            continue
        kept_rows.append(r)
        scores.append(result.score)
        labels.append(int(r["label"] == POSITIVE))
        if r["label"] != POSITIVE:
            other_waves.append(features.resample(y, sr, classifier.params.sample_rate))
    y_true, s = np.asarray(labels), np.asarray(scores)
    summary = rates(y_true, s, thr)
    stream = build_stream(other_waves, classifier.params.sample_rate)
    other_files = [r["file"] for r in kept_rows if r["label"] != POSITIVE]
    starts = np.cumsum([0] + [w.size for w in other_waves])[:-1] / classifier.params.sample_rate
    alarms = (
        false_alarms_per_hour(classifier, stream, classifier.params.sample_rate, threshold=thr)
        if stream.size
        else {"events": 0, "hours": 0.0, "per_hour": None, "event_times_s": []}
    )
    return {
        "n": len(kept_rows),
        "n_gunshot": int(y_true.sum()),
        "n_other": int(len(y_true) - y_true.sum()),
        "auc": auc(y_true, s),
        "ap": average_precision(y_true, s),
        "threshold": thr,
        "recall": summary["recall"],
        "precision": summary["precision"],
        "fpr": summary["fpr"],
        "confusion": {k: summary[k] for k in ("tp", "fp", "fn", "tn")},
        "recall_at_fpr_1pct": recall_at_fpr(y_true, s, 0.01),
        "false_alarms_per_hour": alarms["per_hour"],
        "false_alarm_stream": {
            **alarms,
            "event_files": [
                other_files[int(np.searchsorted(starts, t, side="right")) - 1] for t in alarms["event_times_s"]
            ],
        },
        "per_source_recall": _grouped(kept_rows, s, thr, positive=True, key="source"),
        "per_category_fpr": _grouped(kept_rows, s, thr, positive=False, key="category"),
        "per_category_recall": _grouped(kept_rows, s, thr, positive=True, key="category"),
        "errors": errors,
        "scores": [
            {"file": r["file"], "label": r["label"], "score": float(x)} for r, x in zip(kept_rows, s, strict=True)
        ],
    }


def _grouped(
    rows: list[dict[str, str]], scores: np.ndarray, thr: float, *, positive: bool, key: str
) -> dict[str, dict[str, float | int]]:
    """Fraction flagged as gunshot per source/category, over positives (recall) or negatives (FPR)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for r, x in zip(rows, scores, strict=True):
        if (r["label"] == POSITIVE) == positive:
            hits[r[key]].append(bool(x >= thr))
    return {k: {"rate": float(np.mean(v)), "n": len(v)} for k, v in sorted(hits.items())}
