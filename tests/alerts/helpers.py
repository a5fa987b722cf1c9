"""Positive classifications made directly, standing in for the detection pipeline."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.core.files.base import ContentFile
from django.utils import timezone

from core.geo import SPEED_OF_SOUND_M_S, destination_point
from detection.models import Classification, Clip, ModelVersion
from devices.models import Device

SPEED_OF_SOUND = SPEED_OF_SOUND_M_S


def model_version() -> ModelVersion:
    version, _ = ModelVersion.objects.get_or_create(
        name="test-model", version="1", defaults={"architecture": "cnn", "sha256": "0" * 64, "weights": "models/x.pt"}
    )
    return version


def classify(
    device: Device,
    *,
    recorded_at: datetime | None = None,
    offset_s: float | None = 0.5,
    trigger_offset_s: float | None = None,
    lat: float | None = None,
    lon: float | None = None,
    accuracy_m: float | None = None,
    clock_source: str = "ntp",
    label: str = Classification.Label.GUNSHOT,
    score: float = 0.93,
    shots: int = 1,
    audio: bytes | None = None,
    audio_format: str = "wav",
) -> Classification:
    clip = Clip.objects.create(
        device=device,
        client_id=uuid.uuid4(),
        audio_sha256="0" * 64,
        audio_format=audio_format,
        recorded_at=recorded_at or timezone.now(),
        latitude=lat,
        longitude=lon,
        accuracy_m=accuracy_m,
        trigger_offset_s=trigger_offset_s,
        clock_source=clock_source,
        status=Clip.Status.DONE,
        duration_s=2.0,
    )
    if audio is not None:
        clip.audio.save(f"{clip.code}.{audio_format}", ContentFile(audio), save=True)
    return Classification.objects.create(
        clip=clip, model_version=model_version(), label=label, score=score, threshold=0.5, shots=shots,
        offset_s=offset_s,
    )


def heard_at(source: tuple[float, float], device_pos: tuple[float, float], shot_at: datetime) -> datetime:
    """When sound from `source` fired at `shot_at` reaches a device."""
    from core.geo import haversine_m

    return shot_at + timedelta(seconds=haversine_m(*source, *device_pos) / SPEED_OF_SOUND)


def around(centre: tuple[float, float], distance_m: float, bearings: list[float]) -> list[tuple[float, float]]:
    return [destination_point(centre[0], centre[1], bearing, distance_m) for bearing in bearings]
