"""One class per channel. ``send`` delivers one notification or raises ``TransportError``.

``TransportError(permanent=True)`` means trying again cannot help (a bad address, a 4xx from a
gateway); anything else is retried by ``alerts.tasks.send_notification`` with backoff, no sooner
than the ``retry_after_s`` a throttling or busy server asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from django.utils.module_loading import import_string

from alerts.messages import render_message, webhook_payload
from alerts.models import Notification

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-GunWatch-Signature"
TIMESTAMP_HEADER = "X-GunWatch-Timestamp"
EVENT_HEADER = "X-GunWatch-Event"


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after_s = retry_after_s


# A request timeout and throttling are the receiver's state of the moment, not a verdict on the message.
TRANSIENT_CLIENT_ERRORS = frozenset({408, 425, 429})


def retry_after_seconds(value: object, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _http_error(response: requests.Response, what: str) -> TransportError:
    # 4xx (except timeouts and throttling) will not change on a retry; 5xx might.
    status = response.status_code
    permanent = 400 <= status < 500 and status not in TRANSIENT_CLIENT_ERRORS
    retry_after = None if permanent else retry_after_seconds(response.headers.get("Retry-After"))
    return TransportError(
        f"{what} answered HTTP {status}: {response.text[:200]}", permanent=permanent, retry_after_s=retry_after
    )


class Transport:
    channel: ClassVar[str]

    def send(self, notification: Notification) -> None:
        raise NotImplementedError


class EmailTransport(Transport):
    channel = Notification.Channel.EMAIL

    def send(self, notification: Notification) -> None:
        message = render_message(notification)
        email = EmailMessage(subject=message.subject, body=message.body, to=[notification.target])
        try:
            email.send(fail_silently=False)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise TransportError(f"mail server unreachable: {exc}") from exc
        except Exception as exc:  # smtplib's recipient refusals and the like
            raise TransportError(f"mail rejected: {exc}", permanent=_smtp_permanent(exc)) from exc


def _smtp_permanent(exc: Exception) -> bool:
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, Exception) and hasattr(exc, "recipients"):  # SMTPRecipientsRefused
        codes = [value[0] for value in getattr(exc, "recipients", {}).values()]
        return bool(codes) and all(500 <= c < 600 for c in codes)
    return isinstance(code, int) and 500 <= code < 600


# --- SMS ---------------------------------------------------------------------------------------


class SmsBackend:
    def send(self, *, to: str, body: str) -> None:
        raise NotImplementedError


class ConsoleSmsBackend(SmsBackend):
    """Development default: log the message instead of paying a gateway for it."""

    def send(self, *, to: str, body: str) -> None:
        logger.info("SMS to %s: %s", to, body)
        print(f"[sms to {to}] {body}", flush=True)


class HttpSmsBackend(SmsBackend):
    """A generic HTTP gateway: POST JSON {from, to, text} with basic auth to SMS_GATEWAY_URL."""

    def send(self, *, to: str, body: str) -> None:
        auth = (settings.SMS_GATEWAY_USER, settings.SMS_GATEWAY_PASSWORD) if settings.SMS_GATEWAY_USER else None
        try:
            response = requests.post(
                settings.SMS_GATEWAY_URL,
                json={"from": settings.SMS_SENDER, "to": to, "text": body},
                auth=auth,
                timeout=settings.ALERT_WEBHOOK_TIMEOUT_S,
            )
        except requests.RequestException as exc:
            raise TransportError(f"SMS gateway unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise _http_error(response, "SMS gateway")


def sms_backend() -> SmsBackend:
    backend_class = import_string(settings.SMS_BACKEND)
    return backend_class()


class SmsTransport(Transport):
    channel = Notification.Channel.SMS

    def send(self, notification: Notification) -> None:
        if not notification.target.startswith("+") or not notification.target[1:].isdigit():
            raise TransportError(f"{notification.target!r} is not an E.164 phone number", permanent=True)
        sms_backend().send(to=notification.target, body=render_message(notification).sms)


# --- Webhook -----------------------------------------------------------------------------------


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``<timestamp>.<raw body>``: binding the time stops replays of old bodies."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_request(notification: Notification, *, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(webhook_payload(notification), separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(now if now is not None else time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GunWatch-Webhook/1",
        TIMESTAMP_HEADER: timestamp,
        EVENT_HEADER: "incident.opened",
    }
    secret = notification.station.webhook_secret if notification.station else ""
    if secret:
        headers[SIGNATURE_HEADER] = webhook_signature(secret, timestamp, body)
    return body, headers


class WebhookTransport(Transport):
    channel = Notification.Channel.WEBHOOK

    def send(self, notification: Notification) -> None:
        body, headers = webhook_request(notification)
        try:
            response = requests.post(
                notification.target, data=body, headers=headers, timeout=settings.ALERT_WEBHOOK_TIMEOUT_S
            )
        except requests.RequestException as exc:
            raise TransportError(f"webhook unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise _http_error(response, "webhook")


TRANSPORTS: dict[str, type[Transport]] = {
    Notification.Channel.EMAIL: EmailTransport,
    Notification.Channel.SMS: SmsTransport,
    Notification.Channel.WEBHOOK: WebhookTransport,
}


def transport_for(channel: str) -> Transport:
    try:
        return TRANSPORTS[channel]()
    except KeyError as exc:
        raise TransportError(f"no transport for channel {channel!r}", permanent=True) from exc


def deliver(notification: Notification) -> Any:
    return transport_for(notification.channel).send(notification)
