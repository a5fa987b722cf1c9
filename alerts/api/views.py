from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsPerson, IsPolice, has_police_access
from alerts import services
from alerts.api.filters import IncidentFilterSet
from alerts.api.serializers import (
    IncidentDetailSerializer,
    IncidentSerializer,
    OutcomesSerializer,
    ReviewConfirmInputSerializer,
    ReviewDecisionSerializer,
    ReviewDismissInputSerializer,
    ReviewItemSerializer,
    TransitionInputSerializer,
)
from alerts.models import Incident
from alerts.selectors import OUTCOME_DIMENSIONS, incidents_visible_to, outcomes, review_queue_incidents
from alerts.services.review import incident_review, user_can_review
from alerts.views_outcomes import outcomes_window
from gunwatch.schema import ErrorSerializer

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


class OutcomesView(APIView):
    """Outcomes per model version, station or device (``by``), over ``since``/``until`` (ISO; default the
    last 90 days): incidents, what became of them, median seconds to review and to acknowledge. Staff only."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[
            OpenApiParameter("by", str, enum=list(OUTCOME_DIMENSIONS)),
            OpenApiParameter("since", str),
            OpenApiParameter("until", str),
        ],
        responses={200: OutcomesSerializer},
    )
    def get(self, request: Request) -> Response:
        by = request.query_params.get("by", "station")
        if by not in OUTCOME_DIMENSIONS:
            raise ValidationError({"by": [f"Use one of {', '.join(OUTCOME_DIMENSIONS)}."]})
        since, until = outcomes_window(request.query_params)
        rows = [row.as_dict() for row in outcomes(by, since=since, until=until)]
        return Response(OutcomesSerializer({"by": by, "since": since, "until": until, "results": rows}).data)


class IsReviewer(BasePermission):
    message = "Only reviewers (an administrator grants the alerts.reviewer permission) may use the review queue."

    def has_permission(self, request: Any, view: Any) -> bool:
        return user_can_review(request.user)


DECIDED = OpenApiResponse(
    response=ErrorSerializer,
    description="`already_decided` (a reviewer or the deadline was first) or `not_in_review` (dispatched by policy).",
)


class ReviewViewSet(viewsets.GenericViewSet):
    """The review queue over the API, for reviewers only: the same decisions as the ``/review/`` page,
    through the same service, so a confirmation notifies the stations exactly once and every decision
    is logged on the incident's timeline with the reviewer and the time."""

    queryset = Incident.objects.all()
    permission_classes = [IsReviewer]
    serializer_class = ReviewItemSerializer
    pagination_class = None  # the queue is short: at most the 50 most urgent, like the page
    lookup_field = "code"
    lookup_url_kwarg = "id"
    lookup_value_regex = UUID_REGEX

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "precise": True}

    @extend_schema(responses={200: ReviewItemSerializer(many=True)})
    def list(self, request: Request) -> Response:
        """Incidents waiting for a decision, the soonest deadline first, with every contributing clip."""
        return Response(self.get_serializer(review_queue_incidents(), many=True).data)

    def _decide(self, request: Request, decision: str, validated: dict[str, Any]) -> Response:
        incident = incident_review(
            incident=self.get_object(),
            user=request.user,  # type: ignore[arg-type]  # IsReviewer: a User, never anonymous
            decision=decision,
            **validated,
        )
        incident = Incident.objects.select_related("reviewed_by").prefetch_related("stations").get(pk=incident.pk)
        return Response(ReviewDecisionSerializer(incident, context=self.get_serializer_context()).data)

    @extend_schema(request=ReviewConfirmInputSerializer, responses={200: ReviewDecisionSerializer, 409: DECIDED})
    @action(detail=True, methods=["post"])
    def confirm(self, request: Request, id: str) -> Response:
        """Dispatch now: the stations are notified and police see the incident on the map."""
        serializer = ReviewConfirmInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._decide(request, "confirm", serializer.validated_data)

    @extend_schema(request=ReviewDismissInputSerializer, responses={200: ReviewDecisionSerializer, 409: DECIDED})
    @action(detail=True, methods=["post"])
    def dismiss(self, request: Request, id: str) -> Response:
        """Close it with a reason (``false_alarm`` or ``other_source``): police never see it, and the
        devices that heard it are recalibrated."""
        serializer = ReviewDismissInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._decide(request, "dismiss", serializer.validated_data)
