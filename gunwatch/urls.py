from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import views as account_views
from gunwatch import views
from gunwatch.api import api_not_found, json_error_view

api_v1: list[URLPattern | URLResolver] = [
    path("auth/token", account_views.TokenApi.as_view(), name="api-token"),
    path("", include("devices.api.urls")),
    path("", include("detection.api.urls")),
    path("", include("alerts.api.urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("health", views.health, name="health"),
    path("admin/", admin.site.urls),
    path("accounts/signup/", account_views.signup, name="signup"),
    path("accounts/signup/police/", account_views.signup_police, name="signup-police"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Last of the /api/ routes: an unknown API path answers JSON, never the HTML 404 page.
    re_path(r"^api/", api_not_found),
    path("", include("devices.urls")),
    path("", include("detection.urls")),
    path("", include("alerts.urls")),
]

handler404 = json_error_view(404, "Not found.", "not_found")
handler500 = json_error_view(500, "Internal server error; the failure was logged.", "server_error")
