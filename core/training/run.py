"""One training run end to end: data, fit, threshold, production-path evaluation, weights and model card."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import benchmark, evaluation, report
from core.classifier import Classifier
from core.networks import count_parameters
from core.training.baseline import run_baseline
from core.training.data import data_summary, limited, load_manifest, load_waves, split_train_val, write_split_manifest
from core.training.logo import run_logo
from core.training.loop import train_one
from core.training.settings import TrainResult, TrainSettings
from core.training.threshold import choose_threshold
from core.weights import save_weights


def train(settings: TrainSettings) -> TrainResult:
    """Train, pick the threshold on validation, evaluate like production, write weights + model card."""
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
    train_idx, val_idx = split_train_val(records, seed=s.seed)
    log_path = out / "training_log.csv"
    log_path.unlink(missing_ok=True)
    network, history, val_scores = train_one(
        records, waves, train_idx, val_idx, params=params, settings=loop, config=config, seed=s.seed,
        log_path=log_path,
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
    report.write_card(out, card, metrics)
    return TrainResult(out, weights_path, sha, threshold, _strip_scores(metrics), card)


def _strip_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "scores"}
