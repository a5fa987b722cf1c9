from __future__ import annotations

from typing import Any

from django import forms

from accounts.forms import style_form
from devices.api.serializers import validate_e164
from devices.models import Device, TrustedContact


class DeviceForm(forms.ModelForm):
    class Meta:
        model = Device
        fields = ["name", "kind", "latitude", "longitude", "heartbeat_interval_s", "sensitivity_threshold"]
        labels = {
            "latitude": "Latitude (°)",
            "longitude": "Longitude (°)",
            "heartbeat_interval_s": "Heartbeat every (seconds)",
            "sensitivity_threshold": "Sensitivity threshold (0 to 1)",
        }
        help_texts = {
            "latitude": "Fixed location of a home device (vehicles report theirs by GPS).",
            "heartbeat_interval_s": "The device counts as offline after three missed heartbeats.",
            "sensitivity_threshold": "Empty: the detector's own threshold. Higher means fewer, surer alerts.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # 52.52 rather than 52.522000000000006: six decimals are 0.1 m, finer than any GPS fix.
        for name in ("latitude", "longitude"):
            value = self.initial.get(name)
            if isinstance(value, float):
                self.initial[name] = round(value, 6)
        style_form(self)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (data.get("latitude") is None) != (data.get("longitude") is None):
            self.add_error("latitude", "Give both latitude and longitude, or neither.")
        return data


class TrustedContactForm(forms.ModelForm):
    channels = forms.MultipleChoiceField(
        choices=TrustedContact.Channel.choices, widget=forms.CheckboxSelectMultiple, initial=["email"]
    )

    class Meta:
        model = TrustedContact
        fields = ["name", "relation", "email", "phone", "channels", "devices"]
        widgets = {"devices": forms.CheckboxSelectMultiple}

    def __init__(self, *args: Any, owner: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["devices"].queryset = Device.objects.filter(owner=owner)  # type: ignore[attr-defined]  # a ModelMultipleChoiceField
        self.fields["devices"].help_text = "Leave empty to be told about every device."
        style_form(self)

    def clean_phone(self) -> str:
        from rest_framework.exceptions import ValidationError as ApiValidationError

        try:
            return validate_e164(self.cleaned_data.get("phone", ""))
        except ApiValidationError as exc:
            raise forms.ValidationError(str(exc.detail[0])) from exc  # type: ignore[index]  # validate_e164 raises a list

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        channels = data.get("channels") or []
        if "email" in channels and not data.get("email"):
            self.add_error("email", "An email address is needed for the email channel.")
        if "sms" in channels and not data.get("phone"):
            self.add_error("phone", "A phone number is needed for the SMS channel.")
        return data
