from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from devices.api.views import DeviceViewSet, HeartbeatApi, PairApi, TrustedContactViewSet

router = SimpleRouter(trailing_slash=False)
router.register("devices", DeviceViewSet, basename="device")
router.register("contacts", TrustedContactViewSet, basename="contact")

urlpatterns = [
    path("devices/pair", PairApi.as_view(), name="device-pair"),
    path("devices/heartbeat", HeartbeatApi.as_view(), name="device-heartbeat"),
    *router.urls,
]
