"""Generated audio and tiny random-weight models for the core and detection tests (nothing real is committed).

Django-free, like core/ itself."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from core.features import FeatureParams
from core.networks import build
from core.weights import save_weights

SR = 16000
ARCH = "gwcnn-tiny"


def sine(freq: float = 1000.0, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def impulses(times_s: list[float], seconds: float = 3.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Quiet noise with sharp, exponentially decaying bursts at the given times (a crude gunshot)."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(int(seconds * sr)).astype(np.float32) * 0.001
    n = int(0.2 * sr)
    decay = np.exp(-np.arange(n) / (0.02 * sr)).astype(np.float32)
    for t in times_s:
        s = int(t * sr)
        seg = min(n, y.size - s)
        y[s : s + seg] += 0.9 * rng.standard_normal(seg).astype(np.float32) * decay[:seg]
    return y


def write(path: Path, y: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    sf.write(path, y, sr, subtype=subtype)
    return path


def make_weights(
    path: Path,
    *,
    logit: float | None = None,
    threshold: float = 0.5,
    seed: int = 0,
    architecture: str = ARCH,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A tiny random network; with ``logit`` its output is pinned to that value for every window."""
    torch.manual_seed(seed)
    params = FeatureParams()
    network = build(architecture, params)
    if logit is not None:
        # Zero weights and a fixed bias make the score sigmoid(logit) whatever the audio.
        with torch.no_grad():
            network.head.weight.zero_()  # type: ignore[union-attr, operator]  # build() says nn.Module; all have a Linear head
            network.head.bias.fill_(logit)  # type: ignore[union-attr, operator]  # as above
    save_weights(
        path,
        architecture=architecture,
        params=params,
        threshold=threshold,
        state_dict=network.state_dict(),
        meta=meta or {"seed": seed},
    )
    return path


def synthetic_manifest(folder: Path, *, n_per_class: int = 10, seed: int = 0) -> Path:
    """A manifest of generated clips: 'gunshots' are impulse trains, 'others' are tones and noise."""
    rng = np.random.default_rng(seed)
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n_per_class):
        seconds = float(rng.uniform(1.0, 3.0))
        gun = impulses([float(rng.uniform(0.1, seconds - 0.3))], seconds=seconds, seed=k)
        other = (
            sine(float(rng.uniform(200, 3000)), seconds)
            + rng.standard_normal(int(seconds * SR)).astype(np.float32) * 0.05
        )
        for label, y, source, category in (
            ("gunshot", gun, "synthetic_gun", "gun_unknown"),
            ("other", other, "synthetic_other", "tone" if k % 2 else "hum"),
        ):
            name = f"clips/{label}_{k}.flac"
            write(folder / name, y)
            rows.append(
                {
                    "file": name, "label": label, "category": category, "source": source,
                    "group": f"{label}:{k}", "split_unit": f"{label}:{k}", "duration_s": f"{seconds:.3f}",
                    "split": "dev",
                }
            )  # fmt: skip
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest
