from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from core import features, report, training
from core.classifier import Classifier
from core.features import FeatureParams
from core.networks import TorchLogMel
from core.training import AugmentConfig, ClipRecord, TrainSettings, WindowSampler
from tests.core.helpers_audio import impulses, sine, synthetic_manifest


def _records() -> list[ClipRecord]:
    """60 clips: Kaggle guns (one split unit per gun model), field shots and others, uploader-grouped."""
    recs = []
    for k in range(60):
        if k < 24:
            gun = training.GUN_MODELS[k % 6]
            r = ("gunshot", gun, "kaggle_gunshot", f"kaggle:{gun}")
        elif k < 34:
            r = ("gunshot", "gun_unknown", "us8k", f"us8k:{k // 2}")
        else:
            r = ("other", "door_slam" if k % 5 == 0 else "siren", "us8k", f"fs_user:{k // 3}")
        recs.append(ClipRecord(f"c{k}.flac", None, r[0], r[1], r[2], f"g{k}", r[3], 1.0))
    return recs


def test_split_is_group_aware_and_seeded():
    recs = _records()
    train_idx, val_idx = training.split_train_val(recs, seed=3)
    assert set(train_idx).isdisjoint(val_idx) and len(train_idx) + len(val_idx) == len(recs)
    assert {recs[i].split_unit for i in train_idx}.isdisjoint({recs[i].split_unit for i in val_idx})
    val_labels = {recs[i].label for i in val_idx}
    assert val_labels == {"gunshot", "other"}
    again = training.split_train_val(recs, seed=3)
    np.testing.assert_array_equal(again[1], val_idx)


def test_leave_one_gun_model_out_folds():
    recs = _records()
    train_idx, val_idx = training.split_train_val(recs, seed=0)
    folds = training.logo_folds(recs, train_idx, val_idx)
    assert [name for name, _, _ in folds] == list(training.GUN_MODELS)
    for gun, tr, va in folds:
        assert not any(recs[i].category == gun for i in tr)
        assert {recs[i].category for i in va if recs[i].source == "kaggle_gunshot"} == {gun}
        assert set(tr).isdisjoint(va)


def test_torch_log_mel_matches_production_features():
    params = FeatureParams()
    y = impulses([0.3, 0.7], seconds=1.0) + sine(900, 1.0, amp=0.05)
    expected = features.log_mel(y, params)
    got = TorchLogMel(params)(torch.from_numpy(y)[None])[0].numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=0.05)


def _sampler(seed: int) -> WindowSampler:
    params = FeatureParams()
    waves = [impulses([0.4], seconds=2.0, seed=1), sine(500, 0.4), sine(300, 3.0) * 0.2]
    recs = [
        ClipRecord("a", None, "gunshot", "ak47", "kaggle_gunshot", "a", "a", 2.0),
        ClipRecord("b", None, "other", "siren", "us8k", "b", "b", 0.4),
        ClipRecord("c", None, "other", "door_slam", "us8k", "c", "c", 3.0),
    ]
    return WindowSampler(waves, recs, np.arange(3), params, AugmentConfig(), np.random.default_rng(seed))


def test_sampler_windows_have_window_length_and_labels():
    waves, labels = _sampler(0).batch(32)
    assert waves.shape == (32, 16000) and waves.dtype == np.float32
    assert set(np.unique(labels)) <= {0.0, 1.0} and 0 < labels.sum() < 32
    assert np.isfinite(waves).all() and np.abs(waves).max() <= 1.0


def test_sampler_is_deterministic_for_a_seed():
    a, la = _sampler(7).batch(8)
    b, lb = _sampler(7).batch(8)
    c, _ = _sampler(8).batch(8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_positive_crops_contain_the_shot():
    sampler = _sampler(1)
    clip = sampler.clips[0]
    for _ in range(20):
        crop = sampler._crop(clip, True, sampler.loud_frames[0])
        assert crop.size == 16000
        assert np.abs(crop).max() > 0.5 * np.abs(clip).max()  # the burst, not the -60 dB noise floor


@pytest.mark.slow
def test_train_smoke_writes_weights_card_and_is_deterministic(tmp_path):
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=10)
    kwargs: dict[str, Any] = dict(manifest=manifest, epochs=2, seed=5, steps_per_epoch=3, batch_size=8, speed=False)
    first = training.train(TrainSettings(out_dir=tmp_path / "run1", **kwargs))
    second = training.train(TrainSettings(out_dir=tmp_path / "run2", **kwargs))
    for name in ("MODEL_CARD.md", "model_card.json", "roc.png", "pr.png", "confusion.png",
                 "training_curves.png", "training_log.csv"):  # fmt: skip
        assert (tmp_path / "run1" / name).exists(), name
    clf = Classifier.load(first.weights_path, expected_sha256=first.sha256)
    assert clf.threshold == pytest.approx(first.threshold)
    card = json.loads((tmp_path / "run1" / "model_card.json").read_text())
    assert card["sha256"] == first.sha256 and len(card["history"]) == 2
    assert {"auc", "recall_at_fpr_1pct", "false_alarms_per_hour"} <= set(card["validation"])
    a = torch.load(first.weights_path, weights_only=True)["state_dict"]
    b = torch.load(second.weights_path, weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert first.threshold == second.threshold
    choice = card["threshold_choice"]
    assert choice["rule"] == "clip_fpr" and first.threshold == choice["by_clip_fpr"]
    assert choice["by_alarm_rate"] is not None
    report.update_card(tmp_path / "run1", {"logo": {}, "logo_note": "folds trained briefly"})
    assert "folds trained briefly" in (tmp_path / "run1" / "MODEL_CARD.md").read_text()
