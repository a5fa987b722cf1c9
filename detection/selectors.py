"""Read-side queries of the detection app: the active model, clips whose audio must go."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from accounts.permissions import has_police_access
from alerts.selectors import incidents_for_police
from detection.models import Classification, Clip, ModelVersion


def model_versions_active() -> QuerySet[ModelVersion]:
    """The active version as a queryset (at most one row: a partial unique index sees to that).

    The one place that says what "active" means; callers add locking, joins or a projection.
    """
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)


def model_version_active() -> ModelVersion | None:
    return model_versions_active().first()


def clips_with_expired_audio(*, now: datetime) -> QuerySet[Clip]:
    """Clips still holding audio they should not: evidence past retain_until, failed or non-evidence clips.

    The last two normally lose their audio when classified; a crash between the commit and the file
    deletion leaves some behind.
    """
    return Clip.objects.exclude(audio="").filter(
        Q(retain_until__lt=now) | Q(status=Clip.Status.FAILED) | Q(status=Clip.Status.DONE, retain_until__isnull=True)
    )


def clip_evidence_visible_to(user: Any, clip: Clip) -> bool:
    """Who may hear a clip or see its spectrogram: its device's owner (whatever is still kept), and
    approved police for clips judged to be gunshots (evidence) of an incident they may see, by the same
    rule as the incident itself (routed to their station, or all with POLICE_SEE_ALL_INCIDENTS/admin)."""
    if clip.device.owner_id == user.pk:
        return True
    try:
        is_gunshot = clip.classification.is_gunshot
    except Classification.DoesNotExist:
        is_gunshot = False
    if not (is_gunshot and has_police_access(user)):
        return False
    return incidents_for_police(user).filter(detections__clip=clip).exists()
