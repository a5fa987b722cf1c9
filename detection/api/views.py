"""Detection API: clip upload and results, the active model for devices, prediction, data purge."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_xml.renderers import XMLRenderer

from accounts.permissions import IsPerson, is_person
from detection import services
from detection.api.filters import ClipFilterSet
from detection.api.serializers import (
    ClipAcceptedSerializer,
    ClipSerializer,
    ClipUploadInputSerializer,
    DevicePurgeSerializer,
    ModelVersionSerializer,
    PredictInputSerializer,
    PredictOutputSerializer,
)
from detection.models import Clip
from detection.selectors import model_version_active
from devices.auth import DevicePrincipal, DeviceRateThrottle, DeviceTokenAuthentication, IsDevice, request_device
from devices.models import Device
from gunwatch.exceptions import ApplicationError
from gunwatch.schema import ErrorSerializer

# Multipart boundaries and the small form fields around the audio part.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
DEVICE_OR_USER_AUTH = [DeviceTokenAuthentication, TokenAuthentication, SessionAuthentication]


def _reject_oversized_body(request: Request) -> None:
    """Answer 413 from the Content-Length alone, before the multipart body is parsed."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if length > settings.CLIP_MAX_BYTES + MULTIPART_OVERHEAD_BYTES:
        raise ApplicationError(
            f"The request is {length} bytes; audio files of at most {settings.CLIP_MAX_BYTES} bytes are accepted.",
            code="too_large",
            extra={"field": "audio", "max_bytes": settings.CLIP_MAX_BYTES},
            status=413,
        )


def clips_visible_to(user: Any) -> QuerySet[Clip]:
    """A device sees its own clips, a person those of their devices; others are simply absent (404)."""
    clips = Clip.objects.select_related("device", "classification", "classification__model_version")
    if isinstance(user, DevicePrincipal):
        return clips.filter(device=user.device)
    if is_person(user):
        return clips.filter(device__owner=user)
    return clips.none()


class ClipListApi(generics.ListAPIView):
    """``POST`` a clip (device token, multipart) → 202; ``GET`` the caller's clips (filters, pages)."""

    authentication_classes = DEVICE_OR_USER_AUTH
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = ClipSerializer
    filterset_class = ClipFilterSet
    ordering_fields = ["recorded_at", "received_at"]

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [IsDevice()]
        return [IsAuthenticated()]

    def get_throttles(self) -> list[Any]:
        return [DeviceRateThrottle()] if isinstance(self.request.user, DevicePrincipal) else []

    def get_queryset(self) -> QuerySet[Clip]:
        return clips_visible_to(self.request.user)

    @extend_schema(
        request={"multipart/form-data": ClipUploadInputSerializer},
        responses={
            202: ClipAcceptedSerializer,
            409: OpenApiResponse(description="client_id reused for other audio"),
            413: OpenApiResponse(description="audio too large"),
            415: OpenApiResponse(description="not audio"),
        },
    )
    def post(self, request: Request) -> Response:
        _reject_oversized_body(request)
        serializer = ClipUploadInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        upload = data.pop("audio")
        result = services.clip_upload(device=request_device(request), audio_file=upload, audio_size=upload.size, **data)
        body = ClipAcceptedSerializer(result.clip, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class ClipDetailApi(generics.RetrieveAPIView):
    """One clip and its result; for the device that sent it and its owner, 404 for anyone else."""

    authentication_classes = DEVICE_OR_USER_AUTH
    permission_classes = [IsAuthenticated]
    serializer_class = ClipSerializer
    lookup_field = "code"
    lookup_url_kwarg = "id"

    def get_throttles(self) -> list[Any]:
        return [DeviceRateThrottle()] if isinstance(self.request.user, DevicePrincipal) else []

    def get_queryset(self) -> QuerySet[Clip]:
        return clips_visible_to(self.request.user)


class DeviceDataPurgeApi(APIView):
    """Delete all clips, results and audio of one of the caller's devices; the device stays."""

    permission_classes = [IsPerson]

    def _purge(self, request: Request, id: str) -> Response:
        device = get_object_or_404(Device, code=id, owner=request.user)
        report = services.device_data_purge(device=device)
        data = {"device": device.code, "clips_deleted": report.clips, "audio_files_deleted": report.audio_files}
        return Response(DevicePurgeSerializer(data).data)

    @extend_schema(request=None, responses={200: DevicePurgeSerializer})
    def delete(self, request: Request, id: str) -> Response:
        return self._purge(request, id)

    @extend_schema(request=None, responses={200: DevicePurgeSerializer})
    def post(self, request: Request, id: str) -> Response:
        return self._purge(request, id)


NO_ACTIVE_MODEL = OpenApiResponse(response=ErrorSerializer, description="No model version is active.")


class _ActiveModelMixin:
    authentication_classes = DEVICE_OR_USER_AUTH
    permission_classes = [IsAuthenticated]
    request: Request

    def get_throttles(self) -> list[Any]:
        return [DeviceRateThrottle()] if isinstance(self.request.user, DevicePrincipal) else []

    def active(self) -> Any:
        model_version = model_version_active()
        if model_version is None:
            raise ApplicationError("No model version is active.", code="no_active_model", status=404)
        return model_version


class ActiveModelApi(_ActiveModelMixin, APIView):  # type: ignore[misc]  # the mixin's attributes are APIView's
    """Metadata of the active model version (devices compare its sha256 with what they run)."""

    @extend_schema(responses={200: ModelVersionSerializer, 404: NO_ACTIVE_MODEL})
    def get(self, request: Request) -> Response:
        return Response(ModelVersionSerializer(self.active()).data)


class ActiveModelDownloadApi(_ActiveModelMixin, APIView):  # type: ignore[misc]  # as above
    """The active model as TorchScript, with its sha256 and version in headers."""

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(description="TorchScript file"),
            404: NO_ACTIVE_MODEL,
        }
    )
    def get(self, request: Request) -> FileResponse:
        model_version = self.active()
        export = services.model_version_torchscript(model_version=model_version)
        filename = f"{model_version.name}-{model_version.version}.torchscript.pt"
        response = FileResponse(
            export.handle,
            as_attachment=True,
            filename=filename,
            content_type="application/octet-stream",
        )
        response["X-Model-SHA256"] = export.sha256
        response["X-Model-Version"] = model_version.label
        response["X-Model-Id"] = str(model_version.pk)
        return response


class PredictApi(APIView):
    """Classify an uploaded audio file now, with the active model; nothing is stored.

    JSON by default; XML with ``Accept: application/xml`` or ``?format=xml``.
    """

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsPerson]
    parser_classes = [MultiPartParser, FormParser]
    renderer_classes = [JSONRenderer, XMLRenderer]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "predict"

    @extend_schema(request={"multipart/form-data": PredictInputSerializer}, responses={200: PredictOutputSerializer})
    def post(self, request: Request) -> Response:
        _reject_oversized_body(request)
        serializer = PredictInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["audio"]
        result = services.audio_predict(
            upload=upload, size=upload.size, threshold=serializer.validated_data.get("threshold")
        )
        return Response(PredictOutputSerializer(result).data)
