"""Distillation: the device-sized student (gwcnn-1's network and 16-kHz features) learns the mn04-ensemble
teacher's probabilities on the very windows it trains on.

Per call the teacher is trained first, with its full recipe, on the student's training clips only: inside a
validation protocol that is the fold's training set, so no held-out clip reaches the student through the
teacher (the shipped teacher file was trained on every clip and would leak the fold).

Each step draws augmented windows the way the teacher's recipe does (32 kHz, its field augmentation), the
teacher scores them, and the student sees the same windows through its own front end (resampled to 16 kHz,
band-limited at 4 kHz, SpecAugment) with target alpha * teacher probability + (1 - alpha) * label, so the
generic loop (BCE on soft targets) trains it unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
from torch import nn

from core import features
from core.features import FeatureParams
from core.networks import build
from core.training.augment import AugmentConfig, MelInput, WindowSampler
from core.training.data import ClipRecord
from core.training.loop import configure_determinism, fit_and_score, train_one
from core.training.settings import DistillSettings, LoopSettings


class TeacherTargets:
    """A WindowSampler for the student: waveforms at the student's rate, labels softened by the teacher."""

    def __init__(
        self,
        sampler: WindowSampler,
        teacher: nn.Module,
        teacher_params: FeatureParams,
        student_params: FeatureParams,
        alpha: float,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        self.sampler, self.teacher, self.alpha = sampler, teacher.eval(), alpha
        self.teacher_params, self.student_params = teacher_params, student_params
        # The teacher scores clean augmented windows: SpecAugment is the student's regulariser, not its target.
        self.teacher_input = MelInput(teacher_params, AugmentConfig(), augment=False)

    def teacher_probs(self, waves: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = self.teacher_input(torch.from_numpy(waves), self.sampler.rng)
            return torch.sigmoid(self.teacher(x)).numpy().astype(np.float32)

    def student_waves(self, waves: np.ndarray) -> np.ndarray:
        """The teacher-rate windows as the student's front end receives them: resampled, then band-limited.

        Not peak-normalised again, so the sampler's gain augmentation reaches the student as it reached the teacher.
        """
        src, dst = self.teacher_params.sample_rate, self.student_params.sample_rate
        length = round(self.student_params.window_s * dst)
        y = np.asarray(soxr.resample(waves.T, src, dst, quality="HQ")).T if src != dst else waves
        out = np.zeros((waves.shape[0], length), dtype=np.float32)
        out[:, : min(length, y.shape[1])] = y[:, :length]
        return features.band_limit(out, self.student_params).astype(np.float32)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        waves, labels = self.sampler.batch(n)
        target = self.alpha * self.teacher_probs(waves) + (1.0 - self.alpha) * labels
        return self.student_waves(waves), target.astype(np.float32)


def fit_teacher(
    records: list[ClipRecord],
    teacher_waves: list[np.ndarray],
    train_idx: np.ndarray,
    distill: DistillSettings,
    *,
    seed: int,
    desc: str,
) -> nn.Module:
    """The teacher's full recipe on the training clips; no held-out clip is scored or seen."""
    teacher, _, _ = train_one(
        records, teacher_waves, train_idx, np.array([], dtype=np.int64), params=distill.teacher_params,
        settings=distill.teacher_loop, config=distill.teacher_augment, seed=seed, desc=f"{desc} teacher",
    )  # fmt: skip
    return teacher.eval()


def train_student(
    records: list[ClipRecord],
    waves: list[np.ndarray],
    teacher_waves: list[np.ndarray],
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    params: FeatureParams,
    settings: LoopSettings,
    config: AugmentConfig,
    seed: int,
    log_path: Path | None = None,
    desc: str = "student",
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, list[dict[str, Any]], np.ndarray]:
    """Train the teacher on train_idx (unless given), then the student on its soft targets; return the student,
    its history and its validation clip scores (``waves`` are at the student's rate, ``teacher_waves`` at the
    teacher's)."""
    distill = settings.distill
    if distill is None:
        raise ValueError("train_student needs settings.distill (TrainSettings.student)")
    if teacher is None:
        teacher = fit_teacher(records, teacher_waves, train_idx, distill, seed=seed, desc=desc)
    rng = configure_determinism(seed, settings.threads)
    sampler = WindowSampler(teacher_waves, records, train_idx, distill.teacher_params, distill.teacher_augment, rng)
    targets = TeacherTargets(sampler, teacher, distill.teacher_params, params, distill.alpha)
    return fit_and_score(
        build(settings.architecture, params), targets, records, waves, val_idx, params=params, settings=settings,
        config=config, rng=rng, log_path=log_path, desc=desc,
    )  # fmt: skip
