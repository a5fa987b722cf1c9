"""gunwatch.postgresql: a kept connection's health check reads the socket instead of sending SELECT 1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the backend wraps PostgreSQL's"),
]


@pytest.fixture
def kept_connection() -> Iterator[Any]:
    """The default connection as a web thread or worker keeps it: CONN_MAX_AGE > 0, health checks on."""
    saved = {key: connection.settings_dict[key] for key in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS")}
    connection.close()
    connection.settings_dict.update(CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True)
    connection.ensure_connection()
    yield connection
    connection.close()
    connection.settings_dict.update(saved)


def _other() -> Any:
    import psycopg2

    params = connection.get_connection_params()
    other = psycopg2.connect(**params)
    other.autocommit = True
    return other


def _last_statement(pid: int) -> str:
    other = _other()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
            return str(cursor.fetchone()[0])
    finally:
        other.close()


def _end(pid: int) -> None:
    other = _other()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    time.sleep(0.3)  # the server's FATAL message and EOF reach our socket


def test_the_engine_is_ours() -> None:
    assert connection.settings_dict["ENGINE"] == "gunwatch.postgresql"


def test_a_live_connection_is_usable_without_a_query(kept_connection: Any) -> None:
    pid = kept_connection.connection.get_backend_pid()
    with kept_connection.connection.cursor() as cursor:
        cursor.execute("SELECT 'the last statement before the check'")
    assert kept_connection.is_usable()
    # Django's own check would have sent SELECT 1; PostgreSQL still shows our statement as the last.
    assert _last_statement(pid) == "SELECT 'the last statement before the check'"


def test_a_connection_the_server_ended_is_unusable_and_the_next_query_reconnects(kept_connection: Any) -> None:
    from devices.models import Device

    pid = kept_connection.connection.get_backend_pid()
    _end(pid)
    assert not kept_connection.is_usable()
    # What the next request or task does: close_old_connections, then its first query runs the check.
    kept_connection.close_if_unusable_or_obsolete()
    assert Device.objects.count() == 0
    assert kept_connection.connection.get_backend_pid() != pid


def test_a_pending_notification_does_not_make_a_connection_unusable(kept_connection: Any) -> None:
    with kept_connection.connection.cursor() as cursor:
        cursor.execute("LISTEN gunwatch_test")
    other = _other()
    try:
        with other.cursor() as cursor:
            cursor.execute("NOTIFY gunwatch_test, 'hello'")
    finally:
        other.close()
    time.sleep(0.2)
    assert kept_connection.is_usable()
    assert [n.payload for n in kept_connection.connection.notifies] == ["hello"]
