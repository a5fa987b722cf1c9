"""One Redis connection pool per process for Django's cache.

Django makes a cache object per request context, and its Redis client a pool per cache object; under
an ASGI server every request is a new context, so every request opened a new Redis connection (10 %
of a web process's time in a py-spy profile at 20 uploads/s). ``OPTIONS["pool_class"]`` names this
class, whose ``from_url`` hands back the process's pool for the same URL and options.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

_pools: dict[tuple[str, str], redis.ConnectionPool] = {}
_lock = threading.Lock()


class SharedConnectionPool(redis.ConnectionPool):
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Any:
        key = (url, repr(sorted(kwargs.items(), key=lambda item: item[0])))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = redis.ConnectionPool.from_url(url, **kwargs)
            return pool
