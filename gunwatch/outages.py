"""Answering clearly while a backing service is down.

- The database down or restarting: 503 with ``Retry-After`` in the one error shape (``database_unavailable``),
  for the API through ``exception_handler`` (which wraps ``gunwatch.api.exception_handler``) and for the
  HTML pages through ``DatabaseUnavailableMiddleware``. Devices and operators can then tell an outage
  from a bug, and the device agent waits as told instead of hammering a restarting server.
- Redis down: the cache answers "nothing cached" (``gunwatch.cache.ResilientRedisCache``), and a failed
  task send is logged by ``gunwatch.tasks.enqueue`` while the row stays for the sweeps: an upload is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.response import Response

from gunwatch.api import error_body
from gunwatch.api import exception_handler as api_exception_handler

logger = logging.getLogger(__name__)

DATABASE_UNAVAILABLE_MESSAGE = "The database is unavailable for a moment; nothing was saved. Try again shortly."


def is_database_unavailable(exc: BaseException) -> bool:
    """A lost or refused database connection, as opposed to a query the database refused (a bug, a 4xx).

    Django wraps the driver's connection errors (psycopg's "connection refused", "server closed the
    connection unexpectedly", "the database system is starting up"; SQLite's "database is locked") as
    ``OperationalError``, and use of a connection that already died as ``InterfaceError``.
    """
    return isinstance(exc, (OperationalError, InterfaceError))


def _retry_after() -> str:
    return str(settings.DATABASE_UNAVAILABLE_RETRY_AFTER_S)


def _forget_broken_connections() -> None:
    # A connection that died mid-request is unusable; close it now so the next request reconnects
    # rather than failing once more on the corpse (CONN_MAX_AGE keeps connections across requests).
    for connection in connections.all(initialized_only=True):
        try:
            if connection.connection is not None and not connection.is_usable():
                connection.close()
        except DatabaseError:
            pass


def _log(exc: BaseException, request: Any) -> None:
    # One line, no traceback: a restart produces one of these per request, and the cause is not in our code.
    path = getattr(request, "path", "?")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    logger.warning("Database unavailable, answered 503 to %s: %s", path, first_line)


def database_unavailable_response(exc: BaseException, request: Any = None) -> Response | None:
    """The API answer for a database outage, or None for any other error."""
    if not is_database_unavailable(exc):
        return None
    _log(exc, request)
    _forget_broken_connections()
    return Response(
        error_body(DATABASE_UNAVAILABLE_MESSAGE, "database_unavailable", {"retry_after_s": int(_retry_after())}),
        status=503,
        headers={"Retry-After": _retry_after()},
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: database outages answer 503 here, everything else as ``gunwatch.api`` says."""
    response = database_unavailable_response(exc, context.get("request"))
    return response if response is not None else api_exception_handler(exc, context)


class DatabaseUnavailableMiddleware:
    """503 with ``Retry-After`` for a database outage in a plain Django view (the pages, the admin)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_unavailable(exception):
            return None
        _log(exception, request)
        _forget_broken_connections()
        response: HttpResponse
        if request.path.startswith("/api/"):
            body = error_body(
                DATABASE_UNAVAILABLE_MESSAGE, "database_unavailable", {"retry_after_s": int(_retry_after())}
            )
            response = JsonResponse(body, status=503)
        else:
            response = HttpResponse(
                "<!doctype html><title>GunWatch: back in a moment</title>"
                f"<h1>Back in a moment</h1><p>{DATABASE_UNAVAILABLE_MESSAGE}</p>",
                status=503,
                content_type="text/html; charset=utf-8",
            )
        response["Retry-After"] = _retry_after()
        return response
