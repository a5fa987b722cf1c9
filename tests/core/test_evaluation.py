from __future__ import annotations

import numpy as np
import pytest

from core import evaluation
from core.classifier import Classifier
from tests.core.helpers_audio import make_weights, synthetic_manifest

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_auc_on_a_hand_computed_example():
    # Of the 4 (positive, negative) pairs, 3 are ordered correctly.
    assert evaluation.auc(Y, S) == pytest.approx(0.75)
    assert evaluation.auc([0, 1, 1], [0.1, 0.5, 0.9]) == 1.0
    assert evaluation.auc([1, 1], [0.1, 0.2]) is None


def test_average_precision_on_a_hand_computed_example():
    # Ranked: 0.8 (pos) precision 1 at recall 0.5; 0.35 (pos) precision 2/3 at recall 1.
    assert evaluation.average_precision(Y, S) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_recall_at_fpr():
    assert evaluation.recall_at_fpr(Y, S, 0.0) == pytest.approx(0.5)
    assert evaluation.recall_at_fpr(Y, S, 0.5) == pytest.approx(1.0)


def test_threshold_for_fpr_allows_the_right_number_of_negatives():
    negatives = np.arange(1, 101) / 100  # 0.01 .. 1.00
    thr = evaluation.threshold_for_fpr(negatives, 0.02)
    assert np.sum(negatives >= thr) == 2
    assert thr <= 0.99 + 1e-9 and thr > 0.98
    assert np.sum(negatives >= evaluation.threshold_for_fpr(negatives, 0.0)) == 0


def test_rates_at_threshold():
    r = evaluation.rates(Y, S, 0.38)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 1, 1, 1)
    assert r["recall"] == 0.5 and r["precision"] == 0.5 and r["fpr"] == 0.5


def test_events_are_merged_within_the_refractory_period():
    assert evaluation.event_times([0.0, 1.0, 6.0, 6.5, 20.0], 5.0) == [0.0, 6.0, 20.0]
    assert evaluation.count_events([], 5.0) == 0


def test_build_stream_crossfades_joins():
    stream = evaluation.build_stream([np.ones(1000, np.float32), np.ones(1000, np.float32)], 16000)
    assert stream.size == 2000
    assert stream[0] == 0.0 and stream[999] == 0.0 and stream[500] == 1.0


@pytest.fixture
def setup(tmp_path):
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=4)
    return manifest, Classifier.load(make_weights(tmp_path / "w.pt"))


def test_evaluate_everything_flagged_at_threshold_zero(setup):
    manifest, clf = setup
    result = evaluation.evaluate(manifest, classifier=clf, threshold=0.0)
    assert result["n"] == 8 and result["n_gunshot"] == 4
    assert result["recall"] == 1.0 and result["fpr"] == 1.0 and result["threshold"] == 0.0
    assert result["per_source_recall"] == {"synthetic_gun": {"rate": 1.0, "n": 4}}
    assert set(result["per_category_fpr"]) == {"tone", "hum"}
    stream = result["false_alarm_stream"]
    assert stream["events"] >= 1
    assert result["false_alarms_per_hour"] == pytest.approx(stream["events"] / stream["hours"])
    assert set(stream["event_files"]) <= {f"clips/other_{k}.flac" for k in range(4)}


def test_evaluate_nothing_flagged_above_one(setup):
    manifest, clf = setup
    result = evaluation.evaluate(manifest, classifier=clf, threshold=1.01)
    assert result["recall"] == 0.0 and result["fpr"] == 0.0
    assert result["false_alarms_per_hour"] == 0.0
    assert result["recall_at_fpr_1pct"] is not None
    assert {"auc", "ap", "precision", "per_category_fpr"} <= set(result)


def test_evaluate_filters_by_split_and_rejects_empty(setup):
    manifest, clf = setup
    assert evaluation.evaluate(manifest, classifier=clf, split="dev")["n"] == 8
    with pytest.raises(ValueError):
        evaluation.evaluate(manifest, classifier=clf, split="nope")


def test_evaluate_reports_unreadable_clips(setup):
    manifest, clf = setup
    (manifest.parent / "clips" / "other_0.flac").write_bytes(b"broken")
    result = evaluation.evaluate(manifest, classifier=clf)
    assert result["n"] == 7
    assert result["errors"] == [
        {"file": "clips/other_0.flac", "code": "not_audio", "error": result["errors"][0]["error"]}
    ]


def test_threshold_for_alarm_rate_scans_down_until_too_many_alarms():
    windows = [(0.0, 0.9), (1.0, 0.8), (10.0, 0.95), (30.0, 0.5)]
    assert evaluation.threshold_for_alarm_rate(windows, hours=1.0, max_per_hour=1) == 0.95
    # 0.8 adds a window 1 s after the alarm at 0 s: same event, so still 2 alarms.
    assert evaluation.threshold_for_alarm_rate(windows, hours=1.0, max_per_hour=2) == 0.8
    assert evaluation.threshold_for_alarm_rate(windows, hours=1.0, max_per_hour=0) > 0.95
