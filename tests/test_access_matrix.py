"""Who may do what: every route of the URLconf and every role, with the expected status (issue 13).

The routes come from the URLconf itself, so a new endpoint fails ``test_every_route_has_a_row`` until
someone writes down who may use it. Django admin's per-model pages are one family (staff only,
everyone else is sent to the admin login), generated for every registered model. Each request runs
in a savepoint that is rolled back, so a delete or a revoke by one role does not change what the
next role finds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib import admin
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import User
from alerts import consumers
from alerts.models import ChannelOutage, Incident
from alerts.services import incident_record_detection
from detection.models import Clip
from devices import services as device_services
from devices.models import Device, TrustedContact
from gunwatch.routing import websocket_urlpatterns
from tests.alerts.conftest import close_thread_connections  # noqa: F401  (fixture)
from tests.alerts.helpers import classify
from tests.detection.pipeline import encode, impulses
from tests.factories import PoliceStationFactory, PoliceUserFactory, TrustedContactFactory, UserFactory

# "reviewer" is an approved officer of the routed station with the alerts.reviewer permission; unless a
# row says otherwise, they are answered as the plain officer is.
ROLES = ("anon", "owner", "other", "device", "pending", "police", "police_other", "admin", "reviewer")


@dataclass(frozen=True)
class Row:
    method: str
    url: Callable[[Cast], str]
    expect: tuple[int, ...]  # one status per role, in ROLES order
    data: dict[str, Any] = field(default_factory=dict)
    json: bool = False


@dataclass
class Cast:
    users: dict[str, User]
    device: Device
    token: str
    clip: Clip
    incident: Incident
    contact: TrustedContact

    def admin_object(self, app: str, model: str) -> str:
        registered = {m._meta.label_lower: m for m in admin.site._registry}
        model_cls = registered.get(f"{app}.{model}")
        obj = model_cls._default_manager.order_by("pk").first() if model_cls is not None else None
        return str(obj.pk) if obj is not None else "999999"


def S(
    anon: int,
    owner: int,
    other: int,
    device: int,
    pending: int,
    police: int,
    police_other: int,
    admin_: int,
    reviewer: int | None = None,
) -> tuple[int, ...]:
    return (anon, owner, other, device, pending, police, police_other, admin_, police if reviewer is None else reviewer)


def everyone(status: int) -> tuple[int, ...]:
    return (status,) * len(ROLES)


# Pages behind login_required: anonymous visitors and devices (pages ignore device tokens) are sent to log in.
LOGIN = 302


def page(
    owner: int, other: int, pending: int, police: int, police_other: int, admin_: int, reviewer: int | None = None
) -> tuple[int, ...]:
    return S(LOGIN, owner, other, LOGIN, pending, police, police_other, admin_, reviewer)


# API: no credentials → 401, a device token on a person's endpoint → 403.
def api(
    owner: int,
    other: int,
    pending: int,
    police: int,
    police_other: int,
    admin_: int,
    device: int = 403,
    reviewer: int | None = None,
) -> tuple[int, ...]:
    return S(401, owner, other, device, pending, police, police_other, admin_, reviewer)


def only_owner_api(ok: int) -> tuple[int, ...]:
    return api(ok, 404, 404, 404, 404, 404)


def only_owner_page(ok: int) -> tuple[int, ...]:
    return page(ok, 404, 404, 404, 404, 404)


D = "/api/v1/devices/{}"

ROWS: dict[str, Row] = {
    # --- Public and account pages ---
    "": Row("GET", lambda c: "/", page(302, 302, 200, 302, 302, 200)),
    "health": Row("GET", lambda c: "/health", everyone(200)),
    "accounts/signup/": Row("GET", lambda c: "/accounts/signup/", everyone(200)),
    "accounts/signup/police/": Row("GET", lambda c: "/accounts/signup/police/", everyone(200)),
    # The login page sends people already logged in onwards.
    "accounts/login/": Row("GET", lambda c: "/accounts/login/", S(200, 302, 302, 200, 302, 302, 302, 302)),
    "accounts/logout/": Row("POST", lambda c: "/accounts/logout/", everyone(302)),
    "accounts/password_change/": Row("GET", lambda c: "/accounts/password_change/", page(200, 200, 200, 200, 200, 200)),
    "accounts/password_change/done/": Row(
        "GET", lambda c: "/accounts/password_change/done/", page(200, 200, 200, 200, 200, 200)
    ),
    "accounts/password_reset/": Row("GET", lambda c: "/accounts/password_reset/", everyone(200)),
    "accounts/password_reset/done/": Row("GET", lambda c: "/accounts/password_reset/done/", everyone(200)),
    "accounts/reset/<uidb64>/<token>/": Row("GET", lambda c: "/accounts/reset/MQ/bogus-token/", everyone(200)),
    "accounts/reset/done/": Row("GET", lambda c: "/accounts/reset/done/", everyone(200)),
    # --- API: accounts and devices ---
    "api/v1/auth/token": Row(
        "POST",
        lambda c: "/api/v1/auth/token",
        everyone(200),
        data={"username": "alice", "password": "correct-horse-battery"},
    ),
    "api/v1/devices/pair": Row(
        "POST", lambda c: "/api/v1/devices/pair", everyone(400), data={"pairing_code": "WRONG234"}
    ),
    # Only a device token is heard here; a person's session or token is not a device.
    "api/v1/devices/heartbeat": Row(
        "POST",
        lambda c: "/api/v1/devices/heartbeat",
        S(401, 401, 401, 200, 401, 401, 401, 401),
        data={"battery_pct": 50},
        json=True,
    ),
    "api/v1/^devices$": Row("GET", lambda c: "/api/v1/devices", api(200, 200, 200, 200, 200, 200)),
    "api/v1/^devices/(?P<id>[0-9a-fA-F-]{36})$": Row("GET", lambda c: D.format(c.device.code), only_owner_api(200)),
    "api/v1/^devices/(?P<id>[0-9a-fA-F-]{36})/pairing-code$": Row(
        "POST", lambda c: D.format(c.device.code) + "/pairing-code", only_owner_api(201)
    ),
    "api/v1/^devices/(?P<id>[0-9a-fA-F-]{36})/revoke-token$": Row(
        "POST", lambda c: D.format(c.device.code) + "/revoke-token", only_owner_api(200)
    ),
    "api/v1/^devices/(?P<id>[0-9a-fA-F-]{36})/rotate-token$": Row(
        "POST", lambda c: D.format(c.device.code) + "/rotate-token", only_owner_api(201)
    ),
    "api/v1/devices/<uuid:id>/data": Row("POST", lambda c: D.format(c.device.code) + "/data", only_owner_api(200)),
    "api/v1/devices/<uuid:id>/purge": Row("POST", lambda c: D.format(c.device.code) + "/purge", only_owner_api(200)),
    "api/v1/^contacts$": Row("GET", lambda c: "/api/v1/contacts", api(200, 200, 200, 200, 200, 200)),
    "api/v1/^contacts/(?P<pk>[^/.]+)$": Row("GET", lambda c: f"/api/v1/contacts/{c.contact.pk}", only_owner_api(200)),
    # --- API: clips and models (devices and people; each sees only their own clips) ---
    "api/v1/clips": Row("GET", lambda c: "/api/v1/clips", api(200, 200, 200, 200, 200, 200, device=200)),
    "api/v1/clips/<uuid:id>": Row(
        "GET", lambda c: f"/api/v1/clips/{c.clip.code}", api(200, 404, 404, 404, 404, 404, device=200)
    ),
    # No model is active in this cast: everyone let in hears "no_active_model" (404); strangers 401.
    "api/v1/models/active": Row(
        "GET", lambda c: "/api/v1/models/active", api(404, 404, 404, 404, 404, 404, device=404)
    ),
    "api/v1/models/active/download": Row(
        "GET", lambda c: "/api/v1/models/active/download", api(404, 404, 404, 404, 404, 404, device=404)
    ),
    # People only (token or session); a device token is not even recognised here, hence 401.
    "api/v1/predict": Row("POST", lambda c: "/api/v1/predict", api(400, 400, 400, 400, 400, 400, device=401)),
    # --- API: incidents ---
    "api/v1/^incidents$": Row("GET", lambda c: "/api/v1/incidents", api(200, 200, 200, 200, 200, 200)),
    "api/v1/^incidents/(?P<id>[0-9a-fA-F-]{36})$": Row(
        "GET", lambda c: f"/api/v1/incidents/{c.incident.code}", api(200, 404, 404, 200, 404, 200)
    ),
    "api/v1/^incidents/(?P<id>[0-9a-fA-F-]{36})/transition$": Row(
        "POST",
        lambda c: f"/api/v1/incidents/{c.incident.code}/transition",
        api(403, 403, 403, 200, 404, 200),
        data={"action": "acknowledge"},
    ),
    # Any other /api/ path: a JSON 404 for everyone.
    "^api/": Row("GET", lambda c: "/api/v1/no-such-endpoint", everyone(404)),
    "api/schema/": Row("GET", lambda c: "/api/schema/", everyone(200)),
    "api/docs/": Row("GET", lambda c: "/api/docs/", everyone(200)),
    # --- Owner pages ---
    "dashboard/": Row("GET", lambda c: "/dashboard/", page(200, 200, 200, 200, 200, 200)),
    "devices/add/": Row("GET", lambda c: "/devices/add/", page(200, 200, 200, 200, 200, 200)),
    "devices/<uuid:code>/": Row("GET", lambda c: f"/devices/{c.device.code}/", only_owner_page(200)),
    # Post/redirect/get: the new code is shown by the pairing page below.
    "devices/<uuid:code>/pairing-code/": Row(
        "POST", lambda c: f"/devices/{c.device.code}/pairing-code/", only_owner_page(302)
    ),
    # Shows the code kept in the owner's session; without one (as here) the owner is sent to the device page.
    "devices/<uuid:code>/pairing/": Row("GET", lambda c: f"/devices/{c.device.code}/pairing/", only_owner_page(302)),
    # Post/redirect/get as for the pairing code: the new token is shown once by the token page below.
    "devices/<uuid:code>/rotate-token/": Row(
        "POST", lambda c: f"/devices/{c.device.code}/rotate-token/", only_owner_page(302)
    ),
    # Shows the token kept in the owner's session once; without one the owner is sent to the device page.
    "devices/<uuid:code>/token/": Row("GET", lambda c: f"/devices/{c.device.code}/token/", only_owner_page(302)),
    "devices/<uuid:code>/revoke-token/": Row(
        "POST", lambda c: f"/devices/{c.device.code}/revoke-token/", only_owner_page(302)
    ),
    "devices/<uuid:code>/delete/": Row("POST", lambda c: f"/devices/{c.device.code}/delete/", only_owner_page(302)),
    "contacts/": Row("GET", lambda c: "/contacts/", page(200, 200, 200, 200, 200, 200)),
    "contacts/add/": Row("GET", lambda c: "/contacts/add/", page(200, 200, 200, 200, 200, 200)),
    "contacts/<int:pk>/": Row("GET", lambda c: f"/contacts/{c.contact.pk}/", only_owner_page(200)),
    "contacts/<int:pk>/delete/": Row("POST", lambda c: f"/contacts/{c.contact.pk}/delete/", only_owner_page(302)),
    # --- Evidence: the owner, and police who may see the incident (its routed station, admins) ---
    "clips/<uuid:code>/audio": Row("GET", lambda c: f"/clips/{c.clip.code}/audio", page(200, 404, 404, 200, 404, 200)),
    "clips/<uuid:code>/spectrogram.png": Row(
        "GET", lambda c: f"/clips/{c.clip.code}/spectrogram.png", page(200, 404, 404, 200, 404, 200)
    ),
    # The model card's plots, for staff reading it in the admin; a 404 for anyone else reveals nothing.
    "models/plots/<str:name>": Row("GET", lambda c: "/models/plots/roc.png", S(404, 404, 404, 404, 404, 404, 404, 200)),
    # --- Incident pages: the police map and its helpers ---
    "map/": Row("GET", lambda c: "/map/", page(403, 403, 403, 200, 200, 200)),
    "map/devices": Row("GET", lambda c: "/map/devices", page(403, 403, 403, 200, 200, 200)),
    "map/address": Row("GET", lambda c: "/map/address?lat=52.52&lon=13.405", page(403, 403, 403, 200, 200, 200)),
    "incidents/mine/": Row("GET", lambda c: "/incidents/mine/", page(200, 200, 200, 200, 200, 200)),
    "incidents/<uuid:code>/": Row(
        "GET", lambda c: f"/incidents/{c.incident.code}/", page(200, 404, 404, 200, 404, 200)
    ),
    "incidents/<uuid:code>/transition/": Row(
        "POST",
        lambda c: f"/incidents/{c.incident.code}/transition/",
        page(403, 403, 403, 302, 404, 302),
        data={"action": "acknowledge"},
    ),
    # --- Review queue: reviewers only (the reviewer permission, and superusers) ---
    "review/": Row("GET", lambda c: "/review/", page(403, 403, 403, 403, 403, 200, reviewer=200)),
    "review/items": Row("GET", lambda c: "/review/items", page(403, 403, 403, 403, 403, 200, reviewer=200)),
    "review/<uuid:code>/decide": Row(
        "POST",
        lambda c: f"/review/{c.incident.code}/decide",
        page(403, 403, 403, 403, 403, 302, reviewer=302),
        data={"decision": "confirm"},
    ),
    "review/clips/<uuid:code>/audio": Row(
        "GET", lambda c: f"/review/clips/{c.clip.code}/audio", page(403, 403, 403, 403, 403, 200, reviewer=200)
    ),
    "review/clips/<uuid:code>/spectrogram.png": Row(
        "GET",
        lambda c: f"/review/clips/{c.clip.code}/spectrogram.png",
        page(403, 403, 403, 403, 403, 200, reviewer=200),
    ),
    "review/clips/<uuid:code>/waveform.png": Row(
        "GET",
        lambda c: f"/review/clips/{c.clip.code}/waveform.png",
        page(403, 403, 403, 403, 403, 200, reviewer=200),
    ),
    # The same decisions over the API. The cast's incident was dispatched at once (no policy), so a
    # reviewer's decision on it is a 409 "not_in_review"; the queue lists nothing but answers 200.
    "api/v1/^review$": Row("GET", lambda c: "/api/v1/review", api(403, 403, 403, 403, 403, 200, reviewer=200)),
    "api/v1/^review/(?P<id>[0-9a-fA-F-]{36})/confirm$": Row(
        "POST",
        lambda c: f"/api/v1/review/{c.incident.code}/confirm",
        api(403, 403, 403, 403, 403, 409, reviewer=409),
    ),
    "api/v1/^review/(?P<id>[0-9a-fA-F-]{36})/dismiss$": Row(
        "POST",
        lambda c: f"/api/v1/review/{c.incident.code}/dismiss",
        api(403, 403, 403, 403, 403, 409, reviewer=409),
        data={"reason": "false_alarm"},
    ),
    # --- Outcomes: admins only ---
    "outcomes/": Row("GET", lambda c: "/outcomes/", page(403, 403, 403, 403, 403, 200)),
    "outcomes/outcomes.csv": Row("GET", lambda c: "/outcomes/outcomes.csv", page(403, 403, 403, 403, 403, 200)),
    "outcomes/plot/<str:by>.png": Row(
        "GET", lambda c: "/outcomes/plot/station.png", page(403, 403, 403, 403, 403, 200)
    ),
    "api/v1/outcomes": Row("GET", lambda c: "/api/v1/outcomes", api(403, 403, 403, 403, 403, 200)),
    # --- Django admin: the site-wide pages (per-model pages are generated below) ---
    "admin/": Row("GET", lambda c: "/admin/", S(302, 302, 302, 302, 302, 302, 302, 200)),
    # The admin login form is shown to anyone not staff; staff are sent on to the index.
    "admin/login/": Row("GET", lambda c: "/admin/login/", S(200, 200, 200, 200, 200, 200, 200, 302)),
    "admin/logout/": Row("POST", lambda c: "/admin/logout/", everyone(302)),
    "admin/password_change/": Row(
        "GET", lambda c: "/admin/password_change/", S(302, 302, 302, 302, 302, 302, 302, 200)
    ),
    "admin/password_change/done/": Row(
        "GET", lambda c: "/admin/password_change/done/", S(302, 302, 302, 302, 302, 302, 302, 200)
    ),
    "admin/autocomplete/": Row("GET", lambda c: "/admin/autocomplete/", S(302, 302, 302, 302, 302, 302, 302, 403)),
    "admin/jsi18n/": Row("GET", lambda c: "/admin/jsi18n/", S(302, 302, 302, 302, 302, 302, 302, 200)),
    # Django's "view on site" shortcut; no registered model has a get_absolute_url, so there is nowhere to go.
    "admin/r/<path:content_type_id>/<path:object_id>/": Row(
        "GET", lambda c: "/admin/r/1/1/", S(302, 302, 302, 302, 302, 302, 302, 404)
    ),
    "admin/^(?P<app_label>auth|authtoken|accounts|devices|detection|alerts)/$": Row(
        "GET", lambda c: "/admin/devices/", S(302, 302, 302, 302, 302, 302, 302, 200)
    ),
    "admin/(?P<url>.*)$": Row("GET", lambda c: "/admin/no/such/page/", S(302, 302, 302, 302, 302, 302, 302, 404)),
    "admin/accounts/user/<id>/password/": Row(
        "GET",
        lambda c: f"/admin/accounts/user/{c.users['owner'].pk}/password/",
        S(302, 302, 302, 302, 302, 302, 302, 200),
    ),
}

ADMIN_MODEL_ROUTE = re.compile(
    r"^admin/(?P<app>\w+)/(?P<model>\w+)/(?P<rest>|add/|<path:object_id>/(?:|history/|delete/|change/))$"
)
STAFF_ONLY = S(302, 302, 302, 302, 302, 302, 302, 200)
# Admin pages that refuse even staff, on purpose.
ADMIN_OVERRIDES = {
    # Clips come from devices only; the admin cannot invent one.
    "admin/detection/clip/add/": S(302, 302, 302, 302, 302, 302, 302, 403),
    # Channel outages are opened by failed deliveries, never by hand.
    "admin/alerts/channeloutage/add/": S(302, 302, 302, 302, 302, 302, 302, 403),
}


def admin_model_row(route: str) -> Row | None:
    """A ModelAdmin page: staff only. ``<id>/`` alone redirects to ``<id>/change/``, hence 302 for staff too."""
    match = ADMIN_MODEL_ROUTE.match(route)
    if match is None:
        return None
    app, model, rest = match["app"], match["model"], match["rest"]

    def url(c: Cast) -> str:
        return f"/admin/{app}/{model}/" + rest.replace("<path:object_id>", c.admin_object(app, model))

    expect = S(302, 302, 302, 302, 302, 302, 302, 302) if rest == "<path:object_id>/" else STAFF_ONLY
    return Row("GET", url, ADMIN_OVERRIDES.get(route, expect))


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def http_routes() -> list[str]:
    return list(dict.fromkeys(_walk(get_resolver().url_patterns)))


def row_for(route: str) -> Row | None:
    return ROWS.get(route) or admin_model_row(route)


def test_every_route_has_a_row() -> None:
    missing = [route for route in http_routes() if row_for(route) is None]
    assert missing == [], f"add a row to tests/test_access_matrix.py for: {missing}"


def test_every_row_is_a_route() -> None:
    stale = (set(ROWS) | set(ADMIN_OVERRIDES)) - set(http_routes())
    assert stale == set(), f"rows for routes that no longer exist: {stale}"


def test_every_websocket_route_has_a_row() -> None:
    routes = {str(pattern.pattern) for pattern in websocket_urlpatterns}
    assert routes == set(WEBSOCKET_ROWS)


# --- The cast ---------------------------------------------------------------------------------------


@pytest.fixture
def cast(db: None) -> Cast:
    owner = UserFactory(username="alice")
    routed = PoliceStationFactory(name="Mitte", latitude=52.52, longitude=13.405, jurisdiction_radius_km=5)
    elsewhere = PoliceStationFactory(name="Munich", latitude=48.137, longitude=11.575, jurisdiction_radius_km=5)
    users = {
        "owner": owner,
        "other": UserFactory(username="bob"),
        "pending": UserFactory(username="rookie", role=User.Role.POLICE),
        "police": PoliceUserFactory(username="officer", police_station=routed),
        "police_other": PoliceUserFactory(username="faraway", police_station=elsewhere),
        "admin": UserFactory(username="root", role=User.Role.ADMIN, is_staff=True, is_superuser=True),
        "reviewer": _reviewer(PoliceUserFactory(username="reviewer", police_station=routed)),
    }
    _, issued = device_services.device_create(
        owner=owner, name="Kitchen", kind=Device.Kind.HOME, latitude=52.52, longitude=13.405
    )
    paired = device_services.device_pair(pairing_code=issued.code)
    classification = classify(paired.device, lat=52.52, lon=13.405, audio=encode(impulses()), audio_format="flac")
    incident = incident_record_detection(classification=classification)
    assert incident is not None and list(incident.stations.all()) == [routed]
    contact = TrustedContactFactory(owner=owner)
    # Every admin model has a row to open, so its change/delete/history pages answer 200 to staff.
    Group.objects.create(name="dispatchers")
    ChannelOutage.objects.create(
        station=routed, channel="webhook", started_at=timezone.now(), last_failure_at=timezone.now(), failures=3
    )
    Token.objects.create(user=owner)
    return Cast(
        users=users,
        device=paired.device,
        token=paired.token,
        clip=classification.clip,
        incident=incident,
        contact=contact,
    )


def _reviewer(user: User) -> User:
    user.user_permissions.add(Permission.objects.get(codename="reviewer", content_type__app_label="alerts"))
    return User.objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance


def client_for(role: str, cast: Cast) -> Client:
    if role == "anon":
        return Client()
    if role == "device":
        return Client(HTTP_AUTHORIZATION=f"Device {cast.token}")
    client = Client()
    client.force_login(cast.users[role])
    return client


def _request(client: Client, row: Row, cast: Cast) -> int:
    cache.clear()  # throttle counters: every role starts with a full budget
    url = row.url(cast)
    with transaction.atomic():
        if row.method == "GET":
            response = client.get(url)
        elif row.json:
            response = client.post(url, row.data, content_type="application/json")
        else:
            response = client.post(url, row.data)
        if getattr(response, "streaming", False):
            b"".join(response.streaming_content)  # type: ignore[attr-defined]  # streaming responses only
        transaction.set_rollback(True)
    return response.status_code


@pytest.mark.django_db
@pytest.mark.parametrize("route", http_routes())
def test_route_answers_each_role_as_expected(route: str, cast: Cast) -> None:
    row = row_for(route)
    assert row is not None, f"no row for {route}"
    got = tuple(_request(client_for(role, cast), row, cast) for role in ROLES)
    mismatches = {role: (want, have) for role, want, have in zip(ROLES, row.expect, got, strict=True) if want != have}
    assert mismatches == {}, f"{row.method} {row.url(cast)}: role → (expected, got)"


def test_pages_refuse_devices_by_sending_them_to_log_in(cast: Cast) -> None:
    # The 302s in the matrix for the device role must be the login redirect, not some other redirect.
    response = client_for("device", cast).get(f"/clips/{cast.clip.code}/audio")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# --- The websocket ------------------------------------------------------------------------------------

WEBSOCKET_ROWS: dict[str, tuple[bool, ...]] = {
    # Approved police and admins get the live feed; everyone else is closed with CLOSE_FORBIDDEN.
    "ws/incidents/": (False, False, False, False, False, True, True, True, True),
    # The live review queue: reviewers only (the reviewer permission, and the superuser).
    "ws/review/": (False, False, False, False, False, False, False, True, True),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize(
    ("route", "role", "accepted"),
    [(route, role, ok) for route, row in WEBSOCKET_ROWS.items() for role, ok in zip(ROLES, row, strict=True)],
)
async def test_websocket_accepts_each_role_as_expected(route: str, role: str, accepted: bool) -> None:
    from asgiref.sync import sync_to_async

    from gunwatch.asgi import application

    def make_user() -> Any:
        station = PoliceStationFactory()
        return {
            "anon": AnonymousUser(),
            "device": AnonymousUser(),  # the websocket stack reads sessions only; a device token is nobody
            "owner": UserFactory(username="alice"),
            "other": UserFactory(username="bob"),
            "pending": UserFactory(username="rookie", role=User.Role.POLICE),
            "police": PoliceUserFactory(username="officer", police_station=station),
            "police_other": PoliceUserFactory(username="faraway", police_station=PoliceStationFactory()),
            "admin": UserFactory(username="root", role=User.Role.ADMIN, is_staff=True, is_superuser=True),
            "reviewer": _reviewer(PoliceUserFactory(username="reviewer", police_station=station)),
        }[role]

    user = await sync_to_async(make_user)()
    communicator = WebsocketCommunicator(application, f"/{route}", headers=[(b"origin", b"http://127.0.0.1")])
    communicator.scope["user"] = user
    connected, code = await communicator.connect(timeout=5)
    assert connected is accepted
    if connected:
        await communicator.disconnect()
    else:
        assert code == consumers.CLOSE_FORBIDDEN
