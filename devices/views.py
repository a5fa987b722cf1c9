"""Owner pages: dashboard, devices, trusted contacts."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from devices import services
from devices.forms import DeviceForm, TrustedContactForm
from devices.models import Device, TrustedContact
from gunwatch.exceptions import ApplicationError


def _own_device(request: HttpRequest, code: str) -> Device:
    # Another owner's device is a 404, never a 403: its existence is not our business to reveal.
    return get_object_or_404(Device, code=code, owner=request.user)


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """ "Sim home 2" before "Sim home 10": digit runs compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part.casefold()) for part in re.split(r"(\d+)", text) if part]


def device_health(device: Device) -> str:
    """One word for the dashboard: a device never paired is not "offline", it was never on."""
    if device.status == Device.Status.PENDING:
        return "awaiting_pairing"
    if device.status == Device.Status.DISABLED:
        return "disabled"
    if device.is_online:
        return "online"
    if device.last_heartbeat_at is None:
        return "no_heartbeat"
    return "offline"


HEALTH_LABELS = {
    "awaiting_pairing": ("awaiting pairing", ""),
    "disabled": ("disabled", "bad"),
    "online": ("online", "ok"),
    "no_heartbeat": ("paired, no heartbeat yet", "warn"),
    "offline": ("offline", "bad"),
}


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    devices = sorted(
        Device.objects.filter(owner=request.user),  # type: ignore[misc]  # login_required: a User, never anonymous
        key=lambda device: natural_key(device.name),
    )
    rows: list[dict[str, Any]] = []
    for device in devices:
        health = device_health(device)
        label, css = HEALTH_LABELS[health]
        rows.append({"device": device, "health": health, "label": label, "css": css})
    markers = [
        {
            "name": row["device"].name,
            "kind": row["device"].kind,
            "health": row["health"],
            "label": row["label"],
            "lat": row["device"].position[0],
            "lon": row["device"].position[1],
            "url": f"/devices/{row['device'].code}/",
        }
        for row in rows
        if row["device"].position is not None
    ]
    counts = {key: sum(row["health"] == key for row in rows) for key in HEALTH_LABELS}
    context = {
        "devices": devices,
        "rows": rows,
        "markers": markers,
        "counts": counts,
        "online_count": counts["online"],
        "refresh_s": 30,
    }
    return render(request, "devices/dashboard.html", context)


@login_required
def device_add(request: HttpRequest) -> HttpResponse:
    form = DeviceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device, issued = services.device_create(owner=request.user, **form.cleaned_data)  # type: ignore[arg-type]  # login_required: a User, never anonymous
        return _show_pairing_code(request, device, issued, new=True)
    context = {"form": form, "title": "Add a device", "submit_label": "Create and get a pairing code"}
    return render(request, "form_page.html", context)


@login_required
def device_detail(request: HttpRequest, code: str) -> HttpResponse:
    device = _own_device(request, code)
    form = DeviceForm(request.POST or None, instance=device)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Settings saved; the device picks them up at its next heartbeat.")
        return redirect("device-detail", code=device.code)
    context = {
        "device": device,
        "form": form,
        "token": device.tokens.filter(revoked_at__isnull=True).first(),
        "clips": _recent_clips(device),
        "health_facts": health_facts(device),
        "health": HEALTH_LABELS[device_health(device)],
    }
    return render(request, "devices/device_detail.html", context)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _megabytes(value: float) -> str:
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


CLOCKS = {"gps": "GPS (precise)", "ntp": "NTP (precise)"}

# What the agent reports in its heartbeat, as a person reads it: a label and the value with its unit.
HEALTH_DISPLAY: dict[str, tuple[str, Any]] = {
    "uptime_s": ("Running for", _duration),
    "mic_level_dbfs": ("Microphone level", lambda v: f"{float(v):.1f} dBFS"),
    "clipping": ("Microphone clipping", lambda v: "yes — too loud, move or turn it down" if v else "no"),
    "free_storage_mb": ("Free storage", lambda v: _megabytes(float(v))),
    "queue_length": ("Clips waiting to upload", lambda v: f"{int(v)}"),
    "dropped_clips": ("Clips dropped (queue full)", lambda v: f"{int(v)}"),
    "rejected_clips": ("Clips the server refused (kept on the device)", lambda v: f"{int(v)}"),
    "set_aside_clips": ("Clips set aside after repeated server errors (kept on the device)", lambda v: f"{int(v)}"),
    "clock_source": ("Clock", lambda v: CLOCKS.get(str(v), f"{v} (not precise enough to locate by timing)")),
}


def health_facts(device: Device) -> list[tuple[str, str]]:
    facts = []
    for key, value in (device.health or {}).items():
        label, render_value = HEALTH_DISPLAY.get(key, (key.replace("_", " ").capitalize(), str))
        try:
            facts.append((label, render_value(value)))
        except (TypeError, ValueError):
            facts.append((label, str(value)))
    return facts


def _recent_clips(device: Device) -> list[object]:
    return list(device.clips.select_related("classification", "classification__model_version")[:20])


@login_required
@require_POST
def device_pairing_code(request: HttpRequest, code: str) -> HttpResponse:
    device = _own_device(request, code)
    try:
        issued = services.device_pairing_code_issue(device=device)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("device-detail", code=device.code)
    return _show_pairing_code(request, device, issued, new=False)


def _pairing_session_key(device: Device) -> str:
    return f"gw-pairing-{device.code}"


def _show_pairing_code(
    request: HttpRequest, device: Device, issued: services.IssuedPairingCode, *, new: bool
) -> HttpResponse:
    """POST-redirect-GET: the code waits in the session, so a reload shows it again, never makes another device."""
    request.session[_pairing_session_key(device)] = {
        "code": issued.code,
        "expires_at": issued.expires_at.isoformat(),
        "new": new,
    }
    return redirect("device-pairing", code=device.code)


@login_required
def device_pairing(request: HttpRequest, code: str) -> HttpResponse:
    device = _own_device(request, code)
    shown = request.session.get(_pairing_session_key(device))
    if shown is None or device.pairing_expires_at is None or device.pairing_expires_at <= timezone.now():
        messages.info(request, "That pairing code is no longer shown. Ask for a new one if the device is not paired.")
        return redirect("device-detail", code=device.code)
    issued = services.IssuedPairingCode(code=shown["code"], expires_at=datetime.fromisoformat(shown["expires_at"]))
    context = {
        "device": device,
        "issued": issued,
        "new": shown["new"],
        "command": f"python -m devices.agent pair {issued.code} --server {request.build_absolute_uri('/').rstrip('/')}",
        "ttl_min": int(settings.DEVICE_PAIRING_CODE_TTL.total_seconds() // 60),
    }
    return render(request, "devices/pairing_code.html", context)


@login_required
@require_POST
def device_token_rotate(request: HttpRequest, code: str) -> HttpResponse:
    device = _own_device(request, code)
    try:
        token = services.device_token_rotate(device=device)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("device-detail", code=device.code)
    # POST-redirect-GET: a reload of the page that shows the token must not rotate it again.
    request.session[_token_session_key(device)] = token
    return redirect("device-token", code=device.code)


def _token_session_key(device: Device) -> str:
    return f"gw-token-{device.code}"


@login_required
def device_token(request: HttpRequest, code: str) -> HttpResponse:
    """Show a freshly rotated token exactly once: it leaves the session as it is shown."""
    device = _own_device(request, code)
    token = request.session.pop(_token_session_key(device), None)
    if token is None:
        messages.info(request, "A token is shown only once. Rotate it again if it was not copied.")
        return redirect("device-detail", code=device.code)
    response = render(request, "devices/token_shown.html", {"device": device, "token": token})
    # The secret must not come back from a browser or proxy cache either.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def device_token_revoke(request: HttpRequest, code: str) -> HttpResponse:
    device = _own_device(request, code)
    if services.device_token_revoke(device=device):
        messages.success(request, "Token revoked. The device can no longer upload until it is paired again.")
    else:
        messages.info(request, "This device had no active token.")
    return redirect("device-detail", code=device.code)


@login_required
@require_POST
def device_delete(request: HttpRequest, code: str) -> HttpResponse:
    device = _own_device(request, code)
    name = device.name
    device.delete()
    messages.success(request, f"{name} and all its data were deleted.")
    return redirect("dashboard")


@login_required
def contact_list(request: HttpRequest) -> HttpResponse:
    contacts = TrustedContact.objects.filter(owner=request.user).prefetch_related("devices")  # type: ignore[misc]  # login_required: a User, never anonymous
    return render(request, "devices/contact_list.html", {"contacts": contacts})


@login_required
def contact_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    contact = get_object_or_404(TrustedContact, pk=pk, owner=request.user) if pk else None
    form = TrustedContactForm(request.POST or None, instance=contact, owner=request.user)
    if request.method == "POST" and form.is_valid():
        saved = form.save(commit=False)
        saved.owner = request.user
        saved.save()
        form.save_m2m()
        messages.success(request, f"{saved.name} saved.")
        return redirect("contact-list")
    title = f"Edit {contact.name}" if contact else "Add a trusted contact"
    return render(request, "form_page.html", {"form": form, "title": title})


@login_required
@require_POST
def contact_delete(request: HttpRequest, pk: int) -> HttpResponse:
    contact = get_object_or_404(TrustedContact, pk=pk, owner=request.user)
    contact.delete()
    messages.success(request, f"{contact.name} removed.")
    return redirect("contact-list")
