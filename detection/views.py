"""Evidence pages: the audio and spectrogram of a clip, for its owner and approved police only."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from core.audio import AudioError
from detection import services
from detection.models import Clip
from detection.selectors import clip_evidence_visible_to

logger = logging.getLogger(__name__)

CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}


def _evidence_clip(request: HttpRequest, code: str) -> Clip:
    """The clip if this user may hear it and its audio still exists; 404 otherwise, revealing nothing."""
    clip = get_object_or_404(Clip.objects.select_related("device", "classification"), code=code)
    if not clip_evidence_visible_to(request.user, clip):
        raise Http404
    if not clip.audio:
        raise Http404
    return clip


def _private(response: FileResponse) -> FileResponse:
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_GET
def clip_audio(request: HttpRequest, code: str) -> FileResponse:
    clip = _evidence_clip(request, code)
    try:
        handle = clip.audio.open("rb")
    except FileNotFoundError as exc:
        raise Http404 from exc
    response = FileResponse(
        handle,
        content_type=CONTENT_TYPES.get(clip.audio_format, "application/octet-stream"),
        filename=f"{clip.code}.{clip.audio_format or 'audio'}",
    )
    response["X-Content-SHA256"] = clip.audio_sha256
    return _private(response)


@login_required
@require_GET
def clip_spectrogram(request: HttpRequest, code: str) -> FileResponse:
    clip = _evidence_clip(request, code)
    try:
        name = services.clip_spectrogram(clip=clip)
    except AudioError as exc:
        logger.warning("No spectrogram for clip %s: %s", clip.code, exc)
        raise Http404 from exc
    return _private(FileResponse(default_storage.open(name, "rb"), content_type="image/png"))


@require_GET
def model_plot(request: HttpRequest, name: str) -> FileResponse:
    """A plot of the bundled model's card, for staff reading it in the admin."""
    from detection.model_card import plot_path

    if not (request.user.is_authenticated and request.user.is_staff):
        raise Http404("No such plot.")
    path = plot_path(name)
    if path is None:
        raise Http404("No such plot.")
    return FileResponse(path.open("rb"), content_type="image/png")
