"""Owner pages: dashboard, devices, trusted contacts."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from devices import services
from devices.forms import DeviceForm, TrustedContactForm
from devices.models import Device, TrustedContact
from gunwatch.exceptions import ApplicationError


def _own_device(request: HttpRequest, code: str) -> Device:
    # Another owner's device is a 404, never a 403: its existence is not our business to reveal.
    return get_object_or_404(Device, code=code, owner=request.user)


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    devices = list(Device.objects.filter(owner=request.user))
    markers = [
        {
            "name": device.name,
            "kind": device.kind,
            "online": device.is_online,
            "lat": device.position[0],
            "lon": device.position[1],
            "url": f"/devices/{device.code}/",
        }
        for device in devices
        if device.position is not None
    ]
    context = {
        "devices": devices,
        "markers": markers,
        "online_count": sum(device.is_online for device in devices),
    }
    return render(request, "devices/dashboard.html", context)


@login_required
def device_add(request: HttpRequest) -> HttpResponse:
    form = DeviceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device, issued = services.device_create(owner=request.user, **form.cleaned_data)
        return render(request, "devices/pairing_code.html", {"device": device, "issued": issued, "new": True})
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
    }
    return render(request, "devices/device_detail.html", context)


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
    return render(request, "devices/pairing_code.html", {"device": device, "issued": issued})


@login_required
@require_POST
def device_token_rotate(request: HttpRequest, code: str) -> HttpResponse:
    device = _own_device(request, code)
    try:
        token = services.device_token_rotate(device=device)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("device-detail", code=device.code)
    return render(request, "devices/token_shown.html", {"device": device, "token": token})


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
    contacts = TrustedContact.objects.filter(owner=request.user).prefetch_related("devices")
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
