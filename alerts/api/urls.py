from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from alerts.api.views import IncidentViewSet, OutcomesView, ReviewViewSet

router = SimpleRouter(trailing_slash=False)
router.register("incidents", IncidentViewSet, basename="incident")
router.register("review", ReviewViewSet, basename="review")

urlpatterns = [*router.urls, path("outcomes", OutcomesView.as_view(), name="outcomes-api")]
