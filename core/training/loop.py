"""The training loop: fit a network on augmented windows, validate on whole clips exactly as production scores them."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core import evaluation, features
from core.features import FeatureParams
from core.networks import build
from core.training.augment import AugmentConfig, MelInput, WindowSampler
from core.training.data import ClipRecord
from core.training.settings import LoopSettings


def production_windows(waves: list[np.ndarray], indices: np.ndarray, params: FeatureParams) -> list[np.ndarray]:
    """Window batches for each clip, computed exactly as the Classifier does (features.windows)."""
    return [features.windows(waves[i], params.sample_rate, params) for i in indices]


def clip_scores(network: nn.Module, window_batches: list[np.ndarray], batch_clips: int = 64) -> np.ndarray:
    network.eval()
    scores = np.empty(len(window_batches))
    with torch.inference_mode():
        for s in range(0, len(window_batches), batch_clips):
            chunk = window_batches[s : s + batch_clips]
            sizes = [b.shape[0] for b in chunk]
            probs = torch.sigmoid(network(torch.from_numpy(np.concatenate(chunk)))).numpy()
            for j, part in enumerate(np.split(probs, np.cumsum(sizes)[:-1])):
                scores[s + j] = part.max()
    return scores


def val_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    thr = evaluation.threshold_for_fpr(scores[y == 0], 0.01)
    r = evaluation.rates(y, scores, thr)
    return {
        "auc": evaluation.auc(y, scores),
        "ap": evaluation.average_precision(y, scores),
        "recall_at_fpr_1pct": evaluation.recall_at_fpr(y, scores, 0.01),
        "threshold_at_fpr_1pct": thr,
        "recall": r["recall"],
    }


class Batches(Protocol):
    """What the loop draws training batches from: a WindowSampler, or distillation's soft-target wrapper."""

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]: ...


def configure_determinism(seed: int, threads: int) -> np.random.Generator:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def fit_network(
    network: nn.Module,
    sampler: Batches,
    *,
    to_input: nn.Module | Any,
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    lr: float,
    config: AugmentConfig,
    rng: np.random.Generator,
    val: tuple[list[np.ndarray], np.ndarray] | None = None,
    log_path: Path | None = None,
    desc: str = "train",
    ema_decay: float = 0.995,
    weight_decay: float = 1e-3,
    warmup_fraction: float = 0.15,
) -> list[dict[str, Any]]:
    """Generic loop: AdamW + one-cycle LR, BCE on window labels (soft ones when distilling), per-epoch
    validation on whole clips.

    A network with ``param_groups(lr)`` (a pretrained backbone) sets its own per-group learning rates.
    """
    # A pretrained network defines param_groups; nn.Module types unknown attributes as Tensor | Module.
    groups = network.param_groups(lr) if hasattr(network, "param_groups") else [{"params": network.parameters()}]  # type: ignore[operator]
    optimiser = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    # Validation swings from epoch to epoch (a 1 % FPR is a handful of clips); an exponential moving
    # average of the weights (and BatchNorm statistics) is steadier and is what gets shipped.
    averaged = torch.optim.swa_utils.AveragedModel(
        network, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay), use_buffers=True
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=[g.get("lr", lr) for g in optimiser.param_groups],
        total_steps=max(1, epochs * steps_per_epoch),
        pct_start=warmup_fraction,
    )
    loss_fn = nn.BCEWithLogitsLoss()
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        network.train()
        total, t0 = 0.0, time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} {epoch}/{epochs}", unit="batch", leave=False)
        for _ in bar:
            waves, labels = sampler.batch(batch_size)
            x = to_input(torch.from_numpy(waves), rng)
            loss = loss_fn(network(x), torch.from_numpy(labels))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            averaged.update_parameters(network)
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": total / steps_per_epoch,
            "lr": schedule.get_last_lr()[-1],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if val is not None:
            windows, y = val
            scores = clip_scores(averaged.module, windows)
            probs = np.clip(scores, 1e-6, 1 - 1e-6)
            row["val_loss"] = float(-np.mean(y * np.log(probs) + (1 - y) * np.log(1 - probs)))
            row.update({f"val_{k}": v for k, v in val_metrics(y, scores).items()})
        history.append(row)
        tqdm.write(json.dumps(row))
        if log_path is not None:
            _append_csv(log_path, row)
    network.load_state_dict(averaged.module.state_dict())
    return history


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train_one(
    records: list[ClipRecord],
    waves: list[np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    settings: LoopSettings,
    config: AugmentConfig,
    seed: int,
    log_path: Path | None = None,
    desc: str = "train",
    teacher_waves: list[np.ndarray] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]], np.ndarray]:
    """Train one network; return it, its history and its final validation clip scores (none for an empty
    val_idx). A student recipe (settings.distill) also needs ``teacher_waves``, the clips at the teacher's rate."""
    if settings.distill is not None:
        from core.training.distill import train_student  # distill builds on this module

        if teacher_waves is None:
            raise ValueError(f"{settings.architecture} is distilled: train_one needs teacher_waves")
        return train_student(
            records, waves, teacher_waves, train_idx, val_idx, params=params, settings=settings, config=config,
            seed=seed, log_path=log_path, desc=desc,
        )  # fmt: skip
    rng = configure_determinism(seed, settings.threads)
    sampler = WindowSampler(waves, records, train_idx, params, config, rng)
    network = build(settings.architecture, params)
    if settings.pretrained and hasattr(network, "load_audioset"):
        # Networks with a pretrained backbone define load_audioset (nn.Module types it as Tensor | Module).
        network.load_audioset(torch.load(settings.pretrained, map_location="cpu", weights_only=True))  # type: ignore[operator]
    needs_probe = hasattr(network, "probe")
    if settings.pretrained and (settings.mine_hard_negatives or needs_probe):
        from core.training.probe import fit_probe

        probe = fit_probe(
            records, waves, train_idx, params=params, config=config, pretrained=settings.pretrained, seed=seed,
            augmented=needs_probe and settings.probe_augmented, c=settings.probe_c,
            cache_dir=Path(settings.cache_dir) if settings.cache_dir else None,
        )  # fmt: skip
        if settings.mine_hard_negatives:
            sampler.reweight_negatives(probe.hard_negatives)
        if needs_probe:
            with torch.no_grad():
                # Only the ensemble has a probe (needs_probe); nn.Module types it as Tensor | Module.
                network.probe.weight.copy_(torch.from_numpy(probe.weight)[None])  # type: ignore[union-attr, operator]
                network.probe.bias.fill_(probe.bias)  # type: ignore[union-attr, operator]
    return fit_and_score(
        network, sampler, records, waves, val_idx, params=params, settings=settings, config=config, rng=rng,
        log_path=log_path, desc=desc,
    )  # fmt: skip


def fit_and_score(
    network: nn.Module,
    sampler: Batches,
    records: list[ClipRecord],
    waves: list[np.ndarray],
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    settings: LoopSettings,
    config: AugmentConfig,
    rng: np.random.Generator,
    log_path: Path | None,
    desc: str,
) -> tuple[nn.Module, list[dict[str, Any]], np.ndarray]:
    """fit_network with the loop settings on ``sampler``'s batches, validated on val_idx's whole clips; the
    network (in eval mode), its history and its validation clip scores. train_one and the distilled student share it."""
    val_windows = production_windows(waves, val_idx, params)
    y_val = np.array([records[i].positive for i in val_idx], dtype=np.float64)
    history = fit_network(
        network.trainable() if hasattr(network, "trainable") else network,  # type: ignore[operator]  # see train_one
        sampler,
        to_input=MelInput(params, config),
        epochs=settings.epochs,
        steps_per_epoch=settings.steps_per_epoch,
        batch_size=settings.batch_size,
        lr=settings.lr,
        config=config,
        rng=rng,
        # No validation clips (a teacher fitted for distillation): nothing held out is scored.
        val=(val_windows, y_val) if len(val_idx) else None,
        log_path=log_path,
        desc=desc,
        ema_decay=settings.ema_decay,
        weight_decay=settings.weight_decay,
        warmup_fraction=settings.warmup_fraction,
    )
    network.eval()
    return network, history, clip_scores(network, val_windows)
