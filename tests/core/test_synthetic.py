"""The generated negatives (core.training.synthetic) are what they claim, and reach the probe and fine-tuning."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from scipy import signal

from core.features import FeatureParams
from core.training import AugmentConfig, ClipRecord, WindowSampler
from core.training import protocols as P
from core.training.augment import SYNTHETIC, with_synthetic_negatives
from core.training.synthetic import (
    BurstSpec,
    coloured_noise,
    decaying_burst,
    new_user_clip,
    render,
    synthetic_negative,
)
from tests.conftest import SHARED_DATA
from tests.core.helpers_audio import impulses, synthetic_manifest

SR = 16000
PRETRAINED = SHARED_DATA.parent / "pretrained" / "mn04_as_mAP_432.pt"


def _slope_db_per_octave(x: np.ndarray) -> float:
    f, p = signal.welch(x, fs=SR, nperseg=4096)
    band = (f >= 100) & (f <= 4000)
    return float(np.polyfit(np.log2(f[band]), 10 * np.log10(p[band]), 1)[0])


@pytest.mark.parametrize(("colour", "slope"), [("white", 0.0), ("pink", -3.0), ("brown", -6.0)])
def test_coloured_noise_has_unit_rms_and_its_spectral_slope(colour: str, slope: float) -> None:
    x = coloured_noise(colour, 8 * SR, np.random.default_rng(0))
    assert x.dtype == np.float32 and np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3)
    assert _slope_db_per_octave(x) == pytest.approx(slope, abs=0.6)


def test_burst_starts_at_full_level_and_decays_with_tau() -> None:
    tau = 0.05
    y = decaying_burst(SR, SR, tau, np.random.default_rng(1))
    block = 160  # 10 ms
    rms = np.sqrt(np.mean(y[: 20 * block].reshape(20, block).astype(np.float64) ** 2, axis=1))
    assert np.argmax(rms) == 0 and rms[0] > 0.8  # unit-RMS noise: no fade-in
    t = (np.arange(20) + 0.5) * block / SR
    fitted_tau = -1.0 / np.polyfit(t, np.log(rms), 1)[0]  # the amplitude falls as exp(-t / tau)
    assert fitted_tau == pytest.approx(tau, rel=0.2)


def test_band_passed_burst_keeps_its_energy_inside_the_band() -> None:
    y = decaying_burst(SR, SR, 0.3, np.random.default_rng(2), band_hz=(500.0, 1500.0))
    f, p = signal.welch(y, fs=SR, nperseg=1024)
    assert p[(f >= 500) & (f <= 1500)].sum() > 0.7 * p.sum()  # a 2nd-order band-pass: gentle skirts
    assert p[(f < 125) | (f > 6000)].sum() < 0.02 * p.sum()  # two octaves out, next to nothing


def test_render_puts_one_burst_at_each_onset_over_the_claimed_floor() -> None:
    spec = BurstSpec((0.5, 1.5, 2.5), 0.05, "white", None, False, -40.0)
    y = render(spec, 3.0, SR, np.random.default_rng(3), peak=0.8)
    assert y.shape == (3 * SR,) and y.dtype == np.float32
    assert np.max(np.abs(y)) == pytest.approx(0.8, abs=0.01)
    floor_rms = np.sqrt(np.mean(y[: int(0.45 * SR)].astype(np.float64) ** 2))
    # unit RMS over the whole clip; a brown floor wanders over 0.45 s, hence 3 dB
    assert 20 * np.log10(floor_rms / 0.8) == pytest.approx(-40.0, abs=3.0)
    envelope = np.sqrt(np.convolve(y.astype(np.float64) ** 2, np.ones(160) / 160, mode="same"))
    loud, _ = signal.find_peaks(envelope, height=0.1, distance=int(0.3 * SR))
    np.testing.assert_allclose(loud / SR, [0.5, 1.5, 2.5], atol=0.02)


def test_new_user_clip_is_the_issues_three_white_noise_bursts() -> None:
    y = new_user_clip(SR, seed=0)
    assert y.shape == (3 * SR,)
    np.testing.assert_array_equal(y, new_user_clip(SR, seed=0))
    envelope = np.sqrt(np.convolve(y.astype(np.float64) ** 2, np.ones(160) / 160, mode="same"))
    loud, _ = signal.find_peaks(envelope, height=0.1, distance=int(0.3 * SR))
    np.testing.assert_allclose(loud / SR, [0.5, 1.5, 2.5], atol=0.02)


def test_random_negatives_are_seeded_bounded_and_varied() -> None:
    rng = np.random.default_rng(4)
    clips = [synthetic_negative(3.0, SR, rng) for _ in range(200)]
    again = synthetic_negative(3.0, SR, np.random.default_rng(4))
    np.testing.assert_array_equal(clips[0][0], again[0])
    for y, spec in clips:
        assert y.shape == (3 * SR,) and np.isfinite(y).all() and np.abs(y).max() <= 1.0
        assert 1 <= len(spec.onsets_s) <= 5 and all(0.0 <= t < 3.0 for t in spec.onsets_s)
    specs = [s for _, s in clips]
    assert {s.colour for s in specs} == {"white", "pink", "brown"}
    assert any(s.click for s in specs) and any(s.band_hz for s in specs) and any(s.floor_db is None for s in specs)
    taus = [s.tau_s for s in specs if not s.click]
    assert min(taus) < 0.01 and max(taus) > 0.2  # from a sharp click-like rap to a long rumble
    assert any(abs(s.tau_s - 0.1) < 0.03 and s.colour == "white" for s in specs)  # the issue's burst is covered


def _records() -> list[ClipRecord]:
    recs = [ClipRecord(f"g{k}.flac", None, "gunshot", "gun_unknown", "us8k", f"g{k}", f"u{k}", 1.0) for k in range(6)]
    recs += [ClipRecord(f"o{k}.flac", None, "other", "siren", "us8k", f"o{k}", f"v{k}", 1.0) for k in range(6)]
    return recs


def _sampler(config: AugmentConfig, seed: int = 0) -> WindowSampler:
    recs = _records()
    waves = [impulses([0.3], seconds=1.5, seed=k) for k in range(len(recs))]
    return WindowSampler(waves, recs, np.arange(len(recs)), FeatureParams(), config, np.random.default_rng(seed))


def test_sampler_draws_the_configured_share_of_synthetic_negatives() -> None:
    idx, labels = _sampler(AugmentConfig(synthetic_negatives=0.5)).draw_indices(2000)
    share = np.mean(idx[labels == 0] == SYNTHETIC)
    assert share == pytest.approx(0.5, abs=0.05)
    assert not np.any(idx[labels == 1] == SYNTHETIC)  # a generated burst is never labelled a gunshot
    off, _ = _sampler(AugmentConfig()).draw_indices(2000)
    assert not np.any(off == SYNTHETIC)
    waves, _ = _sampler(AugmentConfig(synthetic_negatives=1.0), seed=3).batch(16)
    assert waves.shape == (16, 16000) and np.isfinite(waves).all()
    assert with_synthetic_negatives(AugmentConfig()).synthetic_negatives > 0


def test_the_shipped_recipe_draws_the_same_windows_as_before_the_option() -> None:
    """Off (0.0), the option consumes no random numbers: a seed gives the windows it gave before."""
    a, la = _sampler(AugmentConfig(), seed=5).batch(16)
    b, lb = _sampler(AugmentConfig(synthetic_negatives=0.0, synthetic_probe_clips=0), seed=5).batch(16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)


def test_every_protocol_fold_scores_the_check_clips() -> None:
    """run_protocol scores the given clips (the new-user bursts) with each fold's classifier."""
    recs = [
        SimpleNamespace(label="gunshot" if k % 2 else "other", category="gun" if k % 2 else "siren", source="s",
                        split_unit=f"u{k}")
        for k in range(20)
    ]  # fmt: skip
    waves = [np.zeros(SR, np.float32) for _ in recs]
    seen: list[int] = []

    class Stub:
        def classify_waveform(self, y: np.ndarray, sr: int, threshold: float = 0.5) -> Any:
            seen.append(y.size)
            return SimpleNamespace(score=0.25)

    def fit(train: np.ndarray, test: np.ndarray, desc: str) -> tuple[Any, np.ndarray]:
        return Stub(), np.linspace(0, 1, test.size)

    clips = [(new_user_clip(SR, seed=k), SR) for k in range(2)]
    result = P.run_protocol("cv", recs, waves, fit=fit, sample_rate=SR, check_clips=clips)
    assert set(result["check_scores"]) == {f["fold"] for f in result["folds"]}
    assert all(v == [0.25, 0.25] for v in result["check_scores"].values())
    assert "check_scores" not in P.run_protocol("cv", recs, waves, fit=fit, sample_rate=SR)


@pytest.mark.skipif(not PRETRAINED.is_file(), reason="../shared/pretrained is absent")
def test_probe_takes_the_generated_clips_as_negatives_never_as_mined_clips(tmp_path: Path) -> None:
    from core.features import efficientat_32k
    from core.training.data import load_manifest, load_waves
    from core.training.probe import fit_probe

    manifest = synthetic_manifest(tmp_path / "data", n_per_class=3)
    records = load_manifest(manifest)
    params = efficientat_32k()
    waves = load_waves(records, params, cache_dir=None, manifest=manifest)
    kwargs: dict[str, Any] = {"params": params, "pretrained": PRETRAINED, "augmented": False,
                              "cache_dir": tmp_path / "cache"}  # fmt: skip
    plain = fit_probe(records, waves, np.arange(len(records)), config=AugmentConfig(), **kwargs)
    generated = AugmentConfig(synthetic_probe_clips=4)
    with_bursts = fit_probe(records, waves, np.arange(len(records)), config=generated, **kwargs)
    assert not np.allclose(plain.weight, with_bursts.weight)  # the generated windows took part in the fit
    assert all(0 <= i < len(records) for i in with_bursts.hard_negatives)  # only real clips are drawn more often
    again = fit_probe(records, waves, np.arange(len(records)), config=generated, **kwargs)
    np.testing.assert_array_equal(again.weight, with_bursts.weight)  # seeded
