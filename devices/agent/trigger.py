"""The on-device trigger: decide which moments are impulsive enough to leave the device.

A gunshot's muzzle blast reaches its peak within a millisecond or two and then decays; speech, music,
engines and wind build up over tens of milliseconds or stay steady. The trigger therefore works on 1 ms
frame energies and accepts a candidate only when all of these hold:

* the frame stands ``onset_db`` above a slowly adapting background and ``rise_db`` above the frames just
  before it (something started *now*);
* the loudest frame of the next ``lookahead_s`` stands ``snr_db`` above the background and the waveform
  peak reaches ``min_peak_dbfs`` (quiet ambience never fires);
* the energy gets within 6 dB of that peak within ``max_rise_s`` (rise time: syllables and door-closers ramp
  up more slowly than a blast);
* within ``decay_window_s`` the energy falls at least ``decay_db`` below that peak, both smoothed over
  ``decay_smooth_s`` (a blast decays, or dips between rounds of automatic fire; a tone, an engine or noise switching on
  stays up);
* the crest factor (sample peak / RMS over ``decay_window_s``) is at least ``crest_db`` (rules out tones and
  square-ish waves; kept low because a gunshot close to the microphone clips and loses crest);
* it is at least ``refractory_s`` after the previous onset (one clip per burst of echoes or rounds).

:class:`ClipCapture` keeps a rolling buffer and turns each onset into a clip from ``pre_s`` before to
``post_s`` after it, stamped with the wall-clock time of its first sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-12
_NEAR_PEAK_DB = 6.0


@dataclass(frozen=True)
class TriggerSettings:
    frame_s: float = 0.001
    reference_s: float = 0.02
    background_tau_up_s: float = 2.0
    background_tau_down_s: float = 0.5
    onset_db: float = 12.0
    rise_db: float = 12.0
    snr_db: float = 20.0
    min_peak_dbfs: float = -40.0
    max_rise_s: float = 0.005
    lookahead_s: float = 0.05
    decay_db: float = 10.0
    decay_window_s: float = 0.5
    decay_smooth_s: float = 0.02
    crest_db: float = 6.0
    refractory_s: float = 1.0


@dataclass(frozen=True)
class Onset:
    sample: int  # absolute index in the stream of the first sample of the impulse
    peak_dbfs: float
    snr_db: float
    rise_s: float
    decay_db: float
    crest_db: float


class Trigger:
    """Streaming onset detector. Feed it mono float blocks in [-1, 1]; it returns accepted onsets."""

    def __init__(self, sample_rate: int, settings: TriggerSettings | None = None) -> None:
        self.sample_rate = sample_rate
        self.settings = settings or TriggerSettings()
        s = self.settings
        self._hop = max(1, round(s.frame_s * sample_rate))
        self._frame_s = self._hop / sample_rate
        self._gap = 2  # frames between the reference window and the tested frame, so a ramp is not its own ref
        self._ref = max(1, round(s.reference_s / self._frame_s))
        self._look = max(1, round(s.lookahead_s / self._frame_s))
        self._decay = max(self._look, round(s.decay_window_s / self._frame_s))
        # Smoothed over a whole period of mains hum / engine rumble, whose 1 ms energy swings with the wave.
        self._smooth = max(1, round(s.decay_smooth_s / self._frame_s))
        self._skip = max(1, round(0.01 / self._frame_s))  # the blast itself is not part of the decay
        self._refractory_n = round(s.refractory_s * sample_rate)
        # Background is updated once per chunk of this many frames: slow adaptation needs no finer grain.
        self._chunk = max(1, round(0.05 / self._frame_s))

        self._x = np.zeros(0, dtype=np.float32)
        self._x0 = 0  # absolute index of self._x[0]
        self._e = np.zeros(0, dtype=np.float64)
        self._e0 = 0  # absolute frame index of self._e[0]
        self._frames = 0  # absolute frame count computed so far
        self._next = 0  # next frame to evaluate
        self._bg: float | None = None
        self._last_onset: int | None = None

    @property
    def background_dbfs(self) -> float | None:
        return None if self._bg is None else 10 * math.log10(self._bg + _EPS)

    @property
    def samples_seen(self) -> int:
        return self._x0 + len(self._x)

    def process(self, block: np.ndarray) -> list[Onset]:
        self._append(np.asarray(block, dtype=np.float32).reshape(-1))
        ready = self._frames - self._decay - 1
        onsets = self._evaluate_until(ready)
        self._trim()
        return onsets

    def finish(self) -> list[Onset]:
        """End of input: evaluate the last frames with whatever lookahead is left."""
        return self._evaluate_until(self._frames)

    # -- internals -----------------------------------------------------------------------------------

    def _append(self, block: np.ndarray) -> None:
        self._x = np.concatenate([self._x, block])
        end = self.samples_seen
        count = (end - self._frames * self._hop) // self._hop
        if count <= 0:
            return
        start = self._frames * self._hop - self._x0
        frames = self._x[start : start + count * self._hop].astype(np.float64).reshape(count, self._hop)
        self._e = np.concatenate([self._e, np.mean(frames * frames, axis=1)])
        self._frames += count

    def _evaluate_until(self, stop: int) -> list[Onset]:
        onsets: list[Onset] = []
        while self._next < stop:
            chunk_end = min(stop, self._next + self._chunk)
            energies = self._e[self._next - self._e0 : chunk_end - self._e0]
            if self._bg is None:
                # Median, so that an impulse in the very first frames does not become the background.
                self._bg = float(np.median(energies)) + _EPS
            onsets.extend(self._scan(self._next, chunk_end))
            self._adapt_background(energies)
            self._next = chunk_end
        return onsets

    def _scan(self, first: int, stop: int) -> list[Onset]:
        s = self.settings
        assert self._bg is not None
        idx = np.arange(first, stop)
        e = self._e[idx - self._e0]
        ref = self._reference_means(idx)
        on_ratio, rise_ratio = _db_to_power(s.onset_db), _db_to_power(s.rise_db)
        candidates = idx[(e > self._bg * on_ratio) & (e > ref * rise_ratio)]
        onsets: list[Onset] = []
        for frame in candidates:
            start = int(frame) * self._hop
            if self._last_onset is not None and start - self._last_onset < self._refractory_n:
                continue
            onset = self._verify(int(frame))
            if onset is not None:
                onsets.append(onset)
                self._last_onset = onset.sample
        return onsets

    def _reference_means(self, idx: np.ndarray) -> np.ndarray:
        cumulative = np.concatenate([[0.0], np.cumsum(self._e)])
        hi = np.clip(idx - self._gap - self._e0, 0, len(self._e))
        lo = np.clip(hi - self._ref, 0, len(self._e))
        counts = hi - lo
        sums = cumulative[hi] - cumulative[lo]
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
        # Without history (stream start) nothing can be said about a rise: never fire there.
        return np.where(counts >= self._ref // 2, means, np.inf)

    def _verify(self, frame: int) -> Onset | None:
        s = self.settings
        assert self._bg is not None
        start_e = frame - self._e0
        window = self._e[start_e : start_e + self._look + 1]
        peak_e = float(window.max())
        snr = 10 * math.log10(peak_e / self._bg)
        if snr < s.snr_db:
            return None
        near_peak = np.flatnonzero(window >= peak_e / _db_to_power(_NEAR_PEAK_DB))
        rise_s = float(near_peak[0]) * self._frame_s
        if rise_s > s.max_rise_s:
            return None
        start = frame * self._hop
        segment = self._samples(start - self._hop, start + self._decay * self._hop)
        peak = float(np.max(np.abs(segment)))
        peak_dbfs = 20 * math.log10(peak + _EPS)
        if peak_dbfs < s.min_peak_dbfs:
            return None
        decay = self._decay_db(start_e)
        if decay < s.decay_db:
            return None
        rms = math.sqrt(float(np.mean(segment.astype(np.float64) ** 2)))
        crest = 20 * math.log10((peak + _EPS) / (rms + _EPS))
        if crest < s.crest_db:
            return None
        return Onset(
            sample=self._refine(frame),
            peak_dbfs=round(peak_dbfs, 2),
            snr_db=round(snr, 2),
            rise_s=round(rise_s, 4),
            decay_db=round(decay, 2),
            crest_db=round(crest, 2),
        )

    def _decay_db(self, start_e: int) -> float:
        """Loudest smoothed energy around the onset versus the quietest after it, within the decay window."""
        energies = self._e[start_e : start_e + self._decay + 1]
        smoothed = np.convolve(energies, np.ones(self._smooth) / self._smooth, mode="valid")
        head = smoothed[: max(1, self._look)]
        tail = smoothed[self._skip :]
        if tail.size == 0:
            return 0.0
        return 10 * math.log10((float(head.max()) + _EPS) / (float(tail.min()) + _EPS))

    def _refine(self, frame: int) -> int:
        """Sample-accurate onset: the first sample near the candidate frame that clears the onset level."""
        assert self._bg is not None
        level = math.sqrt(self._bg * _db_to_power(self.settings.onset_db))
        first = (frame - 1) * self._hop
        segment = self._samples(first, (frame + 1) * self._hop)
        above = np.flatnonzero(np.abs(segment) > level)
        return max(first, self._x0) + int(above[0]) if len(above) else frame * self._hop

    def _samples(self, start: int, stop: int) -> np.ndarray:
        lo = max(start, self._x0) - self._x0
        hi = max(lo, min(stop, self.samples_seen) - self._x0)
        return self._x[lo:hi]

    def _adapt_background(self, energies: np.ndarray) -> None:
        s = self.settings
        assert self._bg is not None
        # Impulses must barely move the background: cap each frame at the onset level before averaging.
        capped = np.minimum(energies, self._bg * _db_to_power(s.onset_db))
        level = float(np.mean(capped)) + _EPS
        tau = s.background_tau_up_s if level > self._bg else s.background_tau_down_s
        alpha = 1.0 - math.exp(-len(energies) * self._frame_s / tau)
        self._bg += alpha * (level - self._bg)

    def _trim(self) -> None:
        keep_frame = max(0, self._next - self._gap - self._ref - 2)
        drop_frames = keep_frame - self._e0
        if drop_frames > 0:
            self._e = self._e[drop_frames:]
            self._e0 = keep_frame
        keep_sample = keep_frame * self._hop - self._hop
        drop_samples = keep_sample - self._x0
        if drop_samples > 0:
            self._x = self._x[drop_samples:]
            self._x0 = keep_sample


@dataclass(frozen=True)
class Capture:
    samples: np.ndarray
    sample_rate: int
    start_time: float  # wall-clock epoch seconds of samples[0]
    trigger_offset_s: float  # onset position within the clip
    onset: Onset

    @property
    def onset_time(self) -> float:
        return self.start_time + self.trigger_offset_s

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class ClipCapture:
    """Rolling buffer around a :class:`Trigger`: turns onsets into timestamped clips."""

    def __init__(
        self,
        sample_rate: int,
        settings: TriggerSettings | None = None,
        *,
        pre_s: float = 0.5,
        post_s: float = 1.5,
    ) -> None:
        self.sample_rate = sample_rate
        self.trigger = Trigger(sample_rate, settings)
        self._pre = round(pre_s * sample_rate)
        self._post = round(post_s * sample_rate)
        decision_delay = (self.trigger._decay + 2) * self.trigger._hop
        self._keep = self._pre + self._post + decision_delay + sample_rate
        self._x = np.zeros(0, dtype=np.float32)
        self._x0 = 0
        self._anchors: list[tuple[int, float]] = []  # (absolute sample index, wall-clock time) per block
        self._pending: list[Onset] = []

    def feed(self, block: np.ndarray, start_time: float) -> list[Capture]:
        """Add a block whose first sample was captured at `start_time` (epoch seconds)."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self._anchors.append((self._x0 + len(self._x), start_time))
        self._x = np.concatenate([self._x, block])
        self._pending.extend(self.trigger.process(block))
        captures = self._complete(final=False)
        self._trim()
        return captures

    def flush(self) -> list[Capture]:
        """End of input: emit pending clips, shortened to the audio that exists."""
        self._pending.extend(self.trigger.finish())
        return self._complete(final=True)

    def _complete(self, *, final: bool) -> list[Capture]:
        end = self._x0 + len(self._x)
        done = [o for o in self._pending if final or o.sample + self._post <= end]
        self._pending = [o for o in self._pending if o not in done]
        return [self._cut(onset, end) for onset in done]

    def _cut(self, onset: Onset, end: int) -> Capture:
        start = max(self._x0, onset.sample - self._pre)
        stop = min(end, onset.sample + self._post)
        samples = self._x[start - self._x0 : stop - self._x0].copy()
        return Capture(
            samples=samples,
            sample_rate=self.sample_rate,
            start_time=self._time_of(start),
            trigger_offset_s=(onset.sample - start) / self.sample_rate,
            onset=onset,
        )

    def _time_of(self, index: int) -> float:
        anchor_index, anchor_time = self._anchors[0]
        for candidate_index, candidate_time in self._anchors:
            if candidate_index > index:
                break
            anchor_index, anchor_time = candidate_index, candidate_time
        return anchor_time + (index - anchor_index) / self.sample_rate

    def _trim(self) -> None:
        excess = len(self._x) - self._keep
        if excess <= 0:
            return
        self._x = self._x[excess:]
        self._x0 += excess
        # Keep the last anchor at or before the new start so that _time_of stays exact for kept samples.
        while len(self._anchors) > 1 and self._anchors[1][0] <= self._x0:
            self._anchors.pop(0)


def _db_to_power(db: float) -> float:
    return 10 ** (db / 10)
