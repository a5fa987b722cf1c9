"""Websocket routes of every app, collected in one place for the ASGI router."""

from __future__ import annotations

from typing import Any

websocket_urlpatterns: list[Any] = []

try:
    from alerts.routing import websocket_urlpatterns as _alerts_ws
except ImportError:  # the alerts app ships its consumers with the incidents feature
    _alerts_ws = []
websocket_urlpatterns += _alerts_ws
