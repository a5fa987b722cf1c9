from __future__ import annotations

from django.urls import path

from alerts import views, views_outcomes, views_review

urlpatterns = [
    path("map/", views.incident_map, name="incident-map"),
    path("map/devices", views.incident_map_devices, name="incident-map-devices"),
    path("map/address", views.incident_map_address, name="incident-map-address"),
    path("incidents/mine/", views.my_incidents, name="my-incidents"),
    path("incidents/<uuid:code>/", views.incident_detail, name="incident-detail"),
    path("incidents/<uuid:code>/transition/", views.incident_transition, name="incident-transition"),
    path("review/", views_review.review_queue, name="review-queue"),
    path("review/items", views_review.review_items, name="review-items"),
    path("review/<uuid:code>/decide", views_review.review_decide, name="review-decide"),
    path("review/clips/<uuid:code>/audio", views_review.review_clip_audio, name="review-clip-audio"),
    path(
        "review/clips/<uuid:code>/spectrogram.png", views_review.review_clip_spectrogram, name="review-clip-spectrogram"
    ),
    path("review/clips/<uuid:code>/waveform.png", views_review.review_clip_waveform, name="review-clip-waveform"),
    path("outcomes/", views_outcomes.outcomes_page, name="outcomes"),
    path("outcomes/outcomes.csv", views_outcomes.outcomes_csv, name="outcomes-csv"),
    path("outcomes/plot/<str:by>.png", views_outcomes.outcomes_plot, name="outcomes-plot"),
]
