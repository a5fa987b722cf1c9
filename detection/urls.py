from __future__ import annotations

from django.urls import path

from detection import views

urlpatterns = [
    path("clips/<uuid:code>/audio", views.clip_audio, name="clip-audio"),
    path("clips/<uuid:code>/spectrogram.png", views.clip_spectrogram, name="clip-spectrogram"),
    path("models/plots/<str:name>", views.model_plot, name="model-plot"),
]
