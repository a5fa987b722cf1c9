"""Incident flows. The detection pipeline calls ``incident_record_detection`` for every positive."""

from __future__ import annotations

from typing import Any


def incident_record_detection(*, classification: Any) -> Any:
    """Open or join an incident for a positive classification (a no-op until incidents land)."""
    return None
