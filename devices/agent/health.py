"""Device health for heartbeats: battery, microphone level and clipping, disk, uptime."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POWER_SUPPLY = Path("/sys/class/power_supply")
# float32 from 16-bit PCM tops out at 32767/32768; anything this close to full scale was clipped.
CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class LevelReport:
    rms_dbfs: float | None
    peak_dbfs: float | None
    clipped_samples: int

    @property
    def clipping(self) -> bool:
        return self.clipped_samples > 0


class LevelMeter:
    """Accumulates the microphone level between two heartbeats (the capture thread feeds it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._sum_squares = 0.0
        self._count = 0
        self._peak = 0.0
        self._clipped = 0

    def update(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        magnitude = np.abs(samples)
        with self._lock:
            self._sum_squares += float(np.dot(samples.astype(np.float64), samples.astype(np.float64)))
            self._count += int(samples.size)
            self._peak = max(self._peak, float(magnitude.max()))
            self._clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))

    def report(self, *, reset: bool = True) -> LevelReport:
        with self._lock:
            if self._count == 0:
                result = LevelReport(None, None, 0)
            else:
                rms = math.sqrt(self._sum_squares / self._count)
                result = LevelReport(_dbfs(rms), _dbfs(self._peak), self._clipped)
            if reset:
                self._reset()
        return result


def _dbfs(value: float) -> float:
    return round(20 * math.log10(max(value, 1e-10)), 1)


def read_battery_pct(root: Path = POWER_SUPPLY) -> float | None:
    """Capacity of the first battery the kernel exposes; None on mains-only boards such as a bare Pi."""
    if not root.is_dir():
        return None
    for supply in sorted(root.iterdir()):
        kind = _read_text(supply / "type")
        capacity = _read_text(supply / "capacity")
        if capacity is None or (kind is not None and kind.lower() != "battery"):
            continue
        try:
            return max(0.0, min(100.0, float(capacity)))
        except ValueError:
            continue
    return None


def system_uptime_s(proc_uptime: Path = Path("/proc/uptime"), *, fallback_start: float | None = None) -> int:
    text = _read_text(proc_uptime)
    if text:
        try:
            return int(float(text.split()[0]))
        except (ValueError, IndexError):
            pass
    return int(time.monotonic() - (fallback_start or 0.0))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
