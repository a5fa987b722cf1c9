"""The device and contact API contract: owner scoping, pairing, tokens, heartbeats."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import time_machine
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from detection.models import ModelVersion
from devices.models import Device, DeviceToken, TrustedContact
from tests.factories import DeviceFactory, TrustedContactFactory, UserFactory

pytestmark = pytest.mark.django_db


def create_device(client: APIClient, **data: object) -> dict:
    payload = {"name": "Porch", "kind": "home", "latitude": 52.5, "longitude": 13.4, **data}
    response = client.post("/api/v1/devices", payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def pair(code: str, **extra: object) -> tuple[int, dict]:
    response = APIClient().post("/api/v1/devices/pair", {"pairing_code": code, **extra}, format="json")
    return response.status_code, response.json()


def test_api_token_login_returns_a_token_usable_for_the_api() -> None:
    UserFactory(username="carol")
    client = APIClient()
    response = client.post("/api/v1/auth/token", {"username": "carol", "password": "correct-horse-battery"})
    assert response.status_code == 200
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/devices").status_code == 200


def test_api_token_login_with_a_wrong_password_is_a_400_in_the_error_shape() -> None:
    UserFactory(username="carol")
    response = APIClient().post("/api/v1/auth/token", {"username": "carol", "password": "nope"})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"message", "code", "extra"}
    assert "credentials" in body["message"].lower()


def test_anonymous_requests_get_401_in_the_error_shape() -> None:
    response = APIClient().get("/api/v1/devices")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_create_device_returns_a_pairing_code_that_expires_in_15_minutes(owner_client: APIClient) -> None:
    body = create_device(owner_client)
    assert body["status"] == "pending"
    assert len(body["pairing_code"]) == 8
    expires = datetime.fromisoformat(body["pairing_expires_at"])
    assert timedelta(minutes=14) < expires - timezone.now() <= timedelta(minutes=15)
    device = Device.objects.get(code=body["id"])
    # Only a digest is stored, never the code itself.
    assert body["pairing_code"] not in device.pairing_code_digest


def test_owner_lists_only_their_own_devices(owner_client: APIClient, owner, other_owner) -> None:
    DeviceFactory(owner=owner, name="Mine")
    DeviceFactory(owner=other_owner, name="Theirs")
    response = owner_client.get("/api/v1/devices")
    assert response.status_code == 200
    assert [d["name"] for d in response.json()["results"]] == ["Mine"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "/pairing-code"),
        ("post", "/revoke-token"),
        ("post", "/rotate-token"),
    ],
)
def test_another_owners_device_is_404_for_every_action(other_client: APIClient, device, method, suffix) -> None:
    response = getattr(other_client, method)(f"/api/v1/devices/{device.code}{suffix}", {}, format="json")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    device.refresh_from_db()
    assert device.name == "Home"


def test_patch_updates_settings_and_rejects_half_a_position(owner_client: APIClient, device) -> None:
    response = owner_client.patch(f"/api/v1/devices/{device.code}", {"heartbeat_interval_s": 30}, format="json")
    assert response.status_code == 200
    assert response.json()["heartbeat_interval_s"] == 30
    bad = owner_client.patch(f"/api/v1/devices/{device.code}", {"latitude": 95}, format="json")
    assert bad.status_code == 400
    assert "latitude" in bad.json()["extra"]["fields"]


def test_filter_devices_by_kind(owner_client: APIClient, owner) -> None:
    DeviceFactory(owner=owner, name="Car", kind=Device.Kind.VEHICLE)
    DeviceFactory(owner=owner, name="House", kind=Device.Kind.HOME)
    response = owner_client.get("/api/v1/devices?kind=vehicle")
    assert [d["name"] for d in response.json()["results"]] == ["Car"]


def test_pairing_exchanges_the_code_for_a_token_once(owner_client: APIClient) -> None:
    body = create_device(owner_client)
    status, paired = pair(body["pairing_code"], firmware_version="pi-1.2")
    assert status == 201
    assert paired["device_id"] == body["id"]
    assert paired["token"].startswith("gw_")
    device = Device.objects.get(code=body["id"])
    assert device.status == Device.Status.ACTIVE
    assert device.firmware_version == "pi-1.2"
    token_row = DeviceToken.objects.get(device=device)
    assert paired["token"].split(".", 1)[1] not in token_row.digest

    status, again = pair(body["pairing_code"])
    assert status == 400
    assert again["code"] == "pairing_code_invalid"


def test_pairing_code_is_case_and_dash_insensitive(owner_client: APIClient) -> None:
    code = create_device(owner_client)["pairing_code"]
    status, _ = pair(f"{code[:4].lower()}-{code[4:].lower()}")
    assert status == 201


def test_expired_pairing_code_is_refused(owner_client: APIClient) -> None:
    code = create_device(owner_client)["pairing_code"]
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        status, body = pair(code)
    assert status == 400
    assert body["code"] == "pairing_code_expired"


def test_new_pairing_code_invalidates_the_previous_one(owner_client: APIClient) -> None:
    body = create_device(owner_client)
    fresh = owner_client.post(f"/api/v1/devices/{body['id']}/pairing-code").json()["pairing_code"]
    assert pair(body["pairing_code"])[0] == 400
    assert pair(fresh)[0] == 201


def test_missing_pairing_code_is_a_field_error() -> None:
    status, body = pair("")
    assert status == 400
    assert "pairing_code" in body["extra"]["fields"]


def heartbeat(token: str, **data: object) -> tuple[int, dict]:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Device {token}")
    response = client.post("/api/v1/devices/heartbeat", data, format="json")
    return response.status_code, response.json()


def test_heartbeat_records_position_and_health_and_returns_settings(paired_device) -> None:
    device, token = paired_device
    device.sensitivity_threshold = 0.8
    device.save()
    status, body = heartbeat(
        token,
        latitude=52.51,
        longitude=13.39,
        accuracy_m=8,
        battery_pct=77,
        firmware_version="2.0",
        model_version="gw-1",
        uptime_s=3600,
        mic_level_dbfs=-42.5,
        free_storage_mb=900,
        queue_length=3,
    )
    assert status == 200, body
    assert body["device_id"] == str(device.code)
    assert body["settings"] == {"heartbeat_interval_s": 60, "sensitivity_threshold": 0.8}
    assert "active_model" in body
    device.refresh_from_db()
    assert (device.last_latitude, device.last_longitude, device.last_accuracy_m) == (52.51, 13.39, 8)
    assert device.battery_pct == 77
    assert device.firmware_version == "2.0"
    assert device.health["queue_length"] == 3
    assert device.connectivity == Device.Connectivity.ONLINE
    assert device.is_online
    assert timedelta(seconds=179) < device.offline_after - device.last_heartbeat_at <= timedelta(seconds=180)


def test_heartbeat_stores_the_clips_the_agent_set_aside_or_had_refused(paired_device) -> None:
    device, token = paired_device
    status, body = heartbeat(token, queue_length=0, dropped_clips=0, rejected_clips=2, set_aside_clips=1)
    assert status == 200, body
    device.refresh_from_db()
    assert (device.health["rejected_clips"], device.health["set_aside_clips"]) == (2, 1)
    status, body = heartbeat(token, set_aside_clips=-1)
    assert (status, body["code"]) == (400, "min_value")
    assert "set_aside_clips" in body["extra"]["fields"]


def test_heartbeat_rejects_impossible_values(paired_device) -> None:
    _, token = paired_device
    status, body = heartbeat(token, latitude=123, longitude=13, battery_pct=150)
    assert status == 400
    assert {"latitude", "battery_pct"} <= set(body["extra"]["fields"])


@pytest.mark.parametrize("header", ["Device gw_nope.nope", "Device garbage", "Device", "Device a b"])
def test_bad_device_tokens_are_401(paired_device, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.post("/api/v1/devices/heartbeat", {}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] in {"authentication_failed", "not_authenticated"}


def test_a_user_token_cannot_send_heartbeats(owner_client: APIClient) -> None:
    assert owner_client.post("/api/v1/devices/heartbeat", {}, format="json").status_code == 403


def test_a_device_token_cannot_use_the_owner_api(device_client: APIClient, paired_device) -> None:
    device, _ = paired_device
    assert device_client.get("/api/v1/devices").status_code == 403
    assert device_client.get(f"/api/v1/devices/{device.code}").status_code == 403
    assert device_client.get("/api/v1/contacts").status_code == 403


def test_a_device_token_only_ever_acts_for_its_own_device(owner, paired_device) -> None:
    device, token = paired_device
    other = DeviceFactory(owner=owner, name="Other")
    heartbeat(token, latitude=1.0, longitude=2.0)
    other.refresh_from_db()
    device.refresh_from_db()
    assert other.last_latitude is None
    assert device.last_latitude == 1.0


def test_revocation_takes_effect_immediately(owner_client: APIClient, paired_device) -> None:
    device, token = paired_device
    assert heartbeat(token)[0] == 200
    response = owner_client.post(f"/api/v1/devices/{device.code}/revoke-token")
    assert response.status_code == 200
    assert response.json() == {"revoked": 1}
    assert heartbeat(token)[0] == 401


def test_rotation_issues_a_new_token_and_kills_the_old(owner_client: APIClient, paired_device) -> None:
    device, old = paired_device
    response = owner_client.post(f"/api/v1/devices/{device.code}/rotate-token")
    assert response.status_code == 201
    new = response.json()["token"]
    assert new != old
    assert heartbeat(old)[0] == 401
    assert heartbeat(new)[0] == 200
    assert DeviceToken.objects.filter(device=device, revoked_at__isnull=True).count() == 1


def test_disabled_device_cannot_authenticate(paired_device) -> None:
    device, token = paired_device
    Device.objects.filter(pk=device.pk).update(status=Device.Status.DISABLED)
    assert heartbeat(token)[0] == 401


def test_delete_device_removes_it(owner_client: APIClient, device) -> None:
    assert owner_client.delete(f"/api/v1/devices/{device.code}").status_code == 204
    assert not Device.objects.filter(pk=device.pk).exists()


def test_contacts_crud_is_scoped_to_the_owner(owner_client: APIClient, other_client: APIClient, owner) -> None:
    device = DeviceFactory(owner=owner)
    response = owner_client.post(
        "/api/v1/contacts",
        {
            "name": "Mum",
            "relation": "mother",
            "email": "mum@example.org",
            "phone": "+4915112345678",
            "channels": ["sms", "email"],
            "devices": [str(device.code)],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    contact_id = response.json()["id"]
    assert response.json()["channels"] == ["email", "sms"]
    assert response.json()["devices"] == [str(device.code)]
    assert other_client.get(f"/api/v1/contacts/{contact_id}").status_code == 404
    assert other_client.delete(f"/api/v1/contacts/{contact_id}").status_code == 404
    assert other_client.get("/api/v1/contacts").json()["results"] == []
    patched = owner_client.patch(f"/api/v1/contacts/{contact_id}", {"relation": "mom"}, format="json")
    assert patched.json()["relation"] == "mom"
    assert owner_client.delete(f"/api/v1/contacts/{contact_id}").status_code == 204
    assert not TrustedContact.objects.exists()


@pytest.mark.parametrize(
    ("phone", "ok"),
    [
        ("+4915112345678", True),
        ("015112345678", False),
        ("+49 151", False),
        ("+1202555012", False),
        ("+12025550123", True),
        ("not a number", False),
    ],
)
def test_contact_phone_must_be_valid_e164(owner_client: APIClient, phone: str, ok: bool) -> None:
    response = owner_client.post("/api/v1/contacts", {"name": "X", "phone": phone, "channels": ["sms"]}, format="json")
    assert (response.status_code == 201) is ok, response.content
    if not ok:
        assert "phone" in response.json()["extra"]["fields"]


def test_contact_needs_the_address_for_its_channel(owner_client: APIClient) -> None:
    response = owner_client.post("/api/v1/contacts", {"name": "X", "channels": ["email"]}, format="json")
    assert response.status_code == 400
    assert "email" in response.json()["extra"]["fields"]


def test_contact_cannot_be_limited_to_someone_elses_device(owner_client: APIClient, other_owner) -> None:
    foreign = DeviceFactory(owner=other_owner)
    response = owner_client.post(
        "/api/v1/contacts",
        {"name": "X", "email": "x@example.org", "channels": ["email"], "devices": [str(foreign.code)]},
        format="json",
    )
    assert response.status_code == 400
    assert "devices" in response.json()["extra"]["fields"]


def test_contacts_filter_by_device(owner_client: APIClient, owner) -> None:
    device = DeviceFactory(owner=owner)
    limited = TrustedContactFactory(owner=owner, name="Limited")
    limited.devices.add(device)
    TrustedContactFactory(owner=owner, name="Everything")
    response = owner_client.get(f"/api/v1/contacts?device={device.code}")
    assert [c["name"] for c in response.json()["results"]] == ["Limited"]


def test_unknown_api_path_is_json_404(owner_client: APIClient) -> None:
    response = owner_client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_openapi_schema_and_docs_are_served(owner_client: APIClient) -> None:
    schema = owner_client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/devices/pair" in paths
    assert "/api/v1/devices/heartbeat" in paths
    assert owner_client.get("/api/docs/").status_code == 200


def test_pairing_is_throttled(settings, monkeypatch: pytest.MonkeyPatch, owner_client: APIClient) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "pairing": "3/min"},
    }
    from rest_framework.throttling import ScopedRateThrottle

    # monkeypatch restores the class attribute after the test; restoring it from api_settings inside the
    # test leaked the 3/min rate to every later test of the worker (api_settings still held it then).
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    statuses = [pair("WRONGCODE")[0] for _ in range(4)]
    assert statuses == [400, 400, 400, 429]


def test_openapi_schema_generates_without_warnings() -> None:
    """Integrators generate clients from the schema: it must be complete and unambiguous."""
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--file", "/dev/null")


def test_the_heartbeat_answers_exactly_what_its_output_serializer_says(
    paired_device, model_factory: Callable[..., ModelVersion]
) -> None:
    from detection import inference
    from devices.api.serializers import HeartbeatOutputSerializer

    device, token = paired_device
    first = model_factory(name="first")
    for expected_model, threshold in ((first, 0.8), (model_factory(name="second"), None)):
        device.sensitivity_threshold = threshold
        device.save()
        status, body = heartbeat(token, battery_pct=50)
        assert status == 200, body
        server_time = serializers.DateTimeField().to_internal_value(body["server_time"])
        expected = HeartbeatOutputSerializer(
            {
                "device_id": device.code,
                "status": device.status,
                "settings": {"heartbeat_interval_s": 60, "sensitivity_threshold": threshold},
                "active_model": inference.active_version(),
                "server_time": server_time,
            }
        ).data
        assert body == json.loads(json.dumps(expected))
        # The model the devices are told of follows an activation.
        assert body["active_model"]["sha256"] == expected_model.sha256
