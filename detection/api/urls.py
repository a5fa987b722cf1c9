from __future__ import annotations

from django.urls import path

from detection.api import views

urlpatterns = [
    path("clips", views.ClipListApi.as_view(), name="clip-list"),
    path("clips/<uuid:id>", views.ClipDetailApi.as_view(), name="clip-detail"),
    path("devices/<uuid:id>/data", views.DeviceDataPurgeApi.as_view(), name="device-data"),
    path("devices/<uuid:id>/purge", views.DeviceDataPurgeApi.as_view(), name="device-purge"),
    path("models/active", views.ActiveModelApi.as_view(), name="model-active"),
    path("models/active/download", views.ActiveModelDownloadApi.as_view(), name="model-active-download"),
    path("predict", views.PredictApi.as_view(), name="predict"),
]
