"""How sure we are that an incident is gunfire: one score from its detections, and the words for it.

The formula (also in the README, "Alerts police can trust"):

- Each device's witness strength is ``p = s * r``: ``s`` its best detection score in the incident,
  ``r`` its track record ``(confirmed + 2) / (confirmed + false + 3)`` over its earlier incidents
  (false = closed as false alarm or other source, or dismissed in review; a new device has r = 2/3).
  Detections below their device's calibrated alert threshold are not witnesses at all.
- Devices within ``ALERT_INDEPENDENT_M`` of each other are one witness (the strongest of them):
  two units in one flat are not independent.
- Witnesses combine as independent evidence: ``P = 1 - Π(1 - p)``.
- Agreement: when the arrival times were fitted by TDOA, ``a = 1 / (1 + (residual / ALERT_RESIDUAL_SCALE_M)²)``,
  so positions that no single source explains pull the score down; otherwise ``a = 1``.
- ``evidence = P * a``, between 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q

from alerts.models import Detection, Incident
from core.geo import haversine_m

STRONG = "Strong"
MODERATE_FROM = 0.6


@dataclass(frozen=True)
class Witness:
    device_id: int
    score: float
    record: float
    latitude: float | None
    longitude: float | None

    @property
    def strength(self) -> float:
        return self.score * self.record


@dataclass(frozen=True)
class Evidence:
    score: float
    witnesses: int  # independent devices whose detections count
    heard_by: int  # every device that heard it, counted or not
    agreement: float
    summary: str


def device_track_records(device_ids: list[int], *, exclude_incident: int | None = None) -> dict[int, float]:
    """``(confirmed + 2) / (confirmed + false + 3)`` per device over its other finished incidents."""
    false_q = Q(incident__disposition__in=[Incident.Disposition.FALSE_ALARM, Incident.Disposition.OTHER_SOURCE]) | Q(
        incident__dispatch=Incident.Dispatch.DISMISSED
    )
    rows = (
        Detection.objects.filter(device_id__in=device_ids)
        .exclude(incident_id=exclude_incident)  # type: ignore[misc]  # None excludes nothing, as meant
        .values("device_id")
        .annotate(
            confirmed=Count(
                "incident", filter=Q(incident__disposition=Incident.Disposition.CONFIRMED_GUNFIRE), distinct=True
            ),
            false=Count("incident", filter=false_q, distinct=True),
        )
    )
    found = {row["device_id"]: (row["confirmed"] + 2) / (row["confirmed"] + row["false"] + 3) for row in rows}
    return {pk: found.get(pk, 2 / 3) for pk in device_ids}


def _independent(witnesses: list[Witness]) -> list[Witness]:
    """The strongest witness of each cluster of devices closer than ALERT_INDEPENDENT_M."""
    kept: list[Witness] = []
    for witness in sorted(witnesses, key=lambda w: -w.strength):
        if (
            witness.latitude is not None
            and witness.longitude is not None
            and any(
                k.latitude is not None
                and haversine_m(witness.latitude, witness.longitude, k.latitude, k.longitude)  # type: ignore[arg-type]
                < settings.ALERT_INDEPENDENT_M
                for k in kept
            )
        ):
            continue
        kept.append(witness)
    return kept


def evidence_combine(
    witnesses: list[Witness], *, residual_m: float | None, tdoa: bool, radius_m: float | None, heard_by: int
) -> Evidence:
    """The score and its words from the witnesses (pure: the tests build incidents from these)."""
    independent = _independent(witnesses)
    miss = 1.0
    for witness in independent:
        miss *= 1.0 - min(max(witness.strength, 0.0), 1.0)
    combined = 1.0 - miss if independent else 0.0
    agreement = 1.0
    if tdoa and residual_m is not None:
        agreement = 1.0 / (1.0 + (residual_m / settings.ALERT_RESIDUAL_SCALE_M) ** 2)
    score = round(combined * agreement, 3)
    return Evidence(
        score,
        len(independent),
        heard_by,
        round(agreement, 3),
        _summary(score, independent, heard_by, agreement, tdoa, residual_m, radius_m),
    )


def _level(score: float) -> str:
    if score >= settings.ALERT_STRONG_EVIDENCE:
        return "Strong evidence"
    return "Moderate evidence" if score >= MODERATE_FROM else "Weak evidence"


def _summary(
    score: float,
    independent: list[Witness],
    heard_by: int,
    agreement: float,
    tdoa: bool,
    residual_m: float | None,
    radius_m: float | None,
) -> str:
    n = len(independent)
    if n == 0:
        return f"Below alert threshold: heard by {heard_by} device(s), none above its calibrated threshold"
    if n == 1:
        where = f"noisy location (±{radius_m:.0f} m)" if radius_m else "no location"
        words = f"single device, {where}"
    elif tdoa and residual_m is not None:
        if agreement >= 0.5:
            words = f"heard by {n} devices, positions agree (±{radius_m or 0:.0f} m)"
        else:
            words = f"heard by {n} devices, positions disagree ({residual_m:.0f} m apart)"
    else:
        words = f"heard by {n} devices, their clocks too coarse to cross-check the position"
    if heard_by > n:
        words += f"; {heard_by - n} more device(s) nearby or below threshold not counted"
    if any(w.record < 0.4 for w in independent):
        words += "; a device with a record of false alarms"
    return f"{_level(score)} ({score:.2f}): {words}"


def alert_threshold(device_threshold: float | None, model_threshold: float) -> float:
    """The score a detection must reach to count: the device's calibrated threshold, never below the model's."""
    return max(model_threshold, device_threshold) if device_threshold is not None else model_threshold


def incident_evidence(incident: Incident) -> Evidence:
    """Read the incident's detections and score them (the row's location fields must be current)."""
    # Plain rows, not three model instances per detection: recording calls this for every detection
    # of a growing incident.
    rows = list(
        Detection.objects.filter(incident=incident).values_list(
            "device_id", "score", "latitude", "longitude", "device__alert_threshold", "classification__threshold"
        )
    )
    device_ids = sorted({row[0] for row in rows})
    records = device_track_records(device_ids, exclude_incident=incident.pk)
    best: dict[int, tuple[float, float | None, float | None]] = {}
    for device_id, score, latitude, longitude, device_threshold, model_threshold in rows:
        if score < alert_threshold(device_threshold, model_threshold):
            continue
        if device_id not in best or score > best[device_id][0]:
            best[device_id] = (score, latitude, longitude)
    witnesses = [Witness(pk, score, records[pk], lat, lon) for pk, (score, lat, lon) in best.items()]
    return evidence_combine(
        witnesses,
        residual_m=incident.residual_m,
        tdoa=incident.location_method == Incident.LocationMethod.TDOA,
        radius_m=incident.radius_m,
        heard_by=len(device_ids),
    )
