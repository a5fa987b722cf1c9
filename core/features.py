"""The one feature pipeline of the detector: prepare -> log-mel -> windows.

Training, serving (the classifier), evaluation, the benchmark and the device agent all call ``windows``
(or ``extract`` when they also need the mel and the window times), so a model always sees the features
it was trained on. numpy, scipy and librosa only: no torch, no Django.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import librosa
import numpy as np
from scipy import signal

from core.audio import SILENCE_PEAK, AudioError

_EFFICIENTAT_OFFSET = 1e-5


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
    # The front end of EfficientAT's AudioSet networks (``efficientat_32k``); the defaults are gwcnn's dB features.
    mel_scale: Literal["slaney", "kaldi"] = "slaney"
    log_scale: Literal["db", "efficientat"] = "db"  # efficientat: (ln(mel + 1e-5) + 4.5) / 5
    preemphasis: float = 0.0  # y[n] = x[n] - c * x[n-1], as a valid convolution (one sample shorter)
    win_length: int | None = None  # a symmetric Hann window of this length, zero-padded to n_fft
    mel_fmin: float | None = None  # mel band edges when they differ from the input band (fmin, fmax)
    mel_fmax: float | None = None

    def __post_init__(self) -> None:
        if self.hop_s > self.window_s or self.hop_s > 0.5:
            raise ValueError("hop_s must be <= 0.5 s and <= window_s")
        if not 0 < self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError("need 0 < fmin < fmax <= sample_rate / 2")
        lo, hi = self.mel_range
        if not 0 <= lo < hi <= self.sample_rate / 2:
            raise ValueError("need 0 <= mel_fmin < mel_fmax <= sample_rate / 2")
        if self.mel_scale not in ("slaney", "kaldi") or self.log_scale not in ("db", "efficientat"):
            raise ValueError(f"unknown mel_scale {self.mel_scale!r} or log_scale {self.log_scale!r}")
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            raise ValueError("need 0 < win_length <= n_fft")

    @property
    def mel_range(self) -> tuple[float, float]:
        return (
            self.fmin if self.mel_fmin is None else self.mel_fmin,
            self.fmax if self.mel_fmax is None else self.mel_fmax,
        )

    @property
    def frames_per_window(self) -> int:
        return round(self.window_s * self.sample_rate / self.hop_length)

    @property
    def frames_per_hop(self) -> int:
        return max(1, round(self.hop_s * self.sample_rate / self.hop_length))

    @property
    def floor_db(self) -> float:
        """The feature value of silence (padding of short clips), in the units of log_mel."""
        if self.log_scale == "efficientat":
            return float((np.log(_EFFICIENTAT_OFFSET) + 4.5) / 5.0)
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


def kaldi_mel_scale(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Kaldi's ``get_mel_banks`` without VTLN: triangles equally spaced in the HTK mel scale over the n_fft/2
    lowest bins, plus a zero column for the Nyquist bin (EfficientAT's input; torchaudio is not needed)."""
    bin_width = sample_rate / n_fft
    lo, hi = kaldi_mel_scale(fmin), kaldi_mel_scale(fmax)
    delta = (hi - lo) / (n_mels + 1)
    b = np.arange(n_mels, dtype=np.float64)[:, None]
    left, centre, right = lo + b * delta, lo + (b + 1.0) * delta, lo + (b + 2.0) * delta
    mel = kaldi_mel_scale(bin_width * np.arange(n_fft // 2, dtype=np.float64))[None, :]
    banks = np.maximum(0.0, np.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


@lru_cache(maxsize=16)
def mel_basis(params: FeatureParams) -> np.ndarray:
    lo, hi = params.mel_range
    if params.mel_scale == "kaldi":
        return kaldi_mel_banks(params.n_mels, params.n_fft, params.sample_rate, lo, hi)
    return librosa.filters.mel(
        sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels, fmin=lo, fmax=hi
    ).astype(np.float32)


@lru_cache(maxsize=16)
def stft_window(n_fft: int, win_length: int | None = None) -> np.ndarray:
    """Periodic Hann over n_fft (gwcnn), or a symmetric Hann of win_length centred in n_fft (EfficientAT)."""
    if win_length is None:
        return librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    return librosa.util.pad_center(np.hanning(win_length), size=n_fft).astype(np.float32)


def log_mel(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log mel spectrogram, n_mels x frames: dB (ref 1.0, floored at 10*log10(amin)) or EfficientAT's scaling."""
    y = np.ascontiguousarray(y, dtype=np.float32)
    if params.preemphasis:
        y = y[1:] - np.float32(params.preemphasis) * y[:-1]
    spec = librosa.stft(
        y,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        window=stft_window(params.n_fft, params.win_length),
        center=True,
        # EfficientAT was trained with torch.stft's reflect padding; gwcnn with zeros.
        pad_mode="reflect" if params.log_scale == "efficientat" and y.size > params.n_fft // 2 else "constant",
    )
    power = spec.real**2 + spec.imag**2
    mel = mel_basis(params) @ power
    if params.log_scale == "efficientat":
        return ((np.log(mel + _EFFICIENTAT_OFFSET) + 4.5) / 5.0).astype(np.float32)
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


def efficientat_32k(**overrides: Any) -> FeatureParams:
    """Input of the pretrained EfficientAT networks (32 kHz, 128 Kaldi mels 0-15 kHz over 1024-point FFTs).

    The input band stops at 7.6 kHz: the training data is 16 kHz audio, so a 44.1/48 kHz device's upper
    octave must not reach a model that never saw one.
    """
    base: dict[str, Any] = {
        "sample_rate": 32000, "n_fft": 1024, "hop_length": 320, "n_mels": 128, "fmin": 1.0, "fmax": 7600.0,
        "mel_scale": "kaldi", "log_scale": "efficientat", "preemphasis": 0.97, "win_length": 800,
        "mel_fmin": 0.0, "mel_fmax": 15000.0,
    }  # fmt: skip
    base.update(overrides)
    return FeatureParams(**base)


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
