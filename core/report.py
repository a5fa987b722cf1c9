"""Model card (Markdown + JSON) and plots for a trained detector. Pure: matplotlib with the Agg backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _short(path: str) -> str:
    return Path(path).stem.removesuffix("__p00")


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def plot_all(out: Path, metrics: dict[str, Any], history: list[dict[str, Any]], threshold: float) -> list[str]:
    y = np.array([s["label"] == "gunshot" for s in metrics["scores"]], dtype=int)
    s = np.array([x["score"] for x in metrics["scores"]])
    names = []
    fig, ax = plt.subplots(figsize=(5, 4))
    fpr, tpr, _ = roc_curve(y, s)
    ax.plot(fpr, tpr)
    ax.axvline(0.01, ls="--", c="grey", lw=0.8)
    ax.set(xscale="log", xlim=(1e-3, 1), xlabel="false positive rate (log)", ylabel="recall",
           title=f"ROC (validation), AUC {_num(metrics['auc'])}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)
    names.append("roc.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    prec, rec, _ = precision_recall_curve(y, s)
    ax.plot(rec, prec)
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall, AP {_num(metrics['ap'])}")
    fig.tight_layout()
    fig.savefig(out / "pr.png", dpi=110)
    plt.close(fig)
    names.append("pr.png")
    c = metrics["confusion"]
    mat = np.array([[c["tp"], c["fn"]], [c["fp"], c["tn"]]])
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(mat, cmap="Blues")
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, str(v), ha="center", va="center", color="black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["gunshot", "other"], yticklabels=["gunshot", "other"],
           xlabel="predicted", ylabel="true", title=f"Confusion at threshold {threshold:.3f}")  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)
    names.append("confusion.png")
    if history:
        ep = [h["epoch"] for h in history]
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
        ax[0].plot(ep, [h["loss"] for h in history], label="train loss (augmented windows)")
        if "val_loss" in history[0]:
            ax[0].plot(ep, [h["val_loss"] for h in history], label="validation loss (clips)")
        ax[0].set(xlabel="epoch", title="loss"), ax[0].legend()
        for key in ("val_auc", "val_recall_at_fpr_1pct"):
            if key in history[0]:
                ax[1].plot(ep, [h[key] for h in history], label=key)
        ax[1].set(xlabel="epoch", ylim=(0.5, 1.0), title="validation"), ax[1].legend()
        fig.tight_layout()
        fig.savefig(out / "training_curves.png", dpi=110)
        plt.close(fig)
        names.append("training_curves.png")
    return names


def write_card(out: Path, card: dict[str, Any], metrics: dict[str, Any]) -> None:
    card = dict(card)
    card["plots"] = plot_all(out, metrics, card.get("history", []), card["threshold"])
    (out / "model_card.json").write_text(json.dumps(card, indent=2, default=float))
    (out / "MODEL_CARD.md").write_text(render_markdown(card))


def render_markdown(card: dict[str, Any]) -> str:
    v, t, d = card["validation"], card["training"], card["data"]
    tc = card.get("threshold_choice", {})
    alarm_files = ", ".join(_short(x) for x in v["false_alarm_stream"].get("event_files", []))
    f = card["features"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"- sha256: `{card['sha256']}`",
        f"- architecture: `{card['architecture']}` ({card['parameters']:,} parameters)",
        f"- features: {f['n_mels']} log-mel bands {f['fmin']:g}-{f['fmax']:g} Hz, {f['sample_rate']} Hz, "
        f"n_fft {f['n_fft']}, hop {f['hop_length']} ({1000 * f['hop_length'] / f['sample_rate']:g} ms); "
        f"windows of {f['window_s']:g} s every {f['hop_s']:g} s; clip score = max window probability",
        f"- decision threshold: **{card['threshold']:.4f}**",
        "",
        "## Intended use",
        "",
        "Flag short recordings (about 1-30 s) from home and vehicle devices that probably contain a gunshot,",
        "for a human to confirm. It is not evidence and not a replacement for a call to the police.",
        "",
        "## Data",
        "",
        f"Manifest `{t['manifest']}` (sha256 `{t['manifest_sha256'][:16]}…`), see `SOURCES.md` of the data set.",
        "Split on `split_unit` (recording/uploader groups), stratified by label and source, seeded "
        f"(seed {t['seed']}).",
        "",
        "| split | clips | gunshots | minutes | split units | Kaggle gun models |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("train", "val"):
        s = d[name]
        lines.append(
            f"| {name} | {s['clips']} | {s['gunshot']} | {s['minutes']} | {s['split_units']} | "
            f"{', '.join(s['gun_models'])} |"
        )
    aug = t["augmentation"]
    lines += [
        "",
        "## Training",
        "",
        f"{t['epochs']} epochs x {t['steps_per_epoch']} batches x {t['batch_size']} windows, AdamW, one-cycle LR "
        f"(max {t['lr']}), {t['threads']} CPU thread(s), {t['seconds']:.0f} s in total including decoding. "
        "Deterministic for a fixed seed.",
        "Every example is one 1-s window, so clip length cannot be a shortcut. Half the windows are gunshots; "
        f"{_pct(aug['field_positive_fraction'])} of those come from the few street/field recordings "
        "(UrbanSound8K, Freesound) rather than the close-range Kaggle videos; impulsive negatives "
        f"(door slams, knocks, claps, fireworks...) are drawn {aug['hard_negative_weight']:g}x as often.",
        f"Augmentation: gunshots mixed into real 'other' audio at {aug['snr_db'][0]:g}…{aug['snr_db'][1]:g} dB "
        f"SNR (p={aug['p_mix_positive']}; negatives mixed with negatives p={aug['p_mix_negative']}); distance "
        f"(low-pass 0.8-4 kHz + exponential-decay reverb, RT60 0.2-1.2 s; p={aug['p_distance']}); "
        f"phone band limit by resampling to {'/'.join(str(r) for r in aug['band_limit_rates'])} Hz and back "
        f"(p={aug['p_band_limit']}); noise; gain {aug['gain_db'][0]:g}…0 dB after normalisation; "
        "time/frequency masking.",
        "",
        "## Validation (production code path: `Classifier.classify_file` on every clip)",
        "",
        f"- clips: {v['n']} ({v['n_gunshot']} gunshots, {v['n_other']} other)",
        f"- AUC {_num(v['auc'])}, average precision {_num(v['ap'])}",
        f"- recall at <= 1 % FPR (best threshold): {_pct(v['recall_at_fpr_1pct'])}",
        f"- at the shipped threshold: recall {_pct(v['recall'])}, precision {_pct(v['precision'])}, "
        f"FPR {_pct(v['fpr'])}",
        f"- false alarms per hour of continuous non-gunshot audio: {_num(v['false_alarms_per_hour'], 2)} "
        f"({v['false_alarm_stream']['events']} alarms in {v['false_alarm_stream']['hours'] * 60:.1f} min; "
        "validation 'other' clips streamed in 10-s device chunks, 5-s refractory period)",
        *([f"- alarms in that stream came from: {alarm_files}"] if alarm_files else []),
        "",
        "Recall per gunshot source:",
        "",
        "| source | n | recall |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {x['n']} | {_pct(x['rate'])} |" for k, x in v["per_source_recall"].items()]
    lines += ["", "False positive rate per 'other' category (categories with a false alarm first):", ""]
    lines += ["| category | n | FPR |", "|---|---|---|"]
    cats = sorted(v["per_category_fpr"].items(), key=lambda kv: (-kv[1]["rate"], kv[0]))
    lines += [f"| {k} | {x['n']} | {_pct(x['rate'])} |" for k, x in cats]
    lines += [
        "",
        "## Threshold",
        "",
        "Two candidate thresholds were measured on validation only:",
        "",
        f"1. clip false positive rate <= {_pct(card['target_fpr'])}: threshold "
        f"{_num(tc.get('by_clip_fpr'))} (validation recall {_pct(tc.get('recall_by_clip_fpr'))}), halfway "
        f"between the lowest admissible threshold ({_num(tc.get('lowest_by_clip_fpr'))}) and the next "
        "gunshot score above it, which keeps the validation recall and adds margin against negatives;",
        f"2. at most {tc.get('max_alarms_per_hour', 1):g} alarm(s) per hour when the validation 'other' clips "
        f"are streamed like a device (10-s chunks, 5-s refractory): threshold {_num(tc.get('by_alarm_rate'))} "
        f"(recall {_pct(tc.get('recall_by_alarm_rate'))}).",
        "",
        f"Shipped: rule `{tc.get('rule', 'clip_fpr')}` -> **{card['threshold']:.4f}**. The clip-FPR rule is "
        "the one the project asked for. The stream rule cannot be estimated reliably here: the validation "
        "stream lasts only minutes, so 'at most 1 per hour' means 'not a single alarm', and the threshold "
        "is set by the one highest-scoring window. On this data it costs "
        "most of the street-recorded (UrbanSound8K) shots, the closest thing to the field. Deployments that "
        "must page the police only on near-certain events can pass the stricter threshold per model "
        "version (`Classifier.classify_*(threshold=...)`). The recordings that raised the streamed alarms "
        "at the shipped threshold are listed in the validation section.",
    ]
    if "logo" in card:
        lines += ["", "## Leave one gun model out", ""]
        lines += [
            "Each fold trains without one Kaggle gun model (and without the validation split units), then "
            "scores the held-out gun model plus the non-Kaggle validation clips; threshold from that fold's "
            "negatives at 1 % FPR.",
            *([card["logo_note"]] if card.get("logo_note") else []),
            "",
            "| held out | n | AUC | recall@1%FPR | held-out recall | FPR |",
            "|---|---|---|---|---|---|",
        ]
        for gun, r in card["logo"].items():
            lines.append(
                f"| {gun} | {r['held_out_n']} | {_num(r['auc'])} | {_pct(r['recall_at_fpr_1pct'])} | "
                f"{_pct(r['held_out_recall'])} | {_pct(r['fpr'])} |"
            )
    sp = card.get("speed")
    b = card.get("baseline")
    if b or sp:
        lines += ["", "## Side by side: seed-style ResNet-34", ""]
        lines += ["| | this model | seed-style ResNet-34 (224x224 images) |", "|---|---|---|"]
        if b:
            accuracy = 1 - (v["confusion"]["fp"] + v["confusion"]["fn"]) / v["n"]
            lines += [
                f"| parameters | {card['parameters']:,} | {b['parameters']:,} |",
                f"| AUC (validation) | {_num(v['auc'])} | {_num(b['auc'])} |",
                f"| recall at <= 1 % FPR | {_pct(v['recall_at_fpr_1pct'])} | {_pct(b['recall_at_fpr_1pct'])} |",
                f"| accuracy (ours at threshold / seed at 0.5) | {_pct(accuracy)} | {_pct(b['accuracy_at_0.5'])} |",
            ]
        if sp:
            lines += [
                f"| CPU ms per s of audio (1 thread, features + network) | {sp['ours_ms_per_audio_s_single']:.3f} "
                f"| {sp['seed_resnet34_ms_per_audio_s']:.1f} |",
                f"| speed ratio | {sp['speedup_single']:.0f}x faster | 1x |",
            ]
        if b:
            lines += [
                "",
                f"The ResNet-34 was trained from scratch on CPU for only {b['epochs']} epochs "
                f"({b['train_windows']:,} augmented windows, {b['train_seconds']:.0f} s) against "
                f"{t['epochs'] * t['steps_per_epoch'] * t['batch_size']:,} windows for this model, because "
                "a full run does not fit the CPU budget; it is a cost comparison more than a quality one.",
            ]
    lines += [
        "",
        "## Limits",
        "",
        "- 566 of the gunshots are close-range clips of six guns cut from videos; distant, echoing street shots "
        "are rare in the data (about 90) and are simulated by augmentation. Expect lower recall on them.",
        "- Hard negatives are scarce (a handful of fireworks, firecrackers, explosions, door slams); no glass "
        "breaking, hammering, nail guns or car backfires at all. Expect false alarms on those.",
        "- Only frequencies below 4 kHz are used, so 8-kHz phone recordings look like the training data; "
        "the price is less detail for telling a shot from other bangs.",
        "",
        "Plots: " + ", ".join(f"[{p}]({p})" for p in card.get("plots", [])),
        "",
    ]
    return "\n".join(lines)


def update_card(out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Merge results computed later (LOGO folds, baseline, speed) into an existing card and re-render it."""
    card = json.loads((out / "model_card.json").read_text())
    metrics = json.loads((out / "val_metrics.json").read_text())
    card.update(extra)
    write_card(out, card, metrics)
    return card
