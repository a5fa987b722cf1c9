"""Spectrogram images of evidence clips for the owner and police pages."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot's import

import numpy as np
from matplotlib.figure import Figure

from core import features
from core.features import FeatureParams


def render_png(samples: np.ndarray, sample_rate: int, params: FeatureParams, *, title: str = "") -> bytes:
    """The log-mel spectrogram the detector saw (resampled and band-limited, not trimmed) as a PNG."""
    y = features.resample(features.to_mono(samples), sample_rate, params.sample_rate)
    y = features.peak_normalise(features.band_limit(y, params), params.peak)
    mel = features.log_mel(y, params)
    duration = y.shape[-1] / params.sample_rate
    # Figure() rather than pyplot: pyplot keeps global state that is not safe across request threads.
    figure = Figure(figsize=(8, 3), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(
        mel,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, duration, 0, params.n_mels),
        vmin=max(float(mel.max()) - 80.0, params.floor_db),
        vmax=float(mel.max()),
    )
    axes.set_xlabel("time (s)")
    axes.set_ylabel(f"mel band ({params.fmin:g}-{params.fmax:g} Hz)")
    if title:
        axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="dB")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
