"""Stored files of clips: audio retention and purging, spectrograms, derived files written atomically.

Audio is evidence and personal data at once: it is deleted as soon as it is no longer needed, files
first and rows second, so a crash leaves rows a later sweep can retry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from core import audio
from core.audio import AudioError
from core.features import FeatureParams
from detection.models import Classification, Clip
from detection.selectors import clips_with_expired_audio
from devices.models import Device

logger = logging.getLogger(__name__)

__all__ = [
    "PurgeReport",
    "clip_spectrogram",
    "clips_purge_expired_audio",
    "clips_with_expired_audio",
    "device_data_purge",
    "spectrogram_name",
]


def _delete_stored(name: str | None) -> None:
    if not name:
        return
    try:
        default_storage.delete(name)
    except OSError:
        logger.exception("Could not delete %s from storage", name)


def spectrogram_name(clip: Clip) -> str:
    return f"spectrograms/{clip.code}.png"


def _read_audio(clip: Clip) -> bytes:
    if not clip.audio:
        raise AudioError("empty", "the clip has no stored audio")
    try:
        with clip.audio.open("rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise AudioError("not_audio", f"the stored audio file is missing: {clip.audio.name}") from exc


def _audio_forget(clips: Any, now: datetime) -> int:
    """Delete the files of these clips, then blank the fields (files first: a crash leaves rows to retry)."""
    count = 0
    for clip in clips:
        _delete_stored(clip.audio.name)
        _delete_stored(spectrogram_name(clip))
        count += Clip.objects.filter(pk=clip.pk).update(audio="", audio_deleted_at=now)
    return count


def clips_purge_expired_audio(*, now: datetime | None = None) -> int:
    """Delete the audio (and spectrograms) of clips_with_expired_audio; return how many."""
    now = now or timezone.now()
    return _audio_forget(clips_with_expired_audio(now=now).only("pk", "code", "audio").iterator(), now)


@dataclass(frozen=True)
class PurgeReport:
    clips: int
    audio_files: int


def device_data_purge(*, device: Device) -> PurgeReport:
    """Delete every clip, result and audio file of a device; the device itself stays."""
    clips = list(device.clips.only("pk", "code", "audio"))
    files = 0
    for clip in clips:
        if clip.audio:
            _delete_stored(clip.audio.name)
            files += 1
        _delete_stored(spectrogram_name(clip))
    with transaction.atomic():
        deleted = Clip.objects.filter(pk__in=[clip.pk for clip in clips]).delete()[1].get(Clip._meta.label, 0)
    return PurgeReport(clips=deleted, audio_files=files)


def clip_spectrogram(*, clip: Clip) -> str:
    """The storage name of the clip's spectrogram PNG, rendering and caching it the first time."""
    from core import spectrogram

    name = spectrogram_name(clip)
    if default_storage.exists(name):
        return name
    data = _read_audio(clip)
    samples, sample_rate = audio.decode(data)
    params = _display_params(clip)
    png = spectrogram.render_png(samples, sample_rate, params, title=f"{clip.recorded_at:%Y-%m-%d %H:%M:%S} UTC")
    _store_cache_file(name, ContentFile(png))
    return name


def _store_cache_file(name: str, content: File) -> None:
    """Store a derived file (spectrogram, export) so no reader ever sees it half written.

    Readers test ``exists(name)`` and then read; on the filesystem the file is written under a
    temporary name and renamed into place, atomically. A concurrent writer's identical copy just
    replaces it. Other storages get a plain save, and a duplicate from a race is dropped.
    """
    try:
        final_path = default_storage.path(name)
    except NotImplementedError:
        saved = default_storage.save(name, content)
        if saved != name:
            _delete_stored(saved)
        return
    partial = default_storage.save(f"{name}.part", content)  # a unique name, in the same folder
    os.replace(default_storage.path(partial), final_path)


def _display_params(clip: Clip) -> FeatureParams:
    try:
        return FeatureParams.from_dict(clip.classification.model_version.feature_params)
    except (Classification.DoesNotExist, ValueError, TypeError):
        return FeatureParams()
