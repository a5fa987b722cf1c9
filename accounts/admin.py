from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from accounts.models import User
from accounts.services import police_account_approve
from gunwatch.exceptions import ApplicationError


class GunWatchUserChangeForm(UserChangeForm):
    def clean(self) -> dict[str, object]:
        cleaned: dict[str, object] = super().clean() or {}
        if cleaned.get("police_approved") and "police_approved" in self.changed_data:
            # The same rules as the approve action, told on the form instead of after a save.
            if cleaned.get("role") != User.Role.POLICE:
                raise ValidationError({"police_approved": "Only a police account can be approved as police."})
            if cleaned.get("police_station") is None:
                raise ValidationError({"police_station": "Link the officer to a police station before approving."})
        return cleaned


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = GunWatchUserChangeForm
    list_display = ["username", "email", "role", "police_station", "police_approved", "is_active", "date_joined"]
    list_filter = ["role", "police_approved", "is_active", "is_staff"]
    list_select_related = ["police_station"]
    raw_id_fields = ["police_station"]
    readonly_fields = ["police_approved_at", "police_approved_by"]
    fieldsets = (
        *DjangoUserAdmin.fieldsets,  # type: ignore[misc]  # the stubs type Django's fieldsets as possibly None
        (
            "GunWatch",
            {
                "fields": (
                    "role",
                    "phone",
                    "badge_number",
                    "police_station",
                    "police_approved",
                    "police_approved_at",
                    "police_approved_by",
                )
            },
        ),
    )
    actions = ["approve_police_accounts"]

    def save_model(self, request: HttpRequest, obj: User, form: ModelForm[User], change: bool) -> None:
        # Ticking "police approved" goes through the same service as the action, so the approval is stamped
        # with who and when and the officer gets the email, instead of a bare flag flip.
        approving = change and obj.police_approved and "police_approved" in form.changed_data
        if approving:
            obj.police_approved = False
        super().save_model(request, obj, form, change)
        if approving:
            police_account_approve(user=obj, station=None, approved_by=request.user)  # type: ignore[arg-type]  # the admin is staff only: never anonymous

    @admin.action(description="Approve police account (must be linked to a station)")
    def approve_police_accounts(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        approved = 0
        for user in queryset:
            try:
                police_account_approve(user=user, station=None, approved_by=request.user)  # type: ignore[arg-type]  # the admin is staff only: never anonymous
                approved += 1
            except ApplicationError as exc:
                self.message_user(request, exc.message, level=messages.ERROR)
        if approved:
            self.message_user(request, f"{approved} police account(s) approved.", level=messages.SUCCESS)
