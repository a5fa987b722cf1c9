"""One training run end to end: data, fit, threshold, production-path evaluation, weights and model card."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import benchmark, calibration, evaluation, report
from core.classifier import Classifier
from core.networks import count_parameters
from core.training.baseline import run_baseline
from core.training.data import (
    data_summary,
    limited,
    load_manifest,
    load_waves,
    split_train_val,
    write_split_manifest,
)
from core.training.logo import run_logo
from core.training.loop import train_one
from core.training.protocols import Capture, apply_operating_points, folds_for, run_protocol
from core.training.settings import TrainResult, TrainSettings
from core.training.synthetic import new_user_clip
from core.training.threshold import choose_threshold
from core.weights import save_weights


def train(settings: TrainSettings, *, capture: Capture | None = None) -> TrainResult:
    """Train, pick the threshold on validation, evaluate like production, write weights + model card.

    With ``settings.protocols`` the recipe is also trained and scored on every fold of those validation
    protocols; with ``settings.calibrate`` the first protocol's held-out predictions fit the calibration and
    the operating points stored in the weights, and the shipped threshold becomes the "balanced" one.
    ``capture`` (the device agent's trigger, see detection.protocol_capture) adds false alarms behind it.
    """
    t_start = time.perf_counter()
    s = settings
    manifest = Path(s.manifest).resolve()
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params, config, loop = s.params, s.augment, s.loop
    records = load_manifest(manifest)
    if s.limit is not None:
        records = limited(records, s.limit, s.seed)
    waves = load_waves(records, params, cache_dir=Path(s.cache_dir) if s.cache_dir else None, manifest=manifest)
    teacher_waves = _teacher_waves(records, s, manifest)
    train_idx, val_idx = split_train_val(records, seed=s.seed)
    if not s.holdout:
        # Everything trains; the protocols (not this in-sample "validation") say how good the recipe is.
        train_idx = np.arange(len(records))
    log_path = out / "training_log.csv"
    log_path.unlink(missing_ok=True)
    network, history, val_scores = train_one(
        records, waves, train_idx, val_idx, params=params, settings=loop, config=config, seed=s.seed,
        log_path=log_path, teacher_waves=teacher_waves,
    )  # fmt: skip
    y_val = np.array([records[i].positive for i in val_idx], dtype=np.int64)
    thresholds = choose_threshold(
        network, params, s.architecture, waves, val_idx, y_val, val_scores,
        target_fpr=s.target_fpr, max_alarms_per_hour=s.max_alarms_per_hour, rule=s.threshold_rule,
    )  # fmt: skip
    threshold = thresholds["threshold"]
    train_seconds = time.perf_counter() - t_start
    meta = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": s.seed,
        "epochs": s.epochs,
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "parameters": count_parameters(network),
        "torch": torch.__version__,
    }
    if s.distill is not None:
        # The student learnt from a network derived from EfficientAT's MIT-licensed weights: ship the notice.
        meta.update(distilled_from=s.distill.teacher_loop.architecture, license_notice=_efficientat_notice())
    weights_path = out / s.weights_name
    sha = save_weights(
        weights_path, architecture=s.architecture, params=params, threshold=threshold,
        state_dict=network.state_dict(), meta=meta,
    )  # fmt: skip
    split_manifest = out / "split_manifest.csv"
    write_split_manifest(split_manifest, records, {"train": train_idx, "val": val_idx})
    classifier = Classifier.load(weights_path, expected_sha256=sha)
    metrics = evaluation.evaluate(split_manifest, classifier=classifier, split="val", progress=True)
    card: dict[str, Any] = {
        "name": s.weights_name,
        "sha256": sha,
        "architecture": s.architecture,
        "parameters": count_parameters(network),
        "features": params.to_dict(),
        "threshold": threshold,
        "target_fpr": s.target_fpr,
        "threshold_choice": thresholds,
        "training": {
            **asdict(loop),
            "seed": s.seed,
            "seconds": round(train_seconds, 1),
            "augmentation": asdict(config),
            "manifest": str(manifest),
            "manifest_sha256": meta["manifest_sha256"],
        },
        "data": data_summary(records, train_idx, val_idx),
        "validation": _strip_scores(metrics),
        "history": history,
    }
    (out / "val_metrics.json").write_text(json.dumps(metrics, indent=2))
    # Write the card now and again after the optional extras, so a usable card exists early.
    report.write_card(out, card, metrics)
    if s.logo:
        card["logo"] = run_logo(
            records, waves, train_idx, val_idx, params=params, settings=replace(loop, epochs=s.logo_epochs or s.epochs),
            config=config, seed=s.seed, out_dir=out,
        )  # fmt: skip
    if s.baseline:
        card["baseline"] = run_baseline(
            records, waves, train_idx, val_idx, params=params, config=config, seed=s.seed,
            epochs=s.baseline_epochs, steps=s.baseline_steps, threads=s.threads,
        )  # fmt: skip
    if s.speed:
        card["speed"] = benchmark.speed_profile(params, s.architecture, network=network)
    if s.protocols:
        cal, ops = None, None
        card["protocols"] = {}
        labels = np.array([r.positive for r in records], dtype=np.int64)
        for k, name in enumerate(s.protocols):
            fit = _fold_fitter(records, waves, s, teacher_waves)
            result = run_protocol(name, records, waves, fit=fit, sample_rate=params.sample_rate, capture=capture,
                                  seed=s.seed)  # fmt: skip
            if k == 0 and s.calibrate:
                held = np.asarray(result["held_out"]["index"])
                cal = calibration.fit_platt(result["held_out"]["scores"], labels[held])
            if cal is not None:
                result = calibrated_result(result, cal)
            if k == 0 and cal is not None:
                trig = [_pairs(st["trigger"]) for st in result["streams"].values() if "trigger" in st]
                ops = calibration.operating_points(
                    result["held_out"]["scores"], labels[np.asarray(result["held_out"]["index"])],
                    trigger_streams=trig, hours=sum(st["hours"] for st in result["streams"].values()),
                )  # fmt: skip
                threshold = ops[calibration.DEFAULT_OPERATING_POINT]["threshold"]
                meta.update(calibration=cal, operating_points=ops, calibrated_on=name)
                sha = save_weights(
                    weights_path, architecture=s.architecture, params=params, threshold=threshold,
                    state_dict=network.state_dict(), meta=meta,
                )  # fmt: skip
                card.update(sha256=sha, threshold=threshold, calibration=cal, operating_points=ops)
            points = {n: v["threshold"] for n, v in ops.items()} if ops else {"threshold": threshold}
            result = apply_operating_points(result, records, points, seed=s.seed)
            card["protocols"][name] = {k2: v for k2, v in result.items() if k2 not in ("held_out", "streams")}
            (out / f"protocol_{name}.json").write_text(json.dumps(result, default=float))
            report.write_card(out, card, metrics)
    report.write_card(out, card, metrics)
    return TrainResult(out, weights_path, sha, threshold, _strip_scores(metrics), card)


def _pairs(rows: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def calibrated_result(result: dict[str, Any], cal: dict[str, Any]) -> dict[str, Any]:
    """A run_protocol result with every held-out and stream score passed through the calibration."""
    held = dict(result["held_out"])
    held["scores"] = calibration.apply(held["scores"], cal).tolist()
    streams = {
        name: {k: ([(t, float(calibration.apply(v, cal))) for t, v in rows] if k in ("raw", "trigger") else rows)
               for k, rows in st.items()}
        for name, st in result["streams"].items()
    }  # fmt: skip
    out = {**result, "held_out": held, "streams": streams}
    if "check_scores" in result:
        out["check_scores"] = {k: calibration.apply(v, cal).tolist() for k, v in result["check_scores"].items()}
    return out


def _teacher_waves(records: list[Any], s: TrainSettings, manifest: Path) -> list[np.ndarray] | None:
    """The clips at the teacher's sample rate, for a student recipe; None otherwise."""
    if s.distill is None:
        return None
    cache = Path(s.cache_dir) if s.cache_dir else None
    return load_waves(records, s.distill.teacher_params, cache_dir=cache, manifest=manifest)


def _efficientat_notice() -> str:
    return (Path(__file__).resolve().parents[2] / "detection" / "weights" / "LICENSE-EfficientAT.txt").read_text()


def _fold_fitter(
    records: list[Any], waves: list[np.ndarray], s: TrainSettings, teacher_waves: list[np.ndarray] | None = None
) -> Callable[[np.ndarray, np.ndarray, str], tuple[Classifier, np.ndarray]]:
    def fit(train_idx: np.ndarray, test_idx: np.ndarray, desc: str) -> tuple[Classifier, np.ndarray]:
        # A student's teacher is retrained here too, on train_idx only (see core.training.distill).
        net, _, scores = train_one(
            records, waves, train_idx, test_idx, params=s.params, settings=s.loop, config=s.augment, seed=s.seed,
            desc=desc, teacher_waves=teacher_waves,
        )  # fmt: skip
        return Classifier(net, architecture=s.architecture, params=s.params, threshold=0.5), scores

    return fit


def _strip_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "scores"}


# The "new user" test (three bursts of decaying white noise, tau 0.1 s, 1 s apart, over a -40 dB floor;
# five noise draws at 16 kHz), scored by every fold's classifier: a recipe that alerts on it fails whatever its AUC.
NEW_USER_CLIPS = tuple((new_user_clip(16000, seed=k), 16000) for k in range(5))


def evaluate_protocols(
    settings: TrainSettings,
    *,
    capture: Capture | None = None,
    cal: dict[str, Any] | None = None,
    thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run settings.protocols for the recipe in settings (a fresh network per fold) and report each fold at the
    given calibration and named thresholds (a shipped model's), or at the protocol's own 1 %-FPR point; each
    protocol's ``held_out`` lists every test clip's file and score."""
    s = settings
    manifest = Path(s.manifest).resolve()
    records = load_manifest(manifest)
    if s.limit is not None:
        records = limited(records, s.limit, s.seed)
    waves = load_waves(records, s.params, cache_dir=Path(s.cache_dir) if s.cache_dir else None, manifest=manifest)
    teacher_waves = _teacher_waves(records, s, manifest)
    labels = np.array([r.positive for r in records], dtype=np.int64)
    known = {f.name for name in s.protocols for f in folds_for(name, records, seed=s.seed)}
    if unknown := set(s.folds) - known:
        raise ValueError(f"unknown fold(s) {sorted(unknown)}; the protocols' folds are {sorted(known)}")
    out: dict[str, Any] = {}
    for name in s.protocols:
        result = run_protocol(name, records, waves, fit=_fold_fitter(records, waves, s, teacher_waves),
                              sample_rate=s.params.sample_rate, capture=capture, seed=s.seed,
                              only=s.folds, check_clips=NEW_USER_CLIPS)  # fmt: skip
        if cal is not None:
            result = calibrated_result(result, cal)
        points = thresholds
        if not points:
            held = np.asarray(result["held_out"]["index"])
            scores = np.asarray(result["held_out"]["scores"])
            points = {"fpr_1pct": calibration.threshold_for_fpr(scores[labels[held] == 0], 0.01)}
        result = apply_operating_points(result, records, points, seed=s.seed)
        out[name] = {k: v for k, v in result.items() if k not in ("held_out", "streams")}
        # Every held-out clip's score (on the thresholds' scale), for error analysis per category and source.
        held = result["held_out"]
        out[name]["held_out"] = {
            "file": [records[int(i)].file for i in held["index"]],
            "score": [round(float(v), 6) for v in held["scores"]],
        }
    return out
