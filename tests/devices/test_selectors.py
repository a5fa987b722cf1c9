"""Where a device is: the one rule (devices.selectors.device_fix) the dashboard, upload and incidents use."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from devices.models import Device
from devices.selectors import STALE_FIX_CAP_M, VEHICLE_DRIFT_M_PER_S, device_fix
from tests.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def test_a_home_unit_is_where_it_is_installed_even_with_a_fix() -> None:
    device = DeviceFactory(last_latitude=48.1, last_longitude=11.5, last_accuracy_m=30.0)
    fix = device_fix(device, at=timezone.now())
    assert fix is not None
    assert (fix.latitude, fix.longitude, fix.accuracy_m, fix.installed) == (52.52, 13.405, None, True)
    assert device.position == (52.52, 13.405)


def test_a_home_unit_without_an_installed_location_uses_its_last_fix() -> None:
    device = DeviceFactory(
        latitude=None,
        longitude=None,
        last_latitude=48.1,
        last_longitude=11.5,
        last_accuracy_m=30.0,
        last_position_at=timezone.now() - timedelta(hours=1),
    )
    fix = device_fix(device, at=timezone.now())
    assert fix is not None
    # A house does not drive away: an old fix is as good as it was.
    assert (fix.latitude, fix.longitude, fix.accuracy_m, fix.installed) == (48.1, 11.5, 30.0, False)


def test_a_vehicle_fix_is_widened_by_how_far_the_car_may_have_driven() -> None:
    now = timezone.now()
    device = DeviceFactory(
        kind=Device.Kind.VEHICLE,
        last_latitude=48.1,
        last_longitude=11.5,
        last_accuracy_m=20.0,
        last_position_at=now - timedelta(seconds=10),
    )
    fix = device_fix(device, at=now)
    assert fix is not None
    assert (fix.latitude, fix.longitude, fix.installed) == (48.1, 11.5, False)
    assert fix.accuracy_m == pytest.approx(20.0 + 10 * VEHICLE_DRIFT_M_PER_S)
    assert device_fix(device, at=now + timedelta(days=1)).accuracy_m == STALE_FIX_CAP_M
    assert device_fix(device).accuracy_m == 20.0
    assert device.position == (48.1, 11.5)


def test_a_vehicle_without_a_fix_is_nowhere_known() -> None:
    # The installed location is a home unit's; for a car it says nothing about where it is now.
    device = DeviceFactory(kind=Device.Kind.VEHICLE)
    assert device_fix(device, at=timezone.now()) is None
    assert device.position is None
