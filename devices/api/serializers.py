from __future__ import annotations

import math
from typing import Any

import phonenumbers
from rest_framework import serializers

from accounts.permissions import is_person
from devices.models import Device, TrustedContact


def validate_e164(value: str) -> str:
    """Accept only a real number in E.164 form (+ and country code), as SMS gateways need."""
    if not value:
        return value
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise serializers.ValidationError("Enter the number in E.164 form, e.g. +4915112345678.") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise serializers.ValidationError("This is not a valid phone number.")
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if formatted != value.replace(" ", ""):
        raise serializers.ValidationError(f"Enter the number in E.164 form: {formatted}.")
    return formatted


class DeviceSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    online = serializers.BooleanField(source="is_online", read_only=True)
    position = serializers.SerializerMethodField()

    class Meta:
        model = Device
        fields = [
            "id",
            "name",
            "kind",
            "status",
            "online",
            "connectivity",
            "latitude",
            "longitude",
            "position",
            "last_latitude",
            "last_longitude",
            "last_accuracy_m",
            "last_position_at",
            "last_heartbeat_at",
            "offline_after",
            "battery_pct",
            "firmware_version",
            "model_version",
            "health",
            "heartbeat_interval_s",
            "sensitivity_threshold",
            "paired_at",
            "created_at",
        ]
        read_only_fields = [
            "status",
            "connectivity",
            "last_latitude",
            "last_longitude",
            "last_accuracy_m",
            "last_position_at",
            "last_heartbeat_at",
            "offline_after",
            "battery_pct",
            "firmware_version",
            "model_version",
            "health",
            "paired_at",
            "created_at",
        ]

    def get_position(self, device: Device) -> dict[str, float] | None:
        position = device.position
        return None if position is None else {"latitude": position[0], "longitude": position[1]}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        lat = attrs.get("latitude", getattr(self.instance, "latitude", None))
        lon = attrs.get("longitude", getattr(self.instance, "longitude", None))
        if (lat is None) != (lon is None):
            raise serializers.ValidationError({"latitude": "Give both latitude and longitude, or neither."})
        return attrs


class DeviceCreatedSerializer(DeviceSerializer):
    """The device as created, with the one-time pairing code (shown only here)."""

    pairing_code = serializers.CharField(read_only=True)
    pairing_expires_at = serializers.DateTimeField(read_only=True)

    class Meta(DeviceSerializer.Meta):
        fields = [*DeviceSerializer.Meta.fields, "pairing_code", "pairing_expires_at"]


class PairingCodeSerializer(serializers.Serializer):
    pairing_code = serializers.CharField()
    pairing_expires_at = serializers.DateTimeField()


class TokenSerializer(serializers.Serializer):
    device_id = serializers.UUIDField()
    token = serializers.CharField()


class PairInputSerializer(serializers.Serializer):
    pairing_code = serializers.CharField(max_length=32)
    firmware_version = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")


class HeartbeatInputSerializer(serializers.Serializer):
    latitude = serializers.FloatField(min_value=-90, max_value=90, required=False, allow_null=True)
    longitude = serializers.FloatField(min_value=-180, max_value=180, required=False, allow_null=True)
    accuracy_m = serializers.FloatField(min_value=0, max_value=100_000, required=False, allow_null=True)
    battery_pct = serializers.FloatField(min_value=0, max_value=100, required=False, allow_null=True)
    firmware_version = serializers.CharField(max_length=64, required=False, allow_blank=True)
    model_version = serializers.CharField(max_length=64, required=False, allow_blank=True)
    uptime_s = serializers.FloatField(min_value=0, required=False, allow_null=True)
    mic_level_dbfs = serializers.FloatField(min_value=-200, max_value=10, required=False, allow_null=True)
    clipping = serializers.BooleanField(required=False, allow_null=True)
    free_storage_mb = serializers.FloatField(min_value=0, required=False, allow_null=True)
    queue_length = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    dropped_clips = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    rejected_clips = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    set_aside_clips = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    clock_source = serializers.ChoiceField(choices=["system", "ntp", "gps"], required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (attrs.get("latitude") is None) != (attrs.get("longitude") is None):
            raise serializers.ValidationError({"latitude": "Give both latitude and longitude, or neither."})
        return attrs


_HEARTBEAT_FLOATS: dict[str, tuple[float, float]] = {
    "latitude": (-90, 90),
    "longitude": (-180, 180),
    "accuracy_m": (0, 100_000),
    "battery_pct": (0, 100),
    "uptime_s": (0, math.inf),
    "mic_level_dbfs": (-200, 10),
    "free_storage_mb": (0, math.inf),
}
_HEARTBEAT_COUNTS = frozenset({"queue_length", "dropped_clips", "rejected_clips", "set_aside_clips"})
_HEARTBEAT_TEXTS = frozenset({"firmware_version", "model_version"})
_CLOCK_SOURCES = frozenset({"system", "ntp", "gps"})
_LARGEST = 10**15  # beyond any real count or reading; DRF's own limits then decide


def heartbeat_input(data: Any) -> dict[str, Any] | None:
    """HeartbeatInputSerializer's validated_data for a plainly valid body, without instantiating it; else None.

    A fleet heartbeats all the time, and the serializer deep-copied its 15 fields for every one (10 % of
    a heartbeat's CPU, issue 14). Only values the serializer would take unchanged pass here (numbers
    that are numbers, true booleans, untrimmed printable text); anything else returns None and goes
    through the serializer, which gives its errors. tests/devices/test_heartbeat_input.py holds the two
    equal on generated bodies.
    """
    if not isinstance(data, dict):
        return None
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in _HEARTBEAT_FLOATS:
            if value is not None:
                if type(value) not in (int, float) or not -_LARGEST < value < _LARGEST:
                    return None  # NaN fails the comparison too
                low, high = _HEARTBEAT_FLOATS[name]
                value = float(value)
                if not low <= value <= high:
                    return None
        elif name in _HEARTBEAT_COUNTS:
            if value is not None and (type(value) is not int or not 0 <= value < _LARGEST):
                return None
        elif name == "clipping":
            if value is not None and type(value) is not bool:
                return None
        elif name in _HEARTBEAT_TEXTS:
            if type(value) is not str or len(value) > 64 or not value.isprintable() or value != value.strip():
                return None
        elif name == "clock_source":
            if type(value) is not str or value not in _CLOCK_SOURCES:
                return None
        else:
            continue  # the serializer ignores fields it does not declare
        out[name] = value
    if (out.get("latitude") is None) != (out.get("longitude") is None):
        return None
    return out


class ActiveModelSerializer(serializers.Serializer):
    """Enough for a device to run the model on board: what it is, its features and its threshold."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()
    sha256 = serializers.CharField()
    architecture = serializers.CharField()
    sample_rate = serializers.IntegerField()
    feature_params = serializers.JSONField()
    threshold = serializers.FloatField()


class HeartbeatSettingsSerializer(serializers.Serializer):
    heartbeat_interval_s = serializers.IntegerField()
    sensitivity_threshold = serializers.FloatField(allow_null=True)


class HeartbeatOutputSerializer(serializers.Serializer):
    device_id = serializers.UUIDField()
    status = serializers.CharField()
    settings = HeartbeatSettingsSerializer()
    active_model = ActiveModelSerializer(allow_null=True)
    server_time = serializers.DateTimeField()


class TrustedContactSerializer(serializers.ModelSerializer):
    devices = serializers.SlugRelatedField(slug_field="code", many=True, required=False, queryset=Device.objects.none())
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=TrustedContact.Channel.choices), allow_empty=False
    )
    phone = serializers.CharField(max_length=20, required=False, allow_blank=True, validators=[validate_e164])  # type: ignore[list-item]  # DRF drops the return

    class Meta:
        model = TrustedContact
        fields = ["id", "name", "relation", "email", "phone", "channels", "devices", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        user = getattr(self.context.get("request"), "user", None)
        # Contacts may only be limited to the caller's own devices (none while the schema is generated).
        # is_person, not is_authenticated: a device is authenticated too, and is nobody's owner.
        owner_devices = Device.objects.filter(owner=user) if is_person(user) else Device.objects.none()
        fields["devices"].child_relation.queryset = owner_devices  # type: ignore[attr-defined]  # many=True: ManyRelatedField
        return fields

    def validate_channels(self, value: list[str]) -> list[str]:
        return sorted(set(value))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        channels = attrs.get("channels", getattr(self.instance, "channels", []))
        email = attrs.get("email", getattr(self.instance, "email", ""))
        phone = attrs.get("phone", getattr(self.instance, "phone", ""))
        if "email" in channels and not email:
            raise serializers.ValidationError({"email": "An email address is needed for the email channel."})
        if "sms" in channels and not phone:
            raise serializers.ValidationError({"phone": "A phone number is needed for the SMS channel."})
        return attrs
