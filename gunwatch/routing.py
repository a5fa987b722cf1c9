"""Websocket routes of every app, collected in one place for the ASGI router."""

from __future__ import annotations

from alerts.routing import websocket_urlpatterns

__all__ = ["websocket_urlpatterns"]
