from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from devices.models import Device, DeviceToken, TrustedContact


class DeviceTokenInline(admin.TabularInline):
    model = DeviceToken
    extra = 0
    fields = readonly_fields = ("key", "created_at", "last_used_at", "revoked_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Device | None = None) -> bool:
        return False  # tokens are minted only by pairing, so the secret is shown to the device alone


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "owner",
        "kind",
        "status",
        "connectivity",
        "last_heartbeat_at",
        "battery_pct",
        "firmware_version",
        "model_version",
        "alert_threshold",
        "calibration_flag",
    ]
    list_filter = ["kind", "status", "connectivity"]
    search_fields = ["name", "code", "owner__username", "owner__email"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    readonly_fields = [
        "code",
        "pairing_code_digest",
        "pairing_expires_at",
        "paired_at",
        "last_heartbeat_at",
        "offline_after",
        "health",
        "created_at",
        "updated_at",
        "nuisance_per_day",
        "calibrated_at",
        "calibration_flagged_at",
    ]
    inlines = [DeviceTokenInline]
    actions = ["disable_devices", "enable_devices"]

    @admin.action(description="Disable selected devices (their tokens stop working)")
    def disable_devices(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        updated = queryset.update(status=Device.Status.DISABLED)
        self.message_user(request, f"{updated} device(s) disabled.")

    @admin.action(description="Re-enable selected disabled devices")
    def enable_devices(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        updated = queryset.filter(status=Device.Status.DISABLED, paired_at__isnull=False).update(
            status=Device.Status.ACTIVE
        )
        self.message_user(request, f"{updated} device(s) enabled.")


@admin.register(TrustedContact)
class TrustedContactAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "relation", "email", "phone", "channels"]
    search_fields = ["name", "email", "phone", "owner__username"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    filter_horizontal = ["devices"]
