from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class PoliceStation(models.Model):
    """A police station that receives incident notifications and whose officers see the map.

    Its jurisdiction is a radius around the station or a GeoJSON polygon; stations without
    either are reached only as one of the nearest to an incident.
    """

    name = models.CharField(max_length=200)
    latitude = models.FloatField(validators=[MinValueValidator(-90), MaxValueValidator(90)])
    longitude = models.FloatField(validators=[MinValueValidator(-180), MaxValueValidator(180)])
    address = models.CharField(max_length=300, blank=True)
    jurisdiction_radius_km = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0)])
    jurisdiction_geojson = models.JSONField(null=True, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=20, blank=True)
    webhook_url = models.URLField(blank=True)
    webhook_secret = models.CharField(max_length=128, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
