"""The shipped default model on real clips from ../shared/data (skipped where the data is absent)."""

from __future__ import annotations

import pytest

from core.classifier import Classifier
from detection.classify import BUNDLED_WEIGHTS, PREVIOUS_BUNDLED
from tests.conftest import SHARED_DATA

CLIPS = SHARED_DATA / "clips"
# A few clips of each kind, every one in the shipped model's training data: this checks the shipped file, its
# features and its calibrated threshold end to end, not generalisation (the model card's protocols do that).
REAL_CLIPS = {
    "gunshot": (
        "shotspotter_pgh__FP1_test_001_SCP-00-BNG-5567__gun.flac",  # street sensors, 12 kHz
        "shotspotter_pgh__FP2_test_027_SCP-00-BNQ-0681__gun.flac",
        "shotspotter_pgh__FP3_test_045_SCP-00-BNG-5545__gun.flac",
        "belize_katsis__gunshot_101__p00.flac",  # forest recorders, 8 kHz
        "elp_ecoguns__ecoguns1004__p00.flac",
        "kaggle_gunshot__1_10__p00.flac",  # close range
    ),
    "other": (
        "us8k__13230-0-0-1__p00.flac",
        "us8k__159761-0-0-3__p00.flac",
        "us8k__103258-5-0-11__p00.flac",
        "us8k__101415-3-0-2__p00.flac",
    ),
}


def test_bundled_weights_are_small_and_carry_calibration_and_operating_points():
    clf = Classifier.load(BUNDLED_WEIGHTS)
    assert BUNDLED_WEIGHTS.stat().st_size <= 5 * 1024 * 1024
    assert clf.architecture == "mn04-ensemble" and clf.calibration is not None
    points = clf.operating_points
    assert points["high_recall"] <= points["balanced"] <= points["low_false_alarm"]
    assert clf.threshold == pytest.approx(points["balanced"])
    assert "Florian Schmid" in clf.meta["license_notice"]
    assert (BUNDLED_WEIGHTS.parent / "LICENSE-EfficientAT.txt").is_file()
    assert all(p.is_file() for p in PREVIOUS_BUNDLED)


@pytest.mark.skipif(not CLIPS.is_dir(), reason="../shared/data is absent")
def test_bundled_model_classifies_real_clips():
    clf = Classifier.load(BUNDLED_WEIGHTS)
    for label, names in REAL_CLIPS.items():
        for name in names:
            verdict = clf.classify_file(CLIPS / name)
            assert verdict.label == label, (name, verdict.score, clf.threshold)


@pytest.mark.xfail(
    strict=True,
    reason="known failure of mn04-ensemble: both members call enveloped white noise a gunshot (MODEL_CARD.md, "
    "'the new-user test'); a model that passes must drop this marker",
)
def test_bundled_model_does_not_alert_on_three_bursts_of_decaying_white_noise():
    """The issue's new-user test: three bursts of white noise, tau 0.1 s, 1 s apart, must stay below balanced."""
    from core.training.synthetic import new_user_clip

    clf = Classifier.load(BUNDLED_WEIGHTS)
    scores = [clf.classify_waveform(new_user_clip(16000, seed=k), 16000).score for k in range(5)]
    assert max(scores) < clf.operating_points["balanced"], scores
