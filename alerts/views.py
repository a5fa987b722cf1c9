"""Pages: the police live map, incident detail with the workflow buttons, the owner's incidents."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.models import User
from accounts.permissions import has_police_access
from alerts import services
from alerts.messages import coarse_location
from alerts.models import Incident, Notification
from alerts.selectors import incidents_for_owner, incidents_visible_to
from gunwatch.exceptions import ApplicationError


def _police_only(request: HttpRequest) -> User:
    if not has_police_access(request.user):
        raise PermissionDenied("Only approved police accounts may see the incident map.")
    return request.user  # type: ignore[return-value]


@login_required
def incident_map(request: HttpRequest) -> HttpResponse:
    _police_only(request)
    config = {
        "ws_path": "/ws/incidents/",
        "api_url": "/api/v1/incidents",
        "hours": settings.ALERT_MAP_HOURS,
    }
    return render(request, "alerts/map.html", {"map_config": config})


def _incident_for(request: HttpRequest, code: str) -> tuple[Incident, bool]:
    """The incident and whether the viewer is police; others' incidents are a 404."""
    user: User = request.user  # type: ignore[assignment]
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
            detections=detections.filter(device__owner=request.user),
            notifications=incident.notifications.filter(owner=request.user),
            coarse={"lat": lat, "lon": lon, "radius": radius},
            marker={"lat": lat, "lon": lon, "radius": radius},
        )
    return render(request, "alerts/incident_detail.html", context)


@login_required
@require_POST
def incident_transition(request: HttpRequest, code: str) -> HttpResponse:
    user = _police_only(request)
    incident, _ = _incident_for(request, code)
    try:
        services.incident_transition(
            incident=incident,
            user=user,
            action=request.POST.get("action", ""),
            disposition=request.POST.get("disposition", ""),
            note=request.POST.get("note", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("incident-detail", code=incident.code)


@login_required
def my_incidents(request: HttpRequest) -> HttpResponse:
    incidents = list(
        incidents_for_owner(request.user)  # type: ignore[arg-type]
        .filter(first_detected_at__gte=timezone.now() - timedelta(days=90))
        .order_by("-first_detected_at")[:200]
    )
    notifications = Notification.objects.filter(owner=request.user, incident__in=incidents).order_by("created_at")
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
