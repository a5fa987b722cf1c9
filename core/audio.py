"""Decoding and validation of audio: bytes, a path or a stream in; mono float32 samples or an AudioError out.

Everything a clip must pass before the detector looks at it lives here, for uploads (``inspect``: the
container, the sample format, completeness, length, silence) and for files read by training and
evaluation (``decode``). Only numpy and soundfile: the device agent uses it too.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

AUDIO_ERROR_CODES = (
    "not_audio",
    "unsupported_format",
    "corrupt",
    "empty",
    "silent",
    "non_finite",
    "too_short",
    "too_long",
    "unsupported_sample_rate",
    "too_many_channels",
)

# What an upload may be unless the caller says otherwise (the server passes its settings). Below 8 kHz a
# gunshot's crack is gone; above 192 kHz no microphone a device carries adds anything but decoded bytes. The
# detector mixes to mono, so more than a stereo pair is only a way to multiply the decoded size.
DEFAULT_MIN_SAMPLE_RATE = 8_000
DEFAULT_MAX_SAMPLE_RATE = 192_000
DEFAULT_MAX_CHANNELS = 2

# Below one LSB of 16-bit audio: treat as digital silence.
SILENCE_PEAK = 1e-6


class AudioError(ValueError):
    """Bad audio input; ``code`` is a stable machine-readable reason (see AUDIO_ERROR_CODES)."""

    def __init__(self, code: str, message: str) -> None:
        if code not in AUDIO_ERROR_CODES:
            raise ValueError(f"unknown AudioError code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message


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


def _libsndfile_error(exc: sf.LibsndfileError, data: bytes) -> AudioError:
    text = str(exc)
    unsupported = _sniff_unsupported(data[:16])
    if unsupported and "ecognised" in text:
        return AudioError("unsupported_format", f"{unsupported} is not a supported format")
    if "ecognised" in text or "unknown format" in text.lower():
        return AudioError("not_audio", "the data is not a recognised audio format")
    return AudioError("corrupt", f"the audio data is damaged: {text}")


# libsndfile decoders (FLAC, Vorbis, MP3) raise plain RuntimeErrors mid-stream on truncation.
_DECODER_ERRORS = (RuntimeError, ValueError, TypeError, EOFError, OverflowError, MemoryError)


@dataclass(frozen=True)
class AudioHeader:
    """What the container says about its audio, read without decoding a single sample."""

    sample_rate: int
    channels: int
    frames: int | None  # None where the container does not say (a streamed FLAC, some Ogg files)


def _declared_frames(frames: int) -> int | None:
    # libsndfile reports an unknown length as 0 or as SF_COUNT_MAX.
    return frames if 0 < frames < 2**62 else None


def read_header(data: bytes) -> AudioHeader:
    """The sample rate, channel count and length the container declares; raise AudioError if unreadable."""
    if not data:
        raise AudioError("empty", "the audio file is empty (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            return AudioHeader(int(f.samplerate), int(f.channels), _declared_frames(f.frames))
    except sf.LibsndfileError as exc:
        raise _libsndfile_error(exc, data) from exc
    except _DECODER_ERRORS as exc:
        raise AudioError("corrupt", f"the audio data is damaged: {exc}") from exc


def check_header(
    header: AudioHeader,
    *,
    max_s: float,
    min_rate: int = DEFAULT_MIN_SAMPLE_RATE,
    max_rate: int = DEFAULT_MAX_SAMPLE_RATE,
    max_channels: int = DEFAULT_MAX_CHANNELS,
) -> None:
    """Refuse, from the header alone, audio outside the limits: a decompression bomb is never decoded."""
    if header.sample_rate <= 0:
        raise AudioError("corrupt", "the audio header declares no sample rate")
    if not min_rate <= header.sample_rate <= max_rate:
        raise AudioError(
            "unsupported_sample_rate",
            f"the sample rate is {header.sample_rate} Hz; {min_rate}-{max_rate} Hz is accepted",
        )
    if header.channels > max_channels:
        raise AudioError(
            "too_many_channels", f"the audio has {header.channels} channels; at most {max_channels} accepted"
        )
    if header.frames is not None and header.frames > max_frames(max_s, header.sample_rate):
        duration = header.frames / header.sample_rate
        raise AudioError("too_long", f"the audio is {duration:.1f} s long; at most {max_s:g} s allowed")


def max_frames(max_s: float, sample_rate: int) -> int:
    """The most samples per channel a clip of at most ``max_s`` seconds can hold."""
    return math.ceil(max_s * sample_rate)


def decode(source: bytes | str | Path | BinaryIO, *, max_s: float | None = None) -> tuple[np.ndarray, int]:
    """Decode any libsndfile-readable audio to mono float32; raise AudioError for anything bad.

    With ``max_s`` no more than that many seconds are ever decoded, whatever the header claims: longer
    audio is refused as ``too_long`` once the decoder has produced one sample beyond the limit.
    """
    data = _read_bytes(source)
    if not data:
        raise AudioError("empty", "the audio file is empty (0 bytes)")
    limit: int | None = None
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr = int(f.samplerate)
            declared = _declared_frames(f.frames)
            if max_s is not None and sr > 0:
                limit = max_frames(max_s, sr)
            y = f.read(frames=-1 if limit is None else limit + 1, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise _libsndfile_error(exc, data) from exc
    except _DECODER_ERRORS as exc:
        raise AudioError("corrupt", f"the audio data is damaged: {exc}") from exc
    if sr <= 0:
        raise AudioError("corrupt", "the audio header declares no sample rate")
    if limit is not None and y.shape[0] > limit:
        raise AudioError("too_long", f"the audio is longer than {max_s:g} s")
    # Some decoders stop early without an error on truncated data; the header still knows better.
    if declared is not None and y.shape[0] < declared:
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
    if float(np.max(np.abs(y))) <= SILENCE_PEAK:
        raise AudioError("silent", "the audio is silent")


# ---------------------------------------------------------------- uploads

# The containers the upload API accepts, by the extension we store them under.
CONTAINERS = ("wav", "flac", "ogg", "mp3")

# WAVE format tags for integer PCM, IEEE float, A-law and µ-law; WAVE_FORMAT_EXTENSIBLE carries
# one of these in its sub-format GUID.
_WAV_TAGS = {0x0001, 0x0003, 0x0006, 0x0007}
_WAV_EXTENSIBLE = 0xFFFE
# Recorders that stream a WAV write a placeholder length they never patch.
_WAV_UNKNOWN_LENGTHS = {0, 0xFFFFFFFF}


@dataclass(frozen=True)
class InspectedAudio:
    samples: np.ndarray
    sample_rate: int
    container: str
    sha256: str
    size_bytes: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[-1] / self.sample_rate


def sniff_container(head: bytes) -> str | None:
    """The container named by the file's magic bytes, if it is one we accept."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"
    return None


def _wav_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(chunk id, declared size, offset of the chunk body) for every chunk header present."""
    chunks = []
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        chunks.append((chunk_id, size, offset + 8))
        if chunk_id == b"data":
            break
        offset += 8 + size + (size & 1)  # RIFF pads odd-sized chunks to an even length
    return chunks


def check_wav(data: bytes) -> None:
    """Raise AudioError for a WAV with an unknown sample format or a data chunk cut short."""
    chunks = _wav_chunks(data)
    fmt = next((c for c in chunks if c[0] == b"fmt "), None)
    if fmt is None or fmt[1] < 16 or fmt[2] + 16 > len(data):
        raise AudioError("corrupt", "the WAV file has no valid 'fmt ' chunk")
    body = fmt[2]
    (tag,) = struct.unpack("<H", data[body : body + 2])
    if tag == _WAV_EXTENSIBLE and fmt[1] >= 26 and body + 26 <= len(data):
        (tag,) = struct.unpack("<H", data[body + 24 : body + 26])
    if tag not in _WAV_TAGS:
        raise AudioError(
            "unsupported_format",
            f"WAV sample format 0x{tag:04x} is not supported; send PCM, float, A-law or µ-law samples",
        )
    data_chunk = next((c for c in chunks if c[0] == b"data"), None)
    if data_chunk is None:
        raise AudioError("corrupt", "the WAV file has no 'data' chunk")
    _, declared, start = data_chunk
    available = len(data) - start
    if declared not in _WAV_UNKNOWN_LENGTHS and declared > available:
        raise AudioError("corrupt", f"the WAV file is truncated ({available} of {declared} data bytes)")


def inspect(
    data: bytes,
    *,
    min_s: float,
    max_s: float,
    min_rate: int = DEFAULT_MIN_SAMPLE_RATE,
    max_rate: int = DEFAULT_MAX_SAMPLE_RATE,
    max_channels: int = DEFAULT_MAX_CHANNELS,
) -> InspectedAudio:
    """Decode and validate an upload completely; raise AudioError (with a stable code) if it is bad.

    The header is checked first (rate, channels, declared length) and decoding is bounded by ``max_s``,
    so what a small compressed file costs in memory is at most ``max_s`` x rate x channels samples.
    """
    if not data:
        raise AudioError("empty", "the audio file is empty (0 bytes)")
    container = sniff_container(data[:16])
    if container is None:
        # The decoder tells junk (not_audio) and known-but-unreadable containers apart; anything it
        # can read is still a container we do not take.
        decode(data)
        raise AudioError("unsupported_format", "only WAV, FLAC, OGG (Vorbis or Opus) and MP3 are accepted")
    if container == "wav":
        check_wav(data)
    check_header(read_header(data), max_s=max_s, min_rate=min_rate, max_rate=max_rate, max_channels=max_channels)
    samples, sample_rate = decode(data, max_s=max_s)
    validate(samples, sample_rate, min_s=min_s, max_s=max_s)
    return InspectedAudio(
        samples=samples,
        sample_rate=sample_rate,
        container=container,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )
