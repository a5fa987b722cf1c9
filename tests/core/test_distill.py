"""Distillation of the device student (core.training.distill): soft targets, no leakage, a loadable model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from core.classifier import Classifier
from core.features import FeatureParams, efficientat_32k
from core.networks import count_parameters
from core.training import AugmentConfig, ClipRecord, TrainSettings, WindowSampler, distill, train
from core.training.loop import clip_scores, production_windows, train_one
from core.training.settings import STUDENT, DistillSettings
from tests.core.helpers_audio import impulses, sine, synthetic_manifest
from tests.core.test_mn04 import PRETRAINED

TEACHER_P = 0.8  # the constant teacher's probability for every window


class ConstantTeacher(nn.Module):
    """A teacher that disagrees with the labels on purpose: the same probability for every window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), float(np.log(TEACHER_P / (1 - TEACHER_P))))


def _clips() -> tuple[list[ClipRecord], list[np.ndarray], list[np.ndarray]]:
    """Six clips (3 impulse 'gunshots', 3 tones) at 16 kHz for the student and 32 kHz for the teacher."""
    recs: list[ClipRecord] = []
    w16: list[np.ndarray] = []
    w32: list[np.ndarray] = []
    for k in range(6):
        positive = k % 2 == 0
        label, source = ("gunshot", "kaggle_gunshot") if positive else ("other", "us8k")
        for sr, out in ((16000, w16), (32000, w32)):
            y = impulses([0.5], seconds=1.5, seed=k, sr=sr) if positive else sine(300 + 200 * k, 1.5, sr=sr) * 0.3
            out.append(y)
        recs.append(ClipRecord(f"c{k}", None, label, "gun_unknown" if positive else "tone", source, f"g{k}",
                               f"u{k}", 1.5))  # fmt: skip
    return recs, w16, w32


def _settings(alpha: float) -> TrainSettings:
    teacher = TrainSettings.mn04("m.csv", ".", None)
    return TrainSettings(
        manifest="m.csv", out_dir=".", architecture=STUDENT, epochs=3, steps_per_epoch=12, batch_size=16, ema_decay=0.5,
        distill=DistillSettings(teacher.params, teacher.loop, teacher.augment, alpha=alpha),
    )  # fmt: skip


def test_targets_mix_the_teachers_probability_with_the_label_on_the_same_windows():
    recs, _, w32 = _clips()
    sampler = WindowSampler(w32, recs, np.arange(6), efficientat_32k(), AugmentConfig(), np.random.default_rng(0))
    targets = distill.TeacherTargets(sampler, ConstantTeacher(), efficientat_32k(), FeatureParams(), alpha=0.7)
    waves, soft = targets.batch(32)
    again = WindowSampler(w32, recs, np.arange(6), efficientat_32k(), AugmentConfig(), np.random.default_rng(0))
    teacher_waves, labels = again.batch(32)
    np.testing.assert_allclose(soft, 0.7 * TEACHER_P + 0.3 * labels, atol=1e-6)
    assert waves.shape == (32, 16000) and waves.dtype == np.float32 and np.isfinite(waves).all()
    # The student hears the teacher's window (resampled): the same energy envelope, not another draw.
    env = lambda x: np.abs(x).reshape(x.shape[0], 10, -1).max(axis=2)  # noqa: E731
    assert np.corrcoef(env(waves).ravel(), env(teacher_waves).ravel())[0, 1] > 0.9


def test_student_moves_toward_the_teachers_scores():
    recs, w16, w32 = _clips()
    idx = np.arange(6)
    windows = production_windows(w16, idx, FeatureParams())
    negatives = np.array([not r.positive for r in recs])

    def student(alpha: float) -> np.ndarray:
        s = _settings(alpha)
        net, _, _ = distill.train_student(
            recs, w16, w32, idx, idx[:0], params=s.params, settings=s.loop, config=s.augment, seed=0,
            teacher=ConstantTeacher(),
        )  # fmt: skip
        return clip_scores(net, windows)

    hard, soft = student(0.0), student(1.0)
    # Hard labels push the tones toward 0; the teacher (0.8 everywhere) pulls them toward 0.8.
    assert abs(soft[negatives].mean() - TEACHER_P) < abs(hard[negatives].mean() - TEACHER_P)
    # alpha 1: the student learns the teacher's scores, on the gunshots too (the labels are ignored).
    assert np.abs(soft - TEACHER_P).max() < 0.1
    np.testing.assert_allclose(student(1.0), soft)  # reproducible for a seed


def test_the_teacher_is_trained_on_the_students_training_clips_only(monkeypatch):
    recs, w16, w32 = _clips()
    seen: list[np.ndarray] = []

    def fake_teacher(
        records: list[ClipRecord], teacher_waves: list[np.ndarray], train_idx: np.ndarray, settings: DistillSettings,
        *, seed: int, desc: str,
    ) -> nn.Module:  # fmt: skip
        seen.append(np.asarray(train_idx))
        assert teacher_waves is w32
        return ConstantTeacher()

    monkeypatch.setattr(distill, "fit_teacher", fake_teacher)
    s = replace(_settings(0.7), epochs=1, steps_per_epoch=2)
    train_idx, held_out = np.array([0, 1, 2, 3]), np.array([4, 5])
    _, _, scores = train_one(
        recs, w16, train_idx, held_out, params=s.params, settings=s.loop, config=s.augment, seed=0,
        teacher_waves=w32,
    )  # fmt: skip
    assert len(seen) == 1 and set(seen[0]) == {0, 1, 2, 3}
    assert scores.shape == (2,)
    with pytest.raises(ValueError, match="teacher_waves"):
        train_one(recs, w16, train_idx, held_out, params=s.params, settings=s.loop, config=s.augment, seed=0)


def test_student_recipe_smoke_saves_a_loadable_device_model(tmp_path):
    """The whole recipe on a handful of clips (a tiny teacher run first): weights with meta, normal loader."""
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=5)
    pretrained = PRETRAINED if PRETRAINED.is_file() else None
    settings = TrainSettings.student(
        manifest, tmp_path / "run", pretrained, epochs=1, steps_per_epoch=3, batch_size=8, speed=False,
        teacher={"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "mine_hard_negatives": False},
    )  # fmt: skip
    result = train(settings)
    clf = Classifier.load(result.weights_path, expected_sha256=result.sha256)
    assert clf.architecture == "gwcnn-student" and clf.params == FeatureParams()
    assert count_parameters(clf.network) < 25_000  # gwcnn-1's size class, for devices
    assert clf.meta["distilled_from"] == "mn04-ensemble"
    assert "Florian Schmid" in clf.meta["license_notice"]
    verdict = clf.classify_waveform(impulses([0.5], seconds=2.0), 16000)
    assert 0.0 <= verdict.score <= 1.0 and len(verdict.windows) >= 1
