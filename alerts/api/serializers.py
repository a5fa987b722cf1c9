from __future__ import annotations

from typing import Any

from rest_framework import serializers

from alerts.messages import coarse_location
from alerts.models import ACTIONS, Detection, Incident, IncidentEvent, Notification
from alerts.services.review import DISMISS_REASONS


class IncidentSerializer(serializers.ModelSerializer):
    """An incident as the map and the list API show it.

    With ``context["precise"]`` false (owners) the location is rounded to about a kilometre and
    the evidence links are left out.
    """

    id = serializers.UUIDField(source="code", read_only=True)
    status_display = serializers.CharField(source="get_status_display", read_only=True)
    url = serializers.SerializerMethodField()
    evidence = serializers.SerializerMethodField()
    stations = serializers.SerializerMethodField()

    class Meta:
        model = Incident
        fields = [
            "id",
            "status",
            "status_display",
            "disposition",
            "first_detected_at",
            "last_detected_at",
            "opened_at",
            "updated_at",
            "closed_at",
            "latitude",
            "longitude",
            "radius_m",
            "location_method",
            "residual_m",
            "shots",
            "max_confidence",
            "device_count",
            "revision",
            "url",
            "evidence",
            "stations",
            "evidence_score",
            "evidence_summary",
            "dispatch",
            "dispatch_reason",
            "dispatched_at",
        ]
        read_only_fields = fields

    def _precise(self) -> bool:
        return bool(self.context.get("precise", False))

    def get_url(self, incident: Incident) -> str:
        return f"/incidents/{incident.code}/"

    def get_evidence(self, incident: Incident) -> dict[str, str] | None:
        clip = incident.evidence_clip
        if not self._precise() or clip is None or clip.audio_deleted_at is not None or not clip.audio:
            return None
        return {
            "clip": str(clip.code),
            "audio_url": f"/clips/{clip.code}/audio",
            "spectrogram_url": f"/clips/{clip.code}/spectrogram.png",
        }

    def get_stations(self, incident: Incident) -> list[str]:
        if not self._precise():
            return []
        return [station.name for station in incident.stations.all()]

    def to_representation(self, instance: Incident) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not self._precise():
            data["latitude"], data["longitude"], data["radius_m"] = coarse_location(
                instance.latitude, instance.longitude, instance.radius_m
            )
            data["residual_m"] = None
        return data


class DetectionSerializer(serializers.ModelSerializer):
    device_id = serializers.UUIDField(source="device.code")
    device_name = serializers.CharField(source="device.name")
    clip_id = serializers.UUIDField(source="clip.code")

    class Meta:
        model = Detection
        fields = [
            "device_id",
            "device_name",
            "clip_id",
            "event_at",
            "latitude",
            "longitude",
            "accuracy_m",
            "clock_source",
            "score",
            "shots",
        ]


class IncidentEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None)

    class Meta:
        model = IncidentEvent
        fields = ["kind", "at", "actor", "message"]


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = [
            "recipient_kind",
            "recipient_name",
            "channel",
            "target",
            "status",
            "attempts",
            "last_error",
            "created_at",
            "sent_at",
        ]


class StationNotificationSerializer(serializers.ModelSerializer):
    """What police see of notifications: who was told, never contacts' addresses."""

    recipient_name = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["recipient_kind", "recipient_name", "channel", "status", "attempts", "sent_at"]

    def get_recipient_name(self, notification: Notification) -> str:
        if notification.recipient_kind == Notification.RecipientKind.STATION:
            return notification.recipient_name
        return notification.get_recipient_kind_display()


class IncidentDetailSerializer(IncidentSerializer):
    detections = serializers.SerializerMethodField()
    timeline = serializers.SerializerMethodField()
    notifications = serializers.SerializerMethodField()
    actions = serializers.SerializerMethodField()

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "detections", "timeline", "notifications", "actions"]
        read_only_fields = fields

    def get_detections(self, incident: Incident) -> list[dict[str, Any]]:
        detections = incident.detections.select_related("device", "clip")
        if not self._precise():
            detections = detections.filter(device__owner=self.context["request"].user)
        return DetectionSerializer(detections, many=True).data  # type: ignore[return-value]  # ReturnList is a list of dicts

    def get_timeline(self, incident: Incident) -> list[dict[str, Any]]:
        if not self._precise():
            return []
        return IncidentEventSerializer(incident.events.select_related("actor"), many=True).data  # type: ignore[return-value]  # as above

    def get_notifications(self, incident: Incident) -> list[dict[str, Any]]:
        if self._precise():
            return StationNotificationSerializer(incident.notifications.all(), many=True).data  # type: ignore[return-value]  # as above
        mine = incident.notifications.filter(owner=self.context["request"].user)
        return NotificationSerializer(mine, many=True).data  # type: ignore[return-value]  # as above

    def get_actions(self, incident: Incident) -> list[str]:
        return incident.actions_available() if self._precise() else []


class TransitionInputSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=ACTIONS)
    disposition = serializers.ChoiceField(choices=Incident.Disposition.choices, required=False, allow_blank=True)
    note = serializers.CharField(required=False, allow_blank=True, max_length=500)


class OutcomeRowSerializer(serializers.Serializer):
    """One model version's, station's or device's outcomes (``alerts.selectors.OutcomeRow``)."""

    key = serializers.CharField()
    incidents = serializers.IntegerField()
    dispatched = serializers.IntegerField()
    confirmed_gunfire = serializers.IntegerField()
    false_alarms = serializers.IntegerField()
    other_sources = serializers.IntegerField()
    no_evidence = serializers.IntegerField()
    dismissed_in_review = serializers.IntegerField()
    unreviewed = serializers.IntegerField()
    open = serializers.IntegerField()
    confirmed_share = serializers.FloatField(allow_null=True)
    median_review_s = serializers.FloatField(allow_null=True)
    median_ack_s = serializers.FloatField(allow_null=True)


class OutcomesSerializer(serializers.Serializer):
    by = serializers.ChoiceField(choices=["model", "station", "device"])
    since = serializers.DateTimeField()
    until = serializers.DateTimeField(allow_null=True)
    results = OutcomeRowSerializer(many=True)


class ReviewClipSerializer(serializers.ModelSerializer):
    """One contributing detection in the review queue, with where a reviewer hears and sees its clip."""

    device_name = serializers.CharField(source="device.name")
    clip_id = serializers.UUIDField(source="clip.code")
    audio_url = serializers.SerializerMethodField()
    waveform_url = serializers.SerializerMethodField()
    spectrogram_url = serializers.SerializerMethodField()

    class Meta:
        model = Detection
        fields = [
            "device_name",
            "clip_id",
            "event_at",
            "score",
            "shots",
            "audio_url",
            "waveform_url",
            "spectrogram_url",
        ]

    def _has_audio(self, detection: Detection) -> bool:
        return bool(detection.clip.audio) and detection.clip.audio_deleted_at is None

    def get_audio_url(self, detection: Detection) -> str | None:
        return f"/review/clips/{detection.clip.code}/audio" if self._has_audio(detection) else None

    def get_waveform_url(self, detection: Detection) -> str | None:
        return f"/review/clips/{detection.clip.code}/waveform.png" if self._has_audio(detection) else None

    def get_spectrogram_url(self, detection: Detection) -> str | None:
        return f"/review/clips/{detection.clip.code}/spectrogram.png" if self._has_audio(detection) else None


class ReviewItemSerializer(IncidentSerializer):
    """An incident waiting for a reviewer: its evidence, its deadline and every contributing clip."""

    clips = serializers.SerializerMethodField()

    class Meta(IncidentSerializer.Meta):
        fields = [*IncidentSerializer.Meta.fields, "review_deadline_at", "clips"]
        read_only_fields = fields

    def get_clips(self, incident: Incident) -> list[dict[str, Any]]:
        detections = getattr(incident, "queue_detections", None)
        if detections is None:
            detections = incident.detections.select_related("device", "clip").order_by("event_at")
        return ReviewClipSerializer(detections, many=True).data  # type: ignore[return-value]  # ReturnList is a list of dicts


class ReviewDecisionSerializer(ReviewItemSerializer):
    """The incident after a decision, with who decided and when."""

    reviewed_by = serializers.CharField(source="reviewed_by.username", default=None)

    class Meta(ReviewItemSerializer.Meta):
        fields = [*ReviewItemSerializer.Meta.fields, "reviewed_by", "reviewed_at", "review_note"]
        read_only_fields = fields


class ReviewConfirmInputSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=300)


class ReviewDismissInputSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=list(DISMISS_REASONS.items()))
    note = serializers.CharField(required=False, allow_blank=True, max_length=300)
