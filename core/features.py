"""The one feature pipeline of the detector: prepare -> log-mel -> windows.

Training, serving (the classifier), evaluation, the benchmark and the device agent all call ``windows``
(or ``extract`` when they also need the mel and the window times), so a model always sees the features
it was trained on. numpy, scipy and librosa only: no torch, no Django.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
from scipy import signal

from core.audio import SILENCE_PEAK, AudioError


@dataclass(frozen=True)
class FeatureParams:
    """Everything needed to reproduce the features a model was trained on.

    Stored inside every weights file, so a model always runs with its own parameters.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 320  # 20 ms: enough to see a muzzle blast, cheap enough for a device
    n_mels: int = 40
    fmin: float = 50.0  # wind and handling rumble live below this
    # Phones and street sensors often record at 8 kHz, so nothing above 4 kHz is trusted: the model
    # then sees the same band from every microphone.
    fmax: float = 4000.0
    band_limit_order: int = 8
    window_s: float = 1.0
    hop_s: float = 0.5
    top_db: float = 40.0  # leading/trailing trim threshold relative to the loudest frame
    amin: float = 1e-8  # floor of the power spectrum: -80 dB
    peak: float = 0.99

    def __post_init__(self) -> None:
        if self.hop_s > self.window_s or self.hop_s > 0.5:
            raise ValueError("hop_s must be <= 0.5 s and <= window_s")
        if not 0 < self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError("need 0 < fmin < fmax <= sample_rate / 2")

    @property
    def frames_per_window(self) -> int:
        return round(self.window_s * self.sample_rate / self.hop_length)

    @property
    def frames_per_hop(self) -> int:
        return max(1, round(self.hop_s * self.sample_rate / self.hop_length))

    @property
    def floor_db(self) -> float:
        return float(10.0 * np.log10(self.amin))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown feature parameters: {sorted(unknown)}")
        return cls(**d)


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average channels; accepts (samples,), (samples, channels) as soundfile gives, or (channels, samples)."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        return y
    if y.ndim != 2:
        raise AudioError("not_audio", f"audio must be 1-D or 2-D, got {y.ndim}-D")
    axis = 1 if y.shape[0] >= y.shape[1] else 0
    return y.mean(axis=axis, dtype=np.float32)


@lru_cache(maxsize=16)
def _lowpass(sample_rate: int, cutoff: float, order: int) -> np.ndarray:
    return signal.butter(order, cutoff, btype="lowpass", fs=sample_rate, output="sos")


def band_limit(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Attenuate everything above params.fmax (the seed's 'higher frequencies are attenuated')."""
    if params.fmax >= params.sample_rate / 2 * 0.999:
        return y
    sos = _lowpass(params.sample_rate, params.fmax, params.band_limit_order)
    return signal.sosfilt(sos, y).astype(np.float32)


def peak_normalise(y: np.ndarray, peak: float) -> np.ndarray:
    top = float(np.max(np.abs(y))) if y.size else 0.0
    if top <= SILENCE_PEAK:
        return y.astype(np.float32, copy=False)
    return (y * (peak / top)).astype(np.float32)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def trim(y: np.ndarray, params: FeatureParams) -> tuple[np.ndarray, int]:
    """Cut leading/trailing quiet parts; return the kept audio and its start sample."""
    if y.size < params.n_fft or float(np.max(np.abs(y))) <= SILENCE_PEAK:
        return y, 0
    kept, (start, _end) = librosa.effects.trim(
        y, top_db=params.top_db, frame_length=params.n_fft, hop_length=params.hop_length
    )
    if kept.size == 0:
        return y, 0
    return kept, int(start)


def prepare(y: np.ndarray, sr: int, params: FeatureParams) -> tuple[np.ndarray, float]:
    """The full preprocessing; also return where the kept audio starts in the input, in seconds."""
    y = resample(to_mono(y), sr, params.sample_rate)
    y, start = trim(y, params)
    # Band-limit before normalising so an out-of-band click cannot set the level of the useful band.
    y = peak_normalise(band_limit(y, params), params.peak)
    return y, start / params.sample_rate


@lru_cache(maxsize=16)
def mel_basis(params: FeatureParams) -> np.ndarray:
    return librosa.filters.mel(
        sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax
    ).astype(np.float32)


@lru_cache(maxsize=16)
def stft_window(n_fft: int) -> np.ndarray:
    return librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)


def log_mel(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-power mel spectrogram in dB (ref 1.0, floored at 10*log10(amin)); n_mels x frames."""
    spec = librosa.stft(
        np.ascontiguousarray(y, dtype=np.float32),
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        window=stft_window(params.n_fft),
        center=True,
        pad_mode="constant",
    )
    power = spec.real**2 + spec.imag**2
    mel = mel_basis(params) @ power
    return (10.0 * np.log10(np.maximum(mel, params.amin))).astype(np.float32)


def frame_windows(mel: np.ndarray, params: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """Slice a whole-clip mel into overlapping windows: (n, 1, n_mels, frames_per_window), start offsets (s).

    Short clips and the tail are padded with the silence floor, so every window has the same shape.
    """
    width, step = params.frames_per_window, params.frames_per_hop
    n_frames = mel.shape[1]
    n_windows = 1 if n_frames <= width else 1 + int(np.ceil((n_frames - width) / step))
    needed = (n_windows - 1) * step + width
    if needed > n_frames:
        pad = np.full((mel.shape[0], needed - n_frames), params.floor_db, dtype=np.float32)
        mel = np.concatenate([mel, pad], axis=1)
    view = np.lib.stride_tricks.sliding_window_view(mel, width, axis=1)[:, ::step][:, :n_windows]
    batch = np.array(view.transpose(1, 0, 2)[:, None], dtype=np.float32, order="C")  # a writable copy
    offsets = np.arange(n_windows, dtype=np.float64) * step * params.hop_length / params.sample_rate
    return batch, offsets


@dataclass(frozen=True)
class Features:
    """What ``extract`` computes from one clip: the network's input and what the classifier reads around it."""

    batch: np.ndarray  # (n, 1, n_mels, frames_per_window) log-mel windows in dB
    offsets_s: np.ndarray  # start of each window in the prepared (trimmed) audio, seconds
    mel: np.ndarray  # the whole prepared clip's log-mel (n_mels x frames), for onset detection
    trim_start_s: float  # where the prepared audio starts in the input, seconds


def extract(y: np.ndarray, sr: int, params: FeatureParams) -> Features:
    """The full pipeline on any audio (any rate, mono or multi-channel), keeping the intermediate results."""
    clean, trim_start_s = prepare(y, sr, params)
    mel = log_mel(clean, params)
    batch, offsets = frame_windows(mel, params)
    return Features(batch=batch, offsets_s=offsets, mel=mel, trim_start_s=trim_start_s)


def windows(y: np.ndarray, sr: int, params: FeatureParams) -> np.ndarray:
    """The network input for a clip: (n, 1, n_mels, frames_per_window) log-mel windows in dB."""
    return extract(y, sr, params).batch


def waveform_windows(clean: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Prepared audio cut into (n, window samples) waveform windows at the feature hop, the tail zero-padded.

    The seed-style ResNet-34 baseline computes its own spectrogram images from these.
    """
    length, step = int(params.window_s * params.sample_rate), int(params.hop_s * params.sample_rate)
    starts = range(0, max(1, clean.size - length + step), step)
    out = np.zeros((len(starts), length), dtype=np.float32)
    for k, s in enumerate(starts):
        piece = clean[s : s + length]
        out[k, : piece.size] = piece
    return out
