from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError

from accounts.permissions import has_police_access
from alerts.messages import coarse_location
from alerts.models import Incident
from alerts.selectors import incidents_in_bbox
from gunwatch.api import IsoDateTimeFilter


class IncidentFilterSet(django_filters.FilterSet):
    """``since``/``until`` bound the first detection; ``updated_after`` is the map's catch-up;
    ``status`` takes a comma list; ``bbox`` is min_lon,min_lat,max_lon,max_lat."""

    since = IsoDateTimeFilter(field_name="first_detected_at", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="first_detected_at", lookup_expr="lte")
    updated_after = IsoDateTimeFilter(field_name="updated_at", lookup_expr="gt")
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
        if has_police_access(getattr(self.request, "user", None)):
            return incidents_in_bbox(queryset, parts)  # type: ignore[arg-type]
        # Owners see coarse locations only; filtering them on the precise ones would let repeated
        # narrowing boxes reveal what the rounding hides. Their incident lists are short.
        min_lon, min_lat, max_lon, max_lat = parts
        inside = [
            pk
            for pk, lat, lon, radius in queryset.values_list("pk", "latitude", "longitude", "radius_m")
            for c_lat, c_lon, _ in [coarse_location(lat, lon, radius)]
            if c_lat is not None and min_lat <= c_lat <= max_lat and _lon_in(c_lon, min_lon, max_lon)  # type: ignore[arg-type]
        ]
        return queryset.filter(pk__in=inside)


def _lon_in(lon: float, min_lon: float, max_lon: float) -> bool:
    if min_lon <= max_lon:
        return min_lon <= lon <= max_lon
    return lon >= min_lon or lon <= max_lon  # the box crosses the antimeridian
