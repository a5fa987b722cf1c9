"""Positive classifications made directly, standing in for the detection pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.files.base import ContentFile
from django.utils import timezone

from core.geo import SPEED_OF_SOUND_M_S, destination_point, haversine_m
from detection.models import Classification, ModelVersion
from devices.models import Device
from tests.factories import ClassificationFactory, ClipFactory, ModelVersionFactory

SPEED_OF_SOUND = SPEED_OF_SOUND_M_S


def model_version() -> ModelVersion:
    return ModelVersionFactory(name="test-model", version="1")


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
    clip = ClipFactory(
        device=device,
        audio_format=audio_format,
        recorded_at=recorded_at or timezone.now(),
        latitude=lat,
        longitude=lon,
        accuracy_m=accuracy_m,
        trigger_offset_s=trigger_offset_s,
        clock_source=clock_source,
    )
    if audio is not None:
        clip.audio.save(f"{clip.code}.{audio_format}", ContentFile(audio), save=True)
    return ClassificationFactory(
        clip=clip, model_version=model_version(), label=label, score=score, shots=shots, offset_s=offset_s
    )


def heard_at(source: tuple[float, float], device_pos: tuple[float, float], shot_at: datetime) -> datetime:
    """When sound from `source` fired at `shot_at` reaches a device."""
    return shot_at + timedelta(seconds=haversine_m(*source, *device_pos) / SPEED_OF_SOUND)


def around(centre: tuple[float, float], distance_m: float, bearings: list[float]) -> list[tuple[float, float]]:
    return [destination_point(centre[0], centre[1], bearing, distance_m) for bearing in bearings]
