from __future__ import annotations

from celery import shared_task

from devices.services import devices_mark_offline


@shared_task(name="devices.tasks.mark_offline_devices")
def mark_offline_devices() -> int:
    """Periodic (beat): flip devices that missed their heartbeats to offline."""
    return len(devices_mark_offline())
