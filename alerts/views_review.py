"""The review queue: reviewers hear every contributing clip and confirm (dispatch) or dismiss.

Reviewers are superusers, or staff and approved police an administrator gave ``alerts.reviewer``
(``alerts.services.review.user_can_review``). The page is live: ``/ws/review/`` says something
changed and the page re-reads ``/review/items``.
"""

from __future__ import annotations

import io

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User
from alerts.models import Detection, Incident
from alerts.selectors import review_queue_incidents
from alerts.services.review import DISMISS_REASONS, incident_review, user_can_review
from core import audio
from detection import services as detection_services
from detection.models import Clip
from detection.views import CONTENT_TYPES as CONTENT_TYPES_AUDIO
from gunwatch.exceptions import ApplicationError


def _reviewer(request: HttpRequest) -> User:
    if not user_can_review(request.user):
        raise PermissionDenied("Only reviewers may open the review queue.")
    return request.user  # type: ignore[return-value]


@login_required
def review_queue(request: HttpRequest) -> HttpResponse:
    _reviewer(request)
    return render(
        request,
        "alerts/review_queue.html",
        {
            "incidents": review_queue_incidents(),
            "reasons": DISMISS_REASONS.items(),
            "recent": Incident.objects.filter(reviewed_at__isnull=False)
            .select_related("reviewed_by")
            .order_by("-reviewed_at")[:10],
        },
    )


@login_required
def review_items(request: HttpRequest) -> HttpResponse:
    """The queue's items alone, for the live page to merge in."""
    _reviewer(request)
    return render(
        request,
        "alerts/_review_items.html",
        {"incidents": review_queue_incidents(), "reasons": DISMISS_REASONS.items()},
    )


@login_required
@require_POST
def review_decide(request: HttpRequest, code: str) -> HttpResponse:
    user = _reviewer(request)
    incident = get_object_or_404(Incident, code=code)
    decision = request.POST.get("decision", "")
    try:
        incident_review(
            incident=incident,
            user=user,
            decision=decision,
            reason=request.POST.get("reason", ""),
            note=request.POST.get("note", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            "Confirmed: dispatched to police." if decision == "confirm" else "Dismissed: police will not see it.",
        )
    return redirect("review-queue")


def _review_clip(request: HttpRequest, code: str) -> Clip:
    """A clip of some incident, with its audio, for a reviewer; 404 otherwise."""
    _reviewer(request)
    clip = get_object_or_404(Clip, code=code)
    if not clip.audio or clip.audio_deleted_at is not None or not Detection.objects.filter(clip=clip).exists():
        raise Http404
    return clip


@login_required
@require_GET
def review_clip_audio(request: HttpRequest, code: str) -> FileResponse:
    clip = _review_clip(request, code)
    try:
        handle = clip.audio.open("rb")
    except FileNotFoundError as exc:
        raise Http404 from exc
    return FileResponse(handle, content_type=CONTENT_TYPES_AUDIO.get(clip.audio_format, "application/octet-stream"))


@login_required
@require_GET
def review_clip_spectrogram(request: HttpRequest, code: str) -> FileResponse:
    clip = _review_clip(request, code)
    from django.core.files.storage import default_storage

    try:
        name = detection_services.clip_spectrogram(clip=clip)
    except audio.AudioError as exc:
        raise Http404 from exc
    return FileResponse(default_storage.open(name, "rb"), content_type="image/png")


@login_required
@require_GET
def review_clip_waveform(request: HttpRequest, code: str) -> HttpResponse:
    clip = _review_clip(request, code)
    try:
        with clip.audio.open("rb") as handle:
            samples, rate = audio.decode(handle.read())
    except (FileNotFoundError, audio.AudioError) as exc:
        raise Http404 from exc
    return HttpResponse(
        waveform_png(samples, rate), content_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )


def waveform_png(samples: object, rate: int) -> bytes:
    """Amplitude over time, the view a reviewer reads a muzzle blast's sharp onset from."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    y = np.asarray(samples, dtype=float)
    if y.ndim > 1:
        y = y.mean(axis=0 if y.shape[0] < y.shape[-1] else 1)
    t = np.arange(y.shape[-1]) / float(rate)
    figure = Figure(figsize=(8, 1.6), dpi=100)
    axes = figure.subplots()
    axes.plot(t, y, linewidth=0.5, color="#1f4e79")
    axes.set_xlim(0, t[-1] if len(t) else 1)
    axes.set_xlabel("time (s)")
    axes.set_yticks([])
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
