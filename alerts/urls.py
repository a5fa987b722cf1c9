from __future__ import annotations

from django.urls import path

from alerts import views

urlpatterns = [
    path("map/", views.incident_map, name="incident-map"),
    path("map/devices", views.incident_map_devices, name="incident-map-devices"),
    path("map/address", views.incident_map_address, name="incident-map-address"),
    path("incidents/mine/", views.my_incidents, name="my-incidents"),
    path("incidents/<uuid:code>/", views.incident_detail, name="incident-detail"),
    path("incidents/<uuid:code>/transition/", views.incident_transition, name="incident-transition"),
]
