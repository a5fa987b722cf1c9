"""The model card's protocol tables, rendered from ``evaluate_model --protocol ... --out`` JSON files.

    python -m core.training.protocol_table detection/weights/protocol-runs/mn04-ensemble-gun_model-*.json

prints the per-fold table (against the issue's targets), the false-alarm table, what ran (seconds, start, load)
and, where the runs scored them, the new-user check clips; one fold per file or several. A model without named
operating points (gwcnn-1: one ``threshold``) is reported at that threshold.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The targets, per fold: AUC, recall at <= 1 % FPR, every (held-out) source's recall at the operating point.
AUC_TARGET = 0.99
RECALL_TARGET = 0.90
SOURCE_TARGET = 0.85
POINTS = ("high_recall", "balanced", "low_false_alarm")


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _points(runs: list[tuple[dict[str, Any], str, dict[str, Any]]]) -> list[str]:
    """The operating points the runs report: the named ones (high_recall, balanced, low_false_alarm), else
    whatever thresholds the model had (gwcnn-1: ``threshold``)."""
    found: list[str] = []
    for _, _, result in runs:
        for row in result["folds"]:
            for key, value in row.items():
                if isinstance(value, dict) and "threshold" in value and key not in found:
                    found.append(key)
    named = [p for p in POINTS if p in found]
    return named or found


def _main_point(runs: list[tuple[dict[str, Any], str, dict[str, Any]]]) -> str:
    points = _points(runs)
    return "balanced" if "balanced" in points or not points else points[0]


def load_runs(paths: Sequence[Path]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(what ran, protocol, its result) of each file, in the order given."""
    out = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        for name, result in data["protocols"].items():
            out.append((data["ran"], name, result))
    return out


def fold_table(runs: list[tuple[dict[str, Any], str, dict[str, Any]]], point: str | None = None) -> list[str]:
    point = point or _main_point(runs)
    lines = [
        f"| fold | test clips (gunshots) | AUC | recall @ ≤1 % FPR | recall / FPR ({point}) "
        f"| held-out unit recall ({point}) | recall per source ({point}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, _, result in runs:
        for row in result["folds"]:
            op = row[point]
            held = op["held_recall"]
            per_source = ", ".join(f"{k} {_pct(v)}" for k, v in op["recall_by_source"].items())
            lines.append(
                f"| {row['fold']} | {row['n_test']} ({row['n_pos']}) "
                f"| {row['auc']:.3f} {_mark(row['auc'] >= AUC_TARGET)} "
                f"| {_pct(row['recall_at_fpr1'])} {_mark(row['recall_at_fpr1'] >= RECALL_TARGET)} "
                f"| {_pct(op['recall'])} / {_pct(op['fpr'])} "
                f"| {_pct(held)} {_mark(held is not None and held >= SOURCE_TARGET)} | {per_source} |"
            )
    return lines


def alarm_table(runs: list[tuple[dict[str, Any], str, dict[str, Any]]]) -> list[str]:
    points = _points(runs) or list(POINTS)
    lines = [
        "| fold | hours | captures/h | " + " | ".join(f"{p} raw / trigger" for p in points) + " |",
        "|---|---|---|" + "---|" * len(points),
    ]
    for _, _, result in runs:
        for row in result["folds"]:
            hours = row["stream_hours"]
            cells = [
                f"{row[p]['alarms_per_hour_raw']:.1f} / {row[p].get('alarms_per_hour_trigger', float('nan')):.1f}"
                for p in points
            ]
            lines.append(
                f"| {row['fold']} | {hours:.2f} | {row.get('captures', 0) / hours:.0f} | " + " | ".join(cells) + " |"
            )
    return lines


def ran_table(runs: list[tuple[dict[str, Any], str, dict[str, Any]]]) -> list[str]:
    lines = ["| fold | wall s | started | load avg at end (1/5/15 min) |", "|---|---|---|---|"]
    for ran, _, result in runs:
        load = " / ".join(f"{x:.2f}" for x in ran["load_average"])
        for row in result["folds"]:
            lines.append(f"| {row['fold']} | {ran['seconds']:.0f} | {ran['started']} | {load} |")
    return lines


def check_table(runs: list[tuple[dict[str, Any], str, dict[str, Any]]], point: str | None = None) -> list[str]:
    """The new-user clips (core.training.run.NEW_USER_CLIPS) each fold's classifier scored (calibrated where the
    model has a calibration)."""
    point = point or _main_point(runs)
    scale = "calibrated scores" if point in POINTS else "scores"
    lines = [f"| fold | new-user bursts: {scale} | above {point} |", "|---|---|---|"]
    for _, _, result in runs:
        for row in result["folds"]:
            scores = result.get("check_scores", {}).get(row["fold"])
            if scores is None:
                continue
            above = sum(s >= row[point]["threshold"] for s in scores)
            lines.append(f"| {row['fold']} | {', '.join(f'{s:.3f}' for s in scores)} | {above} of {len(scores)} |")
    return lines if len(lines) > 2 else []


def render(paths: Sequence[Path]) -> str:
    runs = load_runs(paths)
    parts = [fold_table(runs), alarm_table(runs), ran_table(runs), check_table(runs)]
    return "\n\n".join("\n".join(p) for p in parts if p)


if __name__ == "__main__":
    print(render([Path(p) for p in sys.argv[1:]]))
