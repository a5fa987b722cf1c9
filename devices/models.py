from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from devices.selectors import device_fix

LATITUDE_VALIDATORS = [MinValueValidator(-90), MaxValueValidator(90)]
LONGITUDE_VALIDATORS = [MinValueValidator(-180), MaxValueValidator(180)]


class Device(models.Model):
    """A recording device (a home unit, a car unit, a phone or our agent) owned by one user.

    ``code`` is the public identifier used in URLs and the API; the integer pk never leaves the
    server. A device is ``pending`` until it exchanges its pairing code for a token. Online and
    offline are derived from the ``offline_after`` deadline that every heartbeat pushes forward;
    ``connectivity`` records the last flip so an outage is announced once.
    """

    class Kind(models.TextChoices):
        HOME = "home", "Home"
        VEHICLE = "vehicle", "Vehicle"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending pairing"
        ACTIVE = "active", "Active"
        DISABLED = "disabled", "Disabled"

    class Connectivity(models.TextChoices):
        UNKNOWN = "unknown", "Never seen"
        ONLINE = "online", "Online"
        OFFLINE = "offline", "Offline"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.HOME)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    connectivity = models.CharField(max_length=16, choices=Connectivity.choices, default=Connectivity.UNKNOWN)

    # Where a home device is installed; vehicles report their position in heartbeats.
    latitude = models.FloatField(null=True, blank=True, validators=LATITUDE_VALIDATORS)
    longitude = models.FloatField(null=True, blank=True, validators=LONGITUDE_VALIDATORS)

    last_latitude = models.FloatField(null=True, blank=True, validators=LATITUDE_VALIDATORS)
    last_longitude = models.FloatField(null=True, blank=True, validators=LONGITUDE_VALIDATORS)
    last_accuracy_m = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    last_position_at = models.DateTimeField(null=True, blank=True)

    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    offline_after = models.DateTimeField(null=True, blank=True)
    battery_pct = models.FloatField(null=True, blank=True)
    firmware_version = models.CharField(max_length=64, blank=True)
    model_version = models.CharField(max_length=64, blank=True, help_text="Model version the device runs")
    health = models.JSONField(default=dict, blank=True, help_text="Last reported health telemetry")

    heartbeat_interval_s = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(10), MaxValueValidator(86400)]
    )
    sensitivity_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Overrides the model's decision threshold for this device",
    )

    # Per-device calibration (alerts.services.calibration): the threshold a detection's score must reach
    # to count as evidence, adapted to the device's nuisance rate and kept within bounds.
    alert_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Calibrated alert threshold; empty: the model's threshold",
    )
    nuisance_per_day = models.FloatField(null=True, blank=True, help_text="False alarms a day at the current threshold")
    calibrated_at = models.DateTimeField(null=True, blank=True)
    calibration_flag = models.CharField(max_length=300, blank=True, help_text="Why the last calibration needs a look")
    calibration_flagged_at = models.DateTimeField(null=True, blank=True)

    pairing_code_digest = models.CharField(max_length=64, blank=True)
    pairing_expires_at = models.DateTimeField(null=True, blank=True)
    paired_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        # No index on what a heartbeat writes (offline_after, last_heartbeat_at, position, health): with one,
        # PostgreSQL cannot update the row in place (a HOT update) and every heartbeat inserted into all five
        # of the table's indexes and left a dead row behind. The offline sweep scans the table instead, every 30 s
        # (10,000 devices: 3.8 ms). Migration 0003 also leaves room on each page for those updates.
        indexes = [
            models.Index(fields=["pairing_code_digest"], name="devices_pairing_digest"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_online(self) -> bool:
        return (
            self.status == self.Status.ACTIVE and self.offline_after is not None and self.offline_after > timezone.now()
        )

    @property
    def position(self) -> tuple[float, float] | None:
        """Best known position (the rule is ``devices.selectors.device_fix``), for templates and the API."""
        fix = device_fix(self)
        return None if fix is None else (fix.latitude, fix.longitude)

    @property
    def heartbeat_grace(self) -> timedelta:
        return timedelta(seconds=self.heartbeat_interval_s * settings.DEVICE_MISSED_HEARTBEATS)


class DeviceToken(models.Model):
    """The long-lived credential a paired device authenticates with.

    The token reads ``gw_<key>.<secret>``; the key is stored in clear for lookup and the secret only
    as an HMAC digest, so a database leak does not leak usable tokens. Rotation creates a new row
    and revokes the old one; revocation takes effect on the very next request.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    key = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["device"], condition=Q(revoked_at__isnull=True), name="devices_one_live_token"
            )
        ]

    def __str__(self) -> str:
        return f"gw_{self.key}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class TrustedContact(models.Model):
    """Someone an owner wants told when one of their devices hears a gunshot."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(max_length=120)
    relation = models.CharField(max_length=60, blank=True)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=16, blank=True, help_text="E.164, e.g. +4915112345678")
    channels = models.JSONField(default=list, help_text="Subset of ['email', 'sms']")
    devices = models.ManyToManyField(
        Device, blank=True, related_name="contacts", help_text="Only these devices; empty means all"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def covers(self, device: Device) -> bool:
        limited = list(self.devices.all())
        return not limited or device in limited
