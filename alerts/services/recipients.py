"""Who is told about an incident: the owner, their trusted contacts, the routed stations.

Rows are written in the joining transaction (one per recipient and channel, never twice) and
handed to the task runner after commit.
"""

from __future__ import annotations

from collections.abc import Iterable

from accounts.models import User
from alerts.models import Incident, Notification, PoliceStation
from devices.models import Device, TrustedContact
from devices.services import trusted_contacts_for_device


def _new_notifications(incident: Incident, rows: Iterable[Notification]) -> list[int]:
    existing = set(incident.notifications.values_list("recipient_key", "channel"))
    created: list[int] = []
    for row in rows:
        if (row.recipient_key, row.channel) in existing or not row.target:
            continue
        row.incident = incident
        row.save()
        existing.add((row.recipient_key, row.channel))
        created.append(row.pk)
    return created


def notifications_for_device(incident: Incident, device: Device) -> list[int]:
    owner: User = device.owner
    rows: list[Notification] = []
    owner_fields = {
        "recipient_kind": Notification.RecipientKind.OWNER,
        "recipient_key": f"user:{owner.pk}",
        "recipient_name": owner.get_full_name() or owner.username,
        "user": owner,
        "owner": owner,
    }
    if owner.email:
        rows.append(Notification(channel=Notification.Channel.EMAIL, target=owner.email, **owner_fields))
    if owner.phone:
        rows.append(Notification(channel=Notification.Channel.SMS, target=owner.phone, **owner_fields))
    for contact in trusted_contacts_for_device(device=device):
        rows += _contact_rows(contact)
    return _new_notifications(incident, rows)


def _contact_rows(contact: TrustedContact) -> list[Notification]:
    fields = {
        "recipient_kind": Notification.RecipientKind.CONTACT,
        "recipient_key": f"contact:{contact.pk}",
        "recipient_name": contact.name,
        "contact": contact,
        "owner_id": contact.owner_id,
    }
    targets = {Notification.Channel.EMAIL: contact.email, Notification.Channel.SMS: contact.phone}
    return [
        Notification(channel=channel, target=targets[channel], **fields)
        for channel in (Notification.Channel.EMAIL, Notification.Channel.SMS)
        if channel in (contact.channels or []) and targets[channel]
    ]


def notifications_for_stations(incident: Incident, stations: Iterable[PoliceStation]) -> list[int]:
    """The stations' rows, once the incident is dispatched (``alerts.services.review``); none before."""
    if not incident.is_dispatched:
        return []
    rows: list[Notification] = []
    for station in stations:
        fields = {
            "recipient_kind": Notification.RecipientKind.STATION,
            "recipient_key": f"station:{station.pk}",
            "recipient_name": station.name,
            "station": station,
        }
        targets = {
            Notification.Channel.WEBHOOK: station.webhook_url,
            Notification.Channel.EMAIL: station.contact_email,
            Notification.Channel.SMS: station.contact_phone,
        }
        rows += [Notification(channel=channel, target=target, **fields) for channel, target in targets.items()]
    return _new_notifications(incident, rows)


def notifications_enqueue(notification_ids: list[int]) -> None:
    if not notification_ids:
        return
    # Imported late: the task module imports the services (the accepted services <-> tasks pair).
    from alerts.tasks import enqueue_notifications

    enqueue_notifications(notification_ids)
