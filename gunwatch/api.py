"""Shared REST API pieces: the one error shape, pagination and owner scoping."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from gunwatch.exceptions import ApplicationError

logger = logging.getLogger(__name__)


def _first_message(detail: Any) -> str:
    """Find a human sentence inside DRF's nested error detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            if key in ("non_field_errors", "detail"):
                return message
            return f"{key}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def _error_code(detail: Any, default: str) -> str:
    if isinstance(detail, dict):
        for value in detail.values():
            return _error_code(value, default)
    if isinstance(detail, list) and detail:
        return _error_code(detail[0], default)
    return getattr(detail, "code", None) or default


def error_body(message: str, code: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"message": message, "code": code, "extra": extra or {}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render every API error as ``{"message", "code", "extra"}``.

    Devices switch on ``code``; people read ``message``; ``extra.fields`` carries per-field errors.
    """
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.message, exc.code, exc.extra), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return Response(
            error_body("Internal server error; the failure was logged.", "server_error"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    assert isinstance(exc, exceptions.APIException)
    detail = exc.detail
    extra: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        code = _error_code(detail, "invalid")
        if isinstance(detail, dict):
            extra["fields"] = detail
        message = _first_message(detail)
    else:
        code = exc.default_code if not isinstance(detail, exceptions.ErrorDetail) else detail.code or "error"
        message = str(detail)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:  # type: ignore[attr-defined]  # set in __init__, not in the stubs
        extra["retry_after_s"] = int(exc.wait)  # type: ignore[attr-defined]  # as above
    response.data = error_body(message, str(code), extra)
    return response


def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any /api/ path no endpoint matched: the one error shape, also with DEBUG on (no HTML page)."""
    return JsonResponse(error_body(f"No API endpoint at {request.path}.", "not_found"), status=404)


def json_error_view(status_code: int, message: str, code: str) -> Callable[..., Any]:
    """Django handler404/handler500 that answers JSON on /api/ paths and HTML elsewhere."""
    from django.views import defaults

    html_views: dict[int, Callable[..., Any]] = {404: defaults.page_not_found, 500: defaults.server_error}

    def view(request: HttpRequest, exception: Exception | None = None) -> Any:
        if request.path.startswith("/api/"):
            return JsonResponse(error_body(message, code), status=status_code)
        if status_code == 500:
            return html_views[500](request)
        return html_views[status_code](request, exception)

    return view


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class OwnedQuerysetMixin:
    """Scope a viewset to the requesting user's own rows.

    Other owners' objects are then simply absent, so they answer 404 rather than 403 and
    their existence is not revealed.
    """

    owner_field = "owner"
    request: Any
    queryset: QuerySet[Any]

    def get_queryset(self) -> QuerySet[Any]:
        return super().get_queryset().filter(**{self.owner_field: self.request.user})  # type: ignore[misc]  # authenticated by the view's permissions

    def perform_create(self, serializer: Any) -> None:
        serializer.save(**{self.owner_field: self.request.user})
