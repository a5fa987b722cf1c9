from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from core import audio, features
from core.audio import AudioError
from core.features import FeatureParams
from tests.core.helpers_audio import SR, impulses, sine, write


def _bytes(y: np.ndarray, fmt: str, subtype: str | None = None, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _code(source: object) -> str:
    with pytest.raises(AudioError) as info:
        audio.decode(source)  # type: ignore[arg-type]
    assert str(info.value)  # a human-readable message
    return info.value.code


def test_decode_wav_path_bytes_and_stream_agree(tmp_path):
    path = write(tmp_path / "tone.wav", sine(440, 0.5))
    y_path, sr = audio.decode(path)
    y_bytes, _ = audio.decode(path.read_bytes())
    with path.open("rb") as f:
        y_stream, _ = audio.decode(f)
    assert sr == SR
    assert y_path.dtype == np.float32 and y_path.shape == (SR // 2,)
    np.testing.assert_array_equal(y_path, y_bytes)
    np.testing.assert_array_equal(y_path, y_stream)
    np.testing.assert_allclose(y_path, sine(440, 0.5), atol=1e-4)  # 16-bit quantisation


def test_decode_averages_channels_to_mono(tmp_path):
    left, right = sine(440, 0.25, amp=0.4), np.zeros(SR // 4, dtype=np.float32)
    y, _ = audio.decode(write(tmp_path / "stereo.flac", np.stack([left, right], axis=1)))
    assert y.ndim == 1
    np.testing.assert_allclose(y, left / 2, atol=1e-4)


def test_decode_ogg_keeps_sample_rate():
    y, sr = audio.decode(_bytes(sine(440, 0.5, sr=22050), "OGG", sr=22050))
    assert sr == 22050 and abs(y.size - 11025) < 100


def test_garbage_bytes_are_not_audio():
    assert _code(b"this is a text file, not a recording " * 10) == "not_audio"


def test_missing_file_is_not_audio(tmp_path):
    assert _code(tmp_path / "nope.wav") == "not_audio"


def test_mp4_container_is_unsupported_format():
    assert _code(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 200) == "unsupported_format"


def test_truncated_flac_is_corrupt():
    data = _bytes((np.random.default_rng(0).standard_normal(SR) * 0.1).astype(np.float32), "FLAC")
    assert _code(data[: len(data) // 2]) == "corrupt"


def test_zero_bytes_and_zero_samples_are_empty():
    assert _code(b"") == "empty"
    assert _code(_bytes(np.zeros(0, dtype=np.float32), "WAV")) == "empty"


def test_nan_samples_are_non_finite():
    y = sine(440, 0.1)
    y[10] = np.nan
    assert _code(_bytes(y, "WAV", "FLOAT")) == "non_finite"


@pytest.mark.parametrize(
    ("y", "kwargs", "code"),
    [
        (np.zeros(SR, dtype=np.float32), {"min_s": 0.1, "max_s": 60}, "silent"),
        (sine(440, 0.05), {"min_s": 0.1, "max_s": 60}, "too_short"),
        (sine(440, 2.0), {"min_s": 0.1, "max_s": 1.0}, "too_long"),
        (np.array([0.1, np.inf] * 4000, dtype=np.float32), {"min_s": 0.1, "max_s": 60}, "non_finite"),
        (np.zeros(0, dtype=np.float32), {"min_s": 0.1, "max_s": 60}, "empty"),
    ],
)
def test_validate_codes(y, kwargs, code):
    with pytest.raises(AudioError) as info:
        audio.validate(y, SR, **kwargs)
    assert info.value.code == code


def test_validate_accepts_normal_audio():
    audio.validate(sine(440, 1.0), SR, min_s=0.5, max_s=30)


def test_read_header_reports_rate_channels_and_length_without_decoding():
    header = audio.read_header(_bytes(np.zeros((SR * 2, 2), dtype=np.float32), "FLAC", "PCM_16"))
    assert header == audio.AudioHeader(sample_rate=SR, channels=2, frames=SR * 2)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (audio.AudioHeader(1, 1, 10), "unsupported_sample_rate"),
        (audio.AudioHeader(7_999, 1, 8_000), "unsupported_sample_rate"),
        (audio.AudioHeader(384_000, 1, 384_000), "unsupported_sample_rate"),
        (audio.AudioHeader(SR, 3, SR), "too_many_channels"),
        (audio.AudioHeader(SR, 1, SR * 30 + 1), "too_long"),
        (audio.AudioHeader(0, 1, SR), "corrupt"),
    ],
)
def test_check_header_codes(header, code):
    with pytest.raises(AudioError) as info:
        audio.check_header(header, max_s=30)
    assert info.value.code == code


@pytest.mark.parametrize(
    "header",
    [audio.AudioHeader(8_000, 1, 8_000), audio.AudioHeader(192_000, 2, 192_000 * 30), audio.AudioHeader(SR, 1, None)],
)
def test_check_header_accepts_the_edges_and_unknown_lengths(header):
    audio.check_header(header, max_s=30)


def test_decode_with_max_s_stops_one_sample_past_the_limit():
    data = _bytes(sine(440, 3.0), "FLAC", "PCM_16")
    with pytest.raises(AudioError) as info:
        audio.decode(data, max_s=2.0)
    assert info.value.code == "too_long"
    y, sr = audio.decode(data, max_s=3.0)
    assert y.shape == (SR * 3,) and sr == SR


def test_audio_error_rejects_unknown_code():
    with pytest.raises(ValueError):
        AudioError("bogus", "x")


def test_feature_params_round_trip_and_reject_unknown_keys():
    p = FeatureParams(n_mels=48, fmax=3500.0)
    assert FeatureParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError):
        FeatureParams.from_dict({**p.to_dict(), "mystery": 1})
    with pytest.raises(ValueError):
        FeatureParams(hop_s=0.75)


def test_prepare_resamples_trims_and_normalises():
    p = FeatureParams()
    y = np.concatenate([np.zeros(44100, dtype=np.float32), sine(500, 1.0, sr=44100, amp=0.1)])
    out, _ = features.prepare(y, 44100, p)
    assert out.dtype == np.float32
    # one second of leading silence trimmed, one second of tone kept (trim works in 20-ms frames)
    assert abs(out.size - p.sample_rate) < 0.06 * p.sample_rate
    assert np.max(np.abs(out)) == pytest.approx(p.peak, abs=1e-3)


def test_prepare_reports_trimmed_start():
    p = FeatureParams()
    y = np.concatenate([np.zeros(SR // 2, dtype=np.float32), sine(500, 1.0)])
    _, start_s = features.prepare(y, SR, p)
    assert start_s == pytest.approx(0.5, abs=0.05)


def test_band_limit_attenuates_above_fmax():
    p = FeatureParams()
    low = features.band_limit(sine(1000, 1.0), p)[SR // 2 :]
    high = features.band_limit(sine(6000, 1.0), p)[SR // 2 :]
    assert np.std(low) > 0.3
    assert 20 * np.log10(np.std(high) / np.std(sine(6000, 1.0))) < -40


def test_log_mel_shape_dtype_and_floor():
    p = FeatureParams()
    mel = features.log_mel(np.zeros(SR, dtype=np.float32), p)
    assert mel.shape == (p.n_mels, 1 + SR // p.hop_length)
    assert mel.dtype == np.float32
    assert np.all(mel == pytest.approx(p.floor_db))


def test_log_mel_places_a_tone_in_the_right_band():
    p = FeatureParams()
    mel = features.log_mel(sine(1000, 1.0), p)
    centres = features.mel_basis(p).argmax(axis=1) * p.sample_rate / p.n_fft
    assert abs(centres[mel.mean(axis=1).argmax()] - 1000) < 150


def test_frame_windows_slices_the_whole_clip_mel():
    p = FeatureParams()
    mel = features.log_mel(impulses([0.5, 1.7], seconds=3.0), p)
    batch, offsets = features.frame_windows(mel, p)
    w, h = p.frames_per_window, p.frames_per_hop
    assert batch.shape == (len(offsets), 1, p.n_mels, w) and batch.dtype == np.float32
    np.testing.assert_allclose(offsets, np.arange(len(offsets)) * p.hop_s)
    np.testing.assert_array_equal(batch[1, 0], mel[:, h : h + w])
    # the last window reaches the end of the clip (padded with the floor)
    assert (len(offsets) - 1) * h + w >= mel.shape[1]
    assert batch[-1, 0, :, -1].max() == pytest.approx(p.floor_db)


def test_frame_windows_pads_a_short_clip_to_one_window():
    p = FeatureParams()
    mel = features.log_mel(sine(800, 0.2), p)
    batch, offsets = features.frame_windows(mel, p)
    assert batch.shape == (1, 1, p.n_mels, p.frames_per_window)
    assert offsets.tolist() == [0.0]
    np.testing.assert_array_equal(batch[0, 0, :, : mel.shape[1]], mel)
    assert np.all(batch[0, 0, :, mel.shape[1] :] == p.floor_db)
