"""Create the demo cast (admin, police, reviewer, owner), a few police stations with their dispatch
policy, and demo devices, one of them a nuisance-prone "building site" with a fortnight of dismissed
false alarms behind it and its calibrated alert threshold (history for the outcomes page; the live
nuisance-prone device is the simulated fleet's "Sim building site", see ``simulate_fleet``)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from alerts.models import Detection, DispatchPolicy, Incident, IncidentEvent, PoliceStation
from detection.models import Classification, Clip
from detection.selectors import model_version_active
from devices.models import Device
from devices.services import device_create

DEMO_PASSWORD = "gunwatch-demo"
NUISANCE_DEVICE = "Demo building site"
# Made-up stations at plausible places in Berlin, where the demo fleet lives.
DEMO_STATIONS: dict[str, dict[str, Any]] = {
    "Demo station Mitte": {
        "latitude": 52.5208,
        "longitude": 13.4094,
        "jurisdiction_radius_km": 3.0,
        "contact_email": "mitte@police.gunwatch.local",
        "contact_phone": "+493046640",
    },
    "Demo station Kreuzberg": {
        "latitude": 52.4986,
        "longitude": 13.4030,
        "jurisdiction_radius_km": 2.5,
        "contact_email": "kreuzberg@police.gunwatch.local",
    },
    "Demo station Neukoelln": {
        "latitude": 52.4811,
        "longitude": 13.4353,
        "jurisdiction_radius_km": 2.5,
        "contact_email": "neukoelln@police.gunwatch.local",
    },
    "Demo station Charlottenburg": {
        "latitude": 52.5167,
        "longitude": 13.3041,
        "jurisdiction_radius_km": 3.0,
        "contact_email": "charlottenburg@police.gunwatch.local",
    },
}


class Command(BaseCommand):
    help = "Create demo accounts (printed), police stations and devices. Idempotent; refuses when DEBUG is off."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD, help="Password for the demo accounts")
        parser.add_argument("--quiet", action="store_true", help="Do not print the credentials")

    @transaction.atomic
    def handle(self, *args: Any, password: str, quiet: bool, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("Demo accounts with known passwords are for DEBUG installs only.")
        stations = [
            PoliceStation.objects.update_or_create(name=name, defaults=fields)[0]
            for name, fields in DEMO_STATIONS.items()
        ]
        admin = self._user("admin", password, role=User.Role.ADMIN, is_staff=True, is_superuser=True)
        police = self._user(
            "police",
            password,
            role=User.Role.POLICE,
            police_station=stations[0],
            police_approved=True,
            badge_number="DEMO-1",
        )
        reviewer = self._user(
            "reviewer",
            password,
            role=User.Role.POLICE,
            police_station=stations[0],
            police_approved=True,
            badge_number="DEMO-2",
        )
        reviewer.user_permissions.add(Permission.objects.get(codename="reviewer", content_type__app_label="alerts"))
        for station in stations:
            # Strong evidence (several agreeing devices) goes out at once; anything weaker waits for a reviewer.
            DispatchPolicy.objects.get_or_create(station=station, defaults={"mode": DispatchPolicy.Mode.EVIDENCE})
        owner = self._user("owner", password, role=User.Role.OWNER)
        if not Device.objects.filter(owner=owner).exists():
            device_create(owner=owner, name="Demo home", kind=Device.Kind.HOME, latitude=52.5208, longitude=13.4094)
        self._building_site(owner, reviewer)
        if quiet:
            return
        self.stdout.write(self.style.SUCCESS(f"Demo accounts (password for all: {password})"))
        for user in (admin, police, reviewer, owner):
            self.stdout.write(f"  {user.get_role_display():<13} {user.username}")

    def _building_site(self, owner: User, reviewer: User) -> None:
        """A device next to a building site: 30 nuisance "gunshots" in 14 days, each dismissed in review,
        then calibrated, so its threshold and flag show on its page and its record on the outcomes page."""
        if Device.objects.filter(owner=owner, name=NUISANCE_DEVICE).exists():
            return
        version = model_version_active()
        if version is None:
            return
        now = timezone.now()
        device = Device.objects.create(
            owner=owner,
            name=NUISANCE_DEVICE,
            kind=Device.Kind.HOME,
            status=Device.Status.ACTIVE,
            latitude=52.5150,
            longitude=13.3950,
            paired_at=now - timedelta(days=15),
        )
        station = PoliceStation.objects.filter(name__contains="Mitte").first()
        for i in range(30):
            heard = now - timedelta(hours=11 * i + 3)
            # Above the model's threshold (they were "gunshots"): hammer blows and dropped scaffolding.
            score = round(version.threshold + (1 - version.threshold) * (i * 7 % 30) / 31, 3)
            clip = Clip.objects.create(
                device=device,
                client_id=uuid.uuid4(),
                audio_sha256="0" * 64,
                recorded_at=heard,
                latitude=device.latitude,
                longitude=device.longitude,
                accuracy_m=5,
                clock_source="ntp",
                status=Clip.Status.DONE,
                duration_s=2.0,
            )
            classification = Classification.objects.create(
                clip=clip, model_version=version, label="gunshot", score=score, threshold=version.threshold, shots=1
            )
            incident = Incident.objects.create(
                first_detected_at=heard,
                last_detected_at=heard,
                latitude=device.latitude,
                longitude=device.longitude,
                radius_m=1505,
                location_method=Incident.LocationMethod.SINGLE,
                shots=1,
                max_confidence=score,
                device_count=1,
                dispatch=Incident.Dispatch.DISMISSED,
                status=Incident.Status.CLOSED,
                disposition=Incident.Disposition.OTHER_SOURCE,
                closed_at=heard + timedelta(seconds=25),
                reviewed_by=reviewer,
                reviewed_at=heard + timedelta(seconds=25),
                review_note="building site",
                evidence_score=round(score * 2 / 3, 3),
                evidence_summary=f"Moderate evidence ({score * 2 / 3:.2f}): single device, noisy location (±1505 m)",
            )
            Incident.objects.filter(pk=incident.pk).update(opened_at=heard + timedelta(seconds=2))
            if station is not None:
                incident.stations.add(station)
            Detection.objects.create(
                incident=incident,
                classification=classification,
                clip=clip,
                device=device,
                event_at=heard,
                latitude=device.latitude,
                longitude=device.longitude,
                accuracy_m=5,
                clock_source="ntp",
                score=score,
                shots=1,
            )
            IncidentEvent.objects.create(
                incident=incident,
                kind=IncidentEvent.Kind.DISMISSED,
                actor=reviewer,
                message="reviewer: dismissed in review (Other source) — building site",
            )
        from alerts.services.calibration import device_calibrate

        # Not mailed: this is made-up history, and the mail would land on the console before the demo starts.
        device_calibrate(device, model_threshold=version.threshold, notify=False)

    def _user(self, username: str, password: str, **fields: Any) -> User:
        user, _ = User.objects.update_or_create(
            username=username, defaults={"email": f"{username}@gunwatch.local", **fields}
        )
        user.set_password(password)
        user.save(update_fields=["password"])
        return user
