from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from alerts.models import (
    ChannelOutage,
    Detection,
    DispatchPolicy,
    Incident,
    IncidentEvent,
    Notification,
    PoliceStation,
)


class DispatchPolicyInline(admin.StackedInline):
    """Set on the station: how strong evidence must be before its officers are told without review."""

    model = DispatchPolicy
    extra = 0
    max_num = 1


class ChannelOutageInline(admin.TabularInline):
    model = ChannelOutage
    extra = 0
    fields = ["channel", "started_at", "last_failure_at", "failures", "last_error", "admins_told_at", "resolved_at"]
    readonly_fields = fields  # type: ignore[assignment]  # the stubs type fields more widely than readonly_fields
    can_delete = False
    ordering = ["-started_at"]
    verbose_name_plural = "Channel outages (alerts that did not get through)"

    def has_add_permission(self, request: HttpRequest, obj: PoliceStation | None = None) -> bool:
        return False


@admin.register(PoliceStation)
class PoliceStationAdmin(admin.ModelAdmin):
    inlines = [DispatchPolicyInline, ChannelOutageInline]
    list_display = [
        "name",
        "latitude",
        "longitude",
        "jurisdiction_radius_km",
        "has_polygon",
        "contact_email",
        "contact_phone",
        "has_webhook",
        "failing_channels",
        "is_active",
    ]
    list_filter = ["is_active"]
    search_fields = ["name", "address", "contact_email"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PoliceStation]:
        return super().get_queryset(request).prefetch_related("channel_outages")

    @admin.display(description="Failing channels")
    def failing_channels(self, station: PoliceStation) -> str:
        # Filtered in Python so the prefetch above serves every row of the list.
        open_outages = [outage for outage in station.channel_outages.all() if outage.resolved_at is None]
        return ", ".join(sorted(outage.channel for outage in open_outages)) or "—"

    @admin.display(boolean=True, description="Polygon")
    def has_polygon(self, station: PoliceStation) -> bool:
        return bool(station.jurisdiction_geojson)

    @admin.display(boolean=True, description="Webhook")
    def has_webhook(self, station: PoliceStation) -> bool:
        return bool(station.webhook_url)


class DetectionInline(admin.TabularInline):
    model = Detection
    extra = 0
    fields = readonly_fields = ("device", "event_at", "position", "clock_source", "confidence", "shots")
    can_delete = False

    @admin.display(description="position")
    def position(self, detection: Detection) -> str:
        if detection.latitude is None or detection.longitude is None:
            return "—"
        return f"{detection.latitude:.6f}, {detection.longitude:.6f} ±{detection.accuracy_m:.0f} m"

    @admin.display(description="confidence")
    def confidence(self, detection: Detection) -> str:
        return f"{detection.score:.2f}"

    def has_add_permission(self, request: HttpRequest, obj: Incident | None = None) -> bool:
        return False


class IncidentEventInline(admin.TabularInline):
    model = IncidentEvent
    extra = 0
    fields = readonly_fields = ("at", "kind", "actor", "message")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Incident | None = None) -> bool:
        return False


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    """Operators inspect incidents here; officers work them on the map and the incident page."""

    list_display = [
        "code",
        "first_detected_at",
        "status",
        "disposition",
        "device_count",
        "shots",
        "confidence",
        "location_method",
        "radius",
        "evidence_score",
        "dispatch",
        "dispatch_reason",
    ]
    list_filter = ["status", "disposition", "location_method", "dispatch", "dispatch_reason"]
    search_fields = ["code"]
    date_hierarchy = "first_detected_at"
    # Rounded for reading: metres to the metre, degrees to ~0.1 m, confidence to two places.
    readonly_fields = [
        "code",
        "first_detected_at",
        "last_detected_at",
        "position",
        "radius",
        "location_method",
        "residual",
        "shots",
        "confidence",
        "device_count",
        "revision",
        "notified_at",
        "opened_at",
        "updated_at",
        "closed_at",
        "evidence_clip",
        "evidence_score",
        "evidence_summary",
        "dispatch",
        "dispatch_reason",
        "dispatched_at",
        "review_deadline_at",
        "reviewed_by",
        "reviewed_at",
        "review_note",
    ]
    raw_id_fields = ["stations"]
    inlines = [DetectionInline, IncidentEventInline]
    exclude = ["latitude", "longitude", "radius_m", "residual_m", "max_confidence"]

    @admin.display(description="position", ordering="latitude")
    def position(self, incident: Incident) -> str:
        if incident.latitude is None or incident.longitude is None:
            return "—"
        return f"{incident.latitude:.6f}, {incident.longitude:.6f}"

    @admin.display(description="radius", ordering="radius_m")
    def radius(self, incident: Incident) -> str:
        return "—" if incident.radius_m is None else f"±{incident.radius_m:.0f} m"

    @admin.display(description="residual", ordering="residual_m")
    def residual(self, incident: Incident) -> str:
        return "—" if incident.residual_m is None else f"{incident.residual_m:.1f} m"

    @admin.display(description="confidence", ordering="max_confidence")
    def confidence(self, incident: Incident) -> str:
        return "—" if incident.max_confidence is None else f"{incident.max_confidence:.2f}"


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["incident", "recipient_kind", "recipient_name", "channel", "status", "attempts", "sent_at"]
    list_filter = ["status", "channel", "recipient_kind"]
    search_fields = ["recipient_name", "target", "incident__code"]
    list_select_related = ["incident"]
    raw_id_fields = ["incident", "user", "contact", "station", "owner"]
    readonly_fields = ["attempts", "last_error", "created_at", "updated_at", "sent_at"]
    actions = ["send_again"]

    @admin.action(description="Send again (failed or queued notifications)")
    def send_again(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        # Imported late: the task module imports delivery and the transports, which the admin need not load.
        from alerts.tasks import enqueue_notifications

        retry = queryset.filter(status__in=[Notification.Status.FAILED, Notification.Status.QUEUED])
        ids = list(retry.values_list("pk", flat=True))
        # A failed row gets one more attempt (its budget is spent); a sent or sending row is never repeated.
        retry.update(status=Notification.Status.QUEUED)
        enqueue_notifications(ids)
        self.message_user(request, f"{len(ids)} notification(s) handed to the workers again.", messages.SUCCESS)


@admin.register(ChannelOutage)
class ChannelOutageAdmin(admin.ModelAdmin):
    """Stations whose webhook or email kept failing: open ones first (police alerts are held and retried)."""

    list_display = [
        "station",
        "channel",
        "started_at",
        "last_failure_at",
        "failures",
        "admins_told_at",
        "resolved_at",
        "is_open",
    ]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "channel"]
    list_select_related = ["station"]
    readonly_fields = [
        "station",
        "channel",
        "started_at",
        "last_failure_at",
        "failures",
        "last_error",
        "admins_told_at",
        "resolved_at",
    ]
    search_fields = ["station__name"]

    @admin.display(boolean=True, description="Open")
    def is_open(self, outage: ChannelOutage) -> bool:
        return outage.is_open

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
