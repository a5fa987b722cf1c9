"""Training library for the gunshot detector (pure: no Django import).

Every training example is one production-sized window (params.window_s) so clip length can never be
a shortcut. Augmentation aims at the field, not at this data set: gunshots mixed into real
backgrounds at -5..+20 dB SNR, distance (level drop, high-frequency loss, synthetic reverberation),
phone-grade band limits (8-12 kHz sample rates), gain, and time/frequency masking.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
from scipy import signal
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from tqdm import tqdm

from detection import audio, evaluation
from detection.audio import FeatureParams
from detection.classifier import Classifier, save_weights
from detection.network import ResNet34, build, count_parameters

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


@dataclass(frozen=True)
class AugmentConfig:
    p_event_crop_other: float = 0.5  # negatives: crop around their loudest event this often
    p_mix_positive: float = 0.6
    p_mix_negative: float = 0.25
    snr_db: tuple[float, float] = (-5.0, 20.0)
    p_distance: float = 0.4
    p_distance_negative: float = 0.2  # reverb/dull sound must not become a gunshot cue
    p_band_limit: float = 0.4
    band_limit_rates: tuple[int, ...] = (8000, 11025, 12000)
    p_clip: float = 0.25  # phones and street sensors saturate on nearby shots
    clip_level: tuple[float, float] = (0.05, 0.5)  # hard-clip at this fraction of the peak
    p_noise: float = 0.3
    p_gain: float = 0.3
    gain_db: tuple[float, float] = (-20.0, 0.0)
    p_time_mask: float = 0.3
    p_freq_mask: float = 0.5
    max_time_mask: int = 4
    max_freq_mask: int = 6
    positive_fraction: float = 0.5
    field_positive_fraction: float = 0.5  # share of positives drawn from non-Kaggle (street/field) sources
    hard_negative_weight: float = 3.0


@dataclass
class TrainResult:
    out_dir: Path
    weights_path: Path
    sha256: str
    threshold: float
    metrics: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- data


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
        waves.append(audio.resample(y, sr, params.sample_rate))
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part")
        with tmp.open("wb") as f:
            pickle.dump(waves, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)
    return waves


# ---------------------------------------------------------------- features


class TorchLogMel(nn.Module):
    """Batch log-mel in torch, numerically matching audio.log_mel (same window, padding, filterbank)."""

    def __init__(self, params: FeatureParams) -> None:
        super().__init__()
        self.params = params
        self.register_buffer("window", torch.from_numpy(audio._window(params.n_fft).copy()))
        self.register_buffer("basis", torch.from_numpy(audio.mel_basis(params).copy()))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        p = self.params
        spec = torch.stft(
            waves, p.n_fft, p.hop_length, window=self.window, center=True, pad_mode="constant",
            return_complex=True,
        )  # fmt: skip
        power = spec.real**2 + spec.imag**2
        mel = torch.matmul(self.basis, power)
        return 10.0 * torch.log10(torch.clamp(mel, min=p.amin))


# ---------------------------------------------------------------- augmentation


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


class WindowSampler:
    """Draws augmented, production-preprocessed training windows (waveforms of params.window_s)."""

    def __init__(
        self,
        waves: list[np.ndarray],
        records: list[ClipRecord],
        indices: np.ndarray,
        params: FeatureParams,
        config: AugmentConfig,
        rng: np.random.Generator,
    ) -> None:
        self.params, self.config, self.rng = params, config, rng
        self.length = round(params.window_s * params.sample_rate)
        self.clips: dict[int, np.ndarray] = {}
        self.loud_frames: dict[int, np.ndarray] = {}
        for i in indices:
            y, _ = audio.trim(waves[i], params)
            self.clips[int(i)] = y
            self.loud_frames[int(i)] = self._loud_frames(y, records[i].positive)
        pos = [int(i) for i in indices if records[i].positive]
        neg = [int(i) for i in indices if not records[i].positive]
        self.negatives = np.array(neg)
        field_pos = [i for i in pos if records[i].source != KAGGLE_SOURCE]
        kaggle_pos = [i for i in pos if records[i].source == KAGGLE_SOURCE]
        self.pos_groups = [g for g in (np.array(kaggle_pos), np.array(field_pos)) if g.size]
        share = config.field_positive_fraction if len(self.pos_groups) == 2 else 1.0
        self.pos_group_p = np.array([1 - share, share]) if len(self.pos_groups) == 2 else np.array([1.0])
        w = np.array([config.hard_negative_weight if records[i].category in HARD_NEGATIVES else 1.0 for i in neg])
        self.neg_p = w / w.sum() if w.size else w

    def _loud_frames(self, y: np.ndarray, positive: bool) -> np.ndarray:
        hop = self.params.hop_length
        if y.size <= self.length:
            return np.zeros(1, dtype=np.int64)
        rms = np.sqrt(np.mean(np.lib.stride_tricks.sliding_window_view(y, hop)[::hop] ** 2, axis=1) + 1e-12)
        db = 20 * np.log10(rms)
        # Positives: frames near the loudest shot, so a crop almost surely holds a shot (label noise otherwise).
        margin = 6.0 if positive else 3.0
        return np.flatnonzero(db >= db.max() - margin) * hop

    def draw_indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng, cfg = self.rng, self.config
        labels = (rng.random(n) < cfg.positive_fraction).astype(np.int64)
        if not self.pos_groups:
            labels[:] = 0
        if not self.negatives.size:
            labels[:] = 1
        idx = np.empty(n, dtype=np.int64)
        for k in range(n):
            if labels[k]:
                group = self.pos_groups[rng.choice(len(self.pos_groups), p=self.pos_group_p)]
                idx[k] = group[rng.integers(group.size)]
            else:
                idx[k] = self.negatives[rng.choice(self.negatives.size, p=self.neg_p)]
        return idx, labels

    def _crop(self, y: np.ndarray, around_event: bool, loud: np.ndarray) -> np.ndarray:
        n, rng = self.length, self.rng
        if y.size <= n:
            out = np.zeros(n, dtype=np.float32)
            start = rng.integers(0, n - y.size + 1)
            out[start : start + y.size] = y
            return out
        if around_event and loud.size:
            centre = int(loud[rng.integers(loud.size)])
            start = centre - int(rng.uniform(0.05, 0.9) * n)
        else:
            start = int(rng.integers(0, y.size - n + 1))
        start = int(np.clip(start, 0, y.size - n))
        return y[start : start + n].astype(np.float32, copy=True)

    def _background(self) -> np.ndarray:
        i = int(self.negatives[self.rng.integers(self.negatives.size)])
        return self._crop(self.clips[i], False, self.loud_frames[i])

    def _distance(self, x: np.ndarray) -> np.ndarray:
        rng, sr = self.rng, self.params.sample_rate
        cutoff = rng.uniform(800.0, 4000.0)
        x = signal.sosfilt(signal.butter(2, cutoff, fs=sr, output="sos"), x)
        rt60 = rng.uniform(0.2, 1.2)
        n = int(min(rt60, 0.8) * sr)
        t = np.arange(n) / sr
        ir = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
        ir /= np.sqrt(np.sum(ir**2)) + 1e-12
        wet = signal.fftconvolve(x, ir)[: x.size]
        drr = 10 ** (rng.uniform(-6.0, 10.0) / 20)  # direct-to-reverberant ratio
        return (drr * x + wet * (_rms(x) / (_rms(wet) + 1e-12))).astype(np.float32)

    def _band_limit(self, x: np.ndarray) -> np.ndarray:
        sr = self.params.sample_rate
        low = int(self.rng.choice(self.config.band_limit_rates))
        y = soxr.resample(soxr.resample(x, sr, low, quality="HQ"), low, sr, quality="HQ")
        out = np.zeros_like(x)
        out[: min(x.size, y.size)] = y[: x.size]
        return out

    def window(self, i: int, positive: bool) -> np.ndarray:
        rng, cfg, p = self.rng, self.config, self.params
        around = positive or rng.random() < cfg.p_event_crop_other
        x = self._crop(self.clips[i], around, self.loud_frames[i])
        if rng.random() < (cfg.p_distance if positive else cfg.p_distance_negative):
            x = self._distance(x)
        if self.negatives.size and rng.random() < (cfg.p_mix_positive if positive else cfg.p_mix_negative):
            bg = self._background()
            snr = rng.uniform(*cfg.snr_db)
            x = x + bg * (_rms(x) / (_rms(bg) * 10 ** (snr / 20)))
        if rng.random() < cfg.p_noise:
            x = x + rng.standard_normal(x.size).astype(np.float32) * _rms(x) * 10 ** (-rng.uniform(10, 40) / 20)
        if rng.random() < cfg.p_clip:
            limit = rng.uniform(*cfg.clip_level) * float(np.max(np.abs(x)) or 1.0)
            x = np.clip(x, -limit, limit)
        if rng.random() < cfg.p_band_limit:
            x = self._band_limit(x)
        # The production chain on the (already trimmed) crop: band-limit, then peak-normalise.
        x = audio.peak_normalise(audio.band_limit(x.astype(np.float32), p), p.peak)
        if rng.random() < cfg.p_gain:
            x = x * 10 ** (rng.uniform(*cfg.gain_db) / 20)
        return x.astype(np.float32)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        idx, labels = self.draw_indices(n)
        waves = np.stack([self.window(int(i), bool(lab)) for i, lab in zip(idx, labels, strict=True)])
        return waves, labels.astype(np.float32)


def spec_augment(mel: torch.Tensor, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Time and frequency masking, filled with each window's mean level."""
    mel = mel.clone()
    fill = mel.mean(dim=(1, 2))
    n_mels, frames = mel.shape[1], mel.shape[2]
    for k in range(mel.shape[0]):
        if rng.random() < config.p_freq_mask:
            w = int(rng.integers(1, config.max_freq_mask + 1))
            f0 = int(rng.integers(0, n_mels - w + 1))
            mel[k, f0 : f0 + w, :] = fill[k]
        if rng.random() < config.p_time_mask:
            w = int(rng.integers(1, config.max_time_mask + 1))
            t0 = int(rng.integers(0, frames - w + 1))
            mel[k, :, t0 : t0 + w] = fill[k]
    return mel


# ---------------------------------------------------------------- validation features


def production_windows(waves: list[np.ndarray], indices: np.ndarray, params: FeatureParams) -> list[np.ndarray]:
    """Window batches for each clip, computed exactly as Classifier does (prepare -> log_mel -> windows)."""
    out = []
    for i in indices:
        clean, _ = audio.prepare(waves[i], params.sample_rate, params)
        out.append(audio.frame_windows(audio.log_mel(clean, params), params)[0])
    return out


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


# ---------------------------------------------------------------- training loop


def configure_determinism(seed: int, threads: int) -> np.random.Generator:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def fit_network(
    network: nn.Module,
    sampler: WindowSampler,
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
) -> list[dict[str, Any]]:
    """Generic loop: AdamW + one-cycle LR, BCE on window labels, per-epoch validation on whole clips."""
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-3)
    # Validation swings from epoch to epoch (a 1 % FPR is a handful of clips); an exponential moving
    # average of the weights (and BatchNorm statistics) is steadier and is what gets shipped.
    averaged = torch.optim.swa_utils.AveragedModel(
        network, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay), use_buffers=True
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.15
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
            "lr": schedule.get_last_lr()[0],
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


class MelInput:
    """Waveform batch -> masked log-mel windows for the production CNN."""

    def __init__(self, params: FeatureParams, config: AugmentConfig, *, augment: bool = True) -> None:
        self.mel = TorchLogMel(params)
        self.frames = params.frames_per_window
        self.config, self.augment = config, augment

    def __call__(self, waves: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        with torch.no_grad():
            mel = self.mel(waves)[:, :, : self.frames]
            if self.augment:
                mel = spec_augment(mel, self.config, rng)
        return mel.unsqueeze(1)


@dataclass(frozen=True)
class TrainSettings:
    architecture: str = "gwcnn-1"
    epochs: int = 30
    steps_per_epoch: int = 64
    batch_size: int = 64
    lr: float = 3e-3
    target_fpr: float = 0.01
    threads: int = 1


def train_one(
    records: list[ClipRecord],
    waves: list[np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    settings: TrainSettings,
    config: AugmentConfig,
    seed: int,
    log_path: Path | None = None,
    desc: str = "train",
) -> tuple[nn.Module, list[dict[str, Any]], np.ndarray]:
    """Train one network; return it, its history and its final validation clip scores."""
    rng = configure_determinism(seed, settings.threads)
    sampler = WindowSampler(waves, records, train_idx, params, config, rng)
    val_windows = production_windows(waves, val_idx, params)
    y_val = np.array([records[i].positive for i in val_idx], dtype=np.float64)
    network = build(settings.architecture, params)
    history = fit_network(
        network,
        sampler,
        to_input=MelInput(params, config),
        epochs=settings.epochs,
        steps_per_epoch=settings.steps_per_epoch,
        batch_size=settings.batch_size,
        lr=settings.lr,
        config=config,
        rng=rng,
        val=(val_windows, y_val),
        log_path=log_path,
        desc=desc,
    )
    network.eval()
    return network, history, clip_scores(network, val_windows)


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


def train(
    *,
    manifest: str | Path,
    out_dir: str | Path,
    epochs: int = 12,
    seed: int = 0,
    architecture: str = "gwcnn-1",
    params: FeatureParams | None = None,
    steps_per_epoch: int = 128,
    batch_size: int = 64,
    lr: float = 3e-3,
    target_fpr: float = 0.01,
    threads: int = 1,
    weights_name: str = "gwcnn-1.pt",
    cache_dir: str | Path | None = None,
    logo: bool = False,
    logo_epochs: int | None = None,
    baseline: bool = False,
    baseline_epochs: int = 2,
    baseline_steps: int = 24,
    limit: int | None = None,
    speed: bool = True,
    augment: AugmentConfig | None = None,
    max_alarms_per_hour: float = 1.0,
    threshold_rule: str = "clip_fpr",
) -> TrainResult:
    """Train, pick the threshold on validation, evaluate like production, write weights + model card."""
    t_start = time.perf_counter()
    manifest = Path(manifest).resolve()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = params or FeatureParams()
    config = augment or AugmentConfig()
    settings = TrainSettings(architecture, epochs, steps_per_epoch, batch_size, lr, target_fpr, threads)
    records = load_manifest(manifest)
    if limit is not None:
        records = _limited(records, limit, seed)
    waves = load_waves(records, params, cache_dir=Path(cache_dir) if cache_dir else None, manifest=manifest)
    train_idx, val_idx = split_train_val(records, seed=seed)
    log_path = out / "training_log.csv"
    log_path.unlink(missing_ok=True)
    network, history, val_scores = train_one(
        records, waves, train_idx, val_idx, params=params, settings=settings, config=config, seed=seed,
        log_path=log_path,
    )  # fmt: skip
    y_val = np.array([records[i].positive for i in val_idx], dtype=np.int64)
    thresholds = choose_threshold(
        network, params, architecture, waves, val_idx, y_val, val_scores,
        target_fpr=target_fpr, max_alarms_per_hour=max_alarms_per_hour, rule=threshold_rule,
    )  # fmt: skip
    threshold = thresholds["threshold"]
    train_seconds = time.perf_counter() - t_start
    meta = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "epochs": epochs,
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "parameters": count_parameters(network),
        "torch": torch.__version__,
    }
    weights_path = out / weights_name
    sha = save_weights(
        weights_path, architecture=architecture, params=params, threshold=threshold,
        state_dict=network.state_dict(), meta=meta,
    )  # fmt: skip
    split_manifest = out / "split_manifest.csv"
    write_split_manifest(split_manifest, records, {"train": train_idx, "val": val_idx})
    classifier = Classifier.load(weights_path, expected_sha256=sha)
    metrics = evaluation.evaluate(split_manifest, classifier=classifier, split="val", progress=True)
    card: dict[str, Any] = {
        "name": weights_name,
        "sha256": sha,
        "architecture": architecture,
        "parameters": count_parameters(network),
        "features": params.to_dict(),
        "threshold": threshold,
        "target_fpr": target_fpr,
        "threshold_choice": thresholds,
        "training": {
            **asdict(settings),
            "seed": seed,
            "seconds": round(train_seconds, 1),
            "augmentation": asdict(config),
            "manifest": str(manifest),
            "manifest_sha256": meta["manifest_sha256"],
        },
        "data": _data_summary(records, train_idx, val_idx),
        "validation": _strip_scores(metrics),
        "history": history,
    }
    (out / "val_metrics.json").write_text(json.dumps(metrics, indent=2))
    from detection import benchmark, report

    # Write the card now and again after the optional extras, so a usable card exists early.
    report.write_card(out, card, metrics)
    if logo:
        logo_settings = TrainSettings(
            architecture, logo_epochs or epochs, steps_per_epoch, batch_size, lr, target_fpr, threads
        )
        card["logo"] = run_logo(records, waves, train_idx, val_idx, params=params, settings=logo_settings,
                                config=config, seed=seed, out_dir=out)  # fmt: skip
    if baseline:
        card["baseline"] = run_baseline(
            records, waves, train_idx, val_idx, params=params, config=config, seed=seed,
            epochs=baseline_epochs, steps=baseline_steps, threads=threads,
        )  # fmt: skip
    if speed:
        card["speed"] = benchmark.speed_profile(params, architecture, network=network)
    report.write_card(out, card, metrics)
    return TrainResult(out, weights_path, sha, threshold, _strip_scores(metrics), card)


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


def _limited(records: list[ClipRecord], limit: int, seed: int) -> list[ClipRecord]:
    """A small label-balanced subset (smoke tests, quick experiments)."""
    rng = np.random.default_rng(seed)
    pos = [r for r in records if r.positive]
    neg = [r for r in records if not r.positive]
    k = max(1, limit // 2)
    pick = lambda rs: [rs[i] for i in sorted(rng.choice(len(rs), min(k, len(rs)), replace=False))]  # noqa: E731
    return pick(pos) + pick(neg)


def _strip_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "scores"}


def _data_summary(records: list[ClipRecord], train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
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


# ---------------------------------------------------------------- leave-one-gun-model-out


def run_logo(
    records: list[ClipRecord],
    waves: list[np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    settings: TrainSettings,
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


# ---------------------------------------------------------------- seed-style baseline


class SeedImageInput:
    """The seed's input: a full-band 128-mel spectrogram image, min-max scaled, resized to 3 x 224 x 224."""

    def __init__(self) -> None:
        self.params = FeatureParams(n_fft=1024, hop_length=160, n_mels=128, fmin=20.0, fmax=8000.0)
        self.mel = TorchLogMel(self.params)

    def __call__(self, waves: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            mel = self.mel(waves)
            lo = mel.amin(dim=(1, 2), keepdim=True)
            hi = mel.amax(dim=(1, 2), keepdim=True)
            img = ((mel - lo) / (hi - lo + 1e-6)).unsqueeze(1)
            img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False)
        return img.expand(-1, 3, -1, -1).contiguous()


def run_baseline(
    records: list[ClipRecord],
    waves: list[np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    config: AugmentConfig,
    seed: int,
    epochs: int,
    steps: int,
    threads: int,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Seed-style ResNet-34 on spectrogram images, same windows and augmentation, far fewer steps (CPU)."""
    rng = configure_determinism(seed, threads)
    sampler = WindowSampler(waves, records, train_idx, params, config, rng)
    to_img = SeedImageInput()
    net = ResNet34()
    t0 = time.perf_counter()
    fit_network(
        net, sampler, to_input=to_img, epochs=epochs, steps_per_epoch=steps, batch_size=batch_size,
        lr=1e-3, config=config, rng=rng, desc="resnet34", ema_decay=0.9,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    net.eval()
    length = int(params.window_s * params.sample_rate)
    step = int(params.hop_s * params.sample_rate)
    scores = []
    with torch.inference_mode():
        for i in tqdm(val_idx, desc="resnet34 val", unit="clip", leave=False):
            clean, _ = audio.prepare(waves[i], params.sample_rate, params)
            starts = range(0, max(1, clean.size - length + step), step)
            wins = np.zeros((len(starts), length), dtype=np.float32)
            for k, s in enumerate(starts):
                piece = clean[s : s + length]
                wins[k, : piece.size] = piece
            scores.append(float(torch.sigmoid(net(to_img(torch.from_numpy(wins)))).max()))
    s = np.array(scores)
    y = np.array([records[i].positive for i in val_idx], dtype=np.int64)
    thr = evaluation.threshold_for_fpr(s[y == 0], 0.01)
    return {
        "architecture": "resnet34-224 (seed style)",
        "parameters": count_parameters(net),
        "train_windows": epochs * steps * batch_size,
        "epochs": epochs,
        "train_seconds": round(train_s, 1),
        "auc": evaluation.auc(y, s),
        "accuracy_at_0.5": float(np.mean((s >= 0.5) == y)),
        "recall_at_fpr_1pct": evaluation.recall_at_fpr(y, s, 0.01),
        "recall_at_threshold": float(np.mean(s[y == 1] >= thr)),
    }
