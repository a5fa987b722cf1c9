"""Sign-up, roles, police approval, password reset."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.core import mail
from django.test import Client, RequestFactory

from accounts.admin import UserAdmin
from accounts.models import User
from accounts.services import police_account_approve
from gunwatch.exceptions import ApplicationError
from tests.factories import PoliceStationFactory

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-unusual-passphrase-42"


def signup(client: Client, url: str, **extra: object) -> Any:
    data = {"username": "dana", "email": "dana@example.org", "password1": PASSWORD, "password2": PASSWORD, **extra}
    return client.post(url, data)


def test_owner_signup_logs_in_and_lands_on_the_dashboard() -> None:
    client = Client()
    response = signup(client, "/accounts/signup/")
    assert response.status_code == 302
    user = User.objects.get(username="dana")
    assert user.role == User.Role.OWNER
    assert client.get("/", follow=True).redirect_chain[-1][0] == "/dashboard/"


def test_signup_with_mismatched_passwords_shows_the_error() -> None:
    response = Client().post(
        "/accounts/signup/", {"username": "dana", "email": "d@example.org", "password1": PASSWORD, "password2": "other"}
    )
    assert response.status_code == 200
    assert b"didn" in response.content  # "The two password fields didn't match."
    assert not User.objects.exists()


def test_police_signup_is_only_a_request() -> None:
    station = PoliceStationFactory(name="Kreuzberg")
    client = Client()
    response = signup(client, "/accounts/signup/police/", badge_number="B-17", police_station=station.pk)
    assert response.status_code == 302
    officer = User.objects.get(username="dana")
    assert officer.role == User.Role.POLICE
    assert not officer.police_approved
    assert not officer.has_police_access
    page = client.get("/")
    assert b"awaiting approval" in page.content


def test_approval_needs_a_station_and_grants_access(admin_user) -> None:
    officer = User.objects.create_user("eve", role=User.Role.POLICE)
    with pytest.raises(ApplicationError) as excinfo:
        police_account_approve(user=officer, station=None, approved_by=admin_user)
    assert excinfo.value.code == "station_required"
    station = PoliceStationFactory()
    police_account_approve(user=officer, station=station, approved_by=admin_user)
    officer.refresh_from_db()
    assert officer.has_police_access
    assert officer.police_approved_by == admin_user
    assert officer.police_approved_at is not None


def test_owner_accounts_cannot_be_approved_as_police(admin_user, owner) -> None:
    with pytest.raises(ApplicationError):
        police_account_approve(user=owner, station=PoliceStationFactory(), approved_by=admin_user)


def test_admin_action_approves_selected_police_accounts(admin_user) -> None:
    station = PoliceStationFactory()
    ready = User.objects.create_user("ready", role=User.Role.POLICE, police_station=station)
    stationless = User.objects.create_user("stationless", role=User.Role.POLICE)
    request = RequestFactory().post("/admin/accounts/user/")
    request.user = admin_user
    sent: list[str] = []
    model_admin = UserAdmin(User, site)
    model_admin.message_user = lambda request, message, level=None: sent.append(str(message))  # type: ignore[method-assign, assignment, misc]  # a stand-in that records
    model_admin.approve_police_accounts(request, User.objects.filter(pk__in=[ready.pk, stationless.pk]))
    ready.refresh_from_db()
    stationless.refresh_from_db()
    assert ready.has_police_access
    assert not stationless.police_approved
    assert any("station" in message for message in sent)


def test_admin_action_works_through_the_admin_changelist(admin_user) -> None:
    station = PoliceStationFactory()
    officer = User.objects.create_user("frank", role=User.Role.POLICE, police_station=station)
    client = Client()
    client.force_login(admin_user)
    response = client.post(
        "/admin/accounts/user/",
        {"action": "approve_police_accounts", "_selected_action": [officer.pk]},
        follow=True,
    )
    assert response.status_code == 200
    officer.refresh_from_db()
    assert officer.police_approved


def _change_form_data(client: Client, user: User) -> dict[str, Any]:
    """What the admin's change form would post back untouched for this user."""
    form = client.get(f"/admin/accounts/user/{user.pk}/change/").context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if value is None or name == "password":
            continue
        data[name] = [v.pk if hasattr(v, "pk") else v for v in value] if isinstance(value, list | tuple) else value
    data["date_joined_0"], data["date_joined_1"] = user.date_joined.strftime("%Y-%m-%d"), "00:00:00"
    for name in ("groups", "user_permissions", "last_login"):
        data.pop(name, None)
    return {k: v for k, v in data.items() if v is not False}


def test_ticking_police_approved_in_the_admin_approves_like_the_action(admin_user, mailoutbox) -> None:
    station = PoliceStationFactory()
    officer = User.objects.create_user("gina", email="gina@example.org", role=User.Role.POLICE, police_station=station)
    client = Client()
    client.force_login(admin_user)
    data = _change_form_data(client, officer) | {"police_approved": "on"}
    response = client.post(f"/admin/accounts/user/{officer.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    officer.refresh_from_db()
    assert officer.has_police_access
    assert officer.police_approved_by == admin_user and officer.police_approved_at is not None
    assert [m.to for m in mailoutbox] == [["gina@example.org"]]
    assert "approved" in mailoutbox[0].subject


def test_ticking_police_approved_without_a_station_is_refused_on_the_form(admin_user, mailoutbox) -> None:
    officer = User.objects.create_user("hal", email="hal@example.org", role=User.Role.POLICE)
    client = Client()
    client.force_login(admin_user)
    data = _change_form_data(client, officer) | {"police_approved": "on"}
    response = client.post(f"/admin/accounts/user/{officer.pk}/change/", data)
    assert response.status_code == 200
    assert "police station" in str(response.context["adminform"].form.errors["police_station"])
    officer.refresh_from_db()
    assert not officer.police_approved
    assert mailoutbox == []


def test_password_reset_sends_an_email(owner) -> None:
    response = Client().post("/accounts/password_reset/", {"email": owner.email})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    assert "/accounts/reset/" in mail.outbox[0].body


def test_password_change_works(owner) -> None:
    client = Client()
    client.force_login(owner)
    response = client.post(
        "/accounts/password_change/",
        {"old_password": "correct-horse-battery", "new_password1": PASSWORD, "new_password2": PASSWORD},
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)


def test_login_and_logout() -> None:
    User.objects.create_user("gina", password=PASSWORD)
    client = Client()
    response = client.post("/accounts/login/", {"username": "gina", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/dashboard/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/dashboard/").status_code == 302


def test_admin_landing_lists_pending_police(admin_user, pending_police) -> None:
    client = Client()
    client.force_login(admin_user)
    response = client.get("/")
    assert response.status_code == 200
    assert pending_police.username.encode() in response.content
