from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import User
from accounts.services import police_account_approve
from gunwatch.exceptions import ApplicationError


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
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
