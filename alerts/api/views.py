from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import IsPerson, IsPolice, has_police_access
from alerts import services
from alerts.api.filters import IncidentFilterSet
from alerts.api.serializers import IncidentDetailSerializer, IncidentSerializer, TransitionInputSerializer
from alerts.models import Incident
from alerts.selectors import incidents_visible_to

UUID_REGEX = "[0-9a-fA-F-]{36}"


class IncidentViewSet(viewsets.ReadOnlyModelViewSet):
    """Incidents. Police see their stations' incidents (all with POLICE_SEE_ALL_INCIDENTS) with
    precise locations; device owners see the incidents their devices took part in, located to
    about a kilometre. Others' incidents answer 404."""

    queryset = Incident.objects.all()
    permission_classes = [IsPerson]
    filterset_class = IncidentFilterSet
    ordering_fields = ["first_detected_at", "updated_at", "max_confidence"]
    ordering = ["-first_detected_at", "-id"]
    lookup_field = "code"
    lookup_url_kwarg = "id"
    lookup_value_regex = UUID_REGEX

    def _police(self) -> bool:
        return has_police_access(self.request.user)

    def get_queryset(self) -> QuerySet[Incident]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular inspects the view without a user
            return Incident.objects.none()
        return (
            incidents_visible_to(self.request.user, police=self._police())  # type: ignore[arg-type]  # IsPerson: a User, never anonymous
            .select_related("evidence_clip")
            .prefetch_related("stations")
        )

    def get_serializer_class(self) -> type[IncidentSerializer]:
        return IncidentDetailSerializer if self.action in ("retrieve", "transition") else IncidentSerializer

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "precise": self._police()}

    @extend_schema(request=TransitionInputSerializer, responses={200: IncidentDetailSerializer})
    @action(detail=True, methods=["post"], permission_classes=[IsPolice])
    def transition(self, request: Request, id: str) -> Response:
        """Acknowledge, en_route, on_scene, close (with a disposition) or note; 400 when not allowed now."""
        serializer = TransitionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        incident = services.incident_transition(
            incident=self.get_object(),
            user=request.user,  # type: ignore[arg-type]  # IsPerson: a User, never anonymous
            **serializer.validated_data,
        )
        return Response(self.get_serializer(incident).data)
