from __future__ import annotations

import django_filters

from detection.models import Classification, Clip
from gunwatch.api import IsoDateTimeFilter


class ClipFilterSet(django_filters.FilterSet):
    device = django_filters.UUIDFilter(field_name="device__code")
    label = django_filters.ChoiceFilter(field_name="classification__label", choices=Classification.Label.choices)
    status = django_filters.ChoiceFilter(choices=Clip.Status.choices)
    recorded_after = IsoDateTimeFilter(field_name="recorded_at", lookup_expr="gte")
    recorded_before = IsoDateTimeFilter(field_name="recorded_at", lookup_expr="lt")
    received_after = IsoDateTimeFilter(field_name="received_at", lookup_expr="gte")

    class Meta:
        model = Clip
        fields = ["device", "label", "status", "recorded_after", "recorded_before", "received_after"]
