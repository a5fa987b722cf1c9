"""Issue 11: evidence score, per-station dispatch policy, review decisions, deadline escalation,
exactly-once station notifications, and per-device calibration."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core import mail
from django.utils import timezone

from accounts.models import User
from alerts.models import Detection, DispatchPolicy, Incident, IncidentEvent, Notification
from alerts.selectors import incidents_for_police
from alerts.services import incident_record_detection
from alerts.services.calibration import device_calibrate, threshold_for_budget
from alerts.services.evidence import Witness, evidence_combine, incident_evidence
from alerts.services.review import (
    Policy,
    incident_escalate,
    incident_policy,
    incident_review,
    incidents_escalate_overdue,
    policy_decision,
    user_can_review,
)
from gunwatch.exceptions import ApplicationError
from tests.alerts.helpers import around, classify, heard_at
from tests.factories import DeviceFactory, PoliceStationFactory, UserFactory

CENTRE = (52.52, 13.405)


def _witness(pk: int, score: float = 0.95, record: float = 0.9, *, at: tuple[float, float] | None = None) -> Witness:
    lat, lon = at or around(CENTRE, 300, [pk * 70.0])[0]
    return Witness(pk, score, record, lat, lon)


# --- Evidence on constructed incidents ------------------------------------------------------------


def test_four_agreeing_devices_are_strong_evidence_in_words(settings) -> None:
    evidence = evidence_combine([_witness(i) for i in range(4)], residual_m=4.0, tdoa=True, radius_m=35, heard_by=4)
    assert evidence.witnesses == 4
    assert evidence.score == pytest.approx((1 - (1 - 0.95 * 0.9) ** 4) / (1 + (4 / 50) ** 2), abs=1e-3)
    assert evidence.score >= settings.ALERT_STRONG_EVIDENCE
    assert evidence.summary.startswith("Strong evidence")
    assert "heard by 4 devices, positions agree (±35 m)" in evidence.summary


def test_single_device_is_weak_with_a_noisy_location() -> None:
    evidence = evidence_combine([_witness(1, 0.93, 2 / 3)], residual_m=None, tdoa=False, radius_m=1525, heard_by=1)
    assert evidence.score == pytest.approx(0.93 * 2 / 3, abs=1e-3)
    assert "single device, noisy location (±1525 m)" in evidence.summary
    assert not evidence.summary.startswith("Strong")


def test_positions_that_disagree_pull_the_score_down() -> None:
    witnesses = [_witness(i) for i in range(4)]
    agree = evidence_combine(witnesses, residual_m=5.0, tdoa=True, radius_m=40, heard_by=4)
    disagree = evidence_combine(witnesses, residual_m=400.0, tdoa=True, radius_m=900, heard_by=4)
    assert disagree.score < 0.1 < agree.score
    assert "positions disagree (400 m apart)" in disagree.summary


def test_devices_in_one_flat_count_as_one_witness() -> None:
    flat = around(CENTRE, 5, [0, 180])
    evidence = evidence_combine(
        [_witness(1, at=flat[0]), _witness(2, at=flat[1])], residual_m=None, tdoa=False, radius_m=1500, heard_by=2
    )
    assert evidence.witnesses == 1
    assert evidence.score == pytest.approx(0.95 * 0.9, abs=1e-3)
    assert "1 more device(s)" in evidence.summary


def test_track_record_of_false_alarms_lowers_the_score(owner) -> None:
    noisy = DeviceFactory(owner=owner, latitude=CENTRE[0], longitude=CENTRE[1])
    for day in range(4):
        earlier = timezone.now() - timedelta(days=day + 1)
        old = incident_record_detection(classification=classify(noisy, recorded_at=earlier))
        Incident.objects.filter(pk=old.pk).update(status="closed", disposition="false_alarm")
    fresh = incident_record_detection(classification=classify(noisy, score=0.93))
    fresh.refresh_from_db()
    evidence = incident_evidence(fresh)
    assert evidence.score == pytest.approx(0.93 * 2 / 7, abs=1e-3)  # (0 + 2) / (0 + 4 + 3)
    assert "a device with a record of false alarms" in evidence.summary


# --- Policy decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "score", "witnesses", "expected"),
    [
        ("immediate", 0.2, 1, "dispatched"),
        ("evidence", 0.95, 4, "dispatched"),
        ("evidence", 0.62, 1, "review"),
        ("review_all", 0.99, 5, "review"),
        ("immediate", 0.0, 0, "held"),
    ],
)
def test_policy_decision(mode: str, score: float, witnesses: int, expected: str) -> None:
    assert policy_decision(Policy(mode, 0.9, 45), score=score, witnesses=witnesses) == expected


def test_strictest_station_policy_applies(db, settings) -> None:
    settings.ALERT_REVIEW_DEADLINE_S = 45
    lax, strict, plain = PoliceStationFactory(), PoliceStationFactory(), PoliceStationFactory()
    DispatchPolicy.objects.create(station=lax, mode="evidence", strong_evidence=0.8, review_deadline_s=30)
    DispatchPolicy.objects.create(station=strict, mode="review_all", strong_evidence=0.95)
    incident = Incident.objects.create(first_detected_at=timezone.now(), last_detected_at=timezone.now())
    incident.stations.add(lax, plain)
    assert incident_policy(incident) == Policy("evidence", 0.9, 30)  # plain: the default immediate, 0.9, 45 s
    incident.stations.add(strict)
    assert incident_policy(incident) == Policy("review_all", 0.95, 30)


# --- Recording under a policy, review, escalation -------------------------------------------------


def _station_rows(incident: Incident) -> list[Notification]:
    return list(incident.notifications.filter(recipient_kind="station"))


def _single_shot(owner: User) -> Incident:
    device = DeviceFactory(owner=owner, latitude=CENTRE[0], longitude=CENTRE[1])
    incident = incident_record_detection(classification=classify(device, score=0.93))
    incident.refresh_from_db()
    return incident


def test_weak_evidence_goes_to_review_while_the_owner_is_told_at_once(reviewed_station, owner, police_user) -> None:
    incident = _single_shot(owner)
    assert incident.dispatch == "review"
    assert incident.review_deadline_at is not None
    assert incident.notifications.filter(recipient_kind="owner").exists()
    assert _station_rows(incident) == []
    assert not incidents_for_police(police_user).filter(pk=incident.pk).exists()
    assert incident.events.filter(kind=IncidentEvent.Kind.REVIEW_QUEUED).exists()


def test_several_agreeing_devices_dispatch_at_once(reviewed_station, police_user) -> None:
    shot = timezone.now()
    source = around(CENTRE, 250, [45])[0]
    incident = None
    for pos in around(CENTRE, 700, [0, 100, 200, 290]):
        device = DeviceFactory(owner=UserFactory(), latitude=pos[0], longitude=pos[1])
        incident = incident_record_detection(
            classification=classify(
                device,
                recorded_at=heard_at(source, pos, shot),
                offset_s=0.0,
                clock_source="gps",
                accuracy_m=3,
                lat=pos[0],
                lon=pos[1],
            )
        )
    incident.refresh_from_db()
    assert incident.dispatch == "dispatched"
    assert incident.dispatch_reason == "policy"
    assert incident.evidence_score >= 0.9
    assert "positions agree" in incident.evidence_summary
    assert incidents_for_police(police_user).filter(pk=incident.pk).exists()
    assert [(n.recipient_key, n.channel) for n in _station_rows(incident)] == [
        (f"station:{reviewed_station.pk}", "email")
    ]


def test_confirmed_once_then_the_deadline_does_nothing(reviewed_station, owner, reviewer, police_user) -> None:
    incident = _single_shot(owner)
    incident_review(incident=incident, user=reviewer, decision="confirm", note="clear muzzle blast")
    incident.refresh_from_db()
    assert (incident.dispatch, incident.dispatch_reason) == ("dispatched", "reviewed")
    assert incident.reviewed_by == reviewer and incident.reviewed_at is not None
    event = incident.events.get(kind=IncidentEvent.Kind.CONFIRMED)
    assert event.actor == reviewer and "clear muzzle blast" in event.message
    assert incidents_for_police(police_user).filter(pk=incident.pk).exists()
    with pytest.raises(ApplicationError) as exc:
        incident_review(incident=incident, user=reviewer, decision="dismiss", reason="false_alarm")
    assert exc.value.code == "already_decided"
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        assert incident_escalate(incident_id=incident.pk) is False
        assert incidents_escalate_overdue() == 0
    assert len(_station_rows(incident)) == 1
    assert not incident.events.filter(kind=IncidentEvent.Kind.ESCALATED).exists()


def test_dismissed_incident_never_reaches_police(reviewed_station, owner, reviewer, police_user) -> None:
    incident = _single_shot(owner)
    with pytest.raises(ApplicationError) as exc:
        incident_review(incident=incident, user=reviewer, decision="dismiss")
    assert exc.value.code == "reason_required"
    incident_review(incident=incident, user=reviewer, decision="dismiss", reason="other_source", note="fireworks")
    incident.refresh_from_db()
    assert (incident.dispatch, incident.status, incident.disposition) == ("dismissed", "closed", "other_source")
    assert incident.events.get(kind=IncidentEvent.Kind.DISMISSED).actor == reviewer
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        assert incidents_escalate_overdue() == 0
    assert _station_rows(incident) == []
    assert not incidents_for_police(police_user).filter(pk=incident.pk).exists()


def test_unreviewed_is_dispatched_at_the_deadline_once(reviewed_station, owner, reviewer, settings) -> None:
    settings.ALERT_REVIEW_DEADLINE_S = 45
    incident = _single_shot(owner)
    assert incident_escalate(incident_id=incident.pk) is False  # not due yet
    with time_machine.travel(timezone.now() + timedelta(seconds=46)):
        assert incidents_escalate_overdue() == 1
        assert incidents_escalate_overdue() == 0
        assert incident_escalate(incident_id=incident.pk) is False
    incident.refresh_from_db()
    assert (incident.dispatch, incident.dispatch_reason) == ("dispatched", "unreviewed")
    assert incident.events.filter(kind=IncidentEvent.Kind.ESCALATED).count() == 1
    assert len(_station_rows(incident)) == 1
    with pytest.raises(ApplicationError):
        incident_review(incident=incident, user=reviewer, decision="confirm")
    assert len(_station_rows(incident)) == 1
    assert Notification.objects.filter(incident=incident, recipient_kind="owner").count() == 1


def test_a_second_device_joining_can_make_the_evidence_strong(
    reviewed_station, owner, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    from alerts import broadcast

    sent: list[tuple[str, bool]] = []
    monkeypatch.setattr(broadcast, "publish", lambda message: sent.append((message["type"], message["dispatched"])))
    shot = timezone.now()
    source = around(CENTRE, 250, [45])[0]
    positions = around(CENTRE, 700, [0, 100, 200])
    states = []
    for pos in positions:
        device = DeviceFactory(owner=UserFactory(), latitude=pos[0], longitude=pos[1])
        with django_capture_on_commit_callbacks(execute=True):
            incident = incident_record_detection(
                classification=classify(
                    device,
                    recorded_at=heard_at(source, pos, shot),
                    offset_s=0.0,
                    clock_source="gps",
                    accuracy_m=3,
                    lat=pos[0],
                    lon=pos[1],
                    score=0.97,
                )
            )
        incident.refresh_from_db()
        states.append(incident.dispatch)
    assert states == ["review", "review", "dispatched"]
    assert len(_station_rows(incident)) == 1
    # Reviewers heard of each step; police hear of it once, as a new incident, when it is dispatched.
    assert sent == [("incident.opened", False), ("incident.updated", False), ("incident.opened", True)]


def test_who_may_review(reviewer, police_user, owner, admin_user) -> None:
    assert user_can_review(reviewer)
    assert user_can_review(admin_user)  # superuser
    assert not user_can_review(police_user)  # police, but not granted
    owner.user_permissions.add(Permission.objects.get(codename="reviewer", content_type__app_label="alerts"))
    assert not user_can_review(User.objects.get(pk=owner.pk))  # granted, but neither staff nor approved police
    incident = _single_shot(owner)
    with pytest.raises(ApplicationError) as exc:
        incident_review(incident=incident, user=police_user, decision="confirm")
    assert exc.value.code == "not_reviewer"


# --- Calibration ----------------------------------------------------------------------------------


def test_threshold_for_budget_and_its_bounds() -> None:
    # 14 days, budget 1/day: 14 nuisances may pass; 20 at 0.6..0.79 means stepping above the 15th loudest.
    scores = [0.6 + i * 0.01 for i in range(20)]
    threshold, rate = threshold_for_budget(scores, days=14, budget_per_day=1, lower=0.5, upper=0.97)
    assert threshold == pytest.approx(0.66)
    assert rate == pytest.approx(14 / 14)
    # Few nuisances: the model's threshold (never lower).
    assert threshold_for_budget([0.7, 0.8], days=14, budget_per_day=1, lower=0.5, upper=0.97) == (0.5, 2 / 14)
    # A device that hears loud nuisances all day is capped, not muted, and stays over budget.
    threshold, rate = threshold_for_budget([0.99] * 60, days=14, budget_per_day=1, lower=0.5, upper=0.97)
    assert threshold == 0.97
    assert rate == pytest.approx(60 / 14)


def _nuisance_history(device, scores: list[float]) -> None:
    for i, score in enumerate(scores):
        incident = incident_record_detection(
            classification=classify(device, recorded_at=timezone.now() - timedelta(hours=6 * i + 1), score=score)
        )
        Incident.objects.filter(pk=incident.pk).update(status="closed", disposition="other_source")


def test_nuisance_device_is_recalibrated_flagged_and_stops_reaching_police(reviewed_station, owner, settings) -> None:
    settings.ADMINS = [("Admin", "admin@gunwatch.example")]
    settings.ALERT_DISPATCH_DEFAULT_MODE = "immediate"
    DispatchPolicy.objects.filter(station=reviewed_station).update(mode="immediate")
    device = DeviceFactory(owner=owner, name="Building site", latitude=CENTRE[0], longitude=CENTRE[1])
    device.paired_at = timezone.now() - timedelta(days=30)
    device.save()
    _nuisance_history(device, [0.6 + (i % 30) * 0.01 for i in range(40)])
    mail.outbox.clear()
    result = device_calibrate(device, model_threshold=0.5)
    device.refresh_from_db()
    assert result.old is None and 0.6 <= device.alert_threshold <= 0.97
    assert device.alert_threshold == result.new
    assert device.nuisance_per_day <= 1.0
    assert "alert threshold moved from 0.50" in device.calibration_flag
    assert device.calibration_flagged_at is not None
    recipients = sorted(address for message in mail.outbox for address in message.to)
    assert recipients == sorted([owner.email, "admin@gunwatch.example"])
    # A new nuisance below the new threshold: the owner hears of it, police do not.
    incident = incident_record_detection(classification=classify(device, score=device.alert_threshold - 0.02))
    incident.refresh_from_db()
    assert incident.dispatch == "held"
    assert incident.evidence_summary.startswith("Below alert threshold")
    assert _station_rows(incident) == []
    assert incident.notifications.filter(recipient_kind="owner").exists()
    # Above it, it still counts: calibrated, never muted.
    loud = incident_record_detection(
        classification=classify(device, recorded_at=timezone.now() + timedelta(minutes=5), score=0.99)
    )
    loud.refresh_from_db()
    assert loud.dispatch == "dispatched"
    # A second calibration with the same history moves nothing and flags nothing new.
    mail.outbox.clear()
    again = device_calibrate(device, model_threshold=0.5)
    assert again.new == result.new and again.flag == ""
    assert mail.outbox == []


def test_quiet_device_keeps_the_model_threshold(owner) -> None:
    device = DeviceFactory(owner=owner, latitude=CENTRE[0], longitude=CENTRE[1])
    result = device_calibrate(device, model_threshold=0.5)
    assert result.new == 0.5 and result.flag == ""
    assert Detection.objects.count() == 0


def _race(action, barrier, errors: list) -> None:
    from django.db import connection

    try:
        barrier.wait(timeout=10)
        action()
    except ApplicationError:
        pass  # the loser of the race is told the incident was already decided
    except Exception as exc:  # surfaced by the assertion in the test
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_reviewer_and_deadline_racing_dispatch_once(settings) -> None:
    import threading

    station = PoliceStationFactory(
        name="Race",
        latitude=CENTRE[0],
        longitude=CENTRE[1],
        jurisdiction_radius_km=10,
        contact_email="race@police.example",
    )
    DispatchPolicy.objects.create(station=station, mode="review_all")
    reviewer = UserFactory(username="racer", is_staff=True)
    reviewer.user_permissions.add(Permission.objects.get(codename="reviewer", content_type__app_label="alerts"))
    reviewer = User.objects.get(pk=reviewer.pk)
    incident = _single_shot(UserFactory(username="home"))
    assert incident.dispatch == "review"
    Incident.objects.filter(pk=incident.pk).update(review_deadline_at=timezone.now() - timedelta(seconds=1))
    barrier = threading.Barrier(3)
    errors: list[Exception] = []
    threads = [
        threading.Thread(
            target=_race,
            args=(lambda: incident_review(incident=incident, user=reviewer, decision="confirm"), barrier, errors),
        ),
        threading.Thread(target=_race, args=(lambda: incident_escalate(incident_id=incident.pk), barrier, errors)),
        threading.Thread(target=_race, args=(incidents_escalate_overdue, barrier, errors)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    incident.refresh_from_db()
    assert incident.dispatch == "dispatched" and incident.dispatch_reason in ("reviewed", "unreviewed")
    assert len(_station_rows(incident)) == 1
    decided = incident.events.filter(kind__in=[IncidentEvent.Kind.CONFIRMED, IncidentEvent.Kind.ESCALATED])
    assert decided.count() == 1


# --- The demo's nuisance-prone device, live ---------------------------------------------------------


class _ApiReviewer:
    """The simulated reviewer's client, speaking to the test client instead of a server over HTTP."""

    def __init__(self, user: User) -> None:
        from tests.conftest import client_for

        self.api = client_for(user)
        self.answers: list[int] = []

    def dismiss(self, incident_code: str, *, reason: str, note: str) -> int:
        response = self.api.post(
            f"/api/v1/review/{incident_code}/dismiss", {"reason": reason, "note": note}, format="json"
        )
        self.answers.append(response.status_code)
        return response.status_code


def test_simulated_building_site_is_dismissed_recalibrated_and_then_held_from_police(
    reviewed_station, owner, reviewer, police_user, settings, django_capture_on_commit_callbacks
) -> None:
    import threading

    import numpy as np

    from devices.management.commands.simulate_fleet import SiteShow
    from devices.simulation import SITE_DEVICE, SimulatedSource, TruthEvent, building_site

    settings.ADMINS = [("Admin", "admin@gunwatch.example")]
    site = DeviceFactory(owner=owner, name=SITE_DEVICE, latitude=CENTRE[0], longitude=CENTRE[1])
    site.paired_at = timezone.now()
    site.save()
    now = timezone.now()
    nuisances = [
        incident_record_detection(classification=classify(site, recorded_at=now - timedelta(minutes=m), score=s))
        for m, s in ((30, 0.93), (20, 0.91), (10, 0.95))
    ]
    shot = incident_record_detection(classification=classify(site, recorded_at=now - timedelta(minutes=5)))
    heard = shot.detections.get()
    truth = [TruthEvent(0, heard.event_at.timestamp(), *CENTRE, 1, None, ((SITE_DEVICE, heard.event_at.timestamp()),))]
    assert all(Incident.objects.get(pk=i.pk).dispatch == "review" for i in [*nuisances, shot])

    stub = _ApiReviewer(reviewer)
    show = SiteShow(
        source=SimulatedSource(building_site(CENTRE, 3000), threading.Event()),
        device=site,
        rng=np.random.default_rng(0),
        per_hour=60,
        reviewer=stub,  # type: ignore[arg-type]  # the same dismiss() as ReviewerClient
        review_after_s=0,
    )
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        show._review(truth, time.time() + 1)
    assert stub.answers == [200, 200, 200]
    for incident in nuisances:
        incident.refresh_from_db()
        assert (incident.dispatch, incident.disposition, incident.reviewed_by) == (
            "dismissed",
            "other_source",
            reviewer,
        )
    shot.refresh_from_db()
    assert shot.dispatch == "review"  # a real shot the site heard is for a person to judge

    # Three dismissed nuisances on its first day, budget one a day: above the second loudest.
    site.refresh_from_db()
    assert site.alert_threshold == pytest.approx(0.94)
    assert "alert threshold moved from 0.50 to 0.94" in site.calibration_flag
    assert sorted(a for m in mail.outbox for a in m.to) == sorted([owner.email, "admin@gunwatch.example"])

    # The next jackhammer blow scoring like the others is held: the owner hears of it, police do not.
    later = incident_record_detection(classification=classify(site, recorded_at=now + timedelta(minutes=5), score=0.92))
    later.refresh_from_db()
    assert later.dispatch == "held"
    assert _station_rows(later) == []
    assert not incidents_for_police(police_user).filter(pk=later.pk).exists()
    assert later.notifications.filter(recipient_kind="owner").exists()


def test_device_loud_past_the_cap_is_capped_not_muted_and_flagged(owner, settings) -> None:
    settings.ADMINS = [("Admin", "admin@gunwatch.example")]
    device = DeviceFactory(owner=owner, name="Quarry", latitude=CENTRE[0], longitude=CENTRE[1])
    device.paired_at = timezone.now() - timedelta(days=30)
    device.save()
    _nuisance_history(device, [0.99] * 30)  # louder than any threshold calibration may set
    mail.outbox.clear()
    result = device_calibrate(device, model_threshold=0.5)
    device.refresh_from_db()
    assert device.alert_threshold == settings.ALERT_THRESHOLD_MAX == 0.97
    assert device.nuisance_per_day > settings.ALERT_FALSE_ALARM_BUDGET_PER_DAY
    assert "still" in result.flag and "at the cap 0.97: check where it is installed" in device.calibration_flag
    assert "alert threshold moved from 0.50 to 0.97" in device.calibration_flag
    assert sorted(a for m in mail.outbox for a in m.to) == sorted([owner.email, "admin@gunwatch.example"])
    # Never muted: a detection above the cap still counts as evidence.
    loud = incident_record_detection(classification=classify(device, score=0.99))
    loud.refresh_from_db()
    assert loud.dispatch != "held"
    assert incident_evidence(loud).witnesses == 1
