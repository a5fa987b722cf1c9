"""OpenAPI: every operation documents the error answers it can give, in the one error shape.

Views declare their success bodies; the refusals (400, 401, 403, 404, 413, 415, 429) follow from how the
view is built (a body, credentials, permissions, a path parameter, throttles), so they are derived here
instead of being repeated on every view, and a new view is documented without anyone remembering to.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.mixins import ListModelMixin
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

BODY_METHODS = {"POST", "PUT", "PATCH"}


class ErrorSerializer(serializers.Serializer):
    """``{"message", "code", "extra"}``: devices switch on ``code``, people read ``message``."""

    message = serializers.CharField()
    code = serializers.CharField()
    extra = serializers.DictField(help_text="Per-field errors under `fields`; `retry_after_s` on 429.")


class AutoSchema(SpectacularAutoSchema):
    def _error_responses(self) -> dict[str, str]:
        view: Any = self.view
        errors: dict[str, str] = {}
        has_body = self.method in BODY_METHODS
        if has_body or getattr(view, "filterset_class", None) is not None:
            errors["400"] = "Invalid input (fields, filters or a malformed body)."
        authenticators = list(getattr(view, "authentication_classes", []))
        if any(getattr(cls, "authenticate_header", None) for cls in authenticators):
            errors["401"] = "Missing, invalid or revoked credentials."
        try:
            permissions = view.get_permissions()
        except Exception:  # a view that decides per request: assume it can refuse
            permissions = [None]
        protected = any(not isinstance(permission, AllowAny) for permission in permissions)
        if protected or (has_body and SessionAuthentication in authenticators):
            errors["403"] = "Authenticated, but not allowed (wrong kind of account, or no CSRF token)."
        not_found = []
        if "{" in self.path:
            not_found.append("not found, or not yours")
        is_list = self.method == "GET" and "{" not in self.path and isinstance(view, ListModelMixin)
        if is_list and getattr(view, "pagination_class", None):
            not_found.append("a page past the end")
        if len(getattr(view, "renderer_classes", [])) > 1:
            not_found.append("an unknown `format`")
        if not_found:
            errors["404"] = "; ".join(not_found).capitalize() + "."
        if has_body:
            errors["413"] = "The request body is too large."
            errors["415"] = "Unsupported content type."
        if getattr(view, "throttle_classes", None) or type(view).get_throttles is not APIView.get_throttles:
            errors["429"] = "Too many requests; retry after `Retry-After` seconds."
        return errors

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code, description in self._error_responses().items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(response=ErrorSerializer, description=description), code, direction=direction
                )
        return responses
