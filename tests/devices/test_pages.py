"""Owner pages: dashboard, add-device flow, detail actions, contacts; never another owner's data."""

from __future__ import annotations

import re

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
    response = web.post("/devices/add/", {"name": "Shed", "kind": "home", "latitude": "52.5",
                                          "longitude": "13.4", "heartbeat_interval_s": "60"})
    assert response.status_code == 200
    code = re.search(r'id="pairing-code">(\w+)<', response.content.decode()).group(1)
    device = Device.objects.get(owner=owner, name="Shed")
    assert device_pair(pairing_code=code).device == device


def test_add_device_form_errors_are_shown(web) -> None:
    response = web.post("/devices/add/", {"name": "", "kind": "home", "latitude": "52.5",
                                          "heartbeat_interval_s": "60"})
    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not Device.objects.exists()


def test_detail_rotate_and_revoke_token(web, paired_device) -> None:
    device, token = paired_device
    page = web.get(f"/devices/{device.code}/").content.decode()
    assert token.split(".")[0] in page  # the key prefix is shown...
    assert token.split(".")[1] not in page  # ...never the secret
    rotated = web.post(f"/devices/{device.code}/rotate-token/").content.decode()
    new_token = re.search(r'id="device-token">([^<]+)<', rotated).group(1)
    assert new_token != token
    web.post(f"/devices/{device.code}/revoke-token/")
    assert not DeviceToken.objects.filter(device=device, revoked_at__isnull=True).exists()


def test_detail_edit_settings(web, device) -> None:
    response = web.post(f"/devices/{device.code}/", {"name": "Renamed", "kind": "home", "latitude": "1",
                                                     "longitude": "2", "heartbeat_interval_s": "120",
                                                     "sensitivity_threshold": "0.7"})
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
    response = web.post("/contacts/add/", {"name": "Sam", "relation": "brother", "email": "sam@example.org",
                                           "phone": "+4915112345678", "channels": ["email", "sms"],
                                           "devices": [device.pk]})
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
    response = web.post("/contacts/add/", {"name": "Sam", "email": "s@example.org", "channels": ["email"],
                                           "devices": [foreign.pk]})
    assert response.status_code == 200
    assert not TrustedContact.objects.exists()
