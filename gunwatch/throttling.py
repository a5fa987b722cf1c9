"""Throttles shared by the apps (no import of rest_framework.views here: DRF imports this module while loading it)."""

from __future__ import annotations

import hashlib
from typing import Any

from rest_framework.throttling import SimpleRateThrottle


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
