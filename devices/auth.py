"""Device authentication: ``Authorization: Device gw_<key>.<secret>``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.permissions import BasePermission

from devices.models import Device, DeviceToken
from devices.services import device_token_authenticate, normalise_pairing_code, token_parts
from gunwatch.throttling import CounterRateThrottle, RequestFieldThrottle


class DevicePrincipal:
    """What ``request.user`` is for a device: authenticated, but never a person."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, device: Device) -> None:
        self.device = device
        self.pk = None

    def __str__(self) -> str:
        return f"device {self.device.code}"


def device_token_from_header(request: Any) -> str | None:
    """The raw token of ``Authorization: Device <token>``; None for another scheme or none at all."""
    header = authentication.get_authorization_header(request).split()
    if not header or header[0].lower() != DeviceTokenAuthentication.keyword.lower().encode():
        return None
    if len(header) != 2:
        raise exceptions.AuthenticationFailed("Malformed Device authorization header.")
    try:
        return str(header[1].decode())
    except UnicodeError as exc:
        raise exceptions.AuthenticationFailed("Malformed device token.") from exc


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Device"

    def authenticate(self, request: Any) -> tuple[DevicePrincipal, DeviceToken] | None:
        raw = device_token_from_header(request)
        if raw is None:
            return None
        token = device_token_authenticate(raw)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked device token.")
        if token.device.status != Device.Status.ACTIVE:
            raise exceptions.AuthenticationFailed("This device is disabled.")
        return DevicePrincipal(token.device), token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


class IsDevice(BasePermission):
    message = "This endpoint takes a device token (Authorization: Device <token>)."

    def has_permission(self, request: Any, view: Any) -> bool:
        return isinstance(request.auth, DeviceToken)


def request_device(request: Any) -> Device:
    assert isinstance(request.user, DevicePrincipal)
    return request.user.device


class DeviceRateThrottle(CounterRateThrottle):
    """Per-device budget, so one runaway unit cannot starve the rest of the fleet."""

    scope = "device"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        # The token's key, read off the header: the heartbeat checks the token inside its UPDATE, so
        # asking for request.user here would cost the database read that statement saves.
        try:
            raw = device_token_from_header(request)
        except exceptions.AuthenticationFailed:
            raw = None
        parts = token_parts(raw) if raw else None
        ident = f"token-{parts[0]}" if parts else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class PairingCodeThrottle(RequestFieldThrottle):
    """Attempts per pairing code, from whatever address they come."""

    scope = "pairing_code"
    field = "pairing_code"

    def normalise(self, value: str) -> str:
        return normalise_pairing_code(value)


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    """Documents the device token in the OpenAPI schema (registered by being defined)."""

    target_class = "devices.auth.DeviceTokenAuthentication"
    name = "deviceToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Device gw_<key>.<secret>`, the token a device receives when it pairs",
        }
