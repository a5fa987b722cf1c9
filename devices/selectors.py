"""Read-side rules of the devices app: where a device is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the model's position property calls device_fix, so no import of models at run time
    from devices.models import Device

# A car in town covers about this much ground per second; a stale fix gets this much less certain.
VEHICLE_DRIFT_M_PER_S = 15.0
STALE_FIX_CAP_M = 5000.0


@dataclass(frozen=True)
class DeviceFix:
    latitude: float
    longitude: float
    # None: a surveyed installed location, or a reported fix that came without an accuracy.
    accuracy_m: float | None
    installed: bool


def device_fix(device: Device, *, at: datetime | None = None) -> DeviceFix | None:
    """Where a device is: the one rule the dashboard, the upload and the incident all use.

    A vehicle is where its last GPS fix put it, or nowhere known (an installed location means nothing
    for a car); a home unit is where it is installed (a surveyed spot beats any phone-grade fix), else
    at its last reported fix. Given ``at``, a vehicle's fix is widened by how far the car may have
    driven since it was taken, up to a cap.
    """
    has_fix = device.last_latitude is not None and device.last_longitude is not None
    vehicle = device.kind == device.Kind.VEHICLE
    has_installed = not vehicle and device.latitude is not None and device.longitude is not None
    if has_fix and (vehicle or not has_installed):
        accuracy = device.last_accuracy_m
        if at is not None and vehicle:
            age_s = (at - device.last_position_at).total_seconds() if device.last_position_at else 0.0
            drift = VEHICLE_DRIFT_M_PER_S * max(age_s, 0.0)
            if drift > 0 or accuracy is not None:
                accuracy = min((accuracy or 0.0) + drift, STALE_FIX_CAP_M)
        return DeviceFix(device.last_latitude, device.last_longitude, accuracy, installed=False)  # type: ignore[arg-type]  # has_fix checked both coordinates
    if has_installed:
        return DeviceFix(device.latitude, device.longitude, None, installed=True)  # type: ignore[arg-type]  # has_installed checked both coordinates
    return None
