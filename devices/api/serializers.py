from __future__ import annotations

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
