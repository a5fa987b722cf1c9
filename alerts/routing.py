from __future__ import annotations

from django.urls import path

from alerts.consumers import IncidentMapConsumer, ReviewQueueConsumer

websocket_urlpatterns = [
    path("ws/incidents/", IncidentMapConsumer.as_asgi()),
    path("ws/review/", ReviewQueueConsumer.as_asgi()),
]
