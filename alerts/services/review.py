"""Dispatch policy, the review queue and its deadline: when police are told about an incident.

Owners and their trusted contacts are told at once whatever the policy (``recipients``); the routed
stations' notifications and the police map wait for a dispatch, which happens exactly once, by one of:

- the policy, when the evidence is strong enough for the strictest of the incident's stations;
- a reviewer's confirmation (a dismissal closes the incident and police never see it);
- the review deadline passing with nobody having decided ("unreviewed").

Each of these locks the incident row and acts only from ``review``/``held``, so a reviewer pressing
confirm while the deadline fires dispatches (and notifies) once; the notification rows' unique
constraint is the second guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.permissions import has_police_access, is_person
from alerts import broadcast
from alerts.models import WAITING_FOR_REVIEW, DispatchPolicy, Incident, IncidentEvent
from alerts.services.evidence import incident_evidence
from alerts.services.recipients import notifications_enqueue, notifications_for_stations
from alerts.services.timeline import incident_event_add
from gunwatch.exceptions import ApplicationError
from gunwatch.tasks import enqueue

DISMISS_REASONS = {
    Incident.Disposition.FALSE_ALARM: "False alarm",
    Incident.Disposition.OTHER_SOURCE: "Other source (fireworks, vehicle, construction …)",
}
REVIEW_DECISIONS = ("confirm", "dismiss")
_STRICTNESS = {DispatchPolicy.Mode.IMMEDIATE: 0, DispatchPolicy.Mode.EVIDENCE: 1, DispatchPolicy.Mode.REVIEW_ALL: 2}


@dataclass(frozen=True)
class Policy:
    mode: str
    strong_evidence: float
    review_deadline_s: int


def user_can_review(user: Any) -> bool:
    """Reviewers: superusers, and staff or approved police an administrator gave ``alerts.reviewer``."""
    if not is_person(user):
        return False
    if user.is_superuser:
        return True
    return user.has_perm("alerts.reviewer") and (user.is_staff or has_police_access(user))


def incident_policy(incident: Incident) -> Policy:
    """The strictest policy of the incident's stations (the site default for stations without one)."""
    default = Policy(
        settings.ALERT_DISPATCH_DEFAULT_MODE, settings.ALERT_STRONG_EVIDENCE, settings.ALERT_REVIEW_DEADLINE_S
    )
    stations = list(incident.stations.select_related("dispatch_policy"))
    policies: list[Policy] = []
    for station in stations:
        try:
            row = station.dispatch_policy
        except DispatchPolicy.DoesNotExist:
            policies.append(default)
            continue
        policies.append(Policy(row.mode, row.strong_evidence, row.review_deadline_s or default.review_deadline_s))
    if not policies:
        return default
    return Policy(
        mode=max((p.mode for p in policies), key=lambda m: _STRICTNESS.get(DispatchPolicy.Mode(m), 2)),
        strong_evidence=max(p.strong_evidence for p in policies),
        # The most urgent station's deadline: none of them waits longer than it agreed to.
        review_deadline_s=min(p.review_deadline_s for p in policies),
    )


def policy_decision(policy: Policy, *, score: float, witnesses: int) -> str:
    """What the policy does with an incident of this evidence: a ``Incident.Dispatch`` value."""
    if witnesses == 0:
        return Incident.Dispatch.HELD
    if policy.mode == DispatchPolicy.Mode.IMMEDIATE:
        return Incident.Dispatch.DISPATCHED
    if policy.mode == DispatchPolicy.Mode.EVIDENCE and score >= policy.strong_evidence:
        return Incident.Dispatch.DISPATCHED
    return Incident.Dispatch.REVIEW


def incident_policy_apply(incident: Incident, *, opened: bool) -> None:
    """Score the incident and apply its stations' policy. Called by recording inside the joining
    transaction, on the locked row, after the location and stations are current; saves the row.

    A just-opened incident is undecided; one waiting in review or held is decided again with the new
    evidence (a second device joining can make it strong); a dispatched or dismissed one stays so.
    """
    evidence = incident_evidence(incident)
    incident.evidence_score, incident.evidence_summary = evidence.score, evidence.summary[:200]
    fields = ["evidence_score", "evidence_summary"]
    if opened or incident.dispatch in WAITING_FOR_REVIEW:
        if opened:
            incident.dispatch = ""  # undecided until the policy speaks
        decision = policy_decision(incident_policy(incident), score=evidence.score, witnesses=evidence.witnesses)
        fields += _move(incident, decision, evidence.summary)
    incident.save(update_fields=fields)


def _move(incident: Incident, decision: str, summary: str) -> list[str]:
    """From review/held (or a new incident) to ``decision``; the fields changed."""
    if decision == Incident.Dispatch.DISPATCHED:
        # "Immediate" is dispatch as it always was; a timeline line for it would say nothing.
        quiet = incident_policy(incident).mode == DispatchPolicy.Mode.IMMEDIATE
        return _dispatch(
            incident, Incident.DispatchReason.POLICY, message="" if quiet else f"Dispatched by policy: {summary}"
        )
    if decision == incident.dispatch and (decision == Incident.Dispatch.HELD or incident.review_deadline_at):
        return []
    incident.dispatch = decision
    if decision == Incident.Dispatch.HELD:
        incident_event_add(incident, IncidentEvent.Kind.HELD, f"Held, not sent to police: {summary}")
        return ["dispatch"]
    deadline_s = incident_policy(incident).review_deadline_s
    incident.review_deadline_at = timezone.now() + timedelta(seconds=deadline_s)
    incident_event_add(
        incident,
        IncidentEvent.Kind.REVIEW_QUEUED,
        f"Sent to review, dispatched unreviewed in {deadline_s} s if nobody decides: {summary}",
    )
    incident_id = incident.pk
    transaction.on_commit(lambda: _schedule_escalation(incident_id, deadline_s))
    return ["dispatch", "review_deadline_at"]


def _schedule_escalation(incident_id: int, deadline_s: int) -> None:
    from alerts.tasks import escalate_review  # the task module imports the services

    # A little after the deadline so the row is due when the task reads it; the periodic sweep backs it up.
    enqueue(escalate_review, incident_id, countdown=deadline_s + 0.5)


def _dispatch(incident: Incident, reason: str, *, message: str, actor: User | None = None) -> list[str]:
    """Mark dispatched, write the stations' notifications and send them after commit."""
    now = timezone.now()
    incident.dispatch, incident.dispatch_reason, incident.dispatched_at = Incident.Dispatch.DISPATCHED, reason, now
    incident.just_dispatched = True
    kind = {
        Incident.DispatchReason.POLICY: IncidentEvent.Kind.DISPATCHED,
        Incident.DispatchReason.REVIEWED: IncidentEvent.Kind.CONFIRMED,
        Incident.DispatchReason.UNREVIEWED: IncidentEvent.Kind.ESCALATED,
    }[Incident.DispatchReason(reason)]
    if message:
        incident_event_add(incident, kind, message, actor=actor, data={"evidence": incident.evidence_score})
    ids = notifications_for_stations(incident, incident.stations.all())
    fields = ["dispatch", "dispatch_reason", "dispatched_at"]
    if ids:
        incident.notified_at = now
        fields.append("notified_at")
        transaction.on_commit(lambda: notifications_enqueue(ids))
    return fields


def _publish_after_commit(incident: Incident, *, kind: broadcast.EventKind) -> None:
    message = broadcast.incident_message(incident, kind=kind)
    transaction.on_commit(lambda: broadcast.publish(message))


@transaction.atomic
def incident_review(*, incident: Incident, user: User, decision: str, reason: str = "", note: str = "") -> Incident:
    """A reviewer's confirm (dispatch now) or dismiss (with a reason; police never see it)."""
    if not user_can_review(user):
        raise ApplicationError("Only reviewers may decide on incidents in the review queue.", code="not_reviewer")
    note = note.strip()[:300]
    if decision not in REVIEW_DECISIONS:
        raise ApplicationError("Decide with confirm or dismiss.", code="invalid_decision")
    if decision == "dismiss" and reason not in DISMISS_REASONS:
        raise ApplicationError(
            "Dismissing needs a reason: " + ", ".join(DISMISS_REASONS) + ".",
            code="reason_required",
            extra={"reasons": list(DISMISS_REASONS)},
        )
    incident = Incident.objects.select_for_update().get(pk=incident.pk)
    if incident.dispatch not in WAITING_FOR_REVIEW:
        raise _not_waiting(incident)
    now = timezone.now()
    incident.reviewed_by, incident.reviewed_at, incident.review_note = user, now, note
    fields = ["reviewed_by", "reviewed_at", "review_note", "revision", "updated_at"]
    if decision == "confirm":
        fields += _dispatch(
            incident,
            Incident.DispatchReason.REVIEWED,
            message=f"{user.username}: confirmed in review" + (f" — {note}" if note else ""),
            actor=user,
        )
        kind: broadcast.EventKind = "incident.opened"
    else:
        incident.dispatch = Incident.Dispatch.DISMISSED
        incident.status, incident.disposition, incident.closed_at = Incident.Status.CLOSED, reason, now
        fields += ["dispatch", "status", "disposition", "closed_at"]
        incident_event_add(
            incident,
            IncidentEvent.Kind.DISMISSED,
            f"{user.username}: dismissed in review ({DISMISS_REASONS[Incident.Disposition(reason)]})"
            + (f" — {note}" if note else ""),
            actor=user,
            data={"reason": reason},
        )
        kind = "incident.updated"
        _recalibrate_after_commit(incident)
    incident.revision += 1
    incident.save(update_fields=fields)
    _publish_after_commit(incident, kind=kind)
    return incident


def _not_waiting(incident: Incident) -> ApplicationError:
    """409: someone (a reviewer, the deadline) decided first, or the incident never waited for review."""
    extra = {"dispatch": incident.dispatch, "dispatch_reason": incident.dispatch_reason}
    decided = incident.reviewed_at is not None or incident.dispatch_reason == Incident.DispatchReason.UNREVIEWED
    if decided or incident.dispatch == Incident.Dispatch.DISMISSED:
        state = incident.get_dispatch_display().lower()
        if incident.dispatch_reason:
            state += f" ({incident.get_dispatch_reason_display().lower()})"
        return ApplicationError(
            f"This incident was already decided: {state}.", code="already_decided", extra=extra, status=409
        )
    return ApplicationError(
        "This incident is not in the review queue"
        + (": its evidence dispatched it by policy." if incident.is_dispatched else "."),
        code="not_in_review",
        extra=extra,
        status=409,
    )


def _recalibrate_after_commit(incident: Incident) -> None:
    device_ids = list(incident.detections.values_list("device_id", flat=True).distinct())

    def run() -> None:
        from alerts.services.calibration import devices_calibrate

        devices_calibrate(device_ids=device_ids)

    transaction.on_commit(run)


def incident_escalate(*, incident_id: int) -> bool:
    """Dispatch, marked unreviewed, an incident whose review deadline has passed; False if not due."""
    with transaction.atomic():
        incident = Incident.objects.select_for_update().filter(pk=incident_id).first()
        now = timezone.now()
        if (
            incident is None
            or incident.dispatch != Incident.Dispatch.REVIEW
            or incident.review_deadline_at is None
            or incident.review_deadline_at > now
        ):
            return False
        fields = _dispatch(
            incident,
            Incident.DispatchReason.UNREVIEWED,
            message=f"Review deadline passed: dispatched unreviewed ({incident.evidence_summary})",
        )
        incident.revision += 1
        incident.save(update_fields=[*fields, "revision", "updated_at"])
        _publish_after_commit(incident, kind="incident.opened")
    return True


def incidents_escalate_overdue() -> int:
    """The periodic sweep behind each incident's countdown task."""
    due = Incident.objects.filter(
        dispatch=Incident.Dispatch.REVIEW, review_deadline_at__lte=timezone.now()
    ).values_list("pk", flat=True)[:200]
    return sum(incident_escalate(incident_id=pk) for pk in list(due))
