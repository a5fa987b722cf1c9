from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from devices.models import LATITUDE_VALIDATORS, LONGITUDE_VALIDATORS


class ModelVersion(models.Model):
    """One trained detector: its weights file, checksum and the exact feature parameters.

    ``feature_params`` is what ``core.features.FeatureParams`` needs to reproduce the training
    features; ``metrics`` comes from evaluation. Exactly one version is active at a time (a
    database constraint), and every classification points to the version that produced it.
    """

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=40)
    architecture = models.CharField(max_length=40)
    weights = models.FileField(upload_to="models/")
    sha256 = models.CharField(max_length=64)
    sample_rate = models.PositiveIntegerField(default=16000)
    feature_params = models.JSONField(default=dict, blank=True)
    threshold = models.FloatField(validators=[MinValueValidator(0), MaxValueValidator(1)], default=0.5)
    metrics = models.JSONField(default=dict, blank=True)
    model_card = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    previous_active = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version that was active before this one was activated; a roll-back returns to it",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="detection_model_name_version"),
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="detection_one_active_model"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


class Clip(models.Model):
    """A short recording a device uploaded, and where its classification stands.

    ``client_id`` is chosen by the device so a retried upload finds the clip it already created.
    Audio that is not a gunshot is deleted once classified (``audio_deleted_at``); gunshot audio
    is kept as evidence until ``retain_until``.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="clips")
    client_id = models.UUIDField()
    audio = models.FileField(upload_to="clips/%Y/%m/%d/", blank=True)
    audio_sha256 = models.CharField(max_length=64)
    audio_format = models.CharField(max_length=16, blank=True)
    size_bytes = models.PositiveIntegerField(default=0)
    duration_s = models.FloatField(null=True, blank=True)
    sample_rate = models.PositiveIntegerField(null=True, blank=True)
    recorded_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    latitude = models.FloatField(null=True, blank=True, validators=LATITUDE_VALIDATORS)
    longitude = models.FloatField(null=True, blank=True, validators=LONGITUDE_VALIDATORS)
    accuracy_m = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    trigger_offset_s = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    clock_source = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    processing_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    retain_until = models.DateTimeField(null=True, blank=True)
    audio_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["device", "client_id"], name="detection_clip_device_client_id")]
        indexes = [
            models.Index(fields=["status", "received_at"], name="detection_clip_status"),
            models.Index(fields=["retain_until"], name="detection_clip_retain_until"),
        ]

    def __str__(self) -> str:
        return f"clip {self.code}"


class Classification(models.Model):
    """The detector's verdict on one clip, produced by one model version."""

    class Label(models.TextChoices):
        GUNSHOT = "gunshot", "Gunshot"
        OTHER = "other", "Other"

    clip = models.OneToOneField(Clip, on_delete=models.CASCADE, related_name="classification")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="classifications")
    label = models.CharField(max_length=16, choices=Label.choices)
    score = models.FloatField()
    threshold = models.FloatField()
    shots = models.PositiveIntegerField(default=0)
    offset_s = models.FloatField(null=True, blank=True)
    windows = models.JSONField(default=list, blank=True)
    timings_ms = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The outbox of the incident step: set in the transaction that stores a positive verdict, cleared
    # once its detection is recorded. A worker killed in between leaves it set, and the sweep
    # (``detection.tasks.record_pending_incidents``) finishes the job.
    incident_pending = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["label", "created_at"], name="detection_cls_label"),
            models.Index(
                fields=["created_at"], name="detection_cls_incident_pending", condition=models.Q(incident_pending=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} {self.score:.2f}"

    @property
    def is_gunshot(self) -> bool:
        return self.label == self.Label.GUNSHOT
