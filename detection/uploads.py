"""Checks an uploaded audio file before anything is written: container, sample format, completeness.

A thin layer over ``detection.audio``: it names the container (the API accepts WAV, FLAC, OGG
Vorbis/Opus and MP3 only) and catches two problems libsndfile lets through, a WAV whose data
chunk is cut short and a WAV sample format it cannot name. No Django import.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from detection import audio
from detection.audio import AudioError

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
        audio.decode(data)
        raise AudioError("unsupported_format", "only WAV, FLAC, OGG (Vorbis or Opus) and MP3 are accepted")
    if container == "wav":
        check_wav(data)
    samples, sample_rate = audio.decode(data)
    audio.validate(samples, sample_rate, min_s=min_s, max_s=max_s)
    return InspectedAudio(
        samples=samples,
        sample_rate=sample_rate,
        container=container,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )
