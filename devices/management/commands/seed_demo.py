"""Create the demo cast (admin, police, owner), a few police stations and demo devices."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import User
from alerts.models import PoliceStation
from devices.models import Device
from devices.services import device_create

DEMO_PASSWORD = "gunwatch-demo"
# Made-up stations at plausible places in Berlin, where the demo fleet lives.
DEMO_STATIONS: dict[str, dict[str, Any]] = {
    "Demo station Mitte": {"latitude": 52.5208, "longitude": 13.4094, "jurisdiction_radius_km": 3.0,
                           "contact_email": "mitte@police.gunwatch.local", "contact_phone": "+493046640"},
    "Demo station Kreuzberg": {"latitude": 52.4986, "longitude": 13.4030, "jurisdiction_radius_km": 2.5,
                               "contact_email": "kreuzberg@police.gunwatch.local"},
    "Demo station Neukoelln": {"latitude": 52.4811, "longitude": 13.4353, "jurisdiction_radius_km": 2.5,
                               "contact_email": "neukoelln@police.gunwatch.local"},
    "Demo station Charlottenburg": {"latitude": 52.5167, "longitude": 13.3041, "jurisdiction_radius_km": 3.0,
                                    "contact_email": "charlottenburg@police.gunwatch.local"},
}


class Command(BaseCommand):
    help = "Create demo accounts (printed), police stations and devices. Idempotent; refuses when DEBUG is off."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD, help="Password for the three demo accounts")
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
        police = self._user("police", password, role=User.Role.POLICE, police_station=stations[0],
                            police_approved=True, badge_number="DEMO-1")
        owner = self._user("owner", password, role=User.Role.OWNER)
        if not Device.objects.filter(owner=owner).exists():
            device_create(owner=owner, name="Demo home", kind=Device.Kind.HOME, latitude=52.5208,
                          longitude=13.4094)
        if quiet:
            return
        self.stdout.write(self.style.SUCCESS(f"Demo accounts (password for all: {password})"))
        for user in (admin, police, owner):
            self.stdout.write(f"  {user.get_role_display():<13} {user.username}")

    def _user(self, username: str, password: str, **fields: Any) -> User:
        user, _ = User.objects.update_or_create(
            username=username, defaults={"email": f"{username}@gunwatch.local", **fields}
        )
        user.set_password(password)
        user.save(update_fields=["password"])
        return user
