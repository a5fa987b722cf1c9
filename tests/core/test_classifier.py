from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.audio import AudioError
from core.classifier import Classifier, ClipResult, WindowScore
from core.features import FeatureParams
from core.networks import build
from core.weights import (
    ModelChecksumError,
    ModelIncompatibleError,
    ModelIOError,
    ModelLoadError,
    save_weights,
    sha256_file,
)
from detection import classify
from tests.core.helpers_audio import SR, impulses, make_weights, sine, write

DATA_DIR = Path(os.environ.get("GUNWATCH_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
RESULT_KEYS = {"label", "score", "threshold", "shots", "offset_s", "windows", "timings_ms"}


@pytest.fixture
def weights(tmp_path):
    return make_weights(tmp_path / "tiny.pt", meta={"test": True})


def _rewrite(path: Path, **changes) -> Path:
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    return path


def test_load_with_matching_checksum(weights):
    clf = Classifier.load(weights, expected_sha256=sha256_file(weights))
    assert clf.architecture == "gwcnn-tiny"
    assert clf.params == FeatureParams()
    assert clf.threshold == 0.5
    assert clf.meta == {"test": True}
    assert clf.sha256 == sha256_file(weights)


def test_checksum_mismatch(weights):
    with pytest.raises(ModelChecksumError):
        Classifier.load(weights, expected_sha256="0" * 64)


def test_missing_and_garbage_files_are_io_errors(tmp_path):
    with pytest.raises(ModelIOError):
        Classifier.load(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelIOError):
        Classifier.load(junk)


@pytest.mark.parametrize(
    "changes",
    [
        {"format": 2},
        {"architecture": "resnet-9000"},
        {"architecture": "gwcnn-1"},  # a gwcnn-tiny state_dict does not fit gwcnn-1
        {"features": {"sample_rate": 16000, "colour": "blue"}},
    ],
)
def test_incompatible_weights(weights, changes):
    _rewrite(weights, **changes)
    with pytest.raises(ModelIncompatibleError) as info:
        Classifier.load(weights)
    assert isinstance(info.value, ModelLoadError)


def test_save_weights_is_atomic_and_returns_sha(tmp_path):
    params = FeatureParams()
    sha = save_weights(
        tmp_path / "w.pt", architecture="gwcnn-1", params=params, threshold=0.7,
        state_dict=build("gwcnn-1", params).state_dict(), meta={"note": "x"},
    )  # fmt: skip
    assert sha == sha256_file(tmp_path / "w.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no .part file left behind
    assert (tmp_path / "w.pt").stat().st_mode & 0o777 == 0o644
    assert Classifier.load(tmp_path / "w.pt").threshold == pytest.approx(0.7)


def test_classify_file_result_shape(weights, tmp_path):
    clf = Classifier.load(weights)
    y = impulses([1.0], seconds=2.5) + sine(300, 2.5, amp=0.1)  # the tone keeps trimming from cutting it short
    result = clf.classify_file(write(tmp_path / "shot.wav", y)).as_dict()
    assert set(result) == RESULT_KEYS
    assert result["label"] in {"gunshot", "other"}
    assert result["score"] == pytest.approx(max(w["score"] for w in result["windows"]))
    assert set(result["timings_ms"]) == {"decode", "features", "network"}
    offsets = [w["offset_s"] for w in result["windows"]]
    assert offsets == sorted(offsets) and len(offsets) >= 3


def test_the_result_is_typed_and_frozen(weights):
    result = Classifier.load(weights).classify_waveform(impulses([1.0], seconds=2.5), SR, threshold=0.0)
    assert isinstance(result, ClipResult) and result.positive
    assert all(isinstance(w, WindowScore) for w in result.windows)
    assert result.score == max(w.score for w in result.windows)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.label = "other"  # type: ignore[misc]  # assigning to a frozen field is the test
    as_dict = result.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # the stored and served shape is plain JSON
    assert as_dict["windows"][0] == {"offset_s": result.windows[0].offset_s, "score": result.windows[0].score}


def test_threshold_zero_flags_and_locates_the_shot(weights):
    clf = Classifier.load(weights)
    # Leading silence is trimmed before windowing; the reported time must still be in the original clip.
    y = np.concatenate([np.zeros(SR, dtype=np.float32), impulses([1.2], seconds=2.5)])
    result = clf.classify_waveform(y, SR, threshold=0.0).as_dict()
    assert result["label"] == "gunshot" and result["threshold"] == 0.0
    assert result["shots"] >= 1
    assert result["offset_s"] == pytest.approx(2.2, abs=0.1)


def test_threshold_above_one_never_flags(weights):
    result = Classifier.load(weights).classify_waveform(impulses([0.5]), SR, threshold=1.01).as_dict()
    assert result["label"] == "other"
    assert result["shots"] == 0 and result["offset_s"] is None


def test_classify_waveform_matches_classify_file(weights, tmp_path):
    clf = Classifier.load(weights)
    y = sine(700, 1.5)
    path = write(tmp_path / "t.wav", y, subtype="FLOAT")
    assert clf.classify_file(path).score == pytest.approx(clf.classify_waveform(y, SR).score, abs=1e-6)


def test_classify_rejects_bad_audio_with_audio_error(weights):
    with pytest.raises(AudioError) as info:
        Classifier.load(weights).classify_file(b"garbage" * 50)
    assert info.value.code == "not_audio"


def test_torchscript_export_gives_the_same_logits(weights, tmp_path):
    clf = Classifier.load(weights)
    clf.export_torchscript(tmp_path / "net.ts")
    scripted = torch.jit.load(str(tmp_path / "net.ts"))
    x = torch.randn(3, 1, clf.params.n_mels, clf.params.frames_per_window) * 10 - 40
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), clf.network(x))


def _uncompiled_scores(weights: Path, y: np.ndarray) -> list[float]:
    return [w.score for w in Classifier.load(weights).classify_waveform(y, SR).windows]


def test_the_frozen_graph_scores_as_the_network_and_is_kept_for_the_next_load(weights, tmp_path, monkeypatch):
    y = impulses([0.5, 1.7], seconds=2.5)
    cache = tmp_path / "compiled" / "tiny.pt"
    clf = Classifier.load(weights)
    assert clf.compile_for_serving(cache) <= 1e-4
    assert cache.is_file()
    scores = [w.score for w in clf.classify_waveform(y, SR).windows]
    assert scores == pytest.approx(_uncompiled_scores(weights, y), abs=1e-5)

    # The next process loads the kept graph: tracing again would fail here.
    def no_tracing(*args, **kwargs):
        raise AssertionError("traced although a compiled graph was kept")

    monkeypatch.setattr(torch.jit, "trace", no_tracing)
    again = Classifier.load(weights)
    assert again.compile_for_serving(cache) <= 1e-4
    assert [w.score for w in again.classify_waveform(y, SR).windows] == pytest.approx(scores, abs=1e-6)


def test_a_damaged_kept_graph_is_rebuilt(weights, tmp_path):
    cache = tmp_path / "compiled.pt"
    cache.write_bytes(b"half a file")
    clf = Classifier.load(weights)
    assert clf.compile_for_serving(cache) <= 1e-4
    assert torch.jit.load(str(cache)) is not None


def test_a_kept_graph_of_another_network_is_refused_and_the_network_serves(weights, tmp_path):
    cache = tmp_path / "other.pt"
    Classifier.load(make_weights(tmp_path / "other-weights.pt", seed=1)).compile_for_serving(cache)
    y = impulses([0.5], seconds=1.5)
    clf = Classifier.load(weights)
    assert clf.compile_for_serving(cache) == float("inf")
    assert [w.score for w in clf.classify_waveform(y, SR).windows] == _uncompiled_scores(weights, y)


def test_cli_prints_json_per_file_and_fails_on_bad_files(weights, tmp_path, capsys):
    good = write(tmp_path / "a.wav", impulses([0.5], seconds=1.5))
    bad = tmp_path / "b.wav"
    bad.write_bytes(b"nope" * 100)
    status = classify.main([str(good), str(bad), "--weights", str(weights)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert lines[0]["file"] == str(good) and set(lines[0]) >= RESULT_KEYS
    assert lines[1]["code"] == "not_audio" and "error" in lines[1]


def test_cli_reports_unloadable_weights(tmp_path, capsys):
    good = write(tmp_path / "a.wav", sine(440, 1.0))
    assert classify.main([str(good), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "error" in json.loads(capsys.readouterr().out)


@pytest.mark.data
@pytest.mark.skipif(
    not (DATA_DIR / "manifest.csv").exists() or not classify.BUNDLED_WEIGHTS.exists(),
    reason="needs ../shared/data and the shipped weights",
)
def test_shipped_weights_classify_real_clips():
    import csv

    clf = Classifier.load(classify.BUNDLED_WEIGHTS)
    with (DATA_DIR / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    # Clear cases: close-range Kaggle shots and steady urban backgrounds.
    picks = [r for r in rows if r["source"] == "kaggle_gunshot"][:5:2]
    picks += [r for r in rows if r["category"] in {"air_conditioner", "engine_idling"}][:4]
    for r in picks:
        result = clf.classify_file(DATA_DIR / r["file"]).as_dict()
        assert result["label"] == r["label"], (r["file"], result["score"])
