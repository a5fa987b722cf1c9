from __future__ import annotations

from django.contrib import admin

from alerts.models import PoliceStation


@admin.register(PoliceStation)
class PoliceStationAdmin(admin.ModelAdmin):
    list_display = ["name", "latitude", "longitude", "jurisdiction_radius_km", "contact_email", "contact_phone",
                    "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "address", "contact_email"]
