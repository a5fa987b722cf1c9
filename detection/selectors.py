"""Read-side queries of the detection app."""

from __future__ import annotations

from detection.models import ModelVersion


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
