from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from accounts.models import User
from accounts.services import police_accounts_pending
from devices.models import Device


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send each role to the page it came for."""
    user: User = request.user  # type: ignore[assignment]  # login_required: a User, never anonymous
    if user.role == User.Role.ADMIN or user.is_superuser:
        context = {
            "pending_police": police_accounts_pending().select_related("police_station"),
            "device_counts": {
                "total": Device.objects.count(),
                "online": Device.objects.filter(connectivity=Device.Connectivity.ONLINE).count(),
                "offline": Device.objects.filter(connectivity=Device.Connectivity.OFFLINE).count(),
                "pending": Device.objects.filter(status=Device.Status.PENDING).count(),
            },
        }
        return render(request, "admin_home.html", context)
    if user.role == User.Role.POLICE:
        if not user.has_police_access:
            return render(request, "police_pending.html")
        return redirect("incident-map")
    return redirect("dashboard")


def health(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
