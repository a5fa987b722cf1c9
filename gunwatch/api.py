"""Shared REST API pieces: the one error shape, pagination and owner scoping."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import django_filters
from django import forms
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, JsonResponse
from django_filters.fields import IsoDateTimeField
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
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = f"The request body is larger than {limit} bytes."
        return Response(error_body(message, "too_large", {"max_bytes": limit}), status=413)
    if isinstance(exc, SuspiciousOperation):
        # Too many form fields or files, a malformed multipart body: the client's fault, and Django's
        # own handler would say 400 too, but as an HTML page.
        return Response(error_body(f"Malformed request: {exc}", "bad_request"), status=400)
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
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        extra["retry_after_s"] = int(exc.wait)
    response.data = error_body(message, str(code), extra)
    return response


def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any /api/ path no endpoint matched: the one error shape, also with DEBUG on (no HTML page)."""
    return JsonResponse(error_body(f"No API endpoint at {request.path}.", "not_found"), status=404)


def json_error_view(status_code: int, message: str, code: str):  # type: ignore[no-untyped-def]
    """Django handler404/handler500 that answers JSON on /api/ paths and HTML elsewhere."""
    from django.views import defaults

    html_views = {404: defaults.page_not_found, 500: defaults.server_error}

    def view(request: HttpRequest, exception: Exception | None = None) -> Any:
        if request.path.startswith("/api/"):
            return JsonResponse(error_body(message, code), status=status_code)
        if status_code == 500:
            return html_views[500](request)
        return html_views[status_code](request, exception)

    return view


# PostgreSQL stores offsets up to 15:59; beyond that a query or insert fails with DataError. No place on
# earth is more than 14 hours from UTC, so a larger offset is a broken client, not a time zone.
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)
UTC_OFFSET_MESSAGE = "Give the time with a UTC offset between -15:59 and +15:59."


def utc_offset_is_plausible(value: datetime) -> bool:
    offset = value.utcoffset()
    return offset is None or abs(offset) <= MAX_UTC_OFFSET


class _PlausibleIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is not None and not utc_offset_is_plausible(parsed):
            raise forms.ValidationError(UTC_OFFSET_MESSAGE, code="invalid")
        return parsed


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter, refusing offsets the database cannot compare with (400, not 500)."""

    field_class = _PlausibleIsoDateTimeField


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
        return super().get_queryset().filter(**{self.owner_field: self.request.user})  # type: ignore[misc]

    def perform_create(self, serializer: Any) -> None:
        serializer.save(**{self.owner_field: self.request.user})
