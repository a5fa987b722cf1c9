from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.throttling import ScopedRateThrottle

from accounts.forms import OwnerSignUpForm, PoliceSignUpForm
from accounts.services import police_account_requested
from gunwatch.parsers import SafeJSONParser
from gunwatch.throttling import RequestFieldThrottle


def signup(request: HttpRequest) -> HttpResponse:
    form = OwnerSignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to GunWatch. Add your first device to start listening.")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form, "title": "Create an owner account"})


def signup_police(request: HttpRequest) -> HttpResponse:
    form = PoliceSignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        police_account_requested(user=user)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.info(request, "Request sent, see your email. An administrator must approve it before you see the map.")
        return redirect("home")
    return render(
        request, "registration/signup.html", {"form": form, "title": "Request a police account", "police": True}
    )


class LoginAccountThrottle(RequestFieldThrottle):
    scope = "login_account"
    field = "username"


class TokenApi(ObtainAuthToken):
    """``POST /api/v1/auth/token`` {username, password} → {"token"}.

    Throttled per address and per account, so guessing one account's password from many addresses
    (or behind a spoofed X-Forwarded-For) is slowed down too.
    """

    parser_classes = [SafeJSONParser, FormParser, MultiPartParser]
    throttle_classes = [ScopedRateThrottle, LoginAccountThrottle]
    throttle_scope = "login"
