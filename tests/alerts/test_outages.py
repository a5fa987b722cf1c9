"""A dispatch system down for longer than the ordinary retry budget still gets its police alerts.

Time is controlled with time-machine: each retry the task asks for moves the clock by its countdown,
so hours of outage run in a fraction of a second.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from alerts.delivery import retry_countdown
from alerts.models import ChannelOutage, Incident, Notification
from alerts.services import incident_record_detection
from alerts.tasks import requeue_stale_notifications, send_notification
from alerts.transports import TransportError, retry_after_seconds
from tests.alerts.helpers import classify
from tests.factories import DeviceFactory

START = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


class RetryRequested(Exception):
    pass


@pytest.fixture
def hooked_station(station, admin_user):
    station.webhook_url = "https://cad.example.org/hook"
    station.contact_email = ""
    station.save()
    return station


def _open_incident(owner, django_capture_on_commit_callbacks, at: datetime) -> Incident:
    device = DeviceFactory(owner=owner, latitude=52.52, longitude=13.405)
    with mock.patch("alerts.tasks.enqueue_notifications"), django_capture_on_commit_callbacks(execute=True):
        return incident_record_detection(classification=classify(device, recorded_at=at))


class Endpoint:
    """A webhook receiver answering ``status`` until ``recovers_at``, then 204; records every call's time."""

    def __init__(self, recovers_at: datetime, status: int = 500, headers: dict[str, str] | None = None) -> None:
        self.recovers_at = recovers_at
        self.status = status
        self.headers = headers or {}
        self.calls: list[datetime] = []

    def __call__(self, *args: Any, **kwargs: Any) -> mock.Mock:
        now = timezone.now()
        self.calls.append(now)
        if now < self.recovers_at:
            return mock.Mock(status_code=self.status, text="dispatch down", headers=self.headers)
        return mock.Mock(status_code=204, text="", headers={})


def run_through_outage(pk: int, traveller: Any, max_deliveries: int = 2000) -> tuple[str, list[float]]:
    """Run the task as a worker would, letting each requested countdown pass on the controlled clock."""
    countdowns: list[float] = []
    for _ in range(max_deliveries):
        with mock.patch.object(send_notification, "retry", side_effect=RetryRequested) as retry:
            try:
                return send_notification.run(pk), countdowns
            except RetryRequested:
                countdown = retry.call_args.kwargs["countdown"]
                countdowns.append(countdown)
                traveller.shift(timedelta(seconds=countdown))
    raise AssertionError("the task kept asking for retries")


def test_police_webhook_down_for_an_hour_is_delivered_once_it_recovers(
    owner, hooked_station, django_capture_on_commit_callbacks, settings
) -> None:
    settings.ALERT_NOTIFY_POLICE_BACKOFF_MAX_S = 60
    with time_machine.travel(START, tick=False) as traveller:
        incident = _open_incident(owner, django_capture_on_commit_callbacks, START)
        hook = incident.notifications.get(recipient_kind="station", channel="webhook")
        # Far beyond the old budget (7 attempts in ~315 s) and the 420 s outage that lost 76 of 108 webhooks.
        endpoint = Endpoint(recovers_at=START + timedelta(hours=1))
        with mock.patch("alerts.transports.requests.post", side_effect=endpoint):
            result, countdowns = run_through_outage(hook.pk, traveller)

    hook.refresh_from_db()
    assert result == "sent"
    assert (hook.status, hook.last_error) == ("sent", "")
    assert hook.attempts == len(endpoint.calls) > 1 + settings.ALERT_NOTIFY_MAX_RETRIES
    # Backoff grows to the cap and stays there (with jitter), so the recovered endpoint hears within a minute or so.
    assert max(countdowns) <= 60 * 1.2
    assert endpoint.calls[-1] - endpoint.recovers_at <= timedelta(seconds=72)
    assert incident.events.filter(kind="notified").count() == 1
    assert not incident.events.filter(kind="notification_failed").exists()

    outage = ChannelOutage.objects.get()
    assert (outage.station, outage.channel) == (hooked_station, "webhook")
    assert outage.failures == len(endpoint.calls) - 1
    assert outage.resolved_at == hook.sent_at
    assert "HTTP 500" in outage.last_error
    # One email to the admins for the whole outage, not one per failed attempt.
    admin_mail = [m for m in mail.outbox if "root@example.org" in m.to]
    assert len(admin_mail) == 1
    assert hooked_station.name in admin_mail[0].subject
    assert f"/admin/alerts/channeloutage/{outage.pk}/" in admin_mail[0].body


def test_police_alert_fails_only_after_the_retry_window(
    owner, hooked_station, django_capture_on_commit_callbacks, settings
) -> None:
    settings.ALERT_NOTIFY_POLICE_RETRY_HOURS = 2
    with time_machine.travel(START, tick=False) as traveller:
        incident = _open_incident(owner, django_capture_on_commit_callbacks, START)
        hook = incident.notifications.get(channel="webhook")
        endpoint = Endpoint(recovers_at=START + timedelta(days=1))
        with mock.patch("alerts.transports.requests.post", side_effect=endpoint):
            result, _ = run_through_outage(hook.pk, traveller)
    hook.refresh_from_db()
    assert (result, hook.status) == ("failed", "failed")
    assert timedelta(hours=2) <= endpoint.calls[-1] - START <= timedelta(hours=2, minutes=2)
    assert incident.events.filter(kind="notification_failed").count() == 1
    assert ChannelOutage.objects.get().resolved_at is None  # still down: the admin list shows it open


def test_owner_notifications_keep_the_ordinary_budget(
    owner, hooked_station, django_capture_on_commit_callbacks, settings
) -> None:
    settings.ALERT_NOTIFY_MAX_RETRIES = 2
    with time_machine.travel(START, tick=False) as traveller:
        incident = _open_incident(owner, django_capture_on_commit_callbacks, START)
        email = incident.notifications.get(recipient_kind="owner", channel="email")
        with mock.patch("alerts.transports.EmailTransport.send", side_effect=TransportError("down")):
            result, countdowns = run_through_outage(email.pk, traveller)
    assert (result, len(countdowns)) == ("failed", 2)
    assert not ChannelOutage.objects.exists()  # owners' mail is not a station's channel


def test_one_outage_holding_several_alerts_is_one_email_and_recovery_sends_the_rest(
    owner, hooked_station, django_capture_on_commit_callbacks, settings
) -> None:
    settings.ALERT_OUTAGE_ADMIN_AFTER_FAILURES = 3
    with time_machine.travel(START, tick=False) as traveller:
        hooks = []
        for minute in range(3):  # three separate shootings, each its own incident and webhook
            incident = _open_incident(owner, django_capture_on_commit_callbacks, START + timedelta(minutes=minute * 5))
            hooks.append(incident.notifications.get(channel="webhook"))
        endpoint = Endpoint(recovers_at=START + timedelta(minutes=10))
        with (
            mock.patch("alerts.transports.requests.post", side_effect=endpoint),
            mock.patch.object(send_notification, "retry", side_effect=RetryRequested),
        ):
            for _ in range(2):
                for hook in hooks:
                    with pytest.raises(RetryRequested):
                        send_notification.run(hook.pk)
                traveller.shift(timedelta(minutes=2))
            assert ChannelOutage.objects.get().failures == 6
            assert len([m for m in mail.outbox if "root@example.org" in m.to]) == 1
            traveller.shift(timedelta(minutes=10))
            with (
                mock.patch("alerts.tasks.enqueue_notifications") as enqueue,
                django_capture_on_commit_callbacks(execute=True),
            ):
                assert send_notification.run(hooks[0].pk) == "sent"
    # The first delivery after the outage sends the held alerts now instead of at their next retry.
    enqueue.assert_called_once()
    assert sorted(enqueue.call_args.args[0]) == sorted(h.pk for h in hooks[1:])
    assert ChannelOutage.objects.get().resolved_at is not None
    assert len([m for m in mail.outbox if "root@example.org" in m.to]) == 1


@pytest.mark.parametrize("status", [408, 429, 503])
def test_timeouts_and_throttling_are_transient_and_retry_after_is_honoured(
    owner, hooked_station, django_capture_on_commit_callbacks, settings, status
) -> None:
    settings.ALERT_NOTIFY_POLICE_BACKOFF_MAX_S = 60
    with time_machine.travel(START, tick=False) as traveller:
        incident = _open_incident(owner, django_capture_on_commit_callbacks, START)
        hook = incident.notifications.get(channel="webhook")
        endpoint = Endpoint(recovers_at=START + timedelta(seconds=200), status=status, headers={"Retry-After": "200"})
        with mock.patch("alerts.transports.requests.post", side_effect=endpoint):
            result, countdowns = run_through_outage(hook.pk, traveller)
    assert result == "sent"
    # The receiver asked for 200 s: one wait of 200 s (more than the 60 s cap), then it answers.
    assert countdowns == [200.0]
    assert len(endpoint.calls) == 2


def test_retry_after_is_capped(owner, hooked_station, django_capture_on_commit_callbacks, settings) -> None:
    settings.ALERT_NOTIFY_RETRY_AFTER_MAX_S = 600
    incident = _open_incident(owner, django_capture_on_commit_callbacks, timezone.now())
    hook = incident.notifications.get(channel="webhook")
    busy = mock.Mock(status_code=429, text="slow down", headers={"Retry-After": "86400"})
    with (
        mock.patch("alerts.transports.requests.post", return_value=busy),
        mock.patch.object(send_notification, "retry", side_effect=RetryRequested) as retry,
        pytest.raises(RetryRequested),
    ):
        send_notification.run(hook.pk)
    assert retry.call_args.kwargs["countdown"] == 600


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now=now) == 120
    assert retry_after_seconds("Mon, 07 Dec 2026 03:01:30 GMT", now=now) == 90
    assert retry_after_seconds("Mon, 07 Dec 2026 02:00:00 GMT", now=now) == 0
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds(None, now=now) is None


def test_a_permanent_refusal_tells_the_admins_at_once(
    owner, hooked_station, django_capture_on_commit_callbacks
) -> None:
    incident = _open_incident(owner, django_capture_on_commit_callbacks, timezone.now())
    hook = incident.notifications.get(channel="webhook")
    with mock.patch(
        "alerts.transports.requests.post", return_value=mock.Mock(status_code=404, text="no such hook", headers={})
    ):
        assert send_notification.run(hook.pk) == "failed"
    outage = ChannelOutage.objects.get()
    assert (outage.failures, outage.admins_told_at is not None) == (1, True)
    assert len([m for m in mail.outbox if "root@example.org" in m.to]) == 1


def test_sweep_resends_police_rows_at_the_capped_interval(
    owner, hooked_station, django_capture_on_commit_callbacks, settings
) -> None:
    """A police row's lost retry is picked up within its capped backoff, not an uncapped one (hours)."""
    settings.ALERT_NOTIFY_POLICE_BACKOFF_MAX_S = 60
    incident = _open_incident(owner, django_capture_on_commit_callbacks, timezone.now())
    Notification.objects.exclude(channel="webhook").update(status="sent")
    hook = incident.notifications.get(channel="webhook")
    Notification.objects.filter(pk=hook.pk).update(attempts=20, updated_at=timezone.now() - timedelta(minutes=3))
    assert retry_countdown(20) == 3600  # what the sweep waited for before the cap
    with mock.patch("alerts.tasks.enqueue_notifications") as enqueue:
        assert requeue_stale_notifications() == 1
    enqueue.assert_called_once_with([hook.pk])


def test_outages_are_visible_in_the_admin(
    owner, hooked_station, admin_user, django_capture_on_commit_callbacks, client
) -> None:
    incident = _open_incident(owner, django_capture_on_commit_callbacks, timezone.now())
    hook = incident.notifications.get(channel="webhook")
    with (
        mock.patch(
            "alerts.transports.requests.post", return_value=mock.Mock(status_code=502, text="bad gateway", headers={})
        ),
        mock.patch.object(send_notification, "retry", side_effect=RetryRequested),
        pytest.raises(RetryRequested),
    ):
        send_notification.run(hook.pk)
    client.force_login(admin_user)
    listing = client.get("/admin/alerts/channeloutage/?resolved_at__isempty=1")
    assert listing.status_code == 200
    assert hooked_station.name in listing.content.decode()
    stations = client.get("/admin/alerts/policestation/")
    assert stations.status_code == 200 and "webhook" in stations.content.decode()
    page = client.get(f"/admin/alerts/policestation/{hooked_station.pk}/change/")
    assert "HTTP 502" in page.content.decode()


def test_admin_can_send_a_failed_notification_again(
    owner, hooked_station, admin_user, django_capture_on_commit_callbacks, client
) -> None:
    incident = _open_incident(owner, django_capture_on_commit_callbacks, timezone.now())
    hook = incident.notifications.get(channel="webhook")
    Notification.objects.filter(pk=hook.pk).update(status="failed", attempts=7)
    sent = incident.notifications.exclude(pk=hook.pk).first()
    Notification.objects.filter(pk=sent.pk).update(status="sent")
    client.force_login(admin_user)
    with mock.patch("alerts.tasks.enqueue_notifications") as enqueue:
        response = client.post(
            "/admin/alerts/notification/",
            {
                "action": "send_again",
                "_selected_action": [hook.pk, sent.pk],
            },
        )
    assert response.status_code == 302
    enqueue.assert_called_once_with([hook.pk])
    hook.refresh_from_db()
    assert hook.status == "queued"
    assert Notification.objects.get(pk=sent.pk).status == "sent"
