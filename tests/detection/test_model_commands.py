"""train_model and evaluate_model: the commands the team and the release check run."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from detection.models import ModelVersion
from detection.services import model_version_register
from tests.core.helpers_audio import make_weights, synthetic_manifest

JSON_KEYS = {
    "n",
    "auc",
    "ap",
    "threshold",
    "recall",
    "precision",
    "fpr",
    "recall_at_fpr_1pct",
    "false_alarms_per_hour",
    "per_source_recall",
    "per_category_fpr",
}


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return synthetic_manifest(tmp_path / "data", n_per_class=4)


def test_evaluate_json_is_one_object_with_the_agreed_keys(manifest: Path, tmp_path: Path) -> None:
    weights = make_weights(tmp_path / "tiny.pt", threshold=0.3)
    body = json.loads(run("evaluate_model", "--manifest", str(manifest), "--weights", str(weights), "--json"))
    assert set(body) == JSON_KEYS
    assert body["n"] == 8
    assert body["threshold"] == pytest.approx(0.3)
    assert set(body["per_source_recall"]) == {"synthetic_gun"}
    assert set(body["per_category_fpr"]) == {"tone", "hum"}
    assert 0.0 <= body["auc"] <= 1.0


def test_evaluate_threshold_override_and_split(manifest: Path, tmp_path: Path) -> None:
    weights = make_weights(tmp_path / "tiny.pt")
    all_positive = json.loads(
        run("evaluate_model", "--manifest", str(manifest), "--weights", str(weights), "--threshold", "0", "--json")
    )
    assert all_positive["recall"] == 1.0
    assert all_positive["fpr"] == 1.0
    with pytest.raises(CommandError, match="no clips"):
        run("evaluate_model", "--manifest", str(manifest), "--weights", str(weights), "--split", "nope", "--json")


@pytest.mark.django_db
def test_evaluate_uses_a_registered_or_the_active_version(manifest: Path, tmp_path: Path) -> None:
    weights = make_weights(tmp_path / "tiny.pt", threshold=0.42)
    model_version_register(name="tiny", version="1", weights_path=weights, activate=True)
    by_name = json.loads(run("evaluate_model", "--manifest", str(manifest), "--model", "tiny:1", "--json"))
    active = json.loads(run("evaluate_model", "--manifest", str(manifest), "--json"))
    assert by_name["threshold"] == active["threshold"] == pytest.approx(0.42)
    with pytest.raises(CommandError, match="no single model version"):
        run("evaluate_model", "--manifest", str(manifest), "--model", "missing", "--json")


def test_evaluate_reports_a_missing_manifest_or_a_broken_model(tmp_path: Path, manifest: Path) -> None:
    with pytest.raises(CommandError, match="manifest not found"):
        run("evaluate_model", "--manifest", str(tmp_path / "nope.csv"), "--json")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    with pytest.raises(CommandError, match="cannot load the model"):
        run("evaluate_model", "--manifest", str(manifest), "--weights", str(broken), "--json")


def test_evaluate_human_report_lists_sources_and_categories(manifest: Path, tmp_path: Path) -> None:
    text = run("evaluate_model", "--manifest", str(manifest), "--weights", str(make_weights(tmp_path / "t.pt")))
    assert "AUC" in text
    assert "synthetic_gun" in text
    assert "hum" in text


def test_evaluate_protocol_runs_only_the_named_fold_with_the_overrides(tmp_path: Path) -> None:
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=10)  # cv needs 5 clips per stratum
    weights = make_weights(tmp_path / "tiny.pt", threshold=0.4)
    out = tmp_path / "runs" / "cv2.json"
    text = run(
        "evaluate_model", "--manifest", str(manifest), "--weights", str(weights), "--protocol", "cv", "--fold", "cv2",
        "--epochs", "1", "--steps-per-epoch", "2", "--seed", "3", "--out", str(out), "--probe-c", "0.05",
        "--no-probe-augmentation", "--synthetic-negatives",
    )  # fmt: skip
    body = json.loads(out.read_text())
    assert [row["fold"] for row in body["protocols"]["cv"]["folds"]] == ["cv2"]
    assert "cv2" in text and "cv1" not in text
    ran = body["ran"]
    assert (ran["epochs"], ran["steps_per_epoch"], ran["seed"], ran["folds"]) == (1, 2, 3, ["cv2"])
    assert (ran["probe_c"], ran["probe_augmented"]) == (0.05, False)
    assert ran["synthetic_negatives"] > 0 and ran["synthetic_probe_clips"] > 0
    # The fold's classifier also scored the five new-user noise-burst clips.
    (checks,) = body["protocols"]["cv"]["check_scores"].values()
    assert len(checks) == 5 and all(0.0 <= c <= 1.0 for c in checks)
    assert ran["seconds"] > 0 and len(ran["load_average"]) == 3
    fold = body["protocols"]["cv"]["folds"][0]
    assert fold["threshold"]["threshold"] == pytest.approx(0.4)  # the model's own threshold, no calibration
    assert "alarms_per_hour_raw" in fold["threshold"]
    held = body["protocols"]["cv"]["held_out"]
    assert len(held["file"]) == len(held["score"]) == fold["n_test"]


def test_evaluate_protocol_overrides_are_checked(tmp_path: Path) -> None:
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=10)
    weights = str(make_weights(tmp_path / "tiny.pt"))
    with pytest.raises(CommandError, match="need --protocol"):
        run("evaluate_model", "--manifest", str(manifest), "--weights", weights, "--epochs", "1")
    with pytest.raises(CommandError, match="at least 1"):
        run("evaluate_model", "--manifest", str(manifest), "--weights", weights, "--protocol", "cv",
            "--steps-per-epoch", "0")  # fmt: skip
    with pytest.raises(CommandError, match="needs --protocol"):
        run("evaluate_model", "--manifest", str(manifest), "--weights", weights, "--synthetic-negatives")
    with pytest.raises(CommandError, match="unknown fold"):
        run("evaluate_model", "--manifest", str(manifest), "--weights", weights, "--protocol", "cv", "--fold", "FP9")


@pytest.mark.slow
@pytest.mark.django_db
def test_train_model_writes_a_card_and_registers_a_candidate(tmp_path: Path) -> None:
    manifest = synthetic_manifest(tmp_path / "train-data", n_per_class=10)  # the split needs 5 per stratum
    out = tmp_path / "run"
    text = run(
        "train_model",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--register",
    )
    assert (out / "gwcnn-1.pt").is_file()
    assert (out / "MODEL_CARD.md").is_file()
    assert "Registered" in text
    version = ModelVersion.objects.get()
    assert version.status == ModelVersion.Status.CANDIDATE
    assert "auc" in version.metrics
    assert version.model_card.startswith("# Model card")


def test_train_model_refuses_a_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="manifest not found"):
        run("train_model", "--manifest", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o"))


def test_evaluate_protocol_retrains_a_students_teacher_on_each_folds_training_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gwcnn-student file names the distillation recipe: per fold, a teacher trained on that fold's training
    clips only (here a stand-in, the real one is the 10-min mn04 recipe), never the shipped teacher."""
    import numpy as np
    import torch
    from torch import nn

    from core.training import distill

    class Teacher(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0])

    seen: list[set[int]] = []

    def fit_teacher(records: list[object], teacher_waves: list[np.ndarray], train_idx: np.ndarray,
                    *args: object, **kwargs: object) -> nn.Module:  # fmt: skip
        seen.append({int(i) for i in train_idx})
        return Teacher()

    monkeypatch.setattr(distill, "fit_teacher", fit_teacher)
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=10)
    weights = make_weights(tmp_path / "student.pt", architecture="gwcnn-student")
    out = tmp_path / "cv2.json"
    run(
        "evaluate_model", "--manifest", str(manifest), "--weights", str(weights), "--protocol", "cv", "--fold", "cv2",
        "--epochs", "1", "--steps-per-epoch", "2", "--out", str(out),
    )  # fmt: skip
    body = json.loads(out.read_text())
    assert body["ran"]["architecture"] == "gwcnn-student" and body["ran"]["distilled_from"] == "mn04-ensemble"
    held = set(body["protocols"]["cv"]["held_out"]["file"])
    files = [line.split(",")[0] for line in manifest.read_text().splitlines()[1:]]
    assert len(seen) == 1 and seen[0] and not {files[i] for i in seen[0]} & held
