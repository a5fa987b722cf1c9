from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm

from accounts.models import User
from alerts.models import PoliceStation


class OwnerSignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="Offline alerts and password resets go here.")

    class Meta:
        model = User
        fields = ["username", "email", "first_name", "last_name"]

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=False)
        user.role = User.Role.OWNER
        if commit:
            user.save()
        return user


class PoliceSignUpForm(UserCreationForm):
    """A request for police access; an admin approves it and confirms the station."""

    email = forms.EmailField(required=True, help_text="Use your official address.")
    badge_number = forms.CharField(max_length=40)
    police_station = forms.ModelChoiceField(
        queryset=PoliceStation.objects.filter(is_active=True),
        required=False,
        help_text="The station you serve at; the admin confirms it.",
    )

    class Meta:
        model = User
        fields = ["username", "email", "first_name", "last_name", "badge_number", "police_station"]

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=False)
        user.role = User.Role.POLICE
        user.police_approved = False
        if commit:
            user.save()
        return user


def style_form(form: forms.BaseForm) -> Any:
    for field in form.fields.values():
        field.widget.attrs.setdefault("class", "input")
    return form
