"""The heartbeat in one statement on PostgreSQL (issue 14): the same row as the general path, one query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import User
from devices import services
from devices.models import Device

pytestmark = pytest.mark.django_db

FIELDS = (
    "last_heartbeat_at",
    "offline_after",
    "connectivity",
    "health",
    "last_latitude",
    "last_longitude",
    "last_accuracy_m",
    "last_position_at",
    "battery_pct",
    "firmware_version",
    "model_version",
    "status",
)


@pytest.fixture(autouse=True)
def postgresql_only() -> None:
    if not services.heartbeat_in_one_statement():
        pytest.skip("the one-statement heartbeat is PostgreSQL's (UPDATE … FROM … RETURNING)")


def _paired(owner: User, name: str, **changes: Any) -> tuple[Device, str]:
    _, issued = services.device_create(owner=owner, name=name, kind=Device.Kind.VEHICLE, latitude=1.0, longitude=2.0)
    paired = services.device_pair(pairing_code=issued.code)
    Device.objects.filter(pk=paired.device.pk).update(
        heartbeat_interval_s=45, battery_pct=50, firmware_version="1.0", last_accuracy_m=7.0, **changes
    )
    return paired.device, paired.token


@pytest.mark.parametrize(
    "data",
    [
        {
            "latitude": 52.5,
            "longitude": 13.4,
            "accuracy_m": 12.0,
            "battery_pct": 81.5,
            "firmware_version": "1.4.2",
            "model_version": "mn04",
            "uptime_s": 3600.0,
            "clipping": False,
            "queue_length": 0,
            "clock_source": "ntp",
        },
        {"battery_pct": None, "mic_level_dbfs": -40.0},  # no position, nothing optional: the old values stay
        {"latitude": 52.5, "longitude": 13.4, "firmware_version": ""},  # a position without accuracy; a blank version
        {},
    ],
)
def test_the_statement_writes_what_the_general_path_writes(
    owner: User, monkeypatch: pytest.MonkeyPatch, data: dict[str, Any]
) -> None:
    frozen = datetime(2026, 12, 7, 15, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(services.timezone, "now", lambda: frozen)
    general, _ = _paired(owner, "general")
    single, token = _paired(owner, "single")
    services.heartbeat_record(device=Device.objects.get(pk=general.pk), data=data)
    ack = services.heartbeat_record_by_token(raw_token=token, data=data)
    general.refresh_from_db()
    single.refresh_from_db()
    assert {f: getattr(single, f) for f in FIELDS} == {f: getattr(general, f) for f in FIELDS}
    assert single.offline_after == frozen + single.heartbeat_grace
    assert ack == services.HeartbeatAck(single.code, "active", 45, None)


def test_no_row_is_touched_for_a_wrong_secret_a_revoked_token_or_a_disabled_device(owner: User) -> None:
    device, token = _paired(owner, "porch")
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert services.heartbeat_record_by_token(raw_token=wrong, data={}) is None
    assert services.heartbeat_record_by_token(raw_token="gw_nonsense", data={}) is None
    Device.objects.filter(pk=device.pk).update(status=Device.Status.DISABLED)
    assert services.heartbeat_record_by_token(raw_token=token, data={}) is None
    Device.objects.filter(pk=device.pk).update(status=Device.Status.ACTIVE)
    services.device_token_revoke(device=device)
    assert services.heartbeat_record_by_token(raw_token=token, data={}) is None
    device.refresh_from_db()
    assert device.last_heartbeat_at is None


def test_a_heartbeat_is_one_query(owner: User, settings: Any, django_assert_num_queries: Any) -> None:
    # As in production: the active model is read once per MODEL_ACTIVE_CHECK_TTL_S, not per heartbeat.
    settings.MODEL_ACTIVE_CHECK_TTL_S = 60
    _, token = _paired(owner, "porch")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Device {token}")
    # The first one also reads the active model (cached for a while) and stamps the token's last use.
    assert client.post("/api/v1/devices/heartbeat", {"battery_pct": 70}, format="json").status_code == 200
    with django_assert_num_queries(1) as captured:
        response = client.post("/api/v1/devices/heartbeat", {"battery_pct": 69}, format="json")
    assert response.status_code == 200
    assert captured.captured_queries[0]["sql"].lstrip().startswith("UPDATE")
    assert connection.vendor == "postgresql"


def test_the_errors_are_those_of_the_general_path(owner: User) -> None:
    device, token = _paired(owner, "porch")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Device {token}")
    assert client.post("/api/v1/devices/heartbeat", {"battery_pct": 500}, format="json").status_code == 400
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Device gw_abcdefabcdef.wrong")
    refused = stranger.post("/api/v1/devices/heartbeat", {"battery_pct": 500}, format="json")
    assert refused.status_code == 401  # a stranger learns nothing about the body's rules
    assert refused["WWW-Authenticate"] == "Device"
    Device.objects.filter(pk=device.pk).update(status=Device.Status.DISABLED)
    disabled = client.post("/api/v1/devices/heartbeat", {}, format="json")
    assert disabled.status_code == 401
    assert disabled.json()["message"] == "This device is disabled."


def test_heartbeats_update_the_device_row_in_place(owner: User) -> None:
    """HOT updates: no index covers a column a heartbeat writes, and the page has room for the new version.

    Otherwise each heartbeat inserts into every index of the table and leaves a dead row (issue 14).
    """
    device, token = _paired(owner, "hot")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Device {token}")

    def hot_updates() -> int:
        with connection.cursor() as cursor:
            # This transaction's own counts: the test runs in one, so nothing waits for the stats collector.
            cursor.execute("SELECT pg_stat_get_xact_tuples_hot_updated('devices_device'::regclass)")
            return int(cursor.fetchone()[0])

    before = hot_updates()
    for n in range(10):
        body = {"battery_pct": 80 - n, "latitude": 52.5 + n / 1000, "longitude": 13.4, "accuracy_m": 8.0}
        assert client.post("/api/v1/devices/heartbeat", body, format="json").status_code == 200
    assert hot_updates() - before == 10
    device.refresh_from_db()
    assert device.battery_pct == 71
