"""What each recipient is told. Police get the precise location; owners and contacts a coarse one.

Owners and their contacts are private people: a location rounded to about a kilometre tells
them whether to worry about home without turning the alert into a tracking tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from alerts.models import Incident, Notification

COARSE_DEGREE_M = 111_000.0  # one degree of latitude, near enough for a privacy radius


@dataclass(frozen=True)
class Message:
    subject: str
    body: str
    sms: str


def coarse_location(
    lat: float | None, lon: float | None, radius_m: float | None
) -> tuple[float | None, float | None, float | None]:
    """Round to ALERT_COARSE_DECIMALS and widen the radius to at least the rounding cell."""
    if lat is None or lon is None:
        return None, None, None
    decimals = settings.ALERT_COARSE_DECIMALS
    cell_m = COARSE_DEGREE_M * 10.0**-decimals
    return round(lat, decimals), round(lon, decimals), max(radius_m or 0.0, cell_m)


def incident_url(incident: Incident) -> str:
    return f"{settings.SITE_URL}/incidents/{incident.code}/"


def osm_url(lat: float, lon: float, zoom: int = 14) -> str:
    return f"https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map={zoom}/{lat}/{lon}"


def _when(incident: Incident) -> str:
    return timezone.localtime(incident.first_detected_at).strftime("%Y-%m-%d %H:%M:%S %Z")


def render_message(notification: Notification) -> Message:
    incident = notification.incident
    when = _when(incident)
    if notification.recipient_kind == Notification.RecipientKind.STATION:
        return _police_message(incident, when)
    lat, lon, radius = coarse_location(incident.latitude, incident.longitude, incident.radius_m)
    decimals = settings.ALERT_COARSE_DECIMALS
    where = (
        f"near {lat:.{decimals}f}, {lon:.{decimals}f} (±{radius / 1000:.1f} km)"  # type: ignore[operator]  # radius is set whenever lat is
        if lat is not None
        else "at an unknown place"
    )
    if notification.recipient_kind == Notification.RecipientKind.OWNER:
        link = incident_url(incident)
        intro = "One of your GunWatch devices heard what sounds like gunfire"
    else:
        link = osm_url(lat, lon) if lat is not None and lon is not None else settings.SITE_URL
        owner = notification.owner.get_full_name() or notification.owner.username if notification.owner else "someone"
        intro = f"A GunWatch device of {owner} heard what sounds like gunfire"
    body = (
        f"{intro} at {when}, {where}.\n\n"
        f"The police have been notified. If you are nearby, stay indoors and away from windows.\n\n{link}\n"
    )
    return Message(
        subject=f"GunWatch: possible gunfire at {when}",
        body=body,
        sms=f"GunWatch: possible gunfire {when} {where}. {link}",
    )


def _police_message(incident: Incident, when: str) -> Message:
    if incident.has_location:
        where = (
            f"{incident.latitude:.6f}, {incident.longitude:.6f} "
            f"(±{incident.radius_m:.0f} m, {incident.location_method})"
        )
        map_link = osm_url(round(incident.latitude, 6), round(incident.longitude, 6), zoom=17)  # type: ignore[arg-type]  # has_location checked above
    else:
        where, map_link = "location unknown", ""
    body = (
        f"Possible gunfire detected at {when}.\n"
        f"Location: {where}\n"
        f"Devices: {incident.device_count}, shots: {incident.shots}, confidence: {incident.max_confidence:.2f}\n\n"
        f"Incident: {incident_url(incident)}\n{map_link}\n"
    )
    return Message(
        subject=f"GunWatch ALERT: possible gunfire {when}",
        body=body,
        sms=f"GunWatch ALERT {when}: possible gunfire at {where}. {incident_url(incident)}",
    )


def webhook_payload(notification: Notification) -> dict[str, Any]:
    """The JSON a dispatch/CAD system receives: precise location, counts and links."""
    incident = notification.incident
    return {
        "event": "incident.opened",
        "incident": {
            "id": str(incident.code),
            "status": incident.status,
            "first_detected_at": incident.first_detected_at.isoformat(),
            "last_detected_at": incident.last_detected_at.isoformat(),
            "latitude": incident.latitude,
            "longitude": incident.longitude,
            "radius_m": incident.radius_m,
            "location_method": incident.location_method,
            "shots": incident.shots,
            "max_confidence": incident.max_confidence,
            "device_count": incident.device_count,
            "url": incident_url(incident),
        },
        "station": {"id": notification.station_id, "name": notification.recipient_name},
        "notification_id": notification.pk,
    }
