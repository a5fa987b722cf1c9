"""The acoustic world of the fleet simulator, free of Django.

Devices sit at homes or drive along routes; gunshots happen at points in the city. Every device in
hearing range receives the same shot after the physically right delay (distance over the speed of
sound), quieter with distance (spherical spreading) and duller (air absorbs high frequencies), on top
of its own background. A device's microphone is a :class:`SimulatedSource`: an iterable of audio blocks stamped
with the device's clock, exactly what the real agent reads from a sound card, so the simulated fleet
runs the real agent (trigger, spool, uploads, heartbeats) unchanged.

Only "bursts" of audio around acoustic moments are played: a few seconds of background before and
after each shot or nuisance sound. Between bursts the microphone is silent and costs nothing, which
lets one machine run dozens of devices in real time.

Why one ~600-line module: propagation, the simulated microphones and the ground-truth report are read
together (the report scores what propagation produced); the replay of seeds lives in devices/replay.py.
"""

from __future__ import annotations

import csv
import heapq
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt

from core.geo import FOLLOW_UP_M, SPEED_OF_SOUND_M_S, destination_point, haversine_m
from devices.agent.sources import AudioBlock, Position

SPEED_OF_SOUND = SPEED_OF_SOUND_M_S  # the one value in core.geo; the name is kept for callers here
SAMPLE_RATE = 16_000
# A recorded shot normalised to this peak is what a microphone hears at REFERENCE_M (closer, a
# consumer microphone clips). Against a -60 dBFS night-time background that leaves a 1.5 km shot
# about 35 dB above the floor, in line with ~150 dB SPL muzzle blasts and ~55 dB urban ambience.
REFERENCE_M = 100.0
SHOT_PEAK = 0.9
BED_RMS_DBFS = -60.0
LEAD_S = 2.0  # background before an arrival, so the trigger has a noise floor to compare with
TAIL_S = 2.0
NUISANCE_CATEGORIES = (
    "door_slam",
    "knock",
    "door_knock",
    "car_horn",
    "dog_bark",
    "clapping",
    "drilling",
    "jackhammer",
    "fireworks",
    "firecracker",
    "metal_impact",
    "keys_drop",
    "siren",
    "scream",
    "street_music",
)
# What a building site next to one device keeps making: jackhammer bursts and dropped metal, the two
# labelled categories the shipped model most often takes for a shot (about 1 in 5 and 1 in 10 played
# at the site's level through the on-device scorer; drills, doors and knocks: none in 10).
SITE_CATEGORIES = ("jackhammer", "keys_drop")
SITE_DEVICE = "Sim building site"
# Recordings whose own background is louder than this (relative to the blast) are not used as shots.
SHOT_MAX_FLOOR_DB = -20.0
BED_CATEGORIES = ("air_conditioner", "engine_idling", "children_playing", "street_music")


# --- geometry and propagation -------------------------------------------------------------------------


def arrival_time(event_time: float, distance_m: float) -> float:
    return event_time + distance_m / SPEED_OF_SOUND


def spreading_gain(distance_m: float) -> float:
    """Amplitude factor of spherical spreading (-6 dB per doubling) relative to REFERENCE_M."""
    return min(1.0, REFERENCE_M / max(distance_m, 1.0))


def absorption_cutoff_hz(distance_m: float) -> float:
    """Air absorbs ~5 dB/km at 1 kHz and ~25 dB/km at 4 kHz: far shots lose their crack."""
    return float(np.clip(3000.0 * (1000.0 / max(distance_m, 1.0)) ** 0.7, 1500.0, 7900.0))


def propagate(shot: np.ndarray, distance_m: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The shot as heard ``distance_m`` away (level drop and high-frequency loss)."""
    peak = float(np.max(np.abs(shot))) or 1.0
    heard = shot * (SHOT_PEAK / peak) * spreading_gain(distance_m)
    cutoff = absorption_cutoff_hz(distance_m)
    if cutoff < sample_rate / 2 * 0.98:
        sos = butter(2, cutoff, btype="lowpass", fs=sample_rate, output="sos")
        heard = sosfilt(sos, heard)
    return heard.astype(np.float32)


def level_db(x: np.ndarray) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12)


# --- the world ------------------------------------------------------------------------------------------


@dataclass
class SimDevice:
    """A simulated device: a fixed home position, or a looped route for a vehicle."""

    name: str
    kind: str  # "home" | "vehicle"
    route: list[tuple[float, float]]  # one point for a home device
    speed_mps: float = 0.0
    clock_offset_s: float = 0.0  # how wrong this device's clock is (GPS-disciplined: ~1 ms)
    accuracy_m: float = 5.0
    started_at: float = field(default_factory=time.time)

    def position_at(self, when: float) -> Position:
        if len(self.route) == 1 or self.speed_mps <= 0:
            lat, lon = self.route[0]
            return Position(lat, lon, self.accuracy_m)
        legs = list(zip(self.route, [*self.route[1:], self.route[0]], strict=True))
        lengths = [haversine_m(a[0], a[1], b[0], b[1]) for a, b in legs]
        travelled = ((when - self.started_at) * self.speed_mps) % sum(lengths)
        for (a, b), length in zip(legs, lengths, strict=True):
            if travelled <= length:
                f = travelled / length if length else 0.0
                return Position(a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, self.accuracy_m)
            travelled -= length
        return Position(self.route[0][0], self.route[0][1], self.accuracy_m)


@dataclass(frozen=True)
class TruthEvent:
    """A gunshot that really happened in the simulation."""

    index: int
    time: float  # epoch seconds of the shot
    latitude: float
    longitude: float
    audible: int = 0  # devices within hearing range
    first_arrival: float | None = None  # when the nearest device heard it
    # (device name, arrival on that device's clock) for every device in range: matches detections to shots
    heard_by: tuple[tuple[str, float], ...] = ()


def random_point(rng: np.random.Generator, center: tuple[float, float], radius_m: float) -> tuple[float, float]:
    """Uniform over the disc (sqrt of a uniform radius), not bunched at the centre."""
    distance = radius_m * math.sqrt(rng.random())
    return destination_point(center[0], center[1], float(rng.uniform(0, 360)), distance)


def make_fleet(
    rng: np.random.Generator,
    *,
    count: int,
    center: tuple[float, float],
    radius_m: float,
    vehicle_share: float = 0.3,
    clock_sigma_s: float = 0.001,
) -> list[SimDevice]:
    devices: list[SimDevice] = []
    for i in range(count):
        vehicle = rng.random() < vehicle_share
        if vehicle:
            route = [random_point(rng, center, radius_m) for _ in range(4)]
            devices.append(
                SimDevice(
                    f"Sim car {i + 1}",
                    "vehicle",
                    route,
                    speed_mps=float(rng.uniform(5, 14)),
                    clock_offset_s=float(rng.normal(0, clock_sigma_s)),
                    accuracy_m=8.0,
                )
            )
        else:
            devices.append(
                SimDevice(
                    f"Sim home {i + 1}",
                    "home",
                    [random_point(rng, center, radius_m)],
                    clock_offset_s=float(rng.normal(0, clock_sigma_s)),
                    accuracy_m=4.0,
                )
            )
    return devices


def building_site(center: tuple[float, float], radius_m: float) -> SimDevice:
    """The demo's nuisance-prone device: a home unit next to a building site, at a fixed place in the
    area (no randomness, so adding it changes nothing else the seed decides)."""
    lat, lon = destination_point(center[0], center[1], 200.0, 0.4 * radius_m)
    return SimDevice(SITE_DEVICE, "home", [(lat, lon)], clock_offset_s=0.0005, accuracy_m=4.0)


def nuisance_only(detections: Sequence[tuple[str, float]], site: str, events: Sequence[TruthEvent]) -> bool:
    """Whether an incident's detections (device name, time on its clock) are all the site's and none of
    them a real shot: what a reviewer listening to its clips would dismiss."""
    return bool(detections) and all(name == site and _shot_of(name, at, events) is None for name, at in detections)


# --- sounds ---------------------------------------------------------------------------------------------


@dataclass
class SoundBank:
    """Gunshots, nuisance sounds and background beds, from the labelled data or synthesised."""

    shots: list[np.ndarray]
    nuisances: list[np.ndarray]
    beds: list[np.ndarray]
    site: list[np.ndarray] = field(default_factory=list)  # the building site's own; else the nuisances

    def site_sounds(self) -> list[np.ndarray]:
        return self.site or self.nuisances

    @classmethod
    def load(cls, manifest: Path | None, rng: np.random.Generator, *, limit: int = 40) -> SoundBank:
        if manifest is None or not manifest.exists():
            return cls.synthetic(rng)
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        rng.shuffle(rows)
        root = manifest.parent

        def pick(predicate: Callable[[dict[str, str]], bool], count: int = limit) -> list[np.ndarray]:
            chosen = [row for row in rows if predicate(row)][:count]
            return [_read_mono(root / row["file"]) for row in chosen]

        # A recording's own ambience (the range, the street where it was made) is loud next to its
        # microphone and does not travel a kilometre with the blast. Played back as if it did, the
        # "shot" never decays and the trigger rightly ignores it, on every device at once: the
        # shot is missed outright. Keep the recordings whose blast stands clear of their own floor.
        candidates = [_crop_around_peak(x, 1.5) for x in pick(lambda r: r["label"] == "gunshot", limit * 4)]
        shots = [x for x in candidates if own_floor_db(x) <= SHOT_MAX_FLOOR_DB][:limit]
        nuisances = [_crop_around_peak(x, 3.0) for x in pick(lambda r: r["category"] in NUISANCE_CATEGORIES)]
        beds = pick(lambda r: r["category"] in BED_CATEGORIES and float(r["duration_s"]) >= 3.0)
        if not shots or not beds:
            return cls.synthetic(rng)
        # Picked last, so the shots, nuisances and beds a seed chose before the site existed stay the same.
        site = [_crop_around_peak(x, 3.0) for x in pick(lambda r: r["category"] in SITE_CATEGORIES, limit // 2)]
        return cls(shots, nuisances or cls.synthetic(rng).nuisances, beds, site)

    @classmethod
    def synthetic(cls, rng: np.random.Generator) -> SoundBank:
        return cls(
            [synthetic_shot(rng) for _ in range(4)], [synthetic_knock(rng) for _ in range(4)], [pink_noise(rng, 8.0)]
        )

    def bed(self, rng: np.random.Generator, seconds: float) -> np.ndarray:
        source = self.beds[int(rng.integers(len(self.beds)))]
        need = int(seconds * SAMPLE_RATE)
        reps = need // len(source) + 2
        start = int(rng.integers(len(source)))
        looped = np.tile(source, reps)[start : start + need]
        rms = float(np.sqrt(np.mean(np.square(looped, dtype=np.float64)))) or 1.0
        return (looped * (10 ** (BED_RMS_DBFS / 20) / rms)).astype(np.float32)


def _read_mono(path: Path) -> np.ndarray:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=sr, target_sr=SAMPLE_RATE)
    return mono.astype(np.float32)


def own_floor_db(x: np.ndarray) -> float:
    """A recording's own background relative to its loudest moment: 20th percentile of 10 ms frame
    energies against the loudest frame, in dB (negative)."""
    frame = int(0.01 * SAMPLE_RATE)
    n = len(x) // frame
    if n == 0:
        return 0.0
    energy = 10 * np.log10(np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1) + 1e-12)
    return float(np.percentile(energy, 20) - energy.max())


def _crop_around_peak(x: np.ndarray, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    peak = int(np.argmax(np.abs(x)))
    start = max(0, min(peak - int(0.1 * SAMPLE_RATE), len(x) - n))
    return x[start : start + n]


def synthetic_shot(rng: np.random.Generator) -> np.ndarray:
    """A muzzle blast: a sub-millisecond rise, a fast exponential decay and a little echo."""
    t = np.arange(int(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
    blast = rng.normal(0, 1, t.size) * np.exp(-t / 0.025)
    echo = np.roll(blast, int(0.08 * SAMPLE_RATE)) * 0.3
    return (0.9 * (blast + echo) / np.max(np.abs(blast))).astype(np.float32)


def synthetic_knock(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.4 * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.4 * np.sin(2 * np.pi * 180 * t) * np.exp(-t / 0.04)).astype(np.float32)


def pink_noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    return np.fft.irfft(spectrum, n).astype(np.float32)


# --- a device's microphone ------------------------------------------------------------------------------


class SimulatedSource:
    """The microphone of one simulated device: plays scheduled bursts at their wall-clock times.

    Blocks are handed out only once their last sample lies in the past, stamped with the device's
    own (slightly wrong) clock, so uploads carry the timestamps a real unit would send.
    """

    def __init__(
        self, device: SimDevice, stop: threading.Event, *, block_s: float = 0.1, clock: Callable[[], float] = time.time
    ) -> None:
        self.device = device
        self.stop = stop
        self.block = int(block_s * SAMPLE_RATE)
        self.clock = clock
        self._bursts: list[tuple[float, int, np.ndarray]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._seq = 0

    def schedule(self, start: float, audio: np.ndarray) -> None:
        """Play ``audio`` from true time ``start``; overlapping pending bursts are mixed into one."""
        with self._lock:
            end = start + len(audio) / SAMPLE_RATE
            keep: list[tuple[float, int, np.ndarray]] = []
            for other_start, seq, other in self._bursts:
                other_end = other_start + len(other) / SAMPLE_RATE
                if other_start < end and start < other_end:
                    start, audio = _mix(start, audio, other_start, other)
                    end = start + len(audio) / SAMPLE_RATE
                else:
                    keep.append((other_start, seq, other))
            self._seq += 1
            keep.append((start, self._seq, audio))
            heapq.heapify(keep)
            self._bursts = keep
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._bursts)

    def __iter__(self) -> Iterator[AudioBlock]:
        while not self.stop.is_set():
            with self._lock:
                nxt = self._bursts[0] if self._bursts else None
            if nxt is None or nxt[0] > self.clock():
                self._wake.clear()
                wait = 0.5 if nxt is None else min(0.5, max(0.0, nxt[0] - self.clock()))
                self._wake.wait(wait)
                continue
            with self._lock:
                start, _, audio = heapq.heappop(self._bursts)
            yield from self._play(start, audio)

    def _play(self, start: float, audio: np.ndarray) -> Iterator[AudioBlock]:
        for offset in range(0, len(audio), self.block):
            chunk = audio[offset : offset + self.block]
            block_start = start + offset / SAMPLE_RATE
            ready_at = block_start + len(chunk) / SAMPLE_RATE
            delay = ready_at - self.clock()
            if delay > 0 and self.stop.wait(delay):
                return
            yield AudioBlock(chunk, SAMPLE_RATE, block_start + self.device.clock_offset_s)


def _mix(a_start: float, a: np.ndarray, b_start: float, b: np.ndarray) -> tuple[float, np.ndarray]:
    start = min(a_start, b_start)
    end = max(a_start + len(a) / SAMPLE_RATE, b_start + len(b) / SAMPLE_RATE)
    out = np.zeros(round((end - start) * SAMPLE_RATE) + 1, dtype=np.float32)
    for s, x in ((a_start, a), (b_start, b)):
        i = round((s - start) * SAMPLE_RATE)
        out[i : i + len(x)] += x[: len(out) - i]
    return start, out


def burst_with(bank: SoundBank, rng: np.random.Generator, sound: np.ndarray) -> np.ndarray:
    """Background, then ``sound`` at LEAD_S, then more background."""
    bed = bank.bed(rng, LEAD_S + len(sound) / SAMPLE_RATE + TAIL_S)
    i = int(LEAD_S * SAMPLE_RATE)
    bed[i : i + len(sound)] += sound[: len(bed) - i]
    return np.clip(bed, -1.0, 1.0)


def schedule_shot(
    *,
    event: TruthEvent,
    devices: Sequence[SimDevice],
    sources: Sequence[SimulatedSource],
    bank: SoundBank,
    rng: np.random.Generator,
    hearing_range_m: float,
) -> TruthEvent:
    """Send one gunshot to every device in range; returns the event with who could hear it."""
    shot = bank.shots[int(rng.integers(len(bank.shots)))]
    heard = hearers(event, devices, hearing_range_m)
    source_of = {id(device): source for device, source in zip(devices, sources, strict=True)}
    for device, distance, arrival in heard:
        source_of[id(device)].schedule(arrival - LEAD_S, burst_with(bank, rng, propagate(shot, distance)))
    return heard_event(event, heard)


def hearers(
    event: TruthEvent, devices: Sequence[SimDevice], hearing_range_m: float
) -> list[tuple[SimDevice, float, float]]:
    """(device, distance, true arrival time) for every device within hearing range of the shot."""
    heard = []
    for device in devices:
        # Sound meets a moving car where the car is when it arrives, not where it was at the shot: a car
        # at 14 m/s moves 60 m in the 4 s sound takes over 1.5 km, far more than TDOA's error. A few
        # fixed-point steps converge (the car is ~25 times slower than sound).
        distance = 0.0
        for _ in range(4):
            position = device.position_at(arrival_time(event.time, distance))
            distance = haversine_m(event.latitude, event.longitude, position.latitude, position.longitude)
        if distance <= hearing_range_m:
            heard.append((device, distance, arrival_time(event.time, distance)))
    return heard


def heard_event(event: TruthEvent, heard: Sequence[tuple[SimDevice, float, float]]) -> TruthEvent:
    """The event with who could hear it, and when each device's (slightly wrong) clock says it did."""
    return TruthEvent(
        event.index,
        event.time,
        event.latitude,
        event.longitude,
        len(heard),
        min((arrival for _, _, arrival in heard), default=None),
        tuple((device.name, arrival + device.clock_offset_s) for device, _, arrival in heard),
    )


# --- ground truth against what the platform did ----------------------------------------------------


@dataclass(frozen=True)
class ObservedIncident:
    first_detected_at: float
    opened_at: float
    latitude: float | None
    longitude: float | None
    radius_m: float | None
    method: str
    device_count: int
    key: int | None = None
    # (device name, event time) of each detection: ties the incident to the shots it holds
    detections: tuple[tuple[str, float], ...] = ()
    shots: int = 0


# A detection is of a shot when its time is this close to the shot's arrival on that device's clock
# (a recording's blast may start up to 0.1 s into the played sound, and the trigger picks it within
# tens of ms; shots at one device are seconds apart).
DETECTION_MATCH_S = 0.3
# Two shots this close may be one incident: the joining rule's "same place" (a source within
# core.geo.FOLLOW_UP_M of one that explains the first shot) plus each arrival's timing tolerance.
FOLLOW_UP_SHARE_M = 2 * FOLLOW_UP_M
# Fewest devices that give a shot a position of its own (TDOA needs three).
PLACEABLE_DEVICES = 3


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _shot_of(name: str, at: float, events: Sequence[TruthEvent]) -> int | None:
    best: tuple[float, int] | None = None
    for event in events:
        for heard_name, heard_at in event.heard_by:
            gap = abs(heard_at - at)
            if heard_name == name and gap <= DETECTION_MATCH_S and (best is None or gap < best[0]):
                best = (gap, event.index)
    return None if best is None else best[1]


def _holders(
    events: Sequence[TruthEvent], incidents: Sequence[ObservedIncident]
) -> tuple[dict[int, list[int]], dict[int, set[int]], dict[int, int]]:
    """Shot index -> positions of incidents holding its detections; incident position -> shot indices;
    shot index -> detections of it."""
    holders: dict[int, list[int]] = {}
    shots_in: dict[int, set[int]] = {}
    devices: dict[int, int] = {}
    for position, incident in enumerate(incidents):
        for name, at in incident.detections:
            index = _shot_of(name, at, events)
            if index is None:
                continue  # a nuisance sound taken for a shot
            shots_in.setdefault(position, set()).add(index)
            devices[index] = devices.get(index, 0) + 1
            if position not in holders.setdefault(index, []):
                holders[index].append(position)
    return holders, shots_in, devices


def shot_verdicts(
    events: Sequence[TruthEvent], incidents: Sequence[ObservedIncident], *, follow_up_m: float = FOLLOW_UP_SHARE_M
) -> list[dict[str, object]]:
    """Per fired shot: which incidents hold its detections, how many devices, where they put it.

    ``ok`` is the joining rule's promise: a detected shot is exactly one incident, that incident holds
    no other shot, and the shot lies inside the incident's uncertainty circle. A shot nobody detected
    is not ``ok`` either when it was audible (it is a miss, reported as such).
    """
    holders, shots_in, devices = _holders(events, incidents)
    verdicts: list[dict[str, object]] = []
    for event in events:
        found = holders.get(event.index, [])
        verdict: dict[str, object] = {
            "shot": event.index + 1,
            "audible": event.audible,
            "devices": devices.get(event.index, 0),
            "incidents": [incidents[p].key for p in found],
            "shared_with": [],
            "shared_m": [],
            "confusable_with": [],
            "error_m": None,
            "located": None,
            "radius_m": None,
            "method": None,
            "ok": event.audible == 0,
        }
        if len(found) == 1:
            incident = incidents[found[0]]
            others = sorted(shots_in[found[0]] - {event.index})
            verdict["shared_with"] = [i + 1 for i in others]
            by_index = {e.index: e for e in events}
            apart = [
                haversine_m(event.latitude, event.longitude, by_index[i].latitude, by_index[i].longitude)
                for i in others
            ]
            verdict["shared_m"] = [round(m) for m in apart]
            # Another shot at the same place within the quiet window is a follow-up by the rule's own
            # definition, not a separate shooting absorbed.
            follow_up = any(m <= follow_up_m for m in apart)
            far = [i for i, m in zip(others, apart, strict=True) if m > follow_up_m]
            # A shot heard by fewer than PLACEABLE_DEVICES has no position of its own (one device: a
            # 1.5 km circle; two: a hyperbola), so nothing can tell it from a follow-up of a shot
            # whose place it could have come from. Such pairs are reported, not failed.
            placeable = devices.get(event.index, 0) >= PLACEABLE_DEVICES
            confusable = [i for i in far if not placeable or devices.get(i, 0) < PLACEABLE_DEVICES]
            verdict["confusable_with"] = [i + 1 for i in confusable]
            verdict["method"] = incident.method
            verdict["radius_m"] = None if incident.radius_m is None else round(incident.radius_m, 1)
            if incident.latitude is not None and incident.longitude is not None:
                error = haversine_m(event.latitude, event.longitude, incident.latitude, incident.longitude)
                verdict["error_m"] = round(error, 1)
                # A follow-up is located by the incident's best-heard shot: it may be off by the move too.
                allowed = (incident.radius_m or 0.0) + (follow_up_m if follow_up else 0.0)
                verdict["located"] = error <= allowed
                located = error <= allowed or (bool(confusable) and not placeable)
                verdict["ok"] = len(confusable) == len(far) and located
        verdicts.append(verdict)
    return verdicts


def ground_truth_report(
    events: Sequence[TruthEvent],
    incidents: Sequence[ObservedIncident],
    *,
    match_window_s: float = 10.0,
    match_radius_m: float = 3000.0,
) -> dict[str, Any]:
    """Match each audible shot to the incident the platform opened for it, and score the rest.

    When the incidents carry their detections and the shots who heard them, shots and incidents are
    matched by detection (exact: it shows a shot split over incidents, or two shots in one, and adds
    a per-shot verdict); otherwise by time and place.
    """
    by_detection = any(event.heard_by for event in events) and any(inc.detections for inc in incidents)
    if by_detection:
        holders, shots_in, _ = _holders(events, incidents)
        matched = {
            position: holders[event.index][0]
            for position, event in enumerate(events)
            if holders.get(event.index) and incidents[holders[event.index][0]].latitude is not None
        }
        false_incidents = len(incidents) - len(shots_in)
    else:
        matched = _match_by_time_and_place(events, incidents, match_window_s, match_radius_m)
        false_incidents = len(incidents) - len(matched)
    errors: dict[str, list[float]] = {}
    latencies: list[float] = []
    audible = [event for event in events if event.audible > 0]
    for position, incident_position in matched.items():
        event, incident = events[position], incidents[incident_position]
        assert incident.latitude is not None and incident.longitude is not None and event.first_arrival is not None
        error = haversine_m(event.latitude, event.longitude, incident.latitude, incident.longitude)
        errors.setdefault(incident.method or "unknown", []).append(error)
        latencies.append(incident.opened_at - event.first_arrival)
    detected = len(matched)
    all_errors = [e for values in errors.values() for e in values]
    report: dict[str, object] = {
        "events": len(events),
        "audible_events": len(audible),
        "detected": detected,
        "detection_rate": round(detected / len(audible), 3) if audible else None,
        "missed": len(audible) - detected,
        "false_incidents": false_incidents,
        "localisation_error_m": {
            "p50": _percentile(all_errors, 50),
            "p95": _percentile(all_errors, 95),
            "max": round(max(all_errors), 1) if all_errors else None,
            "by_method": {
                method: {"n": len(values), "p50": _percentile(values, 50), "p95": _percentile(values, 95)}
                for method, values in sorted(errors.items())
            },
        },
        "shot_to_incident_latency_s": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
    }
    if by_detection:
        verdicts = shot_verdicts(events, incidents)
        report["shots"] = verdicts
        report["one_incident_per_shot"] = all(bool(v["ok"]) for v in verdicts if v["devices"])
    return report


def _match_by_time_and_place(
    events: Sequence[TruthEvent], incidents: Sequence[ObservedIncident], window_s: float, radius_m: float
) -> dict[int, int]:
    """Event position -> incident position: the closest-in-time located incident near each audible shot."""
    unmatched = list(range(len(incidents)))
    matched: dict[int, int] = {}
    for position, event in enumerate(events):
        if event.audible == 0 or event.first_arrival is None:
            continue
        best: tuple[float, int] | None = None
        for i in unmatched:
            inc = incidents[i]
            if inc.latitude is None or inc.longitude is None:
                continue
            gap = abs(inc.first_detected_at - event.first_arrival)
            distance = haversine_m(event.latitude, event.longitude, inc.latitude, inc.longitude)
            if gap <= window_s and distance <= radius_m and (best is None or gap < best[0]):
                best = (gap, i)
        if best is not None:
            unmatched.remove(best[1])
            matched[position] = best[1]
    return matched
