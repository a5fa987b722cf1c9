"""Per-device calibration: adapt each device's alert threshold to a false-alarm budget.

A device next to a building site or a bus stop keeps hearing impulses that look like shots. From its
last ``ALERT_CALIBRATION_DAYS`` of history — its detections in incidents closed as false alarm or
other source or dismissed in review, and its triggers the model classified as not gunshot — we pick
the lowest threshold at which it would have raised at most ``ALERT_FALSE_ALARM_BUDGET_PER_DAY``
false alarms a day. The threshold never goes below the model's own (calibration only makes a device
stricter) and never above ``ALERT_THRESHOLD_MAX``, so a device is never silently muted: a very loud
score still counts, and a device still over budget at the cap is flagged. A move of at least
``ALERT_THRESHOLD_FLAG_SHIFT`` of the adjustable range (model threshold to the cap) is flagged too;
flags are mailed to the owner and the administrators and shown on the device page. As nuisances
age out of the window the threshold comes back down. Triggers the model classified as not gunshot
scored below its threshold, the floor here, so they are counted (in the mail) but never move the
threshold: only misfires the model let through do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import mail_admins, send_mail
from django.db.models import Q
from django.utils import timezone

from alerts.models import Detection, Incident
from detection.models import Classification
from detection.selectors import model_version_active
from devices.models import Device

logger = logging.getLogger(__name__)
STEP = 0.01  # thresholds are whole hundredths: easy to read, and a tie sits clearly on one side


@dataclass(frozen=True)
class Calibration:
    device_id: int
    old: float | None
    new: float
    lower: float
    upper: float
    nuisances: int
    days: float
    nuisance_per_day: float  # at the new threshold
    flag: str


def threshold_for_budget(
    scores: list[float], *, days: float, budget_per_day: float, lower: float, upper: float
) -> tuple[float, float]:
    """The lowest threshold in [lower, upper] (hundredths) letting through at most budget * days of
    these nuisance scores; with the rate per day it leaves. Pure, for the tests."""
    allowed = math.floor(budget_per_day * days + 1e-9)
    above = sorted((s for s in scores if s >= lower), reverse=True)
    # Strictly above the (allowed+1)-th loudest nuisance, when there are more than allowed.
    threshold = lower if len(above) <= allowed else math.floor(above[allowed] / STEP + 1e-9) * STEP + STEP
    threshold = round(min(max(threshold, lower), upper), 4)
    passed = sum(1 for s in scores if s >= threshold - 1e-9)  # 0.6 + 0.06 is 0.6599999999999999
    return threshold, passed / days


def _nuisance_scores(device: Device, since: datetime) -> list[float]:
    false_incident = Q(
        incident__disposition__in=[Incident.Disposition.FALSE_ALARM, Incident.Disposition.OTHER_SOURCE]
    ) | Q(incident__dispatch=Incident.Dispatch.DISMISSED)
    scores = list(
        Detection.objects.filter(false_incident, device=device, event_at__gte=since).values_list("score", flat=True)
    )
    scores += list(
        Classification.objects.filter(
            clip__device=device, created_at__gte=since, label=Classification.Label.OTHER
        ).values_list("score", flat=True)
    )
    return scores


def device_calibrate(
    device: Device, *, now: datetime | None = None, model_threshold: float | None = None, notify: bool = True
) -> Calibration:
    """Set the device's threshold from its recent nuisances; a flag is kept on the device and, with
    ``notify``, mailed (seeded demo history passes False: its flag is not news to anyone)."""
    now = now or timezone.now()
    window = timedelta(days=settings.ALERT_CALIBRATION_DAYS)
    since = now - window
    start = max(since, device.paired_at or device.created_at)
    days = max((now - start).total_seconds() / 86400, 1.0)
    if model_threshold is None:
        active = model_version_active()
        model_threshold = active.threshold if active is not None else 0.5
    lower = model_threshold
    upper = max(settings.ALERT_THRESHOLD_MAX, lower)
    scores = _nuisance_scores(device, since)
    new, rate = threshold_for_budget(
        scores, days=days, budget_per_day=settings.ALERT_FALSE_ALARM_BUDGET_PER_DAY, lower=lower, upper=upper
    )
    old = device.alert_threshold
    flags: list[str] = []
    big = settings.ALERT_THRESHOLD_FLAG_SHIFT * max(upper - lower, 0.01)
    if abs(new - (old if old is not None else lower)) >= big - 1e-9:
        flags.append(f"alert threshold moved from {old if old is not None else lower:.2f} to {new:.2f}")
    if rate > settings.ALERT_FALSE_ALARM_BUDGET_PER_DAY:
        flags.append(f"still {rate:.1f} false alarms a day at the cap {upper:.2f}: check where it is installed")
    flag = "; ".join(flags)
    device.alert_threshold = new
    device.nuisance_per_day = round(rate, 3)
    device.calibrated_at = now
    fields = ["alert_threshold", "nuisance_per_day", "calibrated_at"]
    if flag:
        device.calibration_flag, device.calibration_flagged_at = flag[:300], now
        fields += ["calibration_flag", "calibration_flagged_at"]
    device.save(update_fields=fields)
    if flag and notify:
        _tell(device, flag, nuisances=len(scores), days=days)
    return Calibration(device.pk, old, new, lower, upper, len(scores), days, round(rate, 3), flag)


def _tell(device: Device, flag: str, *, nuisances: int, days: float) -> None:
    body = (
        f"GunWatch recalibrated the device {device.name!r}: {flag}.\n"
        f"It raised {nuisances} nuisance trigger(s) in the last {days:.0f} day(s). Its detections now count as "
        "evidence for police only above the new threshold; you are still told about every detection."
    )
    try:
        if device.owner.email:
            send_mail(f"GunWatch: your device {device.name} was recalibrated", body, None, [device.owner.email])
        mail_admins(f"Device {device.name} ({device.code}) recalibrated", body)
    except Exception:  # mail is a courtesy here; the flag on the device page is the record
        logger.exception("Could not mail the calibration flag for device %s", device.pk)


def devices_calibrate(*, device_ids: Iterable[int] | None = None) -> list[Calibration]:
    devices = Device.objects.filter(status=Device.Status.ACTIVE).select_related("owner")
    if device_ids is not None:
        devices = devices.filter(pk__in=list(device_ids))
    active = model_version_active()
    threshold = active.threshold if active is not None else 0.5
    return [device_calibrate(device, model_threshold=threshold) for device in devices]
