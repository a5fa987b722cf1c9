"""Brute force behind a spoofed X-Forwarded-For: the limits hold (issue 13, item 11)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from devices.models import Device

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def private_throttle_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counters in this process only: with a shared Redis, another xdist worker's cache.clear() between two of
    these requests would reset a budget mid-test."""
    from django.core.cache.backends.locmem import LocMemCache
    from rest_framework.throttling import SimpleRateThrottle

    # LocMemCache instances of one name share their data: a fresh name is a fresh, empty cache.
    monkeypatch.setattr(SimpleRateThrottle, "cache", LocMemCache(f"throttle-{uuid.uuid4()}", {}))
    # The configured rates, whatever an earlier test in this worker left on the classes (DRF reads them once).
    from django.conf import settings
    from rest_framework.throttling import ScopedRateThrottle

    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)


def spoofed(i: int) -> dict[str, Any]:
    """A different made-up client address on every request, as a brute-forcer would send."""
    return {"HTTP_X_FORWARDED_FOR": f"203.0.113.{i % 250}, 198.51.100.{i % 200}"}


def distinct_code(i: int) -> str:
    """A wrong pairing code per i that stays distinct after normalisation (which folds look-alike characters)."""
    from devices.services import PAIRING_ALPHABET

    return f"ZZZZ{PAIRING_ALPHABET[i // len(PAIRING_ALPHABET)]}{PAIRING_ALPHABET[i % len(PAIRING_ALPHABET)]}ZZ"


def statuses(responses: list[Any]) -> list[int]:
    return [response.status_code for response in responses]


@pytest.fixture
def rates(settings: Any) -> dict[str, str]:
    return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]


def _limit(rate: str) -> int:
    return int(rate.split("/")[0])


def test_x_forwarded_for_is_not_trusted_by_default(settings: Any) -> None:
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0


def test_login_per_address_holds_against_a_spoofed_header(owner: User, rates: dict[str, str]) -> None:
    client = APIClient()
    limit = _limit(rates["login"])
    # A different account each time, so only the per-address budget can refuse.
    answers = [
        client.post("/api/v1/auth/token", {"username": f"user{i}", "password": "x"}, **spoofed(i))
        for i in range(limit + 1)
    ]
    assert statuses(answers)[:limit] == [400] * limit
    assert answers[-1].status_code == 429
    assert answers[-1].json()["code"] == "throttled" and "Retry-After" in answers[-1]


def test_login_per_account_holds_from_many_addresses(owner: User, settings: Any, rates: dict[str, str]) -> None:
    # Even with a proxy configured and honest per-request addresses, one account gets a bounded number of tries.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    limit = _limit(rates["login_account"])
    answers = [
        client.post(
            "/api/v1/auth/token",
            {"username": "ALICE ", "password": f"guess{i}"},
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}",
        )
        for i in range(limit + 1)
    ]
    assert statuses(answers)[:limit] == [400] * limit
    assert answers[-1].status_code == 429
    # The right password is refused too while the account's budget is spent: that is the point.
    right = client.post(
        "/api/v1/auth/token",
        {"username": "alice", "password": "correct-horse-battery"},
        HTTP_X_FORWARDED_FOR="198.51.100.250",
    )
    assert right.status_code == 429
    # Another account is not affected.
    other = client.post(
        "/api/v1/auth/token", {"username": "someone-else", "password": "x"}, HTTP_X_FORWARDED_FOR="198.51.100.251"
    )
    assert other.status_code == 400


def test_with_one_proxy_the_address_it_appended_counts(owner: User, settings: Any, rates: dict[str, str]) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    limit = _limit(rates["pairing"])
    # The client forges the first entries; the proxy appends the real address last, and that is the one counted.
    answers = [
        client.post(
            "/api/v1/devices/pair",
            {"pairing_code": distinct_code(i)},
            HTTP_X_FORWARDED_FOR=f"203.0.113.{i % 250}, 192.0.2.7",
        )
        for i in range(limit + 1)
    ]
    assert statuses(answers)[:limit] == [400] * limit
    assert answers[-1].status_code == 429
    fresh = client.post("/api/v1/devices/pair", {"pairing_code": "ZZZZ9999"}, HTTP_X_FORWARDED_FOR="192.0.2.8")
    assert fresh.status_code == 400


def test_pairing_per_address_holds_against_a_spoofed_header(rates: dict[str, str]) -> None:
    client = APIClient()
    limit = _limit(rates["pairing"])
    answers = [
        client.post("/api/v1/devices/pair", {"pairing_code": distinct_code(i)}, **spoofed(i)) for i in range(limit + 1)
    ]
    assert statuses(answers)[:limit] == [400] * limit
    assert answers[-1].status_code == 429


def test_pairing_per_code_holds_from_many_addresses(device: Device, settings: Any, rates: dict[str, str]) -> None:
    from devices import services

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}  # every try from its own address
    issued = services.device_pairing_code_issue(device=device)
    client = APIClient()
    limit = _limit(rates["pairing_code"])
    # Spelled differently each time (case, dashes): it is still the same code.
    spellings = [issued.code.lower(), f"{issued.code[:4]}-{issued.code[4:]}", f" {issued.code} "]
    answers = [
        client.post(
            "/api/v1/devices/pair",
            {"pairing_code": spellings[i % 3], "firmware_version": "x" * 100},
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}",
        )
        for i in range(limit)
    ]
    # An over-long firmware_version makes each try a 400 without using the code up.
    assert statuses(answers) == [400] * limit
    refused = client.post("/api/v1/devices/pair", {"pairing_code": issued.code}, HTTP_X_FORWARDED_FOR="198.51.100.99")
    assert refused.status_code == 429
    # Another code from the same addresses is still heard.
    other = client.post("/api/v1/devices/pair", {"pairing_code": "ZZZZ9999"}, HTTP_X_FORWARDED_FOR="198.51.100.98")
    assert other.status_code == 400


def test_each_device_has_its_own_budget_per_window(monkeypatch: pytest.MonkeyPatch, owner: User) -> None:
    from rest_framework.throttling import SimpleRateThrottle

    from devices import services

    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "device", "3/min")
    clients = []
    for name in ("Porch", "Garage"):
        _, issued = services.device_create(owner=owner, name=name, kind=Device.Kind.HOME)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Device {services.device_pair(pairing_code=issued.code).token}")
        clients.append(client)
    porch, garage = clients
    answers = [porch.post("/api/v1/devices/heartbeat", {}, format="json") for _ in range(4)]
    assert statuses(answers) == [200, 200, 200, 429]
    assert answers[-1].json()["code"] == "throttled"
    assert 0 < int(answers[-1]["Retry-After"]) <= 61
    # The runaway unit's budget is its own: the rest of the fleet carries on.
    assert garage.post("/api/v1/devices/heartbeat", {}, format="json").status_code == 200


def test_the_device_counter_starts_afresh_in_the_next_window(monkeypatch: pytest.MonkeyPatch, owner: User) -> None:
    from devices import services
    from devices.auth import DeviceRateThrottle

    monkeypatch.setitem(DeviceRateThrottle.THROTTLE_RATES, "device", "2/min")
    _, issued = services.device_create(owner=owner, name="Porch", kind=Device.Kind.HOME)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Device {services.device_pair(pairing_code=issued.code).token}")
    clock = [60 * 16_667 + 20.0]  # 20 s into a minute
    monkeypatch.setattr(DeviceRateThrottle, "timer", lambda self: clock[0])
    assert [client.post("/api/v1/devices/heartbeat", {}, format="json").status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    clock[0] += 40  # the next minute
    assert client.post("/api/v1/devices/heartbeat", {}, format="json").status_code == 200


def test_the_redis_counter_takes_one_round_trip_and_fails_open() -> None:
    from gunwatch.cache import ResilientRedisCache

    url = __import__("os").environ.get("REDIS_URL")
    if url:
        live = ResilientRedisCache(url, {})
        key = f"counter-{uuid.uuid4()}"
        assert [live.count_in_window(key, 5) for _ in range(3)] == [1, 2, 3]
        assert 0 < live._cache.get_client(write=True).ttl(live.make_and_validate_key(key)) <= 5
        live._cache.get_client(write=True).script_flush()  # as after a Redis restart: the script is gone
        assert live.count_in_window(key, 5) == 4
        live.delete(key)
    # Nothing listens on port 1: the counter reports "unknown" and the throttle lets requests through.
    down = ResilientRedisCache("redis://127.0.0.1:1/0", {"OPTIONS": {"socket_connect_timeout": 0.5}})
    assert down.count_in_window("anything", 5) is None


def test_the_cache_builds_one_redis_client_per_pool_not_one_per_operation() -> None:
    from gunwatch.cache import ResilientRedisCache

    url = __import__("os").environ.get("REDIS_URL") or "redis://127.0.0.1:1/0"
    cache = ResilientRedisCache(url, {"OPTIONS": {"socket_connect_timeout": 0.5}})
    kept = cache._cache.get_client(write=True)
    assert cache._cache.get_client() is kept  # one server: reads and writes share its pool
    assert cache._cache.get_client("any-key", write=True) is kept
    if url.endswith(":1/0"):
        return
    key = f"kept-{uuid.uuid4()}"
    cache.set(key, {"n": 1}, 5)
    assert [cache.get(key), cache.get(key)] == [{"n": 1}, {"n": 1}]
    cache.delete(key)
    assert cache.get(key) is None
