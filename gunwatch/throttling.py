"""Throttles shared by the apps (no import of rest_framework.views here: DRF imports this module while loading it)."""

from __future__ import annotations

import hashlib
from typing import Any

from rest_framework.throttling import SimpleRateThrottle

from gunwatch.cache import count_in_window


class RequestFieldThrottle(SimpleRateThrottle):
    """A budget per value of one request field (a username, a pairing code), whatever the address.

    Address throttles alone fall to a botnet or to any header an attacker can vary; this one holds as
    long as the target stays the same. The value is hashed so the cache never holds codes or names.
    """

    field = ""

    def normalise(self, value: str) -> str:
        return value.strip().lower()

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        try:
            value = request.data.get(self.field)
        except AttributeError:  # a JSON list or scalar body has no fields to count
            return None
        if not isinstance(value, str) or not value.strip():
            return None
        ident = hashlib.sha256(self.normalise(value).encode()).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope, "ident": ident}


class CounterRateThrottle(SimpleRateThrottle):
    """A fixed-window counter: one cache round trip per request.

    DRF's sliding window reads and rewrites the whole history of the window on every request (600
    pickled timestamps at 600/min, two Redis round trips), which made the throttle a fifth of a
    heartbeat's cost. A fixed window lets a client spend up to twice its budget across a window's
    edge; for a budget that exists to stop a runaway device, that is a fair price.
    """

    window_ends_at = 0.0
    # Set by SimpleRateThrottle.__init__ from the rate (DRF's stubs leave them undeclared).
    num_requests: int
    duration: int

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends_at = (window + 1) * self.duration
        count = count_in_window(self.cache, f"{key}:{window}", self.duration + 1)
        # An unreachable cache lets the request through, as the sliding window does.
        return count is None or count <= self.num_requests

    def wait(self) -> float | None:
        return max(0.0, self.window_ends_at - self.now)
