from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from detection import services
from gunwatch.exceptions import ApplicationError


def read_metrics(path: Path) -> dict[str, Any]:
    """Metrics from a JSON file; a training output's per-clip score list is left out (it is data, not a metric)."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read metrics from {path}: {exc}") from exc
    if not isinstance(metrics, dict):
        raise CommandError(f"{path} must hold a JSON object")
    metrics.pop("scores", None)
    return metrics


class Command(BaseCommand):
    help = "Register a weights file as a model version (sha256, architecture and features are read from it)."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version here is the model's version; it replaces Django's "show the Django version" flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="weights file written by core.weights.save_weights")
        parser.add_argument("--name", required=True)
        parser.add_argument("--version", dest="model_version", required=True)
        parser.add_argument("--activate", action="store_true", help="make it the active model at once")
        parser.add_argument("--card", type=Path, help="model card (Markdown) to store with it")
        parser.add_argument("--metrics", type=Path, help="evaluation metrics (JSON) to store with it")

    def handle(self, *args: Any, **options: Any) -> None:
        card = ""
        if options["card"]:
            try:
                card = options["card"].read_text()
            except OSError as exc:
                raise CommandError(f"cannot read the model card {options['card']}: {exc}") from exc
        metrics = read_metrics(options["metrics"]) if options["metrics"] else None
        try:
            model_version = services.model_version_register(
                weights_path=options["path"],
                name=options["name"],
                version=options["model_version"],
                metrics=metrics,
                model_card=card,
                activate=options["activate"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        state = "active" if options["activate"] else "registered (not active)"
        self.stdout.write(
            f"{model_version.label} id={model_version.pk} sha256={model_version.sha256} "
            f"architecture={model_version.architecture} threshold={model_version.threshold:.4f}: {state}"
        )
