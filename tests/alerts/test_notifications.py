from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.utils import timezone

from alerts.delivery import notification_deliver, retry_countdown
from alerts.models import Incident, Notification
from alerts.services import incident_record_detection
from alerts.tasks import enqueue_notifications, requeue_stale_notifications, send_notification
from alerts.transports import TransportError
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory, PoliceStationFactory, TrustedContactFactory, UserFactory

PRECISE = (52.523456, 13.412345)


@pytest.fixture
def scene(owner, station):
    """An owner's device with two contacts (one limited to another device) near a station."""
    owner.phone = "+4915100000001"
    owner.save()
    device = DeviceFactory(owner=owner, name="Balcony", latitude=PRECISE[0], longitude=PRECISE[1])
    other_device = DeviceFactory(owner=owner, name="Garage", latitude=PRECISE[0], longitude=PRECISE[1])
    mum = TrustedContactFactory(
        owner=owner, name="Mum", email="mum@example.org", phone="+4915100000002", channels=["email", "sms"]
    )
    limited = TrustedContactFactory(owner=owner, name="Neighbour", channels=["email"])
    limited.devices.add(other_device)
    station.webhook_url = "https://cad.example.org/hook"
    station.webhook_secret = "topsecret"
    station.save()
    return {"device": device, "other_device": other_device, "mum": mum, "limited": limited, "station": station}


def _open(device, django_capture_on_commit_callbacks, **kwargs) -> tuple[Incident, list[int]]:
    with mock.patch("alerts.tasks.enqueue_notifications") as enqueue, django_capture_on_commit_callbacks(execute=True):
        incident = incident_record_detection(classification=classify(device, **kwargs))
    return incident, [pk for call in enqueue.call_args_list for pk in call.args[0]]


def test_opening_queues_owner_contacts_and_stations_once_each(scene, django_capture_on_commit_callbacks) -> None:
    incident, enqueued = _open(scene["device"], django_capture_on_commit_callbacks)
    rows = {(n.recipient_key, n.channel, n.target) for n in incident.notifications.all()}
    owner = scene["device"].owner
    station = scene["station"]
    assert rows == {
        (f"user:{owner.pk}", "email", owner.email),
        (f"user:{owner.pk}", "sms", owner.phone),
        (f"contact:{scene['mum'].pk}", "email", "mum@example.org"),
        (f"contact:{scene['mum'].pk}", "sms", "+4915100000002"),
        (f"station:{station.pk}", "email", station.contact_email),
        (f"station:{station.pk}", "webhook", "https://cad.example.org/hook"),
    }
    assert sorted(enqueued) == sorted(incident.notifications.values_list("pk", flat=True))
    assert set(incident.notifications.values_list("status", flat=True)) == {"queued"}
    # The contact limited to the garage device is not told about the balcony device.
    assert not incident.notifications.filter(contact=scene["limited"]).exists()


def test_follow_ups_do_not_notify_again_but_new_owners_are_told(scene, django_capture_on_commit_callbacks) -> None:
    shot = timezone.now()
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks, recorded_at=shot)
    before = incident.notifications.count()
    again, enqueued = _open(
        scene["device"], django_capture_on_commit_callbacks, recorded_at=shot + timedelta(seconds=40)
    )
    assert again.pk == incident.pk
    assert enqueued == []
    assert incident.notifications.count() == before
    stranger = UserFactory(username="carol")
    their_device = DeviceFactory(owner=stranger, latitude=PRECISE[0] + 0.002, longitude=PRECISE[1])
    joined, enqueued = _open(their_device, django_capture_on_commit_callbacks, recorded_at=shot)
    assert joined.pk == incident.pk
    new_rows = Notification.objects.filter(pk__in=enqueued)
    assert {(n.recipient_key, n.channel) for n in new_rows} == {(f"user:{stranger.pk}", "email")}


class RetryRequested(Exception):
    pass


def run_like_a_worker(pk: int, max_deliveries: int = 20) -> tuple[str, list[float]]:
    """Run the task the way a worker would, redelivering it whenever it asks for a retry.

    Returns the final result and the countdowns the task asked for.
    """
    countdowns: list[float] = []
    for _ in range(max_deliveries):
        with mock.patch.object(send_notification, "retry", side_effect=RetryRequested) as retry:
            try:
                return send_notification.run(pk), countdowns
            except RetryRequested:
                countdowns.append(retry.call_args.kwargs["countdown"])
    raise AssertionError("the task kept asking for retries")


def _send_all(incident: Incident) -> None:
    for pk in incident.notifications.values_list("pk", flat=True):
        run_like_a_worker(pk)


def test_contacts_get_a_coarse_location_and_police_the_precise_one(scene, django_capture_on_commit_callbacks) -> None:
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks)
    with (
        mock.patch("alerts.transports.ConsoleSmsBackend.send") as sms,
        mock.patch("alerts.transports.requests.post", return_value=mock.Mock(status_code=204, text="")),
    ):
        _send_all(incident)
    by_recipient = {message.to[0]: message.body for message in mail.outbox}
    for private in ("mum@example.org", scene["device"].owner.email):
        assert "52.52, 13.41" in by_recipient[private]
        assert "52.5234" not in by_recipient[private] and "13.4123" not in by_recipient[private]
    assert "52.523456, 13.412345" in by_recipient[scene["station"].contact_email]
    assert f"/incidents/{incident.code}/" in by_recipient[scene["station"].contact_email]
    texts = {call.kwargs["to"]: call.kwargs["body"] for call in sms.call_args_list}
    assert "52.52, 13.41" in texts["+4915100000002"] and "52.5234" not in texts["+4915100000002"]
    assert "openstreetmap.org/?mlat=52.52&mlon=13.41" in texts["+4915100000002"]
    assert set(incident.notifications.values_list("status", flat=True)) == {"sent"}
    assert incident.events.filter(kind="notified").count() == 6


def _one_email(scene, django_capture_on_commit_callbacks) -> Notification:
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks)
    return incident.notifications.get(recipient_kind="contact", channel="email")


def test_transient_failures_are_retried_until_sent(scene, django_capture_on_commit_callbacks) -> None:
    notification = _one_email(scene, django_capture_on_commit_callbacks)
    with mock.patch(
        "alerts.transports.EmailTransport.send",
        side_effect=[TransportError("mail server down"), TransportError("mail server down"), None],
    ) as send:
        result, countdowns = run_like_a_worker(notification.pk)
    notification.refresh_from_db()
    assert result == "sent"
    assert len(countdowns) == 2 and countdowns[1] > countdowns[0]
    assert send.call_count == 3
    assert (notification.status, notification.attempts, notification.last_error) == ("sent", 3, "")
    assert notification.sent_at is not None


def test_retries_back_off_exponentially(scene, django_capture_on_commit_callbacks, settings) -> None:
    settings.ALERT_NOTIFY_BACKOFF_S = 5
    assert [retry_countdown(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry_countdown(30) == 3600
    notification = _one_email(scene, django_capture_on_commit_callbacks)
    Notification.objects.filter(pk=notification.pk).update(attempts=2)
    with (
        mock.patch("alerts.transports.EmailTransport.send", side_effect=TransportError("busy")),
        mock.patch.object(send_notification, "retry", side_effect=RuntimeError("retry requested")) as retry,
        pytest.raises(RuntimeError),
    ):
        send_notification.run(notification.pk)
    countdown = retry.call_args.kwargs["countdown"]
    assert 0.8 * 20 <= countdown <= 1.2 * 20  # third attempt: 4 * base, with jitter
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("queued", 3)


def test_permanent_failure_stops_retrying(scene, django_capture_on_commit_callbacks) -> None:
    notification = _one_email(scene, django_capture_on_commit_callbacks)
    with mock.patch(
        "alerts.transports.EmailTransport.send", side_effect=TransportError("550 no such mailbox", permanent=True)
    ) as send:
        result, countdowns = run_like_a_worker(notification.pk)
    notification.refresh_from_db()
    assert (result, countdowns) == ("failed", [])
    assert send.call_count == 1
    assert (notification.status, notification.attempts) == ("failed", 1)
    assert "no such mailbox" in notification.last_error
    assert notification.incident.events.filter(kind="notification_failed").count() == 1


def test_transient_failures_give_up_after_max_retries(scene, django_capture_on_commit_callbacks, settings) -> None:
    settings.ALERT_NOTIFY_MAX_RETRIES = 2
    notification = _one_email(scene, django_capture_on_commit_callbacks)
    with mock.patch("alerts.transports.EmailTransport.send", side_effect=TransportError("timeout")) as send:
        result, countdowns = run_like_a_worker(notification.pk)
    notification.refresh_from_db()
    assert result == "failed" and len(countdowns) == 2
    assert send.call_count == 3
    assert (notification.status, notification.attempts) == ("failed", 3)


def test_redelivered_task_never_sends_twice(scene, django_capture_on_commit_callbacks) -> None:
    notification = _one_email(scene, django_capture_on_commit_callbacks)
    with mock.patch("alerts.transports.EmailTransport.send") as send:
        first = run_like_a_worker(notification.pk)[0]
        second = run_like_a_worker(notification.pk)[0]
    assert (first, second) == ("sent", "skipped")
    assert send.call_count == 1
    notification.refresh_from_db()
    assert notification.attempts == 1


def test_a_row_left_sending_by_a_crashed_worker_is_not_resent(scene, django_capture_on_commit_callbacks) -> None:
    notification = _one_email(scene, django_capture_on_commit_callbacks)
    Notification.objects.filter(pk=notification.pk).update(status="sending", attempts=1)
    with mock.patch("alerts.transports.EmailTransport.send") as send:
        assert notification_deliver(notification_id=notification.pk) == "skipped"
    send.assert_not_called()


def test_webhook_is_signed_over_timestamp_and_raw_body(scene, django_capture_on_commit_callbacks) -> None:
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks)
    hook = incident.notifications.get(channel="webhook")
    with mock.patch("alerts.transports.requests.post", return_value=mock.Mock(status_code=200, text="ok")) as post:
        assert run_like_a_worker(hook.pk)[0] == "sent"
    url = post.call_args.args[0]
    body: bytes = post.call_args.kwargs["data"]
    headers = post.call_args.kwargs["headers"]
    assert url == "https://cad.example.org/hook"
    timestamp = headers["X-GunWatch-Timestamp"]
    assert abs(int(timestamp) - timezone.now().timestamp()) < 60
    expected = hmac.new(b"topsecret", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-GunWatch-Signature"] == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["incident"]["id"] == str(incident.code)
    assert payload["incident"]["latitude"] == PRECISE[0]
    assert payload["incident"]["longitude"] == PRECISE[1]
    # A different secret must not verify.
    forged = hmac.new(b"guess", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-GunWatch-Signature"] != f"sha256={forged}"


@pytest.mark.parametrize(("status", "outcome", "calls"), [(503, "failed", 3), (410, "failed", 1)])
def test_webhook_server_errors_retry_and_client_errors_do_not(
    scene, django_capture_on_commit_callbacks, settings, status, outcome, calls
) -> None:
    settings.ALERT_NOTIFY_MAX_RETRIES = 2
    # Without the police retry window the station's webhook has the ordinary budget (the window: test_outages).
    settings.ALERT_NOTIFY_POLICE_RETRY_HOURS = 0
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks)
    hook = incident.notifications.get(channel="webhook")
    with mock.patch("alerts.transports.requests.post", return_value=mock.Mock(status_code=status, text="no")) as post:
        assert run_like_a_worker(hook.pk)[0] == outcome
    assert post.call_count == calls
    hook.refresh_from_db()
    assert f"HTTP {status}" in hook.last_error


def test_http_sms_backend_posts_to_the_gateway(scene, django_capture_on_commit_callbacks, settings) -> None:
    settings.SMS_BACKEND = "alerts.transports.HttpSmsBackend"
    settings.SMS_GATEWAY_URL = "https://sms.example.org/send"
    settings.SMS_GATEWAY_USER = "gw"
    settings.SMS_GATEWAY_PASSWORD = "pw"
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks)
    sms = incident.notifications.get(recipient_kind="contact", channel="sms")
    with mock.patch("alerts.transports.requests.post", return_value=mock.Mock(status_code=202, text="")) as post:
        assert run_like_a_worker(sms.pk)[0] == "sent"
    assert post.call_args.args[0] == "https://sms.example.org/send"
    assert post.call_args.kwargs["auth"] == ("gw", "pw")
    assert post.call_args.kwargs["json"]["to"] == "+4915100000002"
    assert "GunWatch" in post.call_args.kwargs["json"]["text"]


def test_invalid_phone_number_fails_permanently(scene, django_capture_on_commit_callbacks) -> None:
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks)
    sms = incident.notifications.get(recipient_kind="contact", channel="sms")
    Notification.objects.filter(pk=sms.pk).update(target="0151 not a number")
    with mock.patch("alerts.transports.ConsoleSmsBackend.send") as send:
        assert run_like_a_worker(sms.pk)[0] == "failed"
    send.assert_not_called()


def test_stale_queued_rows_are_requeued(scene, django_capture_on_commit_callbacks) -> None:
    incident, _ = _open(scene["device"], django_capture_on_commit_callbacks)
    stale = incident.notifications.get(recipient_kind="contact", channel="email")
    Notification.objects.filter(pk=stale.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    Notification.objects.exclude(pk=stale.pk).update(status="sent")
    with mock.patch("alerts.tasks.enqueue_notifications") as enqueue:
        assert requeue_stale_notifications() == 1
    enqueue.assert_called_once_with([stale.pk])


def test_without_a_broker_notifications_are_sent_in_process_with_retries(
    scene, django_capture_on_commit_callbacks, settings
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.GUNWATCH_EAGER_IN_THREAD = False
    notification = _one_email(scene, django_capture_on_commit_callbacks)
    with mock.patch("alerts.transports.EmailTransport.send", side_effect=[TransportError("busy"), None]) as send:
        enqueue_notifications([notification.pk])
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, send.call_count) == ("sent", 2, 2)


def test_station_fixture_without_contacts_or_hooks_gets_no_rows(owner, db) -> None:
    PoliceStationFactory(name="Silent", contact_email="", latitude=52.52, longitude=13.405)
    owner.email = ""
    owner.save()
    device = DeviceFactory(owner=owner)
    incident = incident_record_detection(classification=classify(device))
    assert incident.notifications.count() == 0
