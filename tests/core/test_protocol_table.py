"""The model card's protocol tables come from evaluate_model's --out JSON, marked against the issue's targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.training.protocol_table import render

POINTS = (("high_recall", 0.1), ("balanced", 0.7), ("low_false_alarm", 0.99))


def _point(threshold: float, recall: float, held: float) -> dict[str, Any]:
    return {"threshold": threshold, "recall": recall, "held_recall": held, "fpr": 0.005,
            "recall_by_source": {"kaggle_gunshot": held}, "alarms_per_hour_raw": 3.0,
            "alarms_per_hour_trigger": 0.5}  # fmt: skip


def _run(path: Path, fold: str, auc: float, r1: float, held: float, checks: list[float] | None) -> Path:
    row = {"fold": fold, "n_test": 400, "n_pos": 100, "n_neg": 300, "auc": auc, "recall_at_fpr1": r1,
           "stream_hours": 0.5, "captures": 50,
           **{p: _point(t, held, held) for p, t in POINTS}}  # fmt: skip
    result: dict[str, Any] = {"protocol": "gun_model", "folds": [row], "summary": {}}
    if checks is not None:
        result["check_scores"] = {fold: checks}
    ran = {"seconds": 300.4, "started": "2026-12-07T15:00:00Z", "load_average": [1.0, 2.0, 3.0]}
    path.write_text(json.dumps({"ran": ran, "protocols": {"gun_model": result}}))
    return path


def test_tables_mark_each_fold_against_the_targets(tmp_path: Path) -> None:
    good = _run(tmp_path / "a.json", "m16", 0.995, 0.93, 0.9, [0.1, 0.8])
    bad = _run(tmp_path / "b.json", "mg42", 0.97, 0.5, 0.6, None)
    text = render([good, bad])
    assert "| m16 | 400 (100) | 0.995 ✅ | 93.0 % ✅ | 90.0 % / 0.5 % | 90.0 % ✅ | kaggle_gunshot 90.0 % |" in text
    assert "| mg42 | 400 (100) | 0.970 ❌ | 50.0 % ❌ | 60.0 % / 0.5 % | 60.0 % ❌ | kaggle_gunshot 60.0 % |" in text
    assert "| m16 | 0.50 | 100 | 3.0 / 0.5 | 3.0 / 0.5 | 3.0 / 0.5 |" in text
    assert "| m16 | 300 | 2026-12-07T15:00:00Z | 1.00 / 2.00 / 3.00 |" in text
    assert "| m16 | 0.100, 0.800 | 1 of 2 |" in text  # 0.8 >= the balanced 0.7
    assert "| mg42 | 0." not in text.split("new-user")[1]  # no check clips scored in that run


def test_a_model_with_one_threshold_is_reported_at_it(tmp_path: Path) -> None:
    """gwcnn-1 has no calibration or named operating points: its runs carry one ``threshold`` point."""
    row = {"fold": "us8k", "n_test": 1508, "n_pos": 84, "n_neg": 1424, "auc": 0.8, "recall_at_fpr1": 0.1,
           "stream_hours": 1.45, "captures": 119, "threshold": _point(0.88, 0.25, 0.25)}  # fmt: skip
    result = {"protocol": "source", "folds": [row], "summary": {}, "check_scores": {"us8k": [0.9, 0.1]}}
    ran = {"seconds": 400.0, "started": "2026-12-07T18:02:13Z", "load_average": [1.5, 1.2, 1.0]}
    path = tmp_path / "gwcnn.json"
    path.write_text(json.dumps({"ran": ran, "protocols": {"source": result}}))
    text = render([path])
    assert "| recall / FPR (threshold) | held-out unit recall (threshold) |" in text
    assert "| us8k | 1508 (84) | 0.800 ❌ | 10.0 % ❌ | 25.0 % / 0.5 % | 25.0 % ❌ | kaggle_gunshot 25.0 % |" in text
    assert "| fold | hours | captures/h | threshold raw / trigger |" in text
    assert "| us8k | 1.45 | 82 | 3.0 / 0.5 |" in text
    assert "| us8k | 0.900, 0.100 | 1 of 2 |" in text
    assert "new-user bursts: scores | above threshold |" in text
