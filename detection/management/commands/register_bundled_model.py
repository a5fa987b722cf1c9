from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.classifier import Classifier
from core.weights import ModelLoadError, sha256_file
from detection import services
from detection.classify import BUNDLED_WEIGHTS, PREVIOUS_BUNDLED
from detection.models import ModelVersion
from detection.selectors import model_version_active
from gunwatch.exceptions import ApplicationError


def _version(weights: Path, sha256: str) -> str:
    """The training date (from the file's metadata) and the checksum: readable and unique."""
    try:
        trained_at = str(Classifier.load(weights).meta.get("trained_at") or "")
    except ModelLoadError:
        trained_at = ""  # registration below reports why the file is unusable
    return f"{trained_at[:10]}-{sha256[:8]}" if trained_at else sha256[:8]


def _bundled_extras(weights: Path) -> tuple[str, dict[str, Any] | None]:
    """The model card and validation metrics shipped next to the weights, when present."""
    card = ""
    for candidate in (weights.with_suffix(".md"), weights.parent / f"MODEL_CARD-{weights.stem}.md",
                      weights.parent / "MODEL_CARD.md"):  # fmt: skip
        if candidate.is_file():
            card = candidate.read_text()
            break
    metrics = None
    card_json = weights.parent / f"model_card-{weights.stem}.json"
    if not card_json.is_file():
        card_json = weights.parent / "model_card.json"
    if card_json.is_file():
        try:
            validation = json.loads(card_json.read_text()).get("validation")
        except (OSError, ValueError, AttributeError):
            validation = None
        if isinstance(validation, dict):
            metrics = {k: v for k, v in validation.items() if k != "scores"}
    return card, metrics


def _register(weights: Path, *, activate: bool) -> tuple[ModelVersion, bool]:
    """The registered version of these weights (registering them if new); True when it was created now."""
    sha256 = sha256_file(weights)
    existing = ModelVersion.objects.filter(sha256=sha256).order_by("-created_at").first()
    if existing is not None:
        # Registered before and later deactivated: bring the same row back rather than duplicate it.
        return (services.model_version_activate(model_version=existing) if activate else existing), False
    card, metrics = _bundled_extras(weights)
    version = services.model_version_register(
        weights_path=weights, name=weights.stem, version=_version(weights, sha256), metrics=metrics, model_card=card,
        activate=activate,
    )  # fmt: skip
    return version, True


class Command(BaseCommand):
    help = (
        "Unless a model is already active: register the weights shipped in detection/weights/ and activate the "
        "default, with the previous default registered before it as its rollback target."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--path", type=Path, default=BUNDLED_WEIGHTS, help=f"default: {BUNDLED_WEIGHTS}")

    def handle(self, *args: Any, **options: Any) -> None:
        active = model_version_active()
        if active is not None:
            self.stdout.write(f"{active.label} is already active; nothing to do.")
            return
        weights: Path = options["path"]
        if not weights.is_file():
            raise CommandError(f"no bundled weights at {weights}")
        try:
            if weights == BUNDLED_WEIGHTS:
                # The previous defaults go first, each activated in turn, so the new default remembers the last
                # one as its previous version: Roll back in the model admin (or the API) returns to it.
                for previous in PREVIOUS_BUNDLED:
                    if previous.is_file():
                        model_version, _ = _register(previous, activate=True)
                        self.stdout.write(f"{model_version.label} registered (the rollback target).")
            model_version, _ = _register(weights, activate=True)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{model_version.label} (sha256 {model_version.sha256[:12]}) registered and active.")
