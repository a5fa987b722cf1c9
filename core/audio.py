"""Decoding and validation of audio: bytes, a path or a stream in; mono float32 samples or an AudioError out.

Everything a clip must pass before the detector looks at it lives here, for uploads (``inspect``: the
container, the sample format, completeness, length, silence) and for files read by training and
evaluation (``decode``). Only numpy and soundfile: the device agent uses it too.
"""

from __future__ import annotations

import hashlib
import io
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
)

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


def inspect(data: bytes, *, min_s: float, max_s: float) -> InspectedAudio:
    """Decode and validate an upload completely; raise AudioError (with a stable code) if it is bad."""
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
    samples, sample_rate = decode(data)
    validate(samples, sample_rate, min_s=min_s, max_s=max_s)
    return InspectedAudio(
        samples=samples,
        sample_rate=sample_rate,
        container=container,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )
