"""One time format on every page: ``2026-12-07 04:18:27 UTC``, in TIME_ZONE, always with the zone.

Registered as a template builtin (settings.TEMPLATES), so templates use ``{{ value|when }}`` without
a ``{% load %}``.
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.dateformat import format as date_format

register = template.Library()


@register.filter
def when(value: datetime | None, precision: str = "s") -> str:
    """``precision="ms"`` adds milliseconds, for arrival times that localisation compares."""
    if not value:
        return "—"
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    text = date_format(local, "Y-m-d H:i:s")
    if precision == "ms":
        text += f".{local.microsecond // 1000:03d}"
    return f"{text} {date_format(local, 'T')}"
