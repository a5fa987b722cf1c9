from __future__ import annotations

from django.urls import path

from devices import views

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("devices/add/", views.device_add, name="device-add"),
    path("devices/<uuid:code>/", views.device_detail, name="device-detail"),
    path("devices/<uuid:code>/pairing-code/", views.device_pairing_code, name="device-pairing-code"),
    path("devices/<uuid:code>/pairing/", views.device_pairing, name="device-pairing"),
    path("devices/<uuid:code>/rotate-token/", views.device_token_rotate, name="device-rotate-token"),
    path("devices/<uuid:code>/token/", views.device_token, name="device-token"),
    path("devices/<uuid:code>/revoke-token/", views.device_token_revoke, name="device-revoke-token"),
    path("devices/<uuid:code>/delete/", views.device_delete, name="device-delete"),
    path("contacts/", views.contact_list, name="contact-list"),
    path("contacts/add/", views.contact_edit, name="contact-add"),
    path("contacts/<int:pk>/", views.contact_edit, name="contact-edit"),
    path("contacts/<int:pk>/delete/", views.contact_delete, name="contact-delete"),
]
