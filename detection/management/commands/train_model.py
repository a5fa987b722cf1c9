"""Train a detector on a labelled manifest; optionally register it as a candidate model version."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.features import FeatureParams
from core.training import TrainSettings, train
from core.training.augment import with_synthetic_negatives
from core.training.protocols import PROTOCOLS
from core.training.settings import STUDENT
from detection import services
from detection.protocol_capture import trigger_captures
from gunwatch.exceptions import ApplicationError

DEFAULT_MANIFEST = Path(settings.BASE_DIR).parent / "shared" / "data" / "manifest.csv"
DEFAULT_PRETRAINED = Path(settings.BASE_DIR).parent / "shared" / "pretrained" / "mn04_as_mAP_432.pt"
ARCHITECTURES = ("gwcnn-1", "gwcnn-tiny", "gwcnn-student", "mn04-gun", "mn04-ensemble")


def _protocols(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = set(names) - set(PROTOCOLS)
    if unknown:
        raise CommandError(f"unknown protocol(s) {sorted(unknown)}; known: {', '.join(PROTOCOLS)}")
    return names


class Command(BaseCommand):
    help = (
        "Train the gunshot CNN (group-aware split on split_unit, field augmentation), pick the threshold on "
        "validation, and write weights, model card (Markdown + JSON) and plots to --out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=f"default: {DEFAULT_MANIFEST}")
        parser.add_argument("--out", type=Path, required=True, help="output folder")
        parser.add_argument(
            "--architecture",
            choices=ARCHITECTURES,
            default="gwcnn-1",
            help="mn04-gun: fine-tune EfficientAT's AudioSet MobileNetV3; mn04-ensemble (shipped): "
            "that plus a linear probe on the frozen embedding (both with the mn04 recipe); gwcnn-student: gwcnn-1's "
            "network distilled from an mn04-ensemble teacher trained first on the same clips",
        )
        parser.add_argument(
            "--pretrained",
            type=Path,
            default=DEFAULT_PRETRAINED,
            help=f"AudioSet checkpoint for mn04-gun (default: {DEFAULT_PRETRAINED})",
        )
        parser.add_argument("--epochs", type=int, help="default: 12 (gwcnn), 5 (mn04)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps-per-epoch", type=int, help="default: 128 (gwcnn), 120 (mn04)")
        parser.add_argument("--batch-size", type=int, help="1-s windows per step; default: 64 (gwcnn), 32 (mn04)")
        parser.add_argument("--lr", type=float, help="default: 3e-3 (gwcnn), 1e-3 for the new output of mn04-gun")
        parser.add_argument(
            "--protocols",
            type=_protocols,
            default=(),
            help=f"comma-separated validation protocols to run after the fit: {', '.join(PROTOCOLS)}",
        )
        parser.add_argument(
            "--calibrate",
            action="store_true",
            help="fit calibration and operating points on the first protocol's held-out folds",
        )
        parser.add_argument(
            "--all-data",
            action="store_true",
            help="train on every clip (the protocols, not the in-sample split, judge the recipe)",
        )
        parser.add_argument(
            "--synthetic-negatives",
            action="store_true",
            help="add generated negatives (decaying noise bursts, clicks: core.training.synthetic) to the training "
            "negatives (the mn04 probe's and the fine-tuning's)",
        )
        parser.add_argument("--weights-name", help="default: <architecture>.pt")
        parser.add_argument("--json", action="store_true", help="print one JSON object (the card's figures)")
        parser.add_argument(
            "--threads",
            type=int,
            default=1,
            help="torch threads (1 is fastest for this small network on a busy machine)",
        )
        parser.add_argument("--cache-dir", type=Path, help="cache decoded audio here between runs")
        parser.add_argument("--logo", action="store_true", help="also run leave-one-gun-model-out folds")
        parser.add_argument("--baseline", action="store_true", help="also train the seed-style ResNet-34")
        parser.add_argument("--limit", type=int, help="use only this many clips (smoke runs)")
        parser.add_argument("--register", action="store_true", help="register the result as a candidate model")
        parser.add_argument("--name", default="gwcnn-1", help="model name when registering")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not opts["manifest"].is_file():
            raise CommandError(f"manifest not found: {opts['manifest']}")
        if opts["epochs"] is not None and opts["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        if opts["calibrate"] and not opts["protocols"]:
            raise CommandError("--calibrate needs --protocols (its held-out folds are what calibration is fitted on)")
        given = {
            "epochs": opts["epochs"], "steps_per_epoch": opts["steps_per_epoch"], "batch_size": opts["batch_size"],
            "lr": opts["lr"], "weights_name": opts["weights_name"],
        }  # fmt: skip
        common = {
            "seed": opts["seed"], "threads": opts["threads"], "cache_dir": opts["cache_dir"], "logo": opts["logo"],
            "baseline": opts["baseline"], "limit": opts["limit"], "protocols": opts["protocols"],
            "calibrate": opts["calibrate"], "holdout": not opts["all_data"],
            **{k: v for k, v in given.items() if v is not None},
        }  # fmt: skip
        if opts["architecture"].startswith("mn04") or opts["architecture"] == STUDENT:
            if not opts["pretrained"].is_file():
                raise CommandError(f"pretrained checkpoint not found: {opts['pretrained']}")
            common.setdefault("weights_name", f"{opts['architecture']}.pt")
            if opts["architecture"] == STUDENT:
                # Its mn04-ensemble teacher is trained first on the same clips, then the student on its scores.
                train_settings = TrainSettings.student(opts["manifest"], opts["out"], opts["pretrained"], **common)
            else:
                train_settings = TrainSettings.mn04(opts["manifest"], opts["out"], opts["pretrained"],
                                                    architecture=opts["architecture"], **common)  # fmt: skip
        else:
            common.setdefault("weights_name", f"{opts['architecture']}.pt")
            train_settings = TrainSettings(
                manifest=opts["manifest"],
                out_dir=opts["out"],
                architecture=opts["architecture"],
                params=FeatureParams(),
                **common,
            )
        if opts["synthetic_negatives"]:
            train_settings = replace(train_settings, augment=with_synthetic_negatives(train_settings.augment))
        result = train(train_settings, capture=trigger_captures)
        metrics = {k: v for k, v in result.metrics.items() if k not in {"scores", "false_alarm_stream"}}
        if opts["json"]:
            self.stdout.write(json.dumps({
                "weights": str(result.weights_path), "sha256": result.sha256, "threshold": result.threshold,
                "validation": metrics, **{k: result.card[k] for k in ("calibration", "operating_points", "protocols")
                                          if k in result.card},
            }, default=float))  # fmt: skip
            if not opts["register"]:
                return
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
                name=opts["name"],
                version=version,
                weights_path=result.weights_path,
                metrics=metrics,
                model_card=card.read_text() if card.is_file() else "",
                activate=False,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered {model_version.label} as a candidate; "
                "activate it in the admin when its card convinces you."
            )
        )
