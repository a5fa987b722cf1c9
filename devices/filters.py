from __future__ import annotations

import django_filters

from devices.models import Device, TrustedContact


class DeviceFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Device
        fields = ["kind", "status", "connectivity", "name"]


class TrustedContactFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    device = django_filters.UUIDFilter(field_name="devices__code")

    class Meta:
        model = TrustedContact
        fields = ["name", "device"]
