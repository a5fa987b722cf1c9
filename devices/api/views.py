from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.permissions import IsPerson
from detection import inference
from devices import services
from devices.api.serializers import (
    ActiveModelSerializer,
    DeviceCreatedSerializer,
    DeviceSerializer,
    HeartbeatInputSerializer,
    HeartbeatOutputSerializer,
    PairingCodeSerializer,
    PairInputSerializer,
    TokenSerializer,
    TrustedContactSerializer,
    heartbeat_input,
)
from devices.auth import (
    DeviceRateThrottle,
    DeviceTokenAuthentication,
    IsDevice,
    PairingCodeThrottle,
    device_token_from_header,
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
        device, issued = services.device_create(owner=request.user, **serializer.validated_data)  # type: ignore[arg-type]  # IsPerson: a User
        device.pairing_code = issued.code  # type: ignore[attr-defined]  # shown once in the response, never stored
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


_server_time = serializers.DateTimeField()
# ActiveModelSerializer's output for the row active_version() returned last: that row is re-read once per
# MODEL_ACTIVE_CHECK_TTL_S, and every heartbeat in between reports the same model.
_active_model: tuple[object, dict[str, Any] | None] = (object(), None)


def heartbeat_answer(ack: services.HeartbeatAck) -> dict[str, Any]:
    """What HeartbeatOutputSerializer gives for this ack, built without instantiating it.

    Three nested serializers deep-copied their fields on every heartbeat: a quarter of its CPU in a
    profile (issue 14). tests/devices/test_api.py holds this equal to the serializer's output.
    """
    global _active_model
    active = inference.active_version()
    if _active_model[0] is not active:
        _active_model = (active, ActiveModelSerializer(active).data if active is not None else None)
    threshold = ack.sensitivity_threshold
    return {
        "device_id": str(ack.code),
        "status": ack.status,
        "settings": {
            "heartbeat_interval_s": int(ack.heartbeat_interval_s),
            "sensitivity_threshold": float(threshold) if threshold is not None else None,
        },
        "active_model": _active_model[1],
        "server_time": _server_time.to_representation(timezone.now()),
    }


def _heartbeat_data(request: Request) -> dict[str, Any]:
    """The validated body: the plain path when it is plainly valid, else the serializer and its errors."""
    data = heartbeat_input(request.data)
    if data is None:
        serializer = HeartbeatInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
    return data


class HeartbeatApi(APIView):
    """On PostgreSQL the token is checked by the heartbeat's own UPDATE (one statement, issue 14):
    authentication and the permission run only when that statement finds no device, to give the
    precise 401, or when the body is invalid, so a stranger learns nothing about its rules."""

    authentication_classes = [DeviceTokenAuthentication]
    permission_classes = [IsDevice]
    throttle_classes = [DeviceRateThrottle]

    def perform_authentication(self, request: Request) -> None:
        if not services.heartbeat_in_one_statement():
            super().perform_authentication(request)

    def check_permissions(self, request: Request) -> None:
        if not services.heartbeat_in_one_statement():
            super().check_permissions(request)

    def _authenticate(self, request: Request) -> None:
        super().perform_authentication(request)
        super().check_permissions(request)

    @extend_schema(request=HeartbeatInputSerializer, responses={200: HeartbeatOutputSerializer})
    def post(self, request: Request) -> Response:
        ack: services.HeartbeatAck | None = None
        if not services.heartbeat_in_one_statement():
            data = _heartbeat_data(request)
        else:
            raw_token = device_token_from_header(request)
            if raw_token is None:
                self._authenticate(request)  # no device token at all: the 401
            try:
                data = _heartbeat_data(request)
            except APIException:
                self._authenticate(request)  # a bad body from a stranger: the 401, not the body's error
                raise
            assert raw_token is not None
            ack = services.heartbeat_record_by_token(raw_token=raw_token, data=data)
            if ack is None:
                self._authenticate(request)  # raises the 401 that says why
        if ack is None:
            device = services.heartbeat_record(device=request_device(request), data=data)
            ack = services.HeartbeatAck.of(device)
        return Response(heartbeat_answer(ack))
