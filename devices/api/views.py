from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.permissions import IsPerson
from detection.selectors import model_version_active
from devices import services
from devices.api.serializers import (
    DeviceCreatedSerializer,
    DeviceSerializer,
    HeartbeatInputSerializer,
    HeartbeatOutputSerializer,
    PairingCodeSerializer,
    PairInputSerializer,
    TokenSerializer,
    TrustedContactSerializer,
)
from devices.auth import (
    DeviceRateThrottle,
    DeviceTokenAuthentication,
    IsDevice,
    PairingCodeThrottle,
    request_device,
)
from devices.filters import DeviceFilterSet, TrustedContactFilterSet
from devices.models import Device, TrustedContact
from gunwatch.api import OwnedQuerysetMixin

UUID_REGEX = "[0-9a-fA-F-]{36}"


class DeviceViewSet(OwnedQuerysetMixin, viewsets.ModelViewSet):
    """The caller's own devices. Other owners' devices answer 404."""

    queryset = Device.objects.all()
    serializer_class = DeviceSerializer
    permission_classes = [IsPerson]
    filterset_class = DeviceFilterSet
    ordering_fields = ["name", "created_at", "last_heartbeat_at"]
    lookup_field = "code"
    lookup_url_kwarg = "id"
    lookup_value_regex = UUID_REGEX

    @extend_schema(responses={201: DeviceCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device, issued = services.device_create(owner=request.user, **serializer.validated_data)
        device.pairing_code = issued.code  # type: ignore[attr-defined]
        device.pairing_expires_at = issued.expires_at
        return Response(DeviceCreatedSerializer(device).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={201: PairingCodeSerializer})
    @action(detail=True, methods=["post"], url_path="pairing-code")
    def pairing_code(self, request: Request, id: str) -> Response:
        issued = services.device_pairing_code_issue(device=self.get_object())
        data = {"pairing_code": issued.code, "pairing_expires_at": issued.expires_at}
        return Response(PairingCodeSerializer(data).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: None})
    @action(detail=True, methods=["post"], url_path="revoke-token")
    def revoke_token(self, request: Request, id: str) -> Response:
        revoked = services.device_token_revoke(device=self.get_object())
        return Response({"revoked": revoked})

    @extend_schema(request=None, responses={201: TokenSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-token")
    def rotate_token(self, request: Request, id: str) -> Response:
        device = self.get_object()
        token = services.device_token_rotate(device=device)
        return Response(TokenSerializer({"device_id": device.code, "token": token}).data, status=201)


class TrustedContactViewSet(OwnedQuerysetMixin, viewsets.ModelViewSet):
    queryset = TrustedContact.objects.prefetch_related("devices")
    serializer_class = TrustedContactSerializer
    permission_classes = [IsPerson]
    filterset_class = TrustedContactFilterSet
    ordering_fields = ["name", "created_at"]

    def get_queryset(self) -> QuerySet[TrustedContact]:
        return super().get_queryset().distinct()


class PairApi(APIView):
    """A device exchanges its one-time pairing code for its token (shown once)."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    throttle_classes = [ScopedRateThrottle, PairingCodeThrottle]
    throttle_scope = "pairing"

    @extend_schema(request=PairInputSerializer, responses={201: TokenSerializer})
    def post(self, request: Request) -> Response:
        serializer = PairInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.device_pair(**serializer.validated_data)
        data = {"device_id": issued.device.code, "token": issued.token}
        return Response(TokenSerializer(data).data, status=status.HTTP_201_CREATED)


class HeartbeatApi(APIView):
    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsDevice]
    throttle_classes = [DeviceRateThrottle]

    @extend_schema(request=HeartbeatInputSerializer, responses={200: HeartbeatOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = HeartbeatInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device = services.heartbeat_record(device=request_device(request), data=serializer.validated_data)
        active = model_version_active()
        data = {
            "device_id": device.code,
            "status": device.status,
            "settings": {
                "heartbeat_interval_s": device.heartbeat_interval_s,
                "sensitivity_threshold": device.sensitivity_threshold,
            },
            "active_model": active,
            "server_time": timezone.now(),
        }
        return Response(HeartbeatOutputSerializer(data).data)
