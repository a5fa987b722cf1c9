"""Hostile input gets a clear 4xx in the one error shape, never a 500 (issue 13, item 5)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from devices.models import Device

pytestmark = pytest.mark.django_db

NESTED_JSON = "[" * 100_000 + "]" * 100_000
BIG_JSON = json.dumps({"pairing_code": "A" * (13 * 1024 * 1024)})
JSON_ENDPOINTS = ["/api/v1/devices/heartbeat", "/api/v1/devices/pair", "/api/v1/auth/token"]


@pytest.fixture
def client(paired_device: tuple[Device, str]) -> APIClient:
    """Sends the device token, which heartbeat needs and pairing and login ignore; a 500 is answered, not raised."""
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Device {paired_device[1]}")
    return client


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert set(body) == {"message", "code", "extra"} and body["message"]
    if code is not None:
        assert body["code"] == code
    return body


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_deeply_nested_json_is_a_400(client: APIClient, path: str) -> None:
    response = client.post(path, NESTED_JSON, content_type="application/json")
    body = assert_error(response, 400, "parse_error")
    assert "nested too deeply" in body["message"]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_a_json_body_over_the_limit_is_a_413(client: APIClient, path: str, settings: Any) -> None:
    response = client.post(path, BIG_JSON, content_type="application/json")
    body = assert_error(response, 413, "too_large")
    assert body["extra"]["max_bytes"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_too_many_form_fields_is_a_400(client: APIClient) -> None:
    body = "&".join(f"f{i}=x" for i in range(1200))
    response = client.post("/api/v1/devices/pair", body, content_type="application/x-www-form-urlencoded")
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    "recorded_at",
    [
        "2026-01-01T10:99:00Z",  # minute 99
        "2026-02-30T10:00:00Z",  # 30 February
        "2026-01-01T25:00:00Z",  # hour 25
        "2026-01-01T10:00:00+16:00",  # an offset PostgreSQL cannot store
        "2026-01-01T10:00:00-23:59",
    ],
)
def test_impossible_recorded_at_is_a_400(client: APIClient, recorded_at: str) -> None:
    response = client.post(
        "/api/v1/clips",
        {"audio": ("clip.wav", b"RIFF"), "recorded_at": recorded_at, "client_id": str(uuid.uuid4())},
        format="multipart",
    )
    body = assert_error(response, 400)
    assert "recorded_at" in body["extra"]["fields"]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/clips", "recorded_after"),
        ("/api/v1/clips", "recorded_before"),
        ("/api/v1/clips", "received_after"),
        ("/api/v1/incidents", "since"),
        ("/api/v1/incidents", "until"),
        ("/api/v1/incidents", "updated_after"),
    ],
)
@pytest.mark.parametrize("value", ["2026-01-01T10:00:00+16:00", "2026-01-01T10:00:00-23:59", "2026-02-30T10:00:00Z"])
def test_time_filters_beyond_any_utc_offset_are_a_400(owner: User, path: str, param: str, value: str) -> None:
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(owner)
    response = client.get(path, {param: value})
    body = assert_error(response, 400, "invalid")
    assert param in body["extra"]["fields"]


def test_time_filters_with_real_offsets_still_work(owner: User) -> None:
    client = APIClient()
    client.force_authenticate(owner)
    for value in ("2026-01-01T10:00:00+14:00", "2026-01-01T10:00:00-12:00", "2026-01-01T10:00:00Z"):
        assert client.get("/api/v1/incidents", {"since": value}).status_code == 200
        assert client.get("/api/v1/clips", {"recorded_after": value}).status_code == 200


@pytest.mark.parametrize("who", ["device", "anonymous", "owner"])
def test_the_schema_is_served_to_every_caller(client: APIClient, owner: User, who: str) -> None:
    if who == "anonymous":
        client = APIClient(raise_request_exception=False)
    elif who == "owner":
        client = APIClient(raise_request_exception=False)
        client.force_authenticate(owner)
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "GunWatch API"


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",  # no boundary at all
        "multipart/form-data; boundary=",  # an empty one
        "multipart/form-data; boundary=\u00ff",  # not ASCII
    ],
)
def test_a_broken_multipart_boundary_is_a_400_in_the_error_shape(client: APIClient, content_type: str) -> None:
    body = b'--xx\r\nContent-Disposition: form-data; name="recorded_at"\r\n\r\n2026-01-01T00:00:00Z'
    response = client.generic("POST", "/api/v1/clips", body, content_type=content_type)
    assert_error(response, 400, "parse_error")


def test_a_huge_authorization_header_reaching_django_is_a_401() -> None:
    # The server in front (daphne, tests/test_http_server.py) refuses it first; Django must not choke either.
    client = APIClient(raise_request_exception=False)
    response = client.get("/api/v1/devices", HTTP_AUTHORIZATION="Token " + "a" * 60_000)
    assert_error(response, 401, "authentication_failed")


# --- The OpenAPI schema documents the refusals ---------------------------------------------------


@pytest.fixture
def schema() -> dict[str, Any]:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize(
    ("method", "path", "codes"),
    [
        ("post", "/api/v1/devices/pair", {"201", "400", "413", "429"}),
        ("post", "/api/v1/auth/token", {"200", "400", "401", "429"}),
        ("post", "/api/v1/devices/heartbeat", {"200", "400", "401", "403", "429"}),
        ("post", "/api/v1/clips", {"202", "400", "401", "403", "409", "413", "415", "429"}),
        ("get", "/api/v1/clips", {"200", "400", "401", "403", "404", "429"}),  # 404: a page past the end
        ("get", "/api/v1/models/active", {"200", "401", "403", "404", "429"}),  # 404: no active model
        ("get", "/api/v1/devices", {"200", "400", "401", "403"}),
        ("get", "/api/v1/devices/{id}", {"200", "401", "403", "404"}),
        ("post", "/api/v1/incidents/{id}/transition", {"200", "400", "401", "403", "404"}),
        ("post", "/api/v1/predict", {"200", "400", "401", "403", "413", "429"}),
    ],
)
def test_the_schema_lists_the_error_answers(schema: dict[str, Any], method: str, path: str, codes: set[str]) -> None:
    responses = schema["paths"][path][method]["responses"]
    assert codes <= set(responses)
    for code in codes - {"200", "201", "202", "409", "413", "415"}:
        assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_pairing_needs_no_credentials_so_documents_no_401(schema: dict[str, Any]) -> None:
    assert not {"401", "403"} & set(schema["paths"]["/api/v1/devices/pair"]["post"]["responses"])


def test_the_error_component_is_the_one_error_shape(schema: dict[str, Any]) -> None:
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"message", "code", "extra"}
    assert set(error["required"]) == {"message", "code", "extra"}


def test_a_device_token_on_a_persons_endpoint_is_a_403(client: APIClient) -> None:
    assert_error(client.get("/api/v1/devices"), 403, "permission_denied")
