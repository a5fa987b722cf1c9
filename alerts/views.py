"""Pages: the police live map, incident detail with the workflow buttons, the owner's incidents."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.models import User
from accounts.permissions import has_police_access
from alerts import services
from alerts.messages import coarse_location
from alerts.models import Incident, Notification
from alerts.selectors import incidents_for_owner, incidents_visible_to
from devices.models import Device
from gunwatch.api import error_body
from gunwatch.exceptions import ApplicationError

TRANSITION_CONFIRMATIONS = {
    "acknowledge": "Acknowledged: other officers see that you have this incident.",
    "en_route": "Marked en route.",
    "on_scene": "Marked on scene.",
    "close": "Incident closed.",
    "note": "Note added to the timeline.",
}


def _police_only(request: HttpRequest) -> User:
    if not has_police_access(request.user):
        raise PermissionDenied("Only approved police accounts may see the incident map.")
    return request.user  # type: ignore[return-value]  # police access implies a User


def _sees_everything(user: User) -> bool:
    return user.role == User.Role.ADMIN or user.is_superuser or settings.POLICE_SEE_ALL_INCIDENTS


@login_required
def incident_map(request: HttpRequest) -> HttpResponse:
    user = _police_only(request)
    station = None if _sees_everything(user) else user.police_station
    config = {
        "ws_path": "/ws/incidents/",
        "api_url": "/api/v1/incidents",
        "devices_url": reverse("incident-map-devices"),
        "address_url": reverse("incident-map-address") if settings.GEOCODER_URL else None,
        "hours": settings.ALERT_MAP_HOURS,
        "station": str(station) if station else None,
        "time_zone": settings.TIME_ZONE,
    }
    return render(request, "alerts/map.html", {"map_config": config, "station": station})


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_lon = math.sin(math.radians(lon2 - lon1) / 2)
    a = math.sin((phi2 - phi1) / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * half_lon**2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


# Device positions are owners' homes and cars: the police layer shows coverage, not addresses.
DEVICE_LAYER_DECIMALS = 3  # about 100 m


@login_required
def incident_map_devices(request: HttpRequest) -> JsonResponse:
    """The listening network for the police map's device layer: where devices are and whether they are on."""
    user = _police_only(request)
    station = None if _sees_everything(user) else user.police_station
    reach_m = None
    if station is not None and station.latitude is not None and station.longitude is not None:
        # The station's area plus hearing range: a device just outside still hears shots inside.
        reach_m = (station.jurisdiction_radius_km or 0) * 1000 + settings.ALERT_HEARING_RANGE_M
    devices: list[dict[str, Any]] = []
    for device in Device.objects.filter(status=Device.Status.ACTIVE):
        position = device.position
        if position is None:
            continue
        if reach_m is not None and _distance_m(station.latitude, station.longitude, *position) > reach_m:  # type: ignore[union-attr]  # reach_m implies a station
            continue
        devices.append(
            {
                "lat": round(position[0], DEVICE_LAYER_DECIMALS),
                "lon": round(position[1], DEVICE_LAYER_DECIMALS),
                "kind": device.kind,
                "online": device.is_online,
            }
        )
    online = sum(d["online"] for d in devices)
    return JsonResponse({"devices": devices, "online": online, "offline": len(devices) - online})


@login_required
def incident_map_address(request: HttpRequest) -> JsonResponse:
    """Reverse-geocode a point through GEOCODER_URL (Nominatim's /reverse API), cached; coordinates otherwise."""
    _police_only(request)
    try:
        lat = round(float(request.GET["lat"]), 5)
        lon = round(float(request.GET["lon"]), 5)
    except (KeyError, ValueError):
        return JsonResponse(error_body("lat and lon are required numbers.", "invalid"), status=400)
    fallback = f"{lat:.5f}, {lon:.5f}"
    if not settings.GEOCODER_URL:
        return JsonResponse({"address": None, "coordinates": fallback})
    key = f"gw-address:{lat}:{lon}"
    address = cache.get(key)
    if address is None:
        try:
            response = requests.get(
                settings.GEOCODER_URL,
                params={"lat": lat, "lon": lon, "format": "jsonv2", "zoom": 18, "addressdetails": 0},  # type: ignore[arg-type]  # str and int values
                headers={"User-Agent": "GunWatch (incident map)"},
                timeout=settings.GEOCODER_TIMEOUT_S,
            )
            response.raise_for_status()
            address = response.json().get("display_name") or ""
        except (requests.RequestException, ValueError):
            address = ""
        cache.set(key, address, 24 * 3600 if address else 60)
    return JsonResponse({"address": address or None, "coordinates": fallback})


def _incident_for(request: HttpRequest, code: str) -> tuple[Incident, bool]:
    """The incident and whether the viewer is police; others' incidents are a 404."""
    user: User = request.user  # type: ignore[assignment]  # login_required: a User, never anonymous
    police = has_police_access(user)
    qs = incidents_visible_to(user, police=police)
    incident = qs.select_related("evidence_clip").filter(code=code).first()
    if incident is None:
        raise Http404("No such incident.")
    return incident, police


@login_required
def incident_detail(request: HttpRequest, code: str) -> HttpResponse:
    incident, police = _incident_for(request, code)
    detections = incident.detections.select_related("device", "clip").order_by("event_at")
    context: dict[str, object] = {"incident": incident, "police": police}
    if police:
        clip = incident.evidence_clip
        context.update(
            detections=detections,
            timeline=incident.events.select_related("actor"),
            notifications=incident.notifications.all(),
            actions=incident.actions_available(),
            dispositions=Incident.Disposition.choices,
            evidence=clip if clip is not None and clip.audio and clip.audio_deleted_at is None else None,
            marker={"lat": incident.latitude, "lon": incident.longitude, "radius": incident.radius_m},
        )
    else:
        lat, lon, radius = coarse_location(incident.latitude, incident.longitude, incident.radius_m)
        context.update(
            detections=detections.filter(device__owner=request.user),  # type: ignore[misc]  # login_required: a User, never anonymous
            notifications=incident.notifications.filter(owner=request.user),  # type: ignore[misc]  # as above
            coarse={"lat": lat, "lon": lon, "radius": radius},
            marker={"lat": lat, "lon": lon, "radius": radius},
        )
    return render(request, "alerts/incident_detail.html", context)


@login_required
@require_POST
def incident_transition(request: HttpRequest, code: str) -> HttpResponse:
    user = _police_only(request)
    incident, _ = _incident_for(request, code)
    action = request.POST.get("action", "")
    try:
        services.incident_transition(
            incident=incident,
            user=user,
            action=action,
            disposition=request.POST.get("disposition", ""),
            note=request.POST.get("note", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, TRANSITION_CONFIRMATIONS.get(action, "Done."))
    return redirect("incident-detail", code=incident.code)


@login_required
def my_incidents(request: HttpRequest) -> HttpResponse:
    incidents = list(
        incidents_for_owner(request.user)  # type: ignore[arg-type]  # login_required: a User, never anonymous
        .filter(first_detected_at__gte=timezone.now() - timedelta(days=90))
        .order_by("-first_detected_at")[:200]
    )
    notifications = Notification.objects.filter(owner=request.user, incident__in=incidents).order_by(  # type: ignore[misc]  # login_required: a User, never anonymous
        "created_at"
    )
    by_incident: dict[int, list[Notification]] = {}
    for notification in notifications:
        by_incident.setdefault(notification.incident_id, []).append(notification)
    rows = [
        {
            "incident": incident,
            "coarse": coarse_location(incident.latitude, incident.longitude, incident.radius_m),
            "notifications": by_incident.get(incident.pk, []),
        }
        for incident in incidents
    ]
    return render(request, "alerts/my_incidents.html", {"rows": rows})
