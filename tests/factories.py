"""factory_boy factories for every model.

Each factory makes a valid row with the fewest decisions a test must take; a test names only the
fields its assertion is about. ``SomethingFactory(...)`` creates and saves; ``.build(...)`` does not.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import factory
import factory.django
from django.utils import timezone

from accounts.models import User
from alerts.models import (
    ChannelOutage,
    Detection,
    DispatchPolicy,
    Incident,
    IncidentEvent,
    JoinLock,
    Notification,
    PoliceStation,
)
from alerts.services.recording import JOIN_LOCK_NAME
from detection.models import Classification, Clip, ModelVersion
from devices.models import Device, DeviceToken, TrustedContact

# Every factory-made user has this password.
PASSWORD = "correct-horse-battery"

ModelT = TypeVar("ModelT")


class ModelFactory(factory.django.DjangoModelFactory[ModelT], Generic[ModelT]):
    """DjangoModelFactory whose call mypy sees returning the model (factory_boy's metaclass is untyped)."""

    class Meta:
        abstract = True

    if TYPE_CHECKING:
        # The metaclass's __call__ creates the row; this tells mypy so, and never runs.
        def __new__(cls, *args: Any, **kwargs: Any) -> ModelT: ...  # type: ignore[misc]  # __new__ returns the model, not the factory


class UserFactory(ModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    role = User.Role.OWNER
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj: User, create: bool, extracted: Any, **kwargs: Any) -> None:
        # One save after the password is set (skip_postgeneration_save keeps factory_boy from a second).
        if create:
            obj.save()


class PoliceStationFactory(ModelFactory[PoliceStation]):
    class Meta:
        model = PoliceStation

    name = factory.Sequence(lambda n: f"Station {n}")
    latitude = 52.52
    longitude = 13.405
    jurisdiction_radius_km = 5.0
    contact_email = factory.Sequence(lambda n: f"station{n}@police.example.org")


class DispatchPolicyFactory(ModelFactory[DispatchPolicy]):
    class Meta:
        model = DispatchPolicy

    station = factory.SubFactory(PoliceStationFactory)
    mode = DispatchPolicy.Mode.EVIDENCE


class ChannelOutageFactory(ModelFactory[ChannelOutage]):
    class Meta:
        model = ChannelOutage

    station = factory.SubFactory(PoliceStationFactory)
    channel = Notification.Channel.WEBHOOK
    started_at = factory.LazyFunction(timezone.now)
    last_failure_at = factory.LazyFunction(timezone.now)
    failures = 1


class PoliceUserFactory(UserFactory):
    role = User.Role.POLICE
    police_approved = True
    police_approved_at = factory.LazyFunction(timezone.now)
    police_station = factory.SubFactory(PoliceStationFactory)


class DeviceFactory(ModelFactory[Device]):
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


class DeviceTokenFactory(ModelFactory[DeviceToken]):
    """A token row; its digest matches no secret, so it cannot authenticate (use the pairing flow for that)."""

    class Meta:
        model = DeviceToken

    device = factory.SubFactory(DeviceFactory)
    key = factory.Sequence(lambda n: f"k{n:015d}")
    digest = factory.LazyAttribute(lambda t: hashlib.sha256(t.key.encode()).hexdigest())


class TrustedContactFactory(ModelFactory[TrustedContact]):
    class Meta:
        model = TrustedContact

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Contact {n}")
    relation = "friend"
    email = factory.LazyAttribute(lambda c: f"{c.name.replace(' ', '').lower()}@example.org")
    phone = "+4915112345678"
    channels = factory.LazyFunction(lambda: ["email"])


class ModelVersionFactory(ModelFactory[ModelVersion]):
    """A registry row pointing at no real weights file (enough for rows that reference a version)."""

    class Meta:
        model = ModelVersion
        django_get_or_create = ("name", "version")

    name = "test-model"
    version = factory.Sequence(lambda n: f"1.{n}")
    architecture = "cnn"
    sha256 = "0" * 64
    weights = "models/x.pt"


class ClipFactory(ModelFactory[Clip]):
    """A clip already classified (status done), with no audio file."""

    class Meta:
        model = Clip

    device = factory.SubFactory(DeviceFactory)
    client_id = factory.LazyFunction(uuid.uuid4)
    audio_sha256 = "0" * 64
    audio_format = "wav"
    recorded_at = factory.LazyFunction(timezone.now)
    clock_source = "ntp"
    status = Clip.Status.DONE
    duration_s = 2.0


class ClassificationFactory(ModelFactory[Classification]):
    """A gunshot verdict on a new clip."""

    class Meta:
        model = Classification

    clip = factory.SubFactory(ClipFactory)
    model_version = factory.SubFactory(ModelVersionFactory, version="1")
    label = Classification.Label.GUNSHOT
    score = 0.93
    threshold = 0.5
    shots = 1
    offset_s = 0.5


class IncidentFactory(ModelFactory[Incident]):
    class Meta:
        model = Incident

    first_detected_at = factory.LazyFunction(timezone.now)
    last_detected_at = factory.LazyAttribute(lambda i: i.first_detected_at)
    latitude = 52.52
    longitude = 13.405
    radius_m = 50.0
    location_method = Incident.LocationMethod.SINGLE
    shots = 1
    max_confidence = 0.93
    device_count = 1


class DetectionFactory(ModelFactory[Detection]):
    """One device's part in an incident, frozen from its classification the way recording does."""

    class Meta:
        model = Detection

    incident = factory.SubFactory(IncidentFactory)
    classification = factory.SubFactory(ClassificationFactory)
    clip = factory.SelfAttribute("classification.clip")
    device = factory.SelfAttribute("clip.device")
    event_at = factory.LazyAttribute(lambda d: d.clip.recorded_at)
    latitude = factory.SelfAttribute("device.latitude")
    longitude = factory.SelfAttribute("device.longitude")
    accuracy_m = 25.0
    clock_source = factory.SelfAttribute("clip.clock_source")
    score = factory.SelfAttribute("classification.score")
    shots = factory.SelfAttribute("classification.shots")


class IncidentEventFactory(ModelFactory[IncidentEvent]):
    class Meta:
        model = IncidentEvent

    incident = factory.SubFactory(IncidentFactory)
    kind = IncidentEvent.Kind.NOTE
    message = "note"


class NotificationFactory(ModelFactory[Notification]):
    """An email to a police station, queued."""

    class Meta:
        model = Notification

    incident = factory.SubFactory(IncidentFactory)
    station = factory.SubFactory(PoliceStationFactory)
    recipient_kind = Notification.RecipientKind.STATION
    recipient_key = factory.LazyAttribute(lambda n: f"station:{n.station.pk}")
    recipient_name = factory.SelfAttribute("station.name")
    channel = Notification.Channel.EMAIL
    target = factory.SelfAttribute("station.contact_email")


class JoinLockFactory(ModelFactory[JoinLock]):
    class Meta:
        model = JoinLock
        django_get_or_create = ("name",)

    name = JOIN_LOCK_NAME
