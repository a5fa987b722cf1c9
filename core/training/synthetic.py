"""Synthetic negatives: bursts of decaying noise and clicks, the first thing a new user plays to a gunshot detector.

A gunshot is an impulse with a sharp attack and a decay, and so is a burst of white noise under an exponential
envelope. AudioSet's "gunshot" is close to both, and nothing in ../shared/data is a bare noise burst, so the
shipped ensemble scored three bursts of decaying white noise (tau 0.1 s, 1 s apart) 0.94 calibrated and alerted
a police station. These generated clips are labelled "not a gunshot" and added to the training negatives of
the probe and of fine-tuning (``AugmentConfig.synthetic_negatives``); they vary what a real gunshot never lacks
or never has (spectral colour, decay from 3 ms to 0.5 s, band, count and spacing, a clean or noisy floor) so
the network learns that an enveloped noise burst alone is not the cue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

COLOURS = ("white", "pink", "brown")
TAU_RANGE_S = (0.003, 0.5)  # exponential decay constant, drawn log-uniform
MAX_BURSTS = 5


@dataclass(frozen=True)
class BurstSpec:
    """What one generated clip holds: onsets (s), decay constant, colour, optional band (Hz), click or burst."""

    onsets_s: tuple[float, ...]
    tau_s: float
    colour: str
    band_hz: tuple[float, float] | None
    click: bool
    floor_db: float | None  # the noise floor relative to the bursts' peak; None: digital silence


def coloured_noise(colour: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise whose power falls as 1/f^0 (white), 1/f (pink, -3 dB/octave) or 1/f^2 (brown, -6 dB/octave)."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {COLOURS}")
    white = rng.standard_normal(n)
    if colour == "white":
        x = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.arange(spectrum.size, dtype=np.float64)
        f[0] = 1.0  # no division by zero; the DC bin is dropped below anyway
        spectrum /= f ** (0.5 if colour == "pink" else 1.0)
        spectrum[0] = 0.0
        x = np.fft.irfft(spectrum, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def decaying_burst(
    n: int, sr: int, tau_s: float, rng: np.random.Generator, *, colour: str = "white",
    band_hz: tuple[float, float] | None = None,
) -> np.ndarray:  # fmt: skip
    """n samples of noise under exp(-t/tau): full level at once (a sharp attack, like a muzzle blast), then decay."""
    x = coloured_noise(colour, n, rng)
    if band_hz is not None:
        lo, hi = band_hz
        x = signal.sosfilt(signal.butter(2, (lo, min(hi, 0.45 * sr)), "bandpass", fs=sr, output="sos"), x)
    envelope = np.exp(-np.arange(n) / (tau_s * sr))
    return (x * envelope).astype(np.float32)


def random_spec(seconds: float, rng: np.random.Generator) -> BurstSpec:
    """A random clip description: 1-5 bursts (or clicks), decay 3 ms-0.5 s, any colour, sometimes band-passed."""
    count = int(rng.integers(1, MAX_BURSTS + 1))
    click = bool(rng.random() < 0.2)
    tau = 10 ** rng.uniform(np.log10(0.0003), np.log10(0.003)) if click else 10 ** rng.uniform(*np.log10(TAU_RANGE_S))
    gap = float(rng.uniform(0.08, 1.2))
    first = float(rng.uniform(0.0, max(0.0, seconds - 0.2)))
    onsets = tuple(t for t in first + gap * np.arange(count) if t < seconds - 0.01) or (first,)
    band = None
    if rng.random() < 0.3:
        lo = float(10 ** rng.uniform(np.log10(100.0), np.log10(3000.0)))
        band = (lo, lo * float(rng.uniform(2.0, 8.0)))
    floor = None if rng.random() < 0.3 else float(rng.uniform(-70.0, -25.0))
    return BurstSpec(tuple(float(t) for t in onsets), float(tau), str(rng.choice(COLOURS)), band, click, floor)


def render(spec: BurstSpec, seconds: float, sr: int, rng: np.random.Generator, *, peak: float = 0.9) -> np.ndarray:
    """The clip a spec describes, peak-normalised to ``peak``."""
    n = round(seconds * sr)
    y = np.zeros(n, dtype=np.float32)
    length = max(1, int(min(8 * spec.tau_s, seconds) * sr))  # 8 tau: -70 dB, the burst has faded out
    for t in spec.onsets_s:
        s = round(t * sr)
        seg = min(length, n - s)
        if seg > 0:
            burst = decaying_burst(length, sr, spec.tau_s, rng, colour=spec.colour, band_hz=spec.band_hz)
            y[s : s + seg] += burst[:seg]
    y *= peak / (float(np.max(np.abs(y))) or 1.0)
    if spec.floor_db is not None:
        y += (peak * 10 ** (spec.floor_db / 20) * coloured_noise(str(rng.choice(COLOURS)), n, rng)).astype(np.float32)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def synthetic_negative(seconds: float, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, BurstSpec]:
    """One random synthetic negative clip and what it holds."""
    spec = random_spec(seconds, rng)
    return render(spec, seconds, sr, rng, peak=float(rng.uniform(0.1, 0.99))), spec


def new_user_clip(
    sr: int = 16000, *, seed: int = 0, seconds: float = 3.0, floor_db: float | None = -40.0
) -> np.ndarray:
    """The issue's "new user" test: three bursts of decaying white noise, tau 0.1 s, 1 s apart, over a quiet floor."""
    spec = BurstSpec((0.5, 1.5, 2.5) if seconds > 2.6 else (0.0, 1.0, 2.0), 0.1, "white", None, False, floor_db)
    return render(spec, seconds, sr, np.random.default_rng(seed))
