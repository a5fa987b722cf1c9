"""Validation protocols that predict the field: the folds, the per-fold metrics, and a whole protocol run.

Every fold holds out one *unit* (a firing position, a whole source, a gun model) with all its clips, plus one
fold of the pooled "clean" negatives (split_units that hold no gunshot) so a 1 % false-positive rate is measured
on hundreds of negatives. Nothing sharing a split_unit with the test set trains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from core import calibration

STREET_SOURCE = "shotspotter_pgh"
KAGGLE_SOURCE = "kaggle_gunshot"
PROTOCOLS = ("firing_position", "source", "gun_model", "cv")


class Rec(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def split_unit(self) -> str: ...


@dataclass(frozen=True)
class Fold:
    protocol: str
    name: str
    train: np.ndarray
    test: np.ndarray
    held: np.ndarray  # the held-out unit (subset of test)


def source_family(source: str) -> str:
    """elp_pnnn_other -> elp_pnnn, elp_ecoguns_bg -> elp_ecoguns, belize_katsis_gui -> belize_katsis."""
    for suffix in ("_other", "_bg", "_gui"):
        if source.endswith(suffix):
            return source[: -len(suffix)]
    return source


def _positive(r: Rec) -> bool:
    return r.label == "gunshot"


def negative_folds(records: Sequence[Rec], n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id (0..n-1) of each negative whose split_unit holds no gunshot; -1 for everything else."""
    units_with_shots = {r.split_unit for r in records if _positive(r)}
    pool = [i for i, r in enumerate(records) if not _positive(r) and r.split_unit not in units_with_shots]
    out = np.full(len(records), -1, dtype=np.int64)
    if not pool:
        return out
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    strata = [records[i].source for i in pool]
    groups = [records[i].split_unit for i in pool]
    for k, (_, te) in enumerate(splitter.split(np.zeros(len(pool)), strata, groups)):
        out[np.asarray(pool)[te]] = k
    return out


def _fold(protocol: str, name: str, records: Sequence[Rec], held: np.ndarray, neg_fold: np.ndarray, k: int) -> Fold:
    n_folds = int(neg_fold.max()) + 1 if (neg_fold >= 0).any() else 1
    extra = np.flatnonzero(neg_fold == k % n_folds)
    test = np.union1d(held, extra).astype(np.int64)
    test_set = set(test.tolist())
    test_units = {records[i].split_unit for i in test}
    keep = [i for i in range(len(records)) if i not in test_set and records[i].split_unit not in test_units]
    train = np.array(keep, dtype=np.int64)
    return Fold(protocol, name, train, test, np.sort(held).astype(np.int64))


def firing_position_folds(records: Sequence[Rec], neg_fold: np.ndarray) -> list[Fold]:
    units = sorted({r.split_unit for r in records if r.source == STREET_SOURCE})
    return [
        _fold("firing_position", u.split(":")[-1], records,
              np.array([i for i, r in enumerate(records) if r.split_unit == u]), neg_fold, k)
        for k, u in enumerate(units)
    ]  # fmt: skip


def source_folds(records: Sequence[Rec], neg_fold: np.ndarray) -> list[Fold]:
    fams = sorted({source_family(r.source) for r in records if _positive(r)})
    return [
        _fold("source", f, records,
              np.array([i for i, r in enumerate(records) if source_family(r.source) == f]), neg_fold, k)
        for k, f in enumerate(fams)
    ]  # fmt: skip


def gun_model_folds(records: Sequence[Rec], neg_fold: np.ndarray) -> list[Fold]:
    guns = sorted({r.category for r in records if r.source == KAGGLE_SOURCE and _positive(r)})
    return [
        _fold("gun_model", g, records,
              np.array([i for i, r in enumerate(records) if r.source == KAGGLE_SOURCE and r.category == g]),
              neg_fold, k)
        for k, g in enumerate(guns)
    ]  # fmt: skip


def cv_folds(records: Sequence[Rec], n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Grouped, source-stratified k-fold over everything: out-of-fold scores for thresholds and calibration."""
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    strata = [f"{r.label}:{source_family(r.source)}" for r in records]
    groups = [r.split_unit for r in records]
    return [
        Fold("cv", f"cv{k}", np.sort(tr), np.sort(te), np.sort(te))
        for k, (tr, te) in enumerate(splitter.split(np.zeros(len(records)), strata, groups))
    ]


def folds_for(protocol: str, records: Sequence[Rec], *, seed: int = 0) -> list[Fold]:
    neg = negative_folds(records, seed=seed)
    if protocol == "firing_position":
        return firing_position_folds(records, neg)
    if protocol == "source":
        return source_folds(records, neg)
    if protocol == "gun_model":
        return gun_model_folds(records, neg)
    if protocol == "cv":
        return cv_folds(records, seed=seed)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")


# ---------------------------------------------------------------- metrics


def fold_metrics(
    records: Sequence[Rec], fold: Fold, scores: np.ndarray, thresholds: dict[str, float] | None = None
) -> dict[str, Any]:
    """AUC and recall at <= 1 % FPR of one fold's test clips (scores in fold.test order); with thresholds,
    recall (all, held-out unit, per gunshot source) and FPR at each named threshold."""
    y = np.array([_positive(records[i]) for i in fold.test])
    s = np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {
        "fold": fold.name, "n_test": int(fold.test.size), "n_pos": int(y.sum()), "n_neg": int((~y).sum()),
    }  # fmt: skip
    if y.any() and (~y).any():
        out["auc"] = float(roc_auc_score(y, s))
        thr = calibration.threshold_for_fpr(s[~y], 0.01)
        out["recall_at_fpr1"] = float(np.mean(s[y] >= thr))
    held = np.isin(fold.test, fold.held)
    for name, t in (thresholds or {}).items():
        per_source: dict[str, float] = {}
        for src in sorted({source_family(records[i].source) for i, yy in zip(fold.test, y, strict=True) if yy}):
            m = y & np.array([source_family(records[i].source) == src for i in fold.test])
            per_source[src] = float(np.mean(s[m] >= t))
        out[name] = {
            "threshold": t,
            "recall": float(np.mean(s[y] >= t)) if y.any() else None,
            "held_recall": float(np.mean(s[y & held] >= t)) if (y & held).any() else None,
            "fpr": float(np.mean(s[~y] >= t)) if (~y).any() else None,
            "recall_by_source": per_source,
        }
    return out


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Worst and mean fold of each threshold-free metric (targets hold per fold, so the worst one counts)."""
    out: dict[str, Any] = {}
    for key in ("auc", "recall_at_fpr1"):
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = {"min": min(values), "mean": float(np.mean(values)), "folds": len(values)} if values else None
    return out


def alarms_per_hour(
    times: np.ndarray, scores: np.ndarray, threshold: float, hours: float, refractory_s: float = 5.0
) -> float:
    """Alarms (positive windows or captures, merged within refractory_s) per hour of streamed background."""
    hits = np.asarray(times)[np.asarray(scores) >= threshold]
    return calibration.count_alarms(hits, refractory_s) / hours if hours else 0.0


# ---------------------------------------------------------------- a whole protocol run


Capture = Callable[[np.ndarray, int], list[tuple[float, np.ndarray]]]


def stream_scores(
    classifier: Any, stream: np.ndarray, sr: int, capture: Capture | None
) -> dict[str, list[tuple[float, float]]]:
    """A held-out background stream scored as a device streams it: every window of its 10-s uploads ("raw"),
    and, given the device agent's capture (onset time, clip) function, each triggered clip ("trigger")."""
    from core import evaluation

    out: dict[str, list[tuple[float, float]]] = {"raw": evaluation.stream_windows(classifier, stream, sr)}
    if capture is not None:
        out["trigger"] = [
            (t, float(classifier.classify_waveform(clip, sr, threshold=1.0).score)) for t, clip in capture(stream, sr)
        ]
    return out


def run_protocol(
    protocol: str,
    records: Sequence[Any],
    waves: list[np.ndarray],
    *,
    fit: Callable[[np.ndarray, np.ndarray, str], tuple[Any, np.ndarray]],
    sample_rate: int,
    capture: Capture | None = None,
    seed: int = 0,
    only: Sequence[str] = (),
    check_clips: Sequence[tuple[np.ndarray, int]] = (),
) -> dict[str, Any]:
    """Train on each fold's training clips (``fit(train, test, name) -> (classifier, test clip scores)``), score
    its held-out clips and its held-out background streamed, and collect everything for thresholds.
    ``only`` names the folds to run (the others are skipped); empty runs every fold. Each fold's classifier
    also scores ``check_clips`` ((waveform, sample rate), e.g. the issue's three noise bursts): "check_scores"."""
    from core import evaluation

    folds = folds_for(protocol, records, seed=seed)
    if only:
        folds = [f for f in folds if f.name in only]
    rows, held_idx, held_scores, streams, check_scores = [], [], [], {}, {}
    for fold in folds:
        classifier, scores = fit(fold.train, fold.test, f"{protocol} {fold.name}")
        if check_clips:
            check_scores[fold.name] = [
                float(classifier.classify_waveform(y, sr, threshold=1.0).score) for y, sr in check_clips
            ]
        rows.append(fold_metrics(records, fold, scores))
        held_idx += fold.test.tolist()
        held_scores += np.asarray(scores, dtype=np.float64).tolist()
        negatives = [waves[i] for i in fold.test if records[i].label != "gunshot"]
        stream = evaluation.build_stream(negatives, sample_rate)
        streams[fold.name] = {
            "hours": stream.size / sample_rate / 3600,
            **stream_scores(classifier, stream, sample_rate, capture),
        }
    out = {"protocol": protocol, "folds": rows, "summary": summarise(rows), "held_out": {"index": held_idx,
           "scores": held_scores}, "streams": streams}  # fmt: skip
    if check_clips:
        out["check_scores"] = check_scores
    return out


def apply_operating_points(
    result: dict[str, Any], records: Sequence[Any], thresholds: dict[str, float], *, seed: int = 0
) -> dict[str, Any]:
    """Per-fold recall (per source) and FPR at the named thresholds, and false alarms per hour raw and behind
    the trigger, for a run_protocol result whose held-out scores are on the thresholds' scale."""
    folds = {f.name: f for f in folds_for(result["protocol"], records, seed=seed)}
    by_index = dict(zip(result["held_out"]["index"], result["held_out"]["scores"], strict=True))
    rows = []
    for row in result["folds"]:
        fold = folds[row["fold"]]
        scores = np.array([by_index[int(i)] for i in fold.test])
        rows.append(fold_metrics(records, fold, scores, thresholds))
        stream = result["streams"][row["fold"]]
        rows[-1]["stream_hours"] = stream["hours"]
        if "trigger" in stream:
            rows[-1]["captures"] = len(stream["trigger"])
        for name, t in thresholds.items():
            for kind in ("raw", "trigger"):
                if kind in stream:
                    pairs = np.array(stream[kind], dtype=np.float64).reshape(-1, 2)
                    rows[-1][name][f"alarms_per_hour_{kind}"] = alarms_per_hour(
                        pairs[:, 0], pairs[:, 1], t, stream["hours"]
                    )
    return {**result, "folds": rows}
