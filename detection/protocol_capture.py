"""The device agent's trigger as the validation protocols' capture: what a device would really upload."""

from __future__ import annotations

import numpy as np

from devices.agent.trigger import ClipCapture

BLOCK_S = 0.1  # the agent reads its microphone in blocks of about this length


def trigger_captures(stream: np.ndarray, sr: int) -> list[tuple[float, np.ndarray]]:
    """Run the agent's ClipCapture over a background stream; (onset time in s, captured clip) per trigger."""
    capture = ClipCapture(sr)
    block = max(1, int(BLOCK_S * sr))
    clips = []
    for start in range(0, len(stream), block):
        clips += capture.feed(stream[start : start + block], start_time=start / sr)
    clips += capture.flush()
    return [(c.onset_time, c.samples) for c in clips]
