"""Train a detector on a labelled manifest; optionally register it as a candidate model version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.training import TrainSettings, train
from detection import services
from gunwatch.exceptions import ApplicationError

DEFAULT_MANIFEST = Path(settings.BASE_DIR).parent / "shared" / "data" / "manifest.csv"


class Command(BaseCommand):
    help = (
        "Train the gunshot CNN (group-aware split on split_unit, field augmentation), pick the threshold on "
        "validation, and write weights, model card (Markdown + JSON) and plots to --out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=f"default: {DEFAULT_MANIFEST}")
        parser.add_argument("--out", type=Path, required=True, help="output folder")
        parser.add_argument("--epochs", type=int, default=12)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps-per-epoch", type=int, default=128)
        parser.add_argument("--batch-size", type=int, default=64, help="1-s windows per step")
        parser.add_argument("--threads", type=int, default=1,
                            help="torch threads (1 is fastest for this small network on a busy machine)")
        parser.add_argument("--cache-dir", type=Path, help="cache decoded audio here between runs")
        parser.add_argument("--logo", action="store_true", help="also run leave-one-gun-model-out folds")
        parser.add_argument("--baseline", action="store_true", help="also train the seed-style ResNet-34")
        parser.add_argument("--limit", type=int, help="use only this many clips (smoke runs)")
        parser.add_argument("--register", action="store_true", help="register the result as a candidate model")
        parser.add_argument("--name", default="gwcnn-1", help="model name when registering")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not opts["manifest"].is_file():
            raise CommandError(f"manifest not found: {opts['manifest']}")
        if opts["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        result = train(TrainSettings(
            manifest=opts["manifest"], out_dir=opts["out"], epochs=opts["epochs"], seed=opts["seed"],
            threads=opts["threads"], cache_dir=opts["cache_dir"], logo=opts["logo"], baseline=opts["baseline"],
            limit=opts["limit"], steps_per_epoch=opts["steps_per_epoch"], batch_size=opts["batch_size"],
        ))
        metrics = {k: v for k, v in result.metrics.items() if k not in {"scores", "false_alarm_stream"}}
        self.stdout.write(self.style.SUCCESS(f"Weights: {result.weights_path} (sha256 {result.sha256[:12]})"))
        self.stdout.write(
            f"threshold {result.threshold:.4f}; validation AUC {metrics.get('auc')}, recall {metrics.get('recall')}, "
            f"FPR {metrics.get('fpr')}, false alarms/h {metrics.get('false_alarms_per_hour')}"
        )
        if not opts["register"]:
            return
        card = result.out_dir / "MODEL_CARD.md"
        version = f"{datetime.now(UTC):%Y-%m-%d}-{result.sha256[:8]}"
        try:
            model_version = services.model_version_register(
                name=opts["name"], version=version, weights_path=result.weights_path, metrics=metrics,
                model_card=card.read_text() if card.is_file() else "", activate=False,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(self.style.SUCCESS(
            f"Registered {model_version.label} as a candidate; activate it in the admin when its card convinces you."
        ))
