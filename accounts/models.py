from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person using GunWatch: a device owner, a police officer or an administrator.

    A police sign-up is only a request: ``police_approved`` stays false, and the account has no
    police access, until an admin approves it and links it to a police station.
    """

    class Role(models.TextChoices):
        OWNER = "owner", "Device owner"
        POLICE = "police", "Police"
        ADMIN = "admin", "Administrator"

    email = models.EmailField("email address", blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OWNER)
    phone = models.CharField(max_length=20, blank=True)
    police_station = models.ForeignKey(
        "alerts.PoliceStation", null=True, blank=True, on_delete=models.SET_NULL, related_name="officers"
    )
    police_approved = models.BooleanField(default=False)
    police_approved_at = models.DateTimeField(null=True, blank=True)
    police_approved_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    badge_number = models.CharField(max_length=40, blank=True)

    class Meta:
        indexes = [models.Index(fields=["role", "police_approved"], name="accounts_user_role_approved")]

    @property
    def is_owner(self) -> bool:
        return self.role == self.Role.OWNER

    @property
    def has_police_access(self) -> bool:
        """Approved police linked to a station, or an administrator."""
        if self.role == self.Role.ADMIN:
            return True
        return (
            self.is_active
            and self.role == self.Role.POLICE
            and self.police_approved
            and self.police_station_id is not None
        )

    @property
    def is_pending_police(self) -> bool:
        return self.role == self.Role.POLICE and not self.has_police_access
