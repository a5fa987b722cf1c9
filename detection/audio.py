"""Audio decoding and feature extraction for the gunshot detector.

Pure numpy/librosa/soundfile: no Django import, so training, evaluation, Celery workers and devices
all share exactly the same preprocessing.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import librosa
import numpy as np
import soundfile as sf
from scipy import signal

AUDIO_ERROR_CODES = (
    "not_audio",
    "unsupported_format",
    "corrupt",
    "empty",
    "silent",
    "non_finite",
    "too_short",
    "too_long",
)

# Below one LSB of 16-bit audio: treat as digital silence.
_SILENCE_PEAK = 1e-6


class AudioError(ValueError):
    """Bad audio input; ``code`` is a stable machine-readable reason (see AUDIO_ERROR_CODES)."""

    def __init__(self, code: str, message: str) -> None:
        if code not in AUDIO_ERROR_CODES:
            raise ValueError(f"unknown AudioError code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message


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


def _sniff_unsupported(head: bytes) -> str | None:
    """Name containers that are audio but that libsndfile cannot read, for a clearer error."""
    if head[4:8] == b"ftyp":
        return "MP4/M4A/AAC"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "WMA/ASF"
    if head[:4] == b"#!AM":
        return "AMR"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "MPEG audio"
    return None


def _read_bytes(source: bytes | str | Path | BinaryIO) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | Path):
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise AudioError("not_audio", f"cannot read audio file {source}: {exc.strerror or exc}") from exc
    if hasattr(source, "read"):
        try:
            data = source.read()
        except (OSError, ValueError) as exc:
            raise AudioError("corrupt", f"cannot read audio stream: {exc}") from exc
        if not isinstance(data, bytes | bytearray):
            raise AudioError("not_audio", "stream did not return bytes")
        return bytes(data)
    raise AudioError("not_audio", f"unsupported audio source type {type(source).__name__}")


def decode(source: bytes | str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """Decode any libsndfile-readable audio to mono float32; raise AudioError for anything bad."""
    data = _read_bytes(source)
    if not data:
        raise AudioError("empty", "the audio file is empty (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr = int(f.samplerate)
            declared = f.frames
            y = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        text = str(exc)
        unsupported = _sniff_unsupported(data[:16])
        if unsupported and "ecognised" in text:
            raise AudioError("unsupported_format", f"{unsupported} is not a supported format") from exc
        if "ecognised" in text or "unknown format" in text.lower():
            raise AudioError("not_audio", "the data is not a recognised audio format") from exc
        raise AudioError("corrupt", f"the audio data is damaged: {text}") from exc
    except (RuntimeError, ValueError, TypeError, EOFError, OverflowError, MemoryError) as exc:
        # libsndfile decoders (FLAC, Vorbis, MP3) raise plain RuntimeErrors mid-stream on truncation.
        raise AudioError("corrupt", f"the audio data is damaged: {exc}") from exc
    if sr <= 0:
        raise AudioError("corrupt", "the audio header declares no sample rate")
    # Some decoders stop early without an error on truncated data; the header still knows better.
    if 0 < declared < 2**62 and y.shape[0] < declared:
        raise AudioError("corrupt", f"the audio is truncated ({y.shape[0]} of {declared} samples)")
    if y.shape[0] == 0:
        if len(data) > 1024:  # a header with nothing decodable behind it (e.g. a cut Ogg stream)
            raise AudioError("corrupt", "the audio data is damaged: no decodable samples")
        raise AudioError("empty", "the audio contains no samples")
    mono = y.mean(axis=1, dtype=np.float32) if y.shape[1] > 1 else y[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("non_finite", "the audio contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), sr


def validate(y: np.ndarray, sr: int, *, min_s: float, max_s: float) -> None:
    """Reject audio the detector cannot judge; raise AudioError with a specific code."""
    if y.size == 0:
        raise AudioError("empty", "the audio contains no samples")
    if not np.isfinite(y).all():
        raise AudioError("non_finite", "the audio contains NaN or infinite samples")
    duration = y.shape[-1] / sr
    if duration < min_s:
        raise AudioError("too_short", f"the audio is {duration:.3f} s long; at least {min_s:g} s needed")
    if duration > max_s:
        raise AudioError("too_long", f"the audio is {duration:.1f} s long; at most {max_s:g} s allowed")
    if float(np.max(np.abs(y))) <= _SILENCE_PEAK:
        raise AudioError("silent", "the audio is silent")


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
    if top <= _SILENCE_PEAK:
        return y.astype(np.float32, copy=False)
    return (y * (peak / top)).astype(np.float32)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def trim(y: np.ndarray, params: FeatureParams) -> tuple[np.ndarray, int]:
    """Cut leading/trailing quiet parts; return the kept audio and its start sample."""
    if y.size < params.n_fft or float(np.max(np.abs(y))) <= _SILENCE_PEAK:
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


def preprocess(y: np.ndarray, sr: int, params: FeatureParams) -> np.ndarray:
    """mono -> resample -> trim silence -> band-limit -> peak normalise."""
    return prepare(y, sr, params)[0]


@lru_cache(maxsize=16)
def mel_basis(params: FeatureParams) -> np.ndarray:
    return librosa.filters.mel(
        sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax
    ).astype(np.float32)


@lru_cache(maxsize=16)
def _window(n_fft: int) -> np.ndarray:
    return librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)


def log_mel(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-power mel spectrogram in dB (ref 1.0, floored at 10*log10(amin)); n_mels x frames."""
    spec = librosa.stft(
        np.ascontiguousarray(y, dtype=np.float32),
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        window=_window(params.n_fft),
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
