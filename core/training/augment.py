"""Augmentation: training windows drawn and degraded the way the field degrades gunshots, and SpecAugment.

Every training example is one production-sized window (params.window_s) so clip length can never be
a shortcut. Augmentation aims at the field, not at this data set: gunshots mixed into real
backgrounds at -5..+20 dB SNR, distance (level drop, high-frequency loss, synthetic reverberation),
phone-grade band limits (8-12 kHz sample rates), gain, and time/frequency masking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import soxr
import torch
from scipy import signal

from core import features
from core.features import FeatureParams
from core.networks import TorchLogMel
from core.training.data import HARD_NEGATIVES, KAGGLE_SOURCE, ClipRecord
from core.training.synthetic import synthetic_negative

SYNTHETIC = -1  # the index WindowSampler draws for a generated negative (core.training.synthetic)


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
    # Generated negatives (core.training.synthetic: decaying noise bursts, clicks): this share of the fine-tuning
    # negatives, and this many generated clips among the probe's negatives. 0 in the shipped recipe.
    synthetic_negatives: float = 0.0
    synthetic_probe_clips: int = 0


# What --synthetic-negatives switches on: a tenth of the fine-tuning negatives generated, and 300 generated
# 3-s clips (about 1,500 windows, a tenth of the real negative windows) among the probe's negatives.
SYNTHETIC_SHARE = 0.1
SYNTHETIC_PROBE_CLIPS = 300


def with_synthetic_negatives(config: AugmentConfig) -> AugmentConfig:
    """config with the generated negatives of core.training.synthetic switched on (see SYNTHETIC_SHARE)."""
    return replace(config, synthetic_negatives=SYNTHETIC_SHARE, synthetic_probe_clips=SYNTHETIC_PROBE_CLIPS)


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
            y, _ = features.trim(waves[i], params)
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

    def reweight_negatives(self, extra: dict[int, float]) -> None:
        """Multiply the draw weight of some negatives (record index -> factor), e.g. mined hard negatives."""
        if not self.negatives.size:
            return
        w = self.neg_p * np.array([extra.get(int(i), 1.0) for i in self.negatives])
        self.neg_p = w / w.sum()

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
            elif cfg.synthetic_negatives > 0 and rng.random() < cfg.synthetic_negatives:
                # Only drawn when enabled, so the shipped recipe's random stream is unchanged.
                idx[k] = SYNTHETIC
            else:
                idx[k] = self.negatives[rng.choice(self.negatives.size, p=self.neg_p)]
        return idx, labels

    def _crop(self, y: np.ndarray, around_event: bool, loud: np.ndarray) -> np.ndarray:
        n, rng = self.length, self.rng
        if y.size <= n:
            out = np.zeros(n, dtype=np.float32)
            start = int(rng.integers(0, n - y.size + 1))
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
        if i == SYNTHETIC:
            x = synthetic_negative(p.window_s, p.sample_rate, rng)[0]
        else:
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
        x = features.peak_normalise(features.band_limit(x.astype(np.float32), p), p.peak)
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
