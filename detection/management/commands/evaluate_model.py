"""Evaluate a detector on any labelled manifest exactly as production classifies clips."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from core import evaluation
from core.classifier import Classifier
from core.training import TrainSettings
from core.training.augment import with_synthetic_negatives
from core.training.protocols import PROTOCOLS
from core.training.run import evaluate_protocols
from core.training.settings import STUDENT
from core.weights import ModelLoadError
from detection.classify import BUNDLED_WEIGHTS
from detection.models import ModelVersion
from detection.protocol_capture import trigger_captures
from detection.selectors import model_version_active

DEFAULT_MANIFEST = Path(settings.BASE_DIR).parent / "shared" / "data" / "manifest.csv"
DEFAULT_PRETRAINED = Path(settings.BASE_DIR).parent / "shared" / "pretrained" / "mn04_as_mAP_432.pt"
JSON_KEYS = (
    "n",
    "auc",
    "ap",
    "threshold",
    "recall",
    "precision",
    "fpr",
    "recall_at_fpr_1pct",
    "false_alarms_per_hour",
    "per_source_recall",
    "per_category_fpr",
)


def _lookup_version(spec: str) -> ModelVersion:
    """VERSION, NAME:VERSION or a numeric id."""
    versions = ModelVersion.objects.all()
    if spec.isdigit() and versions.filter(pk=int(spec)).exists():
        return versions.get(pk=int(spec))
    name, _, version = spec.rpartition(":")
    matches = versions.filter(version=version, **({"name": name} if name else {}))
    if matches.count() != 1:
        known = ", ".join(v.label for v in versions[:20]) or "none registered"
        raise CommandError(f"no single model version matches {spec!r} (known: {known})")
    return matches.get()


class Command(BaseCommand):
    help = (
        "Classify every clip of a manifest (file,label,category,source,…; file relative to the manifest) like "
        "production and report AUC, AP, recall/precision/FPR at the threshold, recall at 1 % FPR, false alarms "
        "per hour of streamed background, recall per source and FPR per category."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=f"default: {DEFAULT_MANIFEST}")
        parser.add_argument("--split", help="only rows whose split column equals this")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--model", help="a registered version: VERSION, NAME:VERSION or id (default: active)")
        which.add_argument("--weights", type=Path, help="a weights file (default: the active model, else bundled)")
        parser.add_argument("--threshold", type=float, help="override the model's decision threshold")
        parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
        parser.add_argument(
            "--protocol", action="append", choices=PROTOCOLS, default=[],
            help="instead: retrain the model's recipe on every fold of this validation protocol (repeatable; slow: "
                 "one training per fold) and report each fold at the model's calibration and operating points",
        )  # fmt: skip
        parser.add_argument("--pretrained", type=Path, default=DEFAULT_PRETRAINED, help="AudioSet checkpoint, mn04-gun")
        parser.add_argument(
            "--cache-dir", type=Path,
            help="cache decoded audio (and, for mn04, the frozen embeddings every fold's probe shares) between runs",
        )  # fmt: skip
        recipe = parser.add_argument_group("--protocol overrides of the model's recipe (default: the recipe's own)")
        recipe.add_argument("--fold", action="append", default=[], help="run only this fold (repeatable), e.g. us8k")
        recipe.add_argument("--epochs", type=int, help="fine-tuning epochs per fold (mn04 recipe: 5)")
        recipe.add_argument("--steps-per-epoch", type=int, help="fine-tuning steps per epoch (mn04 recipe: 120)")
        recipe.add_argument("--seed", type=int, help="seed of every fold's training (recipe: 0)")
        recipe.add_argument("--probe-c", type=float, help="inverse L2 strength of the mn04 probe (recipe: 0.5)")
        recipe.add_argument("--no-probe-augmentation", action="store_true",
                            help="fit the mn04 probe on the unaugmented windows only")  # fmt: skip
        recipe.add_argument(
            "--synthetic-negatives", action="store_true",
            help="add generated negatives (decaying noise bursts, clicks: core.training.synthetic) to the probe "
                 "and to fine-tuning",
        )  # fmt: skip
        recipe.add_argument("--out", type=Path, help="also write the protocol result, with what ran, as JSON here")

    def handle(self, *args: Any, **opts: Any) -> None:
        manifest: Path = opts["manifest"]
        if not manifest.is_file():
            raise CommandError(f"manifest not found: {manifest}")
        classifier, described = self._classifier(opts)
        overrides = ("fold", "epochs", "steps_per_epoch", "seed", "out", "probe_c")
        if not opts["protocol"] and any(opts[k] not in (None, []) for k in overrides):
            raise CommandError("--fold, --epochs, --steps-per-epoch, --seed and --out need --protocol")
        if not opts["protocol"] and opts["synthetic_negatives"]:
            raise CommandError("--synthetic-negatives changes the recipe: it needs --protocol")
        for key in ("epochs", "steps_per_epoch"):
            if opts[key] is not None and opts[key] < 1:
                raise CommandError(f"--{key.replace('_', '-')} must be at least 1")
        if opts["protocol"]:
            self._protocols(classifier, manifest, opts)
            return
        if not opts["json"]:
            self.stdout.write(
                f"Evaluating {described} on {manifest}" + (f" (split {opts['split']})" if opts["split"] else "")
            )
        try:
            result = evaluation.evaluate(
                manifest,
                classifier=classifier,
                split=opts["split"],
                threshold=opts["threshold"],
                progress=not opts["json"],
            )
        except (ValueError, KeyError) as exc:
            raise CommandError(f"cannot evaluate {manifest}: {exc}") from exc
        if result.get("errors"):
            sys.stderr.write(f"{len(result['errors'])} clip(s) could not be read and were left out\n")
        if opts["json"]:
            self.stdout.write(json.dumps({key: result.get(key) for key in JSON_KEYS}))
        else:
            self._print(result)

    def _classifier(self, opts: dict[str, Any]) -> tuple[Classifier, str]:
        try:
            if opts["weights"]:
                return Classifier.load(opts["weights"]), str(opts["weights"])
            version = _lookup_version(opts["model"]) if opts["model"] else self._active()
            if version is not None:
                return Classifier.load(version.weights.path, expected_sha256=version.sha256), version.label
            return Classifier.load(BUNDLED_WEIGHTS), f"the bundled model {BUNDLED_WEIGHTS.name}"
        except ModelLoadError as exc:
            raise CommandError(f"cannot load the model: {exc}") from exc

    def _protocols(self, classifier: Classifier, manifest: Path, opts: dict[str, Any]) -> None:
        common: dict[str, Any] = {
            "protocols": tuple(opts["protocol"]), "cache_dir": opts["cache_dir"], "speed": False,
            "folds": tuple(opts["fold"]),
            **{k: opts[k] for k in ("epochs", "steps_per_epoch", "seed", "probe_c") if opts[k] is not None},
            **({"probe_augmented": False} if opts["no_probe_augmentation"] else {}),
        }  # fmt: skip
        if classifier.architecture.startswith("mn04"):
            recipe = TrainSettings.mn04(manifest, Path("."), opts["pretrained"], architecture=classifier.architecture,
                                        **common)  # fmt: skip
        elif classifier.architecture == STUDENT:
            # Each fold trains its own teacher on that fold's training clips (never the shipped teacher file).
            recipe = TrainSettings.student(manifest, Path("."), opts["pretrained"], params=classifier.params,
                                           **common)  # fmt: skip
        else:
            recipe = TrainSettings(manifest=manifest, out_dir=Path("."), architecture=classifier.architecture,
                                   params=classifier.params, **common)  # fmt: skip
        if opts["synthetic_negatives"]:
            recipe = replace(recipe, augment=with_synthetic_negatives(recipe.augment))
        started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
        try:
            result = evaluate_protocols(
                recipe,
                capture=trigger_captures,
                cal=classifier.calibration,
                thresholds=classifier.operating_points or {"threshold": classifier.threshold},
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if opts["out"]:
            ran = {
                "weights": str(opts["weights"] or opts["model"] or "active"), "architecture": recipe.architecture,
                "protocols": list(recipe.protocols), "folds": list(recipe.folds) or "all", "seed": recipe.seed,
                "epochs": recipe.epochs, "steps_per_epoch": recipe.steps_per_epoch, "batch_size": recipe.batch_size,
                "threads": recipe.threads, "probe_c": recipe.probe_c, "probe_augmented": recipe.probe_augmented,
                "synthetic_negatives": recipe.augment.synthetic_negatives,
                "synthetic_probe_clips": recipe.augment.synthetic_probe_clips,
                **({"distilled_from": recipe.distill.teacher_loop.architecture, "distill_alpha": recipe.distill.alpha,
                    "teacher_steps": recipe.distill.teacher_loop.epochs * recipe.distill.teacher_loop.steps_per_epoch}
                   if recipe.distill else {}),
                "started": started, "seconds": round(time.perf_counter() - t0, 1),
                "load_average": list(os.getloadavg()), "argv": sys.argv[1:],
            }  # fmt: skip
            opts["out"].parent.mkdir(parents=True, exist_ok=True)
            opts["out"].write_text(json.dumps({"ran": ran, "protocols": result}, indent=1, default=float))
        if opts["json"]:
            self.stdout.write(json.dumps(result, default=float))
            return
        for name, res in result.items():
            self.stdout.write(
                f"protocol {name}: worst fold AUC {res['summary']['auc']}, "
                f"recall at 1 % FPR {res['summary']['recall_at_fpr1']}"
            )
            for row in res["folds"]:
                self.stdout.write("  " + json.dumps(row, default=float))

    def _active(self) -> ModelVersion | None:
        # Evaluation must also work on a checkout with no migrated database: then the bundled model.
        try:
            return model_version_active()
        except DatabaseError:
            return None

    def _print(self, r: dict[str, Any]) -> None:
        def pct(x: float | None) -> str:
            return "—" if x is None else f"{100 * x:.1f} %"

        def num(x: float | None, digits: int = 4) -> str:
            return "—" if x is None else f"{x:.{digits}f}"

        lines = [
            f"clips {r['n']}  (gunshots {r.get('n_gunshot')}, other {r.get('n_other')})",
            f"AUC {num(r['auc'])}   average precision {num(r['ap'])}",
            f"threshold {num(r['threshold'])}: recall {pct(r['recall'])}, precision {pct(r['precision'])}, "
            f"FPR {pct(r['fpr'])}",
            f"recall at 1 % FPR {pct(r['recall_at_fpr_1pct'])}",
            f"false alarms per hour of streamed background {num(r['false_alarms_per_hour'], 2)}",
            "recall per source:",
            *(f"  {k:<24} {pct(v['rate'])} (n={v['n']})" for k, v in r["per_source_recall"].items()),
            "false-positive rate per category (worst first):",
            *(
                f"  {k:<24} {pct(v['rate'])} (n={v['n']})"
                for k, v in sorted(r["per_category_fpr"].items(), key=lambda kv: -kv[1]["rate"])
            ),
        ]
        self.stdout.write("\n".join(lines))
