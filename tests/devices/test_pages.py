"""Owner pages: dashboard, add-device flow, detail actions, contacts; never another owner's data."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client

from devices.models import Device, DeviceToken, TrustedContact
from devices.services import device_pair
from tests.factories import DeviceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def other_web(other_owner) -> Client:
    client = Client()
    client.force_login(other_owner)
    return client


def test_pages_need_login() -> None:
    for url in ["/dashboard/", "/devices/add/", "/contacts/"]:
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_dashboard_shows_my_devices_with_their_state_and_a_map(web, owner, other_owner) -> None:
    DeviceFactory(owner=owner, name="Garage")
    DeviceFactory(owner=other_owner, name="SecretBunker")
    page = web.get("/dashboard/").content.decode()
    assert "Garage" in page
    assert "SecretBunker" not in page
    assert 'id="device-map"' in page
    assert "/static/leaflet/leaflet.js" in page  # served locally, no CDN


def test_add_device_shows_a_pairing_code_that_pairs(web, owner) -> None:
    # POST-redirect-GET: the code is shown on a page a reload cannot turn into a second device.
    response = web.post(
        "/devices/add/",
        {"name": "Shed", "kind": "home", "latitude": "52.5", "longitude": "13.4", "heartbeat_interval_s": "60"},
        follow=True,
    )
    assert response.status_code == 200
    code = re.search(r'id="pairing-code">(\w+)<', response.content.decode()).group(1)
    device = Device.objects.get(owner=owner, name="Shed")
    assert device_pair(pairing_code=code).device == device


def test_add_device_form_errors_are_shown(web) -> None:
    response = web.post("/devices/add/", {"name": "", "kind": "home", "latitude": "52.5", "heartbeat_interval_s": "60"})
    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not Device.objects.exists()


def test_detail_rotate_and_revoke_token(web, paired_device) -> None:
    device, token = paired_device
    page = web.get(f"/devices/{device.code}/").content.decode()
    assert token.split(".")[0] in page  # the key prefix is shown...
    assert token.split(".")[1] not in page  # ...never the secret
    rotated = web.post(f"/devices/{device.code}/rotate-token/", follow=True)
    assert rotated.redirect_chain == [(f"/devices/{device.code}/token/", 302)]
    assert rotated["Cache-Control"] == "no-store"
    new_token = re.search(r'id="device-token">([^<]+)<', rotated.content.decode()).group(1)
    assert new_token != token
    key = DeviceToken.objects.get(device=device, revoked_at__isnull=True).key
    assert key in new_token.split(".")[0]
    # A reload of the token page neither shows the secret again nor rotates the token.
    again = web.get(f"/devices/{device.code}/token/", follow=True)
    assert new_token not in again.content.decode()
    assert b"shown only once" in again.content
    assert DeviceToken.objects.get(device=device, revoked_at__isnull=True).key == key
    web.post(f"/devices/{device.code}/revoke-token/")
    assert not DeviceToken.objects.filter(device=device, revoked_at__isnull=True).exists()


def test_detail_edit_settings(web, device) -> None:
    response = web.post(
        f"/devices/{device.code}/",
        {
            "name": "Renamed",
            "kind": "home",
            "latitude": "1",
            "longitude": "2",
            "heartbeat_interval_s": "120",
            "sensitivity_threshold": "0.7",
        },
    )
    assert response.status_code == 302
    device.refresh_from_db()
    assert (device.name, device.heartbeat_interval_s, device.sensitivity_threshold) == ("Renamed", 120, 0.7)


@pytest.mark.parametrize("suffix", ["", "pairing-code/", "rotate-token/", "revoke-token/", "delete/"])
def test_another_owners_device_pages_are_404(other_web, device, suffix: str) -> None:
    method = other_web.get if suffix == "" else other_web.post
    assert method(f"/devices/{device.code}/{suffix}").status_code == 404
    assert Device.objects.filter(pk=device.pk).exists()


def test_delete_device(web, device) -> None:
    assert web.post(f"/devices/{device.code}/delete/").status_code == 302
    assert not Device.objects.filter(pk=device.pk).exists()


def test_contacts_pages(web, owner, other_web) -> None:
    device = DeviceFactory(owner=owner, name="Car")
    response = web.post(
        "/contacts/add/",
        {
            "name": "Sam",
            "relation": "brother",
            "email": "sam@example.org",
            "phone": "+4915112345678",
            "channels": ["email", "sms"],
            "devices": [device.pk],
        },
    )
    assert response.status_code == 302
    contact = TrustedContact.objects.get(owner=owner)
    assert contact.channels == ["email", "sms"]
    assert list(contact.devices.all()) == [device]
    assert "Sam" in web.get("/contacts/").content.decode()
    assert other_web.get(f"/contacts/{contact.pk}/").status_code == 404
    assert other_web.post(f"/contacts/{contact.pk}/delete/").status_code == 404
    assert web.post(f"/contacts/{contact.pk}/delete/").status_code == 302
    assert not TrustedContact.objects.exists()


def test_contact_form_rejects_bad_phone(web) -> None:
    response = web.post("/contacts/add/", {"name": "Sam", "phone": "12345", "channels": ["sms"]})
    assert response.status_code == 200
    assert b"E.164" in response.content
    assert not TrustedContact.objects.exists()


def test_contact_form_offers_only_my_devices(web, other_owner) -> None:
    foreign = DeviceFactory(owner=other_owner)
    response = web.post(
        "/contacts/add/", {"name": "Sam", "email": "s@example.org", "channels": ["email"], "devices": [foreign.pk]}
    )
    assert response.status_code == 200
    assert not TrustedContact.objects.exists()


def test_reloading_the_pairing_page_never_creates_a_second_device(web, owner) -> None:
    response = web.post(
        "/devices/add/",
        {"name": "Shed", "kind": "home", "latitude": "52.5", "longitude": "13.4", "heartbeat_interval_s": "60"},
    )
    assert response.status_code == 302
    pairing_url = response["Location"]
    first = web.get(pairing_url).content.decode()
    again = web.get(pairing_url).content.decode()
    assert Device.objects.filter(owner=owner, name="Shed").count() == 1
    code = re.search(r'id="pairing-code">(\w+)<', first).group(1)
    assert code in again
    # The whole command, with the server, and a button to copy it.
    assert f"python -m devices.agent pair {code} --server http://testserver" in first
    assert 'id="copy-command"' in first
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", first)  # the one time format, with its zone


def test_someone_elses_pairing_page_is_404(web, other_web, owner) -> None:
    location = web.post(
        "/devices/add/",
        {"name": "Shed", "kind": "home", "latitude": "52.5", "longitude": "13.4", "heartbeat_interval_s": "60"},
    )["Location"]
    assert other_web.get(location).status_code == 404


def test_dashboard_is_a_health_view_in_natural_order(web, owner) -> None:
    from django.utils import timezone

    from devices.services import heartbeat_record

    for name in ["Sim home 10", "Sim home 2", "Never paired"]:
        DeviceFactory(owner=owner, name=name)
    online = DeviceFactory(owner=owner, name="Sim home 1")
    Device.objects.filter(name__in=["Sim home 10", "Sim home 2", "Sim home 1"]).update(status=Device.Status.ACTIVE)
    Device.objects.filter(name="Never paired").update(status=Device.Status.PENDING)
    online.refresh_from_db()
    heartbeat_record(
        device=online,
        data={
            "battery_pct": 71,
            "queue_length": 2,
            "free_storage_mb": 2048,
            "mic_level_dbfs": -41.26,
            "clock_source": "gps",
            "uptime_s": 5400,
        },
    )
    Device.objects.filter(name="Sim home 10").update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    page = web.get("/dashboard/").content.decode()
    names = re.findall(r'<tr data-health="(\w+)">\s*<td><a href="[^"]+">([^<]+)</a>', page)
    assert [name for _, name in names] == ["Never paired", "Sim home 1", "Sim home 2", "Sim home 10"]
    health = dict((name, state) for state, name in names)
    assert health == {
        "Never paired": "awaiting_pairing",
        "Sim home 1": "online",
        "Sim home 2": "no_heartbeat",
        "Sim home 10": "offline",
    }
    assert re.search(r'data-count="online">1<', page) and re.search(r'data-count="offline">1<', page)
    assert re.search(r'data-count="awaiting_pairing">1<', page)
    assert "71 %" in page
    detail = web.get(f"/devices/{online.code}/").content.decode()
    for shown in [
        "Clips waiting to upload",
        "Free storage</dt><dd>2.0 GB",
        "-41.3 dBFS",
        "GPS (precise)",
        "1 h 30 min",
    ]:
        assert shown in detail


def test_device_page_shows_clips_the_agent_set_aside_or_had_refused(web, owner) -> None:
    from devices.services import heartbeat_record

    device = DeviceFactory(owner=owner, name="Car")
    heartbeat_record(device=device, data={"queue_length": 0, "rejected_clips": 2, "set_aside_clips": 1})
    detail = web.get(f"/devices/{device.code}/").content.decode()
    assert "Clips set aside after repeated server errors (kept on the device)</dt><dd>1" in detail
    assert "Clips the server refused (kept on the device)</dt><dd>2" in detail
