"""Export police-reviewed evidence clips as labelled training data.

``manage.py export_feedback --out DIR`` writes DIR/manifest.csv (the columns of the shared data
set's manifest: file,label,category,source,group,split_unit,license,duration_s) and the audio under
DIR/clips/. Incidents closed as confirmed gunfire give ``gunshot`` clips; false alarms and other
sources (fireworks …) give ``other`` clips, the hard negatives the next model most needs. Review
decisions are labels too: an incident dismissed in review gives ``other`` clips (category
``review_dismissed_<reason>``), one a reviewer confirmed gives ``gunshot`` clips (``review_confirmed``)
until police close it, when their disposition decides (a no-evidence closure leaves it unlabelled). Clips
whose audio was already deleted are skipped. Running it again over the same DIR rewrites the
manifest and skips audio files already there.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import soundfile
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Q

from alerts.models import Detection, Incident

LABELS = {
    Incident.Disposition.CONFIRMED_GUNFIRE: "gunshot",
    Incident.Disposition.FALSE_ALARM: "other",
    Incident.Disposition.OTHER_SOURCE: "other",
}
COLUMNS = ["file", "label", "category", "source", "group", "split_unit", "license", "duration_s"]
SOURCE = "gunwatch_field"
LICENSE = "GunWatch field recording, contributed by the device owner; internal training use only"
KEPT_AS_IS = {"wav", "flac"}


class Command(BaseCommand):
    help = "Write police-confirmed and false-alarm evidence clips in the training manifest format."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, required=True, help="Output folder (created if missing)")
        parser.add_argument("--since", help="Only incidents first detected on or after this ISO date")

    def handle(self, *args: Any, **options: Any) -> None:
        out: Path = options["out"]
        (out / "clips").mkdir(parents=True, exist_ok=True)
        police_verdict = Q(incident__status=Incident.Status.CLOSED, incident__disposition__in=list(LABELS))
        reviewer_verdict = Q(incident__dispatch_reason=Incident.DispatchReason.REVIEWED) & ~Q(
            incident__status=Incident.Status.CLOSED
        )
        detections = (
            Detection.objects.filter(police_verdict | reviewer_verdict, clip__audio_deleted_at__isnull=True)
            .exclude(clip__audio="")
            .select_related("incident", "clip", "device")
            .order_by("incident__first_detected_at", "event_at")
        )
        if options["since"]:
            detections = detections.filter(incident__first_detected_at__gte=options["since"])
        rows: list[dict[str, Any]] = []
        skipped = 0
        for detection in detections:
            try:
                rows.append(self._export(detection, out))
            except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
                skipped += 1
                self.stderr.write(f"clip {detection.clip.code}: audio unreadable ({exc}); skipped")
        with (out / "manifest.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        counts = {label: sum(1 for row in rows if row["label"] == label) for label in ("gunshot", "other")}
        self.stdout.write(
            f"exported {len(rows)} clip(s) to {out}: {counts['gunshot']} gunshot, {counts['other']} other"
            + (f"; {skipped} skipped" if skipped else "")
        )

    def _export(self, detection: Detection, out: Path) -> dict[str, Any]:
        clip = detection.clip
        incident = detection.incident
        extension = (clip.audio_format or Path(clip.audio.name).suffix.lstrip(".")).lower()
        target_ext = extension if extension in KEPT_AS_IS else "flac"
        relative = f"clips/{SOURCE}__{clip.code}.{target_ext}"
        target = out / relative
        if not target.exists():
            with clip.audio.open("rb") as source:
                if target_ext == extension:
                    with target.open("wb") as handle:
                        shutil.copyfileobj(source, handle)
                else:
                    # OGG/MP3 uploads are decoded once and kept losslessly from here on.
                    samples, rate = soundfile.read(source, always_2d=False)
                    soundfile.write(target, samples, rate, format="FLAC")
        duration = clip.duration_s if clip.duration_s is not None else soundfile.info(str(target)).duration
        group = f"incident:{incident.code}"
        label, category = feedback_label(incident)
        return {
            "file": relative,
            "label": label,
            "category": category,
            "source": SOURCE,
            "group": group,
            # One event heard by several devices must stay on one side of a split.
            "split_unit": group,
            "license": LICENSE,
            "duration_s": round(duration, 3),
        }


def feedback_label(incident: Incident) -> tuple[str, str]:
    """(label, category) for an incident's clips: police's disposition first, else the reviewer's decision."""
    if incident.dispatch == Incident.Dispatch.DISMISSED:
        return LABELS[incident.disposition], f"review_dismissed_{incident.disposition}"
    if incident.status == Incident.Status.CLOSED and incident.disposition in LABELS:
        return LABELS[incident.disposition], incident.disposition
    return "gunshot", "review_confirmed"
