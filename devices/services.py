"""Device flows: creation, pairing, tokens, heartbeats, the offline sweep."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import User
from devices.models import Device, DeviceToken, TrustedContact
from gunwatch.exceptions import ApplicationError

logger = logging.getLogger(__name__)

# No 0/O, 1/I/L: codes are typed by hand on a phone or read off a screen.
PAIRING_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PAIRING_CODE_LENGTH = 8
TOKEN_PREFIX = "gw_"
TOKEN_KEY_LENGTH = 12


def _digest(value: str) -> str:
    """HMAC under SECRET_KEY: a stolen database alone cannot be replayed as codes or tokens."""
    return hmac.new(settings.SECRET_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def normalise_pairing_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


@dataclass(frozen=True)
class IssuedPairingCode:
    code: str
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    device: Device
    token: str


def device_pairing_code_issue(*, device: Device) -> IssuedPairingCode:
    """Give the device a fresh one-time code; any earlier code stops working."""
    if device.status == Device.Status.DISABLED:
        raise ApplicationError("This device is disabled; enable it before pairing.", code="device_disabled")
    code = "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(PAIRING_CODE_LENGTH))
    device.pairing_code_digest = _digest(normalise_pairing_code(code))
    device.pairing_expires_at = timezone.now() + settings.DEVICE_PAIRING_CODE_TTL
    device.save(update_fields=["pairing_code_digest", "pairing_expires_at", "updated_at"])
    return IssuedPairingCode(code=code, expires_at=device.pairing_expires_at)


def device_create(*, owner: User, **fields: Any) -> tuple[Device, IssuedPairingCode]:
    fields.setdefault("heartbeat_interval_s", settings.DEVICE_DEFAULT_HEARTBEAT_S)
    device = Device.objects.create(owner=owner, **fields)
    return device, device_pairing_code_issue(device=device)


def _token_issue(*, device: Device) -> str:
    """Revoke whatever token the device had and mint a new one (shown to the caller once)."""
    now = timezone.now()
    DeviceToken.objects.filter(device=device, revoked_at__isnull=True).update(revoked_at=now)
    for _ in range(3):
        key = secrets.token_hex(TOKEN_KEY_LENGTH // 2)
        secret = secrets.token_urlsafe(32)
        try:
            with transaction.atomic():
                DeviceToken.objects.create(device=device, key=key, digest=_digest(secret))
        except IntegrityError:  # a key collision: astronomically rare, just draw again
            continue
        return f"{TOKEN_PREFIX}{key}.{secret}"
    raise ApplicationError("Could not issue a token, try again.", code="token_issue_failed", status=503)


@transaction.atomic
def device_pair(*, pairing_code: str, firmware_version: str = "") -> IssuedToken:
    """Exchange a one-time pairing code for a long-lived device token."""
    digest = _digest(normalise_pairing_code(pairing_code))
    now = timezone.now()
    device = (
        Device.objects.select_for_update().filter(pairing_code_digest=digest).exclude(pairing_code_digest="").first()
    )
    if device is None:
        raise ApplicationError("Unknown or already used pairing code.", code="pairing_code_invalid")
    if device.pairing_expires_at is None or device.pairing_expires_at <= now:
        raise ApplicationError(
            "This pairing code has expired; create a new one from the device page.", code="pairing_code_expired"
        )
    if device.status == Device.Status.DISABLED:
        raise ApplicationError("This device is disabled.", code="device_disabled", status=403)
    # Clearing the digest in the same transaction makes the code single-use even under races.
    claimed = Device.objects.filter(pk=device.pk, pairing_code_digest=digest).update(
        pairing_code_digest="",
        pairing_expires_at=None,
        status=Device.Status.ACTIVE,
        paired_at=now,
        firmware_version=firmware_version or device.firmware_version,
        updated_at=now,
    )
    if claimed != 1:
        raise ApplicationError("Unknown or already used pairing code.", code="pairing_code_invalid")
    device.refresh_from_db()
    return IssuedToken(device=device, token=_token_issue(device=device))


def device_token_rotate(*, device: Device) -> str:
    if device.status != Device.Status.ACTIVE:
        raise ApplicationError("Only a paired, active device has a token to rotate.", code="device_not_paired")
    with transaction.atomic():
        return _token_issue(device=device)


def device_token_revoke(*, device: Device) -> int:
    """Revoke the device's token at once; the device must be paired again to come back."""
    return DeviceToken.objects.filter(device=device, revoked_at__isnull=True).update(revoked_at=timezone.now())


def token_parts(raw_token: str) -> tuple[str, str] | None:
    """(key, secret) of ``gw_<key>.<secret>``; None for anything else."""
    if not raw_token.startswith(TOKEN_PREFIX):
        return None
    key, _, secret = raw_token[len(TOKEN_PREFIX) :].partition(".")
    return (key, secret) if key and secret else None


def device_token_authenticate(raw_token: str) -> DeviceToken | None:
    """Find the live token matching ``gw_<key>.<secret>``, comparing digests in constant time."""
    parts = token_parts(raw_token)
    if parts is None:
        return None
    key, secret = parts
    # No owner join and no ORDER BY (``key`` is unique): every device request pays this lookup, and
    # compiling the wider query cost more CPU than running it.
    token = next(iter(DeviceToken.objects.select_related("device").filter(key=key, revoked_at__isnull=True)[:1]), None)
    if token is None or not hmac.compare_digest(token.digest, _digest(secret)):
        return None
    now = timezone.now()
    # Writing on every request would turn each upload into two writes; a minute's precision is plenty.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        DeviceToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


HEALTH_FIELDS = (
    "uptime_s",
    "mic_level_dbfs",
    "clipping",
    "free_storage_mb",
    "queue_length",
    "dropped_clips",
    "rejected_clips",
    "set_aside_clips",
    "clock_source",
)


def heartbeat_record(*, device: Device, data: dict[str, Any]) -> Device:
    """Store what the device reported and push its offline deadline forward.

    One conditional UPDATE of only the fields a heartbeat reports (a whole-row save would put back
    whatever an owner changed since the token lookup read the row), and only while the device is
    active: a heartbeat racing its device's disabling does not bring it back to life.
    """
    now = timezone.now()
    changes: dict[str, Any] = {
        "last_heartbeat_at": now,
        "offline_after": now + device.heartbeat_grace,
        "connectivity": Device.Connectivity.ONLINE,
        "health": {key: data[key] for key in HEALTH_FIELDS if data.get(key) is not None},
    }
    if data.get("latitude") is not None and data.get("longitude") is not None:
        changes.update(
            last_latitude=data["latitude"],
            last_longitude=data["longitude"],
            last_accuracy_m=data.get("accuracy_m"),
            last_position_at=now,
        )
    for field in ("battery_pct", "firmware_version", "model_version"):
        if data.get(field) is not None:
            changes[field] = data[field]
    Device.objects.filter(pk=device.pk, status=Device.Status.ACTIVE).update(**changes)
    for field, value in changes.items():
        setattr(device, field, value)
    return device


class HeartbeatAck(NamedTuple):
    """What a heartbeat's answer tells the device about itself."""

    code: uuid.UUID
    status: str
    heartbeat_interval_s: int
    sensitivity_threshold: float | None

    @classmethod
    def of(cls, device: Device) -> HeartbeatAck:
        return cls(device.code, device.status, device.heartbeat_interval_s, device.sensitivity_threshold)


# The heartbeat as one statement: the token's check and the device's update together. The same
# changes as heartbeat_record (tests/devices/test_heartbeat_statement.py compares the rows).
_HEARTBEAT_SQL = """
UPDATE devices_device AS d SET
    last_heartbeat_at = %(now)s,
    offline_after = %(now)s + make_interval(secs => d.heartbeat_interval_s * %(missed)s),
    connectivity = %(online)s,
    health = %(health)s::jsonb,
    last_latitude = CASE WHEN %(has_position)s THEN %(latitude)s ELSE d.last_latitude END,
    last_longitude = CASE WHEN %(has_position)s THEN %(longitude)s ELSE d.last_longitude END,
    last_accuracy_m = CASE WHEN %(has_position)s THEN %(accuracy_m)s ELSE d.last_accuracy_m END,
    last_position_at = CASE WHEN %(has_position)s THEN %(now)s ELSE d.last_position_at END,
    battery_pct = COALESCE(%(battery_pct)s, d.battery_pct),
    firmware_version = COALESCE(%(firmware_version)s, d.firmware_version),
    model_version = COALESCE(%(model_version)s, d.model_version)
FROM devices_devicetoken AS t
WHERE t.key = %(key)s AND t.digest = %(digest)s AND t.revoked_at IS NULL
    AND d.id = t.device_id AND d.status = %(active)s
RETURNING d.code, d.status, d.heartbeat_interval_s, d.sensitivity_threshold, t.id, t.last_used_at
"""


def heartbeat_in_one_statement() -> bool:
    """PostgreSQL can check the token and update the device in one UPDATE … FROM … RETURNING."""
    return connection.vendor == "postgresql"


def heartbeat_record_by_token(*, raw_token: str, data: dict[str, Any]) -> HeartbeatAck | None:
    """``heartbeat_record`` for the device of ``raw_token``, in one statement (PostgreSQL only).

    None when no active device has that live token (unknown, revoked, wrong secret, disabled
    device): the caller then authenticates the usual way for the precise error. The digest is
    compared by PostgreSQL, not in constant time: it is an HMAC under SECRET_KEY, so timing it
    tells an attacker nothing about the digest of a secret they could choose.
    """
    parts = token_parts(raw_token)
    if parts is None:
        return None
    key, secret = parts
    now = timezone.now()
    has_position = data.get("latitude") is not None and data.get("longitude") is not None
    params = {
        "now": now,
        "missed": settings.DEVICE_MISSED_HEARTBEATS,
        "online": Device.Connectivity.ONLINE,
        "health": json.dumps({name: data[name] for name in HEALTH_FIELDS if data.get(name) is not None}),
        "has_position": has_position,
        "latitude": data.get("latitude") if has_position else None,
        "longitude": data.get("longitude") if has_position else None,
        "accuracy_m": data.get("accuracy_m") if has_position else None,
        "battery_pct": data.get("battery_pct"),
        "firmware_version": data.get("firmware_version"),
        "model_version": data.get("model_version"),
        "key": key,
        "digest": _digest(secret),
        "active": Device.Status.ACTIVE,
    }
    with connection.cursor() as cursor:
        cursor.execute(_HEARTBEAT_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    code, device_status, interval_s, threshold, token_id, last_used_at = row
    # As device_token_authenticate: the token's last use, to the minute, without a write per request.
    if last_used_at is None or (now - last_used_at).total_seconds() > 60:
        DeviceToken.objects.filter(pk=token_id).update(last_used_at=now)
    return HeartbeatAck(code, device_status, interval_s, threshold)


def devices_mark_offline(*, now: datetime | None = None) -> list[Device]:
    """Flip overdue devices to offline and tell each owner once per outage.

    The flip is a conditional update on the row still being ``online``, so two sweeps running at
    the same time (two beat schedulers, a retried task) cannot both announce the same outage.
    """
    now = now or timezone.now()
    overdue = Device.objects.filter(
        connectivity=Device.Connectivity.ONLINE, offline_after__lt=now, status=Device.Status.ACTIVE
    ).select_related("owner")
    flipped: list[Device] = []
    for device in overdue:
        changed = Device.objects.filter(
            pk=device.pk, connectivity=Device.Connectivity.ONLINE, offline_after__lt=now
        ).update(connectivity=Device.Connectivity.OFFLINE)
        if changed == 1:
            device.connectivity = Device.Connectivity.OFFLINE
            flipped.append(device)
            _notify_offline(device)
    return flipped


def _notify_offline(device: Device) -> None:
    if not device.owner.email:
        return
    last_seen = device.last_heartbeat_at.isoformat(timespec="seconds") if device.last_heartbeat_at else "never"
    try:
        send_mail(
            subject=f"GunWatch: {device.name} is offline",
            message=(
                f"Your device {device.name!r} has missed {settings.DEVICE_MISSED_HEARTBEATS} heartbeats "
                f"(last seen {last_seen}). It cannot detect gunshots until it is back online.\n\n"
                f"{settings.SITE_URL}/devices/{device.code}/"
            ),
            from_email=None,
            recipient_list=[device.owner.email],
        )
    except Exception:  # the flip stands even if the mail server is down; the page shows it
        logger.exception("Could not email the owner of %s about the outage", device.code)


def trusted_contacts_for_device(*, device: Device) -> list[TrustedContact]:
    """The owner's contacts that cover this device (contacts not limited to devices cover all)."""
    contacts = TrustedContact.objects.filter(owner_id=device.owner_id).prefetch_related("devices")
    return [contact for contact in contacts if contact.covers(device)]
