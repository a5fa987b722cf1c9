"""Device services: the offline sweep, pairing races, contact coverage."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from devices import services
from devices.models import Device
from devices.tasks import mark_offline_devices
from gunwatch.exceptions import ApplicationError
from tests.factories import DeviceFactory, TrustedContactFactory

pytestmark = pytest.mark.django_db


def beat(device: Device) -> Device:
    return services.heartbeat_record(device=device, data={})


def test_device_goes_offline_after_three_missed_heartbeats_and_owner_is_emailed_once(owner) -> None:
    device = beat(DeviceFactory(owner=owner, heartbeat_interval_s=60))
    start = timezone.now()
    with time_machine.travel(start + timedelta(seconds=170)):
        assert mark_offline_devices() == 0
    with time_machine.travel(start + timedelta(seconds=185)):
        assert mark_offline_devices() == 1
        assert mark_offline_devices() == 0  # a second sweep of the same outage says nothing
        device.refresh_from_db()
        assert not device.is_online
    assert device.connectivity == Device.Connectivity.OFFLINE
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [owner.email]
    assert device.name in mail.outbox[0].subject


def test_a_new_outage_after_recovery_notifies_again(owner) -> None:
    device = beat(DeviceFactory(owner=owner, heartbeat_interval_s=60))
    start = timezone.now()
    with time_machine.travel(start + timedelta(minutes=4)):
        services.devices_mark_offline()
        device.refresh_from_db()
        beat(device)
    with time_machine.travel(start + timedelta(minutes=8)):
        services.devices_mark_offline()
    assert len(mail.outbox) == 2


def test_concurrent_sweeps_flip_each_device_once(owner) -> None:
    """The flip is a conditional update: a sweep that read stale rows changes nothing."""
    device = beat(DeviceFactory(owner=owner))
    later = timezone.now() + timedelta(hours=1)
    stale_view = list(Device.objects.filter(pk=device.pk))  # what a second worker had already read
    first = services.devices_mark_offline(now=later)
    changed = Device.objects.filter(
        pk=stale_view[0].pk, connectivity=Device.Connectivity.ONLINE, offline_after__lt=later
    ).update(connectivity=Device.Connectivity.OFFLINE)
    assert len(first) == 1
    assert changed == 0
    assert len(mail.outbox) == 1


def test_never_seen_and_pending_devices_are_not_announced(owner) -> None:
    DeviceFactory(owner=owner, status=Device.Status.PENDING)
    DeviceFactory(owner=owner)  # active but never sent a heartbeat
    assert services.devices_mark_offline(now=timezone.now() + timedelta(days=1)) == []
    assert mail.outbox == []


def test_pairing_a_disabled_device_is_refused(owner) -> None:
    device, issued = services.device_create(owner=owner, name="X")
    Device.objects.filter(pk=device.pk).update(status=Device.Status.DISABLED)
    with pytest.raises(ApplicationError) as excinfo:
        services.device_pair(pairing_code=issued.code)
    assert excinfo.value.code == "device_disabled"


def test_token_authenticate_rejects_a_right_key_with_a_wrong_secret(paired_device) -> None:
    device, token = paired_device
    key = token.split(".")[0]
    assert services.device_token_authenticate(f"{key}.wrong-secret") is None
    authenticated = services.device_token_authenticate(token)
    assert authenticated is not None
    assert authenticated.device == device
    assert authenticated.last_used_at is not None


def test_contacts_cover_all_devices_unless_limited(owner) -> None:
    home = DeviceFactory(owner=owner, name="Home")
    car = DeviceFactory(owner=owner, name="Car")
    everyone = TrustedContactFactory(owner=owner, name="Everyone")
    car_only = TrustedContactFactory(owner=owner, name="Car only")
    car_only.devices.add(car)
    TrustedContactFactory(name="Stranger")  # another owner's contact
    assert services.trusted_contacts_for_device(device=home) == [everyone]
    assert {c.name for c in services.trusted_contacts_for_device(device=car)} == {"Everyone", "Car only"}
