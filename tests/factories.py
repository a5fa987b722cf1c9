"""factory_boy factories for every model."""

from __future__ import annotations

import uuid

import factory
from django.utils import timezone

from accounts.models import User
from alerts.models import PoliceStation
from devices.models import Device, TrustedContact


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    role = User.Role.OWNER
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            obj.save()


class PoliceStationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PoliceStation

    name = factory.Sequence(lambda n: f"Station {n}")
    latitude = 52.52
    longitude = 13.405
    jurisdiction_radius_km = 5.0
    contact_email = factory.Sequence(lambda n: f"station{n}@police.example.org")


class PoliceUserFactory(UserFactory):
    role = User.Role.POLICE
    police_approved = True
    police_approved_at = factory.LazyFunction(timezone.now)
    police_station = factory.SubFactory(PoliceStationFactory)


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Device {n}")
    kind = Device.Kind.HOME
    status = Device.Status.ACTIVE
    latitude = 52.52
    longitude = 13.405
    heartbeat_interval_s = 60
    paired_at = factory.LazyFunction(timezone.now)


class TrustedContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TrustedContact

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Contact {n}")
    relation = "friend"
    email = factory.LazyAttribute(lambda c: f"{c.name.replace(' ', '').lower()}@example.org")
    phone = "+4915112345678"
    channels = factory.LazyFunction(lambda: ["email"])


def new_uuid() -> str:
    return str(uuid.uuid4())
