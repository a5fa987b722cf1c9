from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from detection.models import Clip, ModelVersion
from detection.services import clip_result
from gunwatch.api import UTC_OFFSET_MESSAGE, utc_offset_is_plausible


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a UTC offset: a device timestamp without one is ambiguous, so it is refused."""

    default_error_messages = {
        "naive": "Give the time with a UTC offset, e.g. 2026-01-31T12:00:00.123Z.",
        "offset": UTC_OFFSET_MESSAGE,
    }

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                # Well-formed but impossible (minute 99, 30 February): Django's parser raises here.
                self.fail("invalid", format="ISO 8601")
            if parsed is not None and timezone.is_naive(parsed):
                self.fail("naive")
            if parsed is not None and not utc_offset_is_plausible(parsed):
                self.fail("offset")
        return super().to_internal_value(value)


class ClipUploadInputSerializer(serializers.Serializer):
    audio = serializers.FileField(allow_empty_file=True, max_length=255)
    recorded_at = AwareDateTimeField()
    client_id = serializers.UUIDField()
    latitude = serializers.FloatField(min_value=-90, max_value=90, required=False, allow_null=True)
    longitude = serializers.FloatField(min_value=-180, max_value=180, required=False, allow_null=True)
    accuracy_m = serializers.FloatField(min_value=0, max_value=100_000, required=False, allow_null=True)
    trigger_offset_s = serializers.FloatField(min_value=0, required=False, allow_null=True)
    clock_source = serializers.ChoiceField(choices=["system", "ntp", "gps"], required=False, default="")

    def validate_recorded_at(self, value: Any) -> Any:
        # A device that queued clips offline sends them late, but not this late: beyond CLIP_MAX_AGE the clock
        # is wrong (never set: 1970, year 1), and an incident dated then would mislead the police (and year 1
        # overflows the worker's date arithmetic). The future bound (clock skew) is the service's.
        age = timezone.now() - value
        if age > settings.CLIP_MAX_AGE:
            limit_h = settings.CLIP_MAX_AGE.total_seconds() / 3600
            raise serializers.ValidationError(
                f"recorded_at is {age.days} days in the past; at most {limit_h:g} h is accepted: check the device "
                "clock.",
                code="recorded_too_old",
            )
        return value


class ClipAcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="code")
    status = serializers.CharField()
    url = serializers.SerializerMethodField()

    def get_url(self, clip: Clip) -> str:
        return _clip_url(self.context.get("request"), clip)


def _clip_url(request: Any, clip: Clip) -> str:
    from django.urls import reverse

    path = reverse("clip-detail", kwargs={"id": clip.code})
    return request.build_absolute_uri(path) if request is not None else path


class WindowSerializer(serializers.Serializer):
    offset_s = serializers.FloatField()
    score = serializers.FloatField()


class ResultSerializer(serializers.Serializer):
    label = serializers.CharField()
    score = serializers.FloatField()
    threshold = serializers.FloatField()
    model_version = serializers.CharField()
    shots = serializers.IntegerField()
    offset_s = serializers.FloatField(allow_null=True)
    windows = WindowSerializer(many=True)


class ClipSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    device = serializers.UUIDField(source="device.code", read_only=True)
    url = serializers.SerializerMethodField()
    audio_available = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    class Meta:
        model = Clip
        fields = [
            "id",
            "url",
            "device",
            "client_id",
            "status",
            "recorded_at",
            "received_at",
            "latitude",
            "longitude",
            "accuracy_m",
            "trigger_offset_s",
            "clock_source",
            "audio_format",
            "audio_sha256",
            "size_bytes",
            "duration_s",
            "sample_rate",
            "audio_available",
            "retain_until",
            "audio_deleted_at",
            "error",
            "attempts",
            "finished_at",
            "result",
        ]
        read_only_fields = fields

    def get_url(self, clip: Clip) -> str:
        return _clip_url(self.context.get("request"), clip)

    def get_audio_available(self, clip: Clip) -> bool:
        return bool(clip.audio)

    def get_result(self, clip: Clip) -> dict[str, Any] | None:
        result = clip_result(clip)
        return None if result is None else ResultSerializer(result).data


class PredictInputSerializer(serializers.Serializer):
    audio = serializers.FileField(allow_empty_file=True, max_length=255)
    threshold = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)


class PredictOutputSerializer(ResultSerializer):
    duration_s = serializers.FloatField()
    sha256 = serializers.CharField()
    timings_ms = serializers.DictField(child=serializers.FloatField())


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "version",
            "architecture",
            "sha256",
            "sample_rate",
            "feature_params",
            "threshold",
            "metrics",
            "created_at",
            "activated_at",
        ]
        read_only_fields = fields


class DevicePurgeSerializer(serializers.Serializer):
    device = serializers.UUIDField()
    clips_deleted = serializers.IntegerField()
    audio_files_deleted = serializers.IntegerField()
