"""The pretrained EfficientAT network, its features, fine-tuning, calibration and the validation protocols."""

from __future__ import annotations

import csv
import json
from typing import Any

import numpy as np
import pytest
import torch

from core import calibration, features
from core.classifier import Classifier
from core.features import efficientat_32k
from core.networks import MN04Detector, MobileNetV3, TorchLogMel, build
from core.training import ClipRecord, TrainSettings, train
from core.training import protocols as P
from tests.conftest import SHARED_DATA
from tests.core.helpers_audio import impulses, synthetic_manifest

PRETRAINED = SHARED_DATA.parent / "pretrained" / "mn04_as_mAP_432.pt"
CLIPS = SHARED_DATA / "clips"
needs_pretrained = pytest.mark.skipif(
    not (PRETRAINED.is_file() and CLIPS.is_dir()), reason="../shared/pretrained and ../shared/data are absent"
)


def test_kaldi_mel_banks_are_htk_triangles():
    banks = features.kaldi_mel_banks(128, 1024, 32000, 0.0, 15000.0)
    assert banks.shape == (128, 513)
    assert not banks[:, 512].any()  # the Nyquist bin gets no weight
    assert banks.max() <= 1.0 and (banks.sum(axis=1) > 0).all()  # the lowest triangles fall between bins
    centres = banks.argmax(axis=1) * 32000 / 1024
    assert np.all(np.diff(centres) >= 0) and centres[-1] < 15000
    # equal spacing in m(f) = 1127 ln(1 + f / 700)
    edges = np.exp(np.linspace(0, features.kaldi_mel_scale(15000.0), 130) / 1127.0) * 700 - 700
    assert centres[64] == pytest.approx(edges[65], abs=32000 / 1024)


def test_efficientat_params_round_trip_and_torch_front_end_matches():
    params = efficientat_32k()
    assert features.FeatureParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    y = impulses([0.3, 0.7], seconds=1.0, sr=32000)
    expected = features.log_mel(y, params)
    got = TorchLogMel(params)(torch.from_numpy(y)[None])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    batch = features.windows(y, 32000, params)
    assert batch.shape[1:] == (1, 128, 100)
    silence = features.windows(np.zeros(8000, np.float32) + 1e-7, 32000, params)
    assert silence[0, 0, :, -1].max() == pytest.approx(params.floor_db)


@needs_pretrained
@pytest.mark.parametrize(
    ("clip", "mean", "top"),
    [
        ("kaggle_gunshot__1_10__p00.flac", 0.457, {428: 0.437, 427: 0.169}),
        ("us8k__101415-3-0-2__p00.flac", -1.140, {72: 0.865, 74: 0.856}),
    ],
)
def test_pretrained_network_reproduces_reference_outputs(clip, mean, top):
    """../shared/pretrained/README.md: 2-s excerpts resampled 16 -> 32 kHz (soxr HQ), zero-padded to 2 s."""
    import soundfile as sf
    import soxr

    net = MobileNetV3()
    net.load_state_dict(torch.load(PRETRAINED, map_location="cpu", weights_only=True), strict=True)
    y, sr = sf.read(CLIPS / clip, dtype="float32")
    y = soxr.resample(y, sr, 32000, quality="HQ")[:64000]
    y = np.pad(y, (0, 64000 - y.size))
    mel = features.log_mel(y, efficientat_32k())
    assert mel.shape == (128, 200)
    assert float(mel.mean()) == pytest.approx(mean, abs=0.0015)
    with torch.inference_mode():
        probs = torch.sigmoid(net.eval()(torch.from_numpy(mel)[None, None]))[0].numpy()
    for index, p in top.items():
        assert probs[index] == pytest.approx(p, abs=0.002)
    assert int(np.argmax(probs)) == next(iter(top))


@needs_pretrained
def test_detector_starts_from_the_audioset_gunshot_classes():
    det = MN04Detector()
    det.load_audioset(torch.load(PRETRAINED, map_location="cpu", weights_only=True))
    groups = det.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-4), pytest.approx(1e-3)]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in det.parameters())


def test_mn04_fine_tuning_smoke_stores_a_loadable_model(tmp_path):
    """A few steps on a handful of clips: the run completes, writes weights that load and classify."""
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=5)
    settings = TrainSettings.mn04(
        manifest, tmp_path / "run", PRETRAINED if PRETRAINED.is_file() else None, epochs=1, steps_per_epoch=2,
        batch_size=4, speed=False, mine_hard_negatives=PRETRAINED.is_file(),
    )  # fmt: skip
    result = train(settings)
    clf = Classifier.load(result.weights_path, expected_sha256=result.sha256)
    assert clf.architecture == "mn04-ensemble" and clf.params == efficientat_32k()
    if PRETRAINED.is_file():  # the probe was fitted: the ensemble's second member is not the zero init
        assert float(clf.network.probe.weight.abs().sum()) > 0  # type: ignore[union-attr, operator]  # ensemble only
    verdict = clf.classify_waveform(impulses([0.5], seconds=2.0), 16000)
    assert 0.0 <= verdict.score <= 1.0 and len(verdict.windows) >= 1


def test_calibration_is_monotonic_and_fits_held_out_rates():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.3
    raw = np.where(y, rng.beta(5, 2, y.size), rng.beta(2, 5, y.size))
    cal = calibration.fit_platt(raw, y)
    assert cal["a"] > 0
    grid = np.linspace(0.001, 0.999, 200)
    assert np.all(np.diff(calibration.apply(grid, cal)) > 0)
    calibrated = calibration.apply(raw, cal)
    for lo in (0.1, 0.5, 0.8):
        band = (calibrated >= lo) & (calibrated < lo + 0.1)
        assert y[band].mean() == pytest.approx(calibrated[band].mean(), abs=0.06)
    with pytest.raises(ValueError):
        calibration.fit_platt([0.2, 0.4], [0, 0])


def test_operating_points_are_ordered_and_respect_their_false_positive_rates():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(300), np.zeros(2000)].astype(bool)
    s = np.r_[rng.uniform(0.3, 1.0, 300), rng.uniform(0.0, 0.8, 2000)]
    ops = calibration.operating_points(s, y)
    assert ops["high_recall"]["threshold"] <= ops["balanced"]["threshold"] <= ops["low_false_alarm"]["threshold"]
    for name, point in ops.items():
        assert point["fpr"] <= calibration.OPERATING_POINTS[name] + 1e-9
    stream = (np.array([10.0, 12.0, 100.0, 400.0]), np.array([0.99, 0.98, 0.97, 0.5]))
    # two events above 0.97 (10-12 s merge) in one hour: one alarm per hour allows only the top event
    assert calibration.threshold_for_alarm_rate([stream], 1.0, 1.0) == pytest.approx(0.98)


def _rec(label: str, source: str, unit: str, category: str = "x") -> ClipRecord:
    return ClipRecord(f"{unit}.flac", None, label, category, source, unit, unit, 1.0)


def _constructed() -> list[ClipRecord]:
    recs = []
    for fp in range(1, 6):  # street sensors: shots and backgrounds of five firing positions
        recs += [_rec("gunshot", "shotspotter_pgh", f"shotspotter_pgh:FP{fp}") for _ in range(4)]
        recs += [_rec("other", "shotspotter_pgh", f"shotspotter_pgh:FP{fp}", "street_background") for _ in range(2)]
    for gun in ("ak47", "m16"):
        recs += [_rec("gunshot", "kaggle_gunshot", f"kaggle:{gun}", gun) for _ in range(3)]
    recs += [_rec("gunshot", "elp_ecoguns", "elp_ecoguns") for _ in range(3)]
    recs += [_rec("other", "elp_ecoguns_bg", "elp_ecoguns")]
    recs += [_rec("other", "us8k", f"fs_user:{k}", "siren") for k in range(10)]
    return recs


def test_protocol_folds_hold_out_whole_units_and_share_nothing_with_training():
    recs = _constructed()
    fp = P.folds_for("firing_position", recs)
    assert [f.name for f in fp] == ["FP1", "FP2", "FP3", "FP4", "FP5"]
    for f in fp:
        held_units = {recs[i].split_unit for i in f.held}
        assert held_units == {f"shotspotter_pgh:{f.name}"} and len(f.held) == 6
        assert {recs[i].split_unit for i in f.train}.isdisjoint({recs[i].split_unit for i in f.test})
        assert any(recs[i].source == "us8k" for i in f.test)  # a fold of the clean negatives measures FPR
    src = {f.name: f for f in P.folds_for("source", recs)}
    assert set(src) == {"shotspotter_pgh", "kaggle_gunshot", "elp_ecoguns"}
    assert {recs[i].source for i in src["elp_ecoguns"].held} == {"elp_ecoguns", "elp_ecoguns_bg"}
    assert not any(P.source_family(recs[i].source) == "elp_ecoguns" for i in src["elp_ecoguns"].train)
    guns = P.folds_for("gun_model", recs)
    assert [f.name for f in guns] == ["ak47", "m16"]
    assert all({recs[i].category for i in f.held} == {f.name} for f in guns)
    # five positions, five folds of the clean negatives: each clean negative is tested exactly once
    clean = [i for i, r in enumerate(recs) if r.source == "us8k"]
    counts = np.bincount(np.concatenate([f.test for f in fp]), minlength=len(recs))
    assert set(counts[clean]) == {1}


def test_fold_metrics_report_recall_per_source_at_named_thresholds():
    recs = _constructed()
    fold = P.folds_for("firing_position", recs)[0]
    y = np.array([recs[i].label == "gunshot" for i in fold.test])
    scores = np.where(y, 0.9, 0.1)
    scores[np.flatnonzero(y)[0]] = 0.05
    m = P.fold_metrics(recs, fold, scores, {"balanced": 0.5})
    assert m["auc"] == pytest.approx(1 - 1 / (y.sum() * (~y).sum()) * (~y).sum())
    assert m["balanced"]["recall_by_source"] == {"shotspotter_pgh": pytest.approx(3 / 4)}
    assert m["balanced"]["fpr"] == 0.0


def test_cv_protocol_run_fits_calibration_stored_with_the_weights(tmp_path):
    """A whole run with a protocol: held-out predictions -> calibration + operating points in the weights."""
    manifest = synthetic_manifest(tmp_path / "data", n_per_class=10)
    captures: list[int] = []

    def capture(stream: np.ndarray, sr: int) -> list[tuple[float, np.ndarray]]:
        captures.append(stream.size)
        return [(1.0, stream[: 2 * sr])]

    result = train(
        TrainSettings(manifest=manifest, out_dir=tmp_path / "run", architecture="gwcnn-tiny", epochs=1,
                      steps_per_epoch=2, batch_size=8, speed=False, protocols=("cv",), calibrate=True),
        capture=capture,
    )  # fmt: skip
    assert len(captures) == 5
    clf = Classifier.load(result.weights_path, expected_sha256=result.sha256)
    assert clf.calibration is not None and clf.calibration["a"] > 0
    assert set(clf.operating_points) == {"high_recall", "balanced", "low_false_alarm"}
    assert clf.threshold == pytest.approx(clf.operating_points["balanced"])
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    folds = card["protocols"]["cv"]["folds"]
    assert len(folds) == 5 and all("alarms_per_hour_trigger" in f["balanced"] for f in folds)
    assert all(f["captures"] == 1 and f["stream_hours"] > 0 for f in folds)  # one capture per stream above
    with (tmp_path / "data" / "manifest.csv").open() as f:
        assert sum(f2["n_test"] for f2 in folds) == len(list(csv.DictReader(f)))


def test_calibration_is_folded_into_the_device_export(tmp_path):
    torch.manual_seed(0)
    params = features.FeatureParams()
    net = build("gwcnn-tiny", params).eval()
    clf = Classifier(net, architecture="gwcnn-tiny", params=params, threshold=0.5,
                     meta={"calibration": {"method": "platt", "a": 2.0, "b": -1.0}})  # fmt: skip
    batch = features.windows(impulses([0.4], seconds=1.5), 16000, params)
    clf.export_torchscript(tmp_path / "m.pt")
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.inference_mode():
        device = torch.sigmoid(scripted(torch.from_numpy(batch))).numpy()
    np.testing.assert_allclose(device, clf.window_scores(batch), rtol=1e-5)


@needs_pretrained
def test_probe_from_cached_embeddings_is_the_probe_computed_directly(tmp_path):
    """The fold-independent frozen embeddings are computed once into the cache and give the same probe."""
    from core.training.augment import AugmentConfig
    from core.training.data import load_manifest, load_waves
    from core.training.probe import fit_probe

    manifest = synthetic_manifest(tmp_path / "data", n_per_class=3)
    records = load_manifest(manifest)
    params = efficientat_32k()
    waves = load_waves(records, params, cache_dir=None, manifest=manifest)
    train_idx = np.arange(1, len(records))
    kwargs: dict[str, Any] = {"params": params, "config": AugmentConfig(), "pretrained": PRETRAINED, "augmented": False}
    direct = fit_probe(records, waves, train_idx, **kwargs)
    cached = fit_probe(records, waves, train_idx, cache_dir=tmp_path / "cache", **kwargs)
    (cache_file,) = (tmp_path / "cache").glob("embeddings-*.npz")
    with np.load(cache_file) as z:
        assert z["counts"].size == len(records)  # every clip, not only this fold's training clips
    again = fit_probe(records, waves, np.arange(len(records) - 1), cache_dir=tmp_path / "cache", **kwargs)
    assert len(list((tmp_path / "cache").glob("embeddings-*"))) == 1  # another fold reuses the same file
    np.testing.assert_allclose(cached.weight, direct.weight, rtol=1e-4, atol=1e-6)
    assert cached.bias == pytest.approx(direct.bias, rel=1e-4)
    assert cached.hard_negatives == direct.hard_negatives
    assert again.weight.shape == direct.weight.shape
    stronger = fit_probe(records, waves, train_idx, cache_dir=tmp_path / "cache", c=0.01, **kwargs)
    assert np.linalg.norm(stronger.weight) < np.linalg.norm(cached.weight)  # C is the inverse L2 strength
