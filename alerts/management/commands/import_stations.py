"""Import police stations from CSV or GeoJSON: ``manage.py import_stations FILE [--dry-run]``.

CSV: a header row with at least ``name,latitude,longitude``; optional columns are address,
jurisdiction_radius_km, jurisdiction_geojson (a JSON polygon), contact_email, contact_phone,
webhook_url, webhook_secret, is_active. GeoJSON: a FeatureCollection of Point features whose
properties carry the same names (``jurisdiction`` may hold a polygon object). Stations are matched
by name, so running the same file twice changes nothing. Bad rows are reported one by one and
skipped; the command then exits with an error so scripts notice.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from alerts.models import PoliceStation
from core.geo import validate_jurisdiction_geojson

OPTIONAL_TEXT = ("address", "contact_email", "contact_phone", "webhook_url", "webhook_secret")
TRUE = {"1", "true", "yes", "y", "on"}
FALSE = {"0", "false", "no", "n", "off"}


class RowError(Exception):
    pass


def _float(value: Any, field: str, *, required: bool) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RowError(f"{field} is required")
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RowError(f"{field} must be a number, got {value!r}") from exc


def _bool(value: Any) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise RowError(f"is_active must be true or false, got {value!r}")


def _jurisdiction(value: Any) -> dict[str, Any] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(f"jurisdiction is not valid JSON: {exc.msg}") from exc
    try:
        validate_jurisdiction_geojson(value)
    except ValueError as exc:
        raise RowError(str(exc)) from exc
    return value


def station_fields(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate one input record and return (name, model field values)."""
    name = str(row.get("name") or "").strip()
    if not name:
        raise RowError("name is required")
    fields: dict[str, Any] = {
        "latitude": _float(row.get("latitude"), "latitude", required=True),
        "longitude": _float(row.get("longitude"), "longitude", required=True),
        "jurisdiction_radius_km": _float(row.get("jurisdiction_radius_km"), "jurisdiction_radius_km", required=False),
        "jurisdiction_geojson": _jurisdiction(row.get("jurisdiction_geojson", row.get("jurisdiction"))),
        "is_active": _bool(row.get("is_active")),
    }
    for key in OPTIONAL_TEXT:
        fields[key] = str(row.get(key) or "").strip()
    candidate = PoliceStation(name=name, **fields)
    try:
        candidate.full_clean(validate_unique=False)
    except ValidationError as exc:
        raise RowError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
    return name, fields


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(label for messages, record) pairs from a CSV or GeoJSON file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".json", ".geojson") or text.lstrip().startswith("{"):
        return _geojson_records(text)
    reader = csv.DictReader(text.splitlines())
    missing = {"name", "latitude", "longitude"} - set(reader.fieldnames or [])
    if missing:
        raise CommandError(f"{path}: the CSV header lacks {', '.join(sorted(missing))}")
    # Line numbers count the header as line 1, as a spreadsheet shows them.
    return [(f"line {number}", dict(row)) for number, row in enumerate(reader, start=2)]


def _geojson_records(text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise CommandError("GeoJSON input must be a FeatureCollection of Point features")
    records: list[tuple[str, dict[str, Any]]] = []
    for index, feature in enumerate(data.get("features") or [], start=1):
        label = f"feature {index}"
        properties = dict((feature or {}).get("properties") or {})
        geometry = (feature or {}).get("geometry") or {}
        if geometry.get("type") != "Point" or len(geometry.get("coordinates") or []) < 2:
            records.append((label, {"_error": "geometry must be a Point with [longitude, latitude]", **properties}))
            continue
        lon, lat = geometry["coordinates"][:2]
        records.append((label, {**properties, "latitude": lat, "longitude": lon}))
    return records


class Command(BaseCommand):
    help = "Create or update police stations from a CSV or GeoJSON file (matched by name)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--dry-run", action="store_true", help="Validate and report, change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path} does not exist")
        created = updated = unchanged = 0
        errors: list[str] = []
        seen: set[str] = set()
        for label, record in read_records(path):
            try:
                if "_error" in record:
                    raise RowError(record["_error"])
                name, fields = station_fields(record)
                if name in seen:
                    raise RowError(f"station {name!r} appears twice in the file")
                seen.add(name)
            except RowError as exc:
                errors.append(f"{label}: {exc}")
                continue
            if options["dry_run"]:
                continue
            outcome = self._save(name, fields)
            created += outcome == "created"
            updated += outcome == "updated"
            unchanged += outcome == "unchanged"
        for error in errors:
            self.stderr.write(error)
        verb = "would import" if options["dry_run"] else "imported"
        self.stdout.write(
            f"{path.name}: {verb} {len(seen)} station(s): {created} created, {updated} updated, "
            f"{unchanged} unchanged; {len(errors)} rejected"
        )
        if errors:
            raise CommandError(f"{len(errors)} row(s) rejected; see the messages above")

    @transaction.atomic
    def _save(self, name: str, fields: dict[str, Any]) -> str:
        station = PoliceStation.objects.select_for_update().filter(name=name).order_by("pk").first()
        if station is None:
            PoliceStation.objects.create(name=name, **fields)
            return "created"
        changed = [key for key, value in fields.items() if getattr(station, key) != value]
        if not changed:
            return "unchanged"
        for key in changed:
            setattr(station, key, fields[key])
        station.save(update_fields=changed)
        return "updated"
