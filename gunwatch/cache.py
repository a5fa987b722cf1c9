"""The cache GunWatch runs on Redis: an unreachable Redis is an empty cache, not a 500.

Kept free of DRF and of the apps: the cache backend is loaded from settings.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# The counter of count_in_window: atomic, so a key never outlives its window without a TTL.
_COUNT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""
_COUNT_SHA1 = hashlib.sha1(_COUNT_SCRIPT.encode()).hexdigest()


class KeptClientRedisCacheClient(RedisCacheClient):
    """Django's client, keeping one redis.Redis per connection pool.

    Django builds a new redis.Redis for every cache operation, and each one fills a table of ~170 reply
    callbacks: 5 % of a heartbeat's CPU in a profile (issue 14), for an object that holds no state of a
    request. redis.Redis is safe to share between threads (connections come from its pool).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        django_client: Any = self  # its pool helpers are private, so django-stubs does not declare them
        index = django_client._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            pool = django_client._get_connection_pool(write)
            client = self._clients[index] = django_client._client(connection_pool=pool)
        return client


class ResilientRedisCache(RedisCache):
    """Django's Redis cache that treats an unreachable Redis as an empty cache.

    Everything GunWatch keeps in the cache can be lost: throttle counters (a request is let through
    while Redis is down, rather than refused with a 500) and geocoding results (looked up again).
    Errors other than a lost connection, such as a full Redis refusing writes, still raise.
    """

    _warned_at = 0.0
    _warn_lock = threading.Lock()

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = KeptClientRedisCacheClient

    def _unavailable(self, operation: str, exc: Exception) -> None:
        # At most one line a minute: an outage would otherwise log once per request.
        with self._warn_lock:
            now = time.monotonic()
            if now - ResilientRedisCache._warned_at < 60:
                return
            ResilientRedisCache._warned_at = now
        logger.warning("Cache unavailable (%s): %s; carrying on without it", operation, exc)

    def _guard(self, operation: str, call: Callable[[], Any], fallback: Any) -> Any:
        try:
            return call()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self._unavailable(operation, exc)
            return fallback

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return bool(
            self._guard("add", lambda: super(ResilientRedisCache, self).add(key, value, timeout, version), False)
        )

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._guard("get", lambda: super(ResilientRedisCache, self).get(key, default, version), default)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> None:
        self._guard("set", lambda: super(ResilientRedisCache, self).set(key, value, timeout, version), None)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return bool(self._guard("touch", lambda: super(ResilientRedisCache, self).touch(key, timeout, version), False))

    def delete(self, key: Any, version: Any = None) -> bool:
        return bool(self._guard("delete", lambda: super(ResilientRedisCache, self).delete(key, version), False))

    def get_many(self, keys: Any, version: Any = None) -> dict[str, Any]:
        return self._guard("get_many", lambda: super(ResilientRedisCache, self).get_many(keys, version), {})

    def has_key(self, key: Any, version: Any = None) -> bool:
        return bool(self._guard("has_key", lambda: super(ResilientRedisCache, self).has_key(key, version), False))

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> list[Any]:
        return self._guard(
            "set_many", lambda: super(ResilientRedisCache, self).set_many(data, timeout, version), list(data)
        )

    def delete_many(self, keys: Any, version: Any = None) -> None:
        self._guard("delete_many", lambda: super(ResilientRedisCache, self).delete_many(keys, version), None)

    def clear(self) -> None:
        self._guard("clear", lambda: super(ResilientRedisCache, self).clear(), None)

    def count_in_window(self, key: str, timeout: int) -> int | None:
        """Add one to the counter ``key`` (created for ``timeout`` seconds) and return it, or None
        when Redis is unreachable: one command (a script: INCR, and EXPIRE on the first) where add()
        and incr() take two round trips. A pipelined SET NX EX and INCR took one round trip too, but
        redis-py's pipeline machinery made a count cost 190 us of client CPU against the script's 155.
        Works on every Redis version (EXPIRE's NX flag needs 7)."""

        def call() -> int:
            full_key = self.make_and_validate_key(key)
            client = self._cache.get_client(full_key, write=True)
            try:
                return int(client.evalsha(_COUNT_SHA1, 1, full_key, timeout))
            except NoScriptError:  # a new or restarted Redis: EVAL runs the script and caches it there
                return int(client.eval(_COUNT_SCRIPT, 1, full_key, timeout))

        return self._guard("count_in_window", call, None)


def count_in_window(cache: Any, key: str, timeout: int) -> int | None:
    """The counter of ``key`` after adding one, on any Django cache (None: the cache is down).

    ``cache`` may be Django's ``cache`` proxy, which only forwards attributes: hence no isinstance."""
    if hasattr(cache, "count_in_window"):
        return cache.count_in_window(key, timeout)
    cache.add(key, 0, timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add() and incr()
        cache.add(key, 1, timeout)
        return 1
