from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError

from alerts.models import Incident
from alerts.selectors import incidents_in_bbox


class IncidentFilterSet(django_filters.FilterSet):
    """``since``/``until`` bound the first detection; ``updated_after`` is the map's catch-up;
    ``status`` takes a comma list; ``bbox`` is min_lon,min_lat,max_lon,max_lat."""

    since = django_filters.IsoDateTimeFilter(field_name="first_detected_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="first_detected_at", lookup_expr="lte")
    updated_after = django_filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gt")
    status = django_filters.BaseInFilter(field_name="status")
    bbox = django_filters.CharFilter(method="filter_bbox")

    class Meta:
        model = Incident
        fields = ["since", "until", "updated_after", "status", "bbox", "disposition"]

    def filter_bbox(self, queryset: QuerySet[Incident], name: str, value: str) -> QuerySet[Incident]:
        try:
            parts = tuple(float(part) for part in value.split(","))
        except ValueError:
            parts = ()
        if len(parts) != 4 or not (-90 <= parts[1] <= parts[3] <= 90):
            raise ValidationError({"bbox": ["Give bbox as min_lon,min_lat,max_lon,max_lat in degrees."]})
        return incidents_in_bbox(queryset, parts)  # type: ignore[arg-type]
