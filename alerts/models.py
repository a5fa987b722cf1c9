from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class PoliceStation(models.Model):
    """A police station that receives incident notifications and whose officers see the map.

    Its jurisdiction is a radius around the station or a GeoJSON polygon; stations without
    either are reached only as one of the nearest to an incident.
    """

    name = models.CharField(max_length=200)
    latitude = models.FloatField(validators=[MinValueValidator(-90), MaxValueValidator(90)])
    longitude = models.FloatField(validators=[MinValueValidator(-180), MaxValueValidator(180)])
    address = models.CharField(max_length=300, blank=True)
    jurisdiction_radius_km = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    jurisdiction_geojson = models.JSONField(null=True, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=20, blank=True)
    webhook_url = models.URLField(blank=True)
    webhook_secret = models.CharField(max_length=128, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DispatchPolicy(models.Model):
    """How sure GunWatch must be before a station's officers are told (the admin sets one per station).

    ``evidence`` dispatches at once when the incident's evidence score reaches ``strong_evidence`` and
    sends everything else to the review queue; ``review_all`` reviews every incident; ``immediate``
    dispatches every incident at once (GunWatch's behaviour before the review step). Stations without a
    policy get ``ALERT_DISPATCH_DEFAULT_MODE``. An incident routed to several stations follows the
    strictest of their policies: one reviewer decision then serves them all.
    """

    class Mode(models.TextChoices):
        IMMEDIATE = "immediate", "Dispatch every incident at once"
        EVIDENCE = "evidence", "Dispatch strong evidence at once, review the rest"
        REVIEW_ALL = "review_all", "Review every incident first"

    station = models.OneToOneField(PoliceStation, on_delete=models.CASCADE, related_name="dispatch_policy")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.EVIDENCE)
    strong_evidence = models.FloatField(
        default=0.9,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Evidence score at or above which an incident is dispatched without review",
    )
    review_deadline_s = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(5), MaxValueValidator(3600)],
        help_text="Seconds a reviewer has before the incident is dispatched unreviewed; empty: the site default",
    )

    class Meta:
        verbose_name_plural = "dispatch policies"

    def __str__(self) -> str:
        return f"{self.station}: {self.get_mode_display()}"


class Incident(models.Model):
    """One gunfire event, possibly heard by several devices, and what the police did about it.

    ``code`` is the public id. ``revision`` grows with every change so a map client that
    receives an older copy of an incident after a newer one (a catch-up fetch racing a live
    message) keeps the newer. The location is the best current estimate; ``radius_m`` says how
    far the source may be from it.
    """

    class Status(models.TextChoices):
        NEW = "new", "New"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        EN_ROUTE = "en_route", "En route"
        ON_SCENE = "on_scene", "On scene"
        CLOSED = "closed", "Closed"

    class Disposition(models.TextChoices):
        CONFIRMED_GUNFIRE = "confirmed_gunfire", "Confirmed gunfire"
        NO_EVIDENCE = "no_evidence", "No evidence found"
        OTHER_SOURCE = "other_source", "Other source (fireworks, vehicle …)"
        FALSE_ALARM = "false_alarm", "False alarm"

    class Dispatch(models.TextChoices):
        DISPATCHED = "dispatched", "Dispatched to police"
        REVIEW = "review", "Waiting for review"
        HELD = "held", "Held: below its devices' alert thresholds"
        DISMISSED = "dismissed", "Dismissed in review"

    class DispatchReason(models.TextChoices):
        POLICY = "policy", "Evidence met the station policy"
        REVIEWED = "reviewed", "Confirmed by a reviewer"
        UNREVIEWED = "unreviewed", "Unreviewed: review deadline passed"

    class LocationMethod(models.TextChoices):
        SINGLE = "single", "One device"
        CENTROID = "centroid", "Devices' centroid"
        TDOA = "tdoa", "Time difference of arrival"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    disposition = models.CharField(max_length=24, choices=Disposition.choices, blank=True)
    first_detected_at = models.DateTimeField(help_text="Event time of the earliest detection")
    last_detected_at = models.DateTimeField(help_text="Event time of the latest detection")
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    radius_m = models.FloatField(null=True, blank=True)
    location_method = models.CharField(max_length=16, choices=LocationMethod.choices, blank=True)
    residual_m = models.FloatField(null=True, blank=True)
    shots = models.PositiveIntegerField(default=0)
    max_confidence = models.FloatField(default=0)
    device_count = models.PositiveIntegerField(default=0)
    evidence_clip = models.ForeignKey(
        "detection.Clip", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    stations = models.ManyToManyField(PoliceStation, blank=True, related_name="incidents")
    # How sure we are (alerts.services.evidence) and whether police have been told (alerts.services.review).
    evidence_score = models.FloatField(default=0)
    evidence_summary = models.CharField(max_length=200, blank=True)
    # Incidents made outside the recording path (admin, fixtures) count as dispatched.
    dispatch = models.CharField(max_length=16, choices=Dispatch.choices, default=Dispatch.DISPATCHED)
    dispatch_reason = models.CharField(max_length=16, choices=DispatchReason.choices, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    review_deadline_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.CharField(max_length=300, blank=True)
    revision = models.PositiveIntegerField(default=1)
    notified_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    # In memory only: set by the dispatch in this transaction, so the broadcast announces the incident to
    # police as new ("incident.opened", with the map's banner and beep) even when it was a later join.
    just_dispatched = False

    class Meta:
        ordering = ["-first_detected_at", "-id"]
        indexes = [
            # Joining looks only at incidents still open, by the time of their latest detection.
            models.Index(fields=["last_detected_at"], name="alerts_incident_open_last", condition=~Q(status="closed")),
            models.Index(fields=["updated_at"], name="alerts_incident_updated"),
            models.Index(fields=["first_detected_at"], name="alerts_incident_first"),
            # The review queue and the deadline sweep read only incidents waiting for a reviewer.
            models.Index(
                fields=["review_deadline_at"],
                name="alerts_incident_review",
                condition=Q(dispatch__in=["review", "held"]),
            ),
        ]
        # Granted by an administrator to staff or approved police: the review queue.
        permissions = [("reviewer", "Can review incidents before dispatch")]

    def __str__(self) -> str:
        return f"incident {self.code}"

    @property
    def is_open(self) -> bool:
        return self.status != self.Status.CLOSED

    @property
    def is_dispatched(self) -> bool:
        return self.dispatch == self.Dispatch.DISPATCHED

    @property
    def has_location(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    def actions_available(self) -> list[str]:
        """The workflow actions police may take now (``TRANSITIONS`` below; "note" is always possible)."""
        return [action for action, (sources, _, _) in TRANSITIONS.items() if self.status in sources]


class Detection(models.Model):
    """One positive classification that contributed to an incident.

    The classification is unique here, so a redelivered pipeline task cannot count a clip twice.
    ``event_at`` is when the device heard the shot (recording start plus the trigger offset);
    position and accuracy are frozen at detection time because vehicles move.
    """

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="detections")
    classification = models.OneToOneField(
        "detection.Classification", on_delete=models.CASCADE, related_name="incident_detection"
    )
    clip = models.ForeignKey("detection.Clip", on_delete=models.CASCADE, related_name="+")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="incident_detections")
    event_at = models.DateTimeField()
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    accuracy_m = models.FloatField(default=0)
    clock_source = models.CharField(max_length=16, blank=True)
    score = models.FloatField()
    shots = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["event_at", "id"]
        indexes = [models.Index(fields=["device", "event_at"], name="alerts_detection_device")]

    def __str__(self) -> str:
        return f"detection {self.pk} of {self.incident_id}"

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None


class IncidentEvent(models.Model):
    """One line of an incident's timeline: detections, notifications and every police action."""

    class Kind(models.TextChoices):
        OPENED = "opened", "Opened"
        DETECTION = "detection", "Detection added"
        LOCATED = "located", "Location updated"
        NOTIFIED = "notified", "Notification sent"
        NOTIFICATION_FAILED = "notification_failed", "Notification failed"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        EN_ROUTE = "en_route", "En route"
        ON_SCENE = "on_scene", "On scene"
        CLOSED = "closed", "Closed"
        NOTE = "note", "Note"
        REVIEW_QUEUED = "review_queued", "Sent to review"
        HELD = "held", "Held below device threshold"
        DISPATCHED = "dispatched", "Dispatched to police"
        CONFIRMED = "confirmed", "Confirmed in review"
        DISMISSED = "dismissed", "Dismissed in review"
        ESCALATED = "escalated", "Dispatched unreviewed"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.CharField(max_length=500, blank=True)
    data = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%H:%M:%S}"


# The police workflow, kept with the model it moves.
# action -> (statuses it may start from, status it leads to, timeline kind)
TRANSITIONS: dict[str, tuple[frozenset[str], str, str]] = {
    "acknowledge": (frozenset({Incident.Status.NEW}), Incident.Status.ACKNOWLEDGED, IncidentEvent.Kind.ACKNOWLEDGED),
    "en_route": (
        frozenset({Incident.Status.NEW, Incident.Status.ACKNOWLEDGED}),
        Incident.Status.EN_ROUTE,
        IncidentEvent.Kind.EN_ROUTE,
    ),
    "on_scene": (
        frozenset({Incident.Status.NEW, Incident.Status.ACKNOWLEDGED, Incident.Status.EN_ROUTE}),
        Incident.Status.ON_SCENE,
        IncidentEvent.Kind.ON_SCENE,
    ),
    "close": (
        frozenset(
            {Incident.Status.NEW, Incident.Status.ACKNOWLEDGED, Incident.Status.EN_ROUTE, Incident.Status.ON_SCENE}
        ),
        Incident.Status.CLOSED,
        IncidentEvent.Kind.CLOSED,
    ),
}
ACTIONS = (*TRANSITIONS, "note")
# An incident waiting for a reviewer: in the queue, or held for one at a station whose policy reviews all.
WAITING_FOR_REVIEW = (Incident.Dispatch.REVIEW, Incident.Dispatch.HELD)


class Notification(models.Model):
    """One message to one recipient over one channel about one incident.

    The row is written before the send and claimed (queued → sending) by a conditional update,
    so a redelivered task never sends it twice; the unique constraint keeps a recipient from
    being told twice about the same incident on the same channel.
    """

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"
        WEBHOOK = "webhook", "Webhook"

    class RecipientKind(models.TextChoices):
        OWNER = "owner", "Device owner"
        CONTACT = "contact", "Trusted contact"
        STATION = "station", "Police station"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="notifications")
    recipient_kind = models.CharField(max_length=16, choices=RecipientKind.choices)
    # "user:<pk>", "contact:<pk>" or "station:<pk>": one key across the three recipient kinds.
    recipient_key = models.CharField(max_length=40)
    recipient_name = models.CharField(max_length=200)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    target = models.CharField(max_length=300, help_text="Email address, phone number or webhook URL")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    contact = models.ForeignKey(
        "devices.TrustedContact", null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    station = models.ForeignKey(
        PoliceStation, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    # Owners in whose name the message went out (a contact's or a device owner's), for their page.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "recipient_key", "channel"], name="alerts_notification_once")
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="alerts_notification_status")]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient_name} ({self.status})"


class JoinLock(models.Model):
    """A single row every incident join updates first, to serialise joins on any database.

    On PostgreSQL the UPDATE takes a row lock held until commit; on SQLite it takes the write
    lock before anything is read. Either way two workers cannot both decide "no incident yet".
    """

    name = models.CharField(max_length=32, primary_key=True)
    taken = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return self.name


class ChannelOutage(models.Model):
    """A station's channel (its webhook, its email) failing delivery after delivery.

    Opened by the first failed attempt to the station on that channel, it tells the administrators
    once (``admins_told_at``) when failures keep coming, and is closed by the next delivery that gets
    through. At most one is open per station and channel, so one outage is one email, however many
    notifications it holds up.
    """

    station = models.ForeignKey(PoliceStation, on_delete=models.CASCADE, related_name="channel_outages")
    channel = models.CharField(max_length=16, choices=Notification.Channel.choices)
    started_at = models.DateTimeField()
    last_failure_at = models.DateTimeField()
    failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    admins_told_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["station", "channel"], condition=Q(resolved_at__isnull=True), name="alerts_outage_one_open"
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} of {self.station} failing since {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
