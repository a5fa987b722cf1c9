"""Where audio and position come from: the microphone, replayed files, a fixed point, a route, gpsd."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"}
EARTH_RADIUS_M = 6_371_008.8


class SourceError(Exception):
    """A source cannot be opened (bad path, missing optional dependency, no microphone)."""


# -- audio -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioBlock:
    samples: np.ndarray  # mono float32 in [-1, 1]
    sample_rate: int
    start_time: float  # wall-clock epoch seconds of samples[0]


def _to_mono(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block, dtype=np.float32)
    return block.mean(axis=1) if block.ndim == 2 else block


class FileReplaySource:
    """Replays a file, or every audio file under a directory in name order, as if it were being recorded.

    Each block is stamped with the wall-clock time at which it is replayed, so clip timestamps are never in
    the future even at ``speed`` > 1 (``speed`` 0 means as fast as possible). ``time_scale`` tells position
    providers how much faster than real time the simulated world runs.
    """

    def __init__(
        self,
        path: Path,
        *,
        speed: float = 1.0,
        block_s: float = 0.1,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = path
        self.speed = speed
        self.block_s = block_s
        self._clock = clock
        self._sleep = sleep
        self.files = self._list_files(path)

    @property
    def time_scale(self) -> float:
        return self.speed if self.speed > 0 else 1.0

    @staticmethod
    def _list_files(path: Path) -> list[Path]:
        if path.is_file():
            return [path]
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if files:
                return files
            raise SourceError(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {path}")
        raise SourceError(f"input {path} does not exist")

    def __iter__(self) -> Iterator[AudioBlock]:
        wall0 = self._clock()
        played_s = 0.0
        for path in self.files:
            try:
                handle = sf.SoundFile(path)
            except (sf.LibsndfileError, RuntimeError) as exc:
                log.warning("skipping unreadable file %s: %s", path, exc)
                continue
            with handle:
                blocksize = max(1, round(self.block_s * handle.samplerate))
                for block in handle.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                    if self.speed > 0:
                        self._sleep(max(0.0, wall0 + played_s / self.speed - self._clock()))
                    yield AudioBlock(_to_mono(block), handle.samplerate, self._clock())
                    played_s += len(block) / handle.samplerate


class MicSource:
    """The default (or a named) input device through sounddevice/PortAudio, imported only when used."""

    time_scale = 1.0

    def __init__(
        self,
        *,
        sample_rate: int = 48000,
        block_s: float = 0.1,
        device: str | int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.block_s = block_s
        self.device = device
        self.stop = stop or threading.Event()
        self.overflows = 0

    def __iter__(self) -> Iterator[AudioBlock]:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as exc:
            raise SourceError(
                "recording from the microphone needs the optional 'sounddevice' package and PortAudio "
                "(pip install sounddevice; apt install libportaudio2), or use --input FILE|DIR"
            ) from exc
        blocks: queue.Queue[AudioBlock] = queue.Queue(maxsize=600)

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow:
                self.overflows += 1
            # PortAudio gives the ADC time of the first sample on its own clock; map it to wall time.
            lag = time_info.currentTime - time_info.inputBufferAdcTime
            if not 0 <= lag < 1:
                lag = frames / self.sample_rate
            try:
                blocks.put_nowait(AudioBlock(_to_mono(indata.copy()), self.sample_rate, time.time() - lag))
            except queue.Full:
                self.overflows += 1

        try:
            stream = sd.InputStream(
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                blocksize=round(self.block_s * self.sample_rate),
                device=self.device,
                callback=callback,
            )
        except Exception as exc:  # PortAudioError has no stable import path across versions
            raise SourceError(f"cannot open the microphone: {exc}") from exc
        with stream:
            while not self.stop.is_set():
                try:
                    yield blocks.get(timeout=0.5)
                except queue.Empty:
                    continue


# -- position --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    latitude: float
    longitude: float
    accuracy_m: float | None = None


class PositionProvider(Protocol):
    def position_at(self, when: float) -> Position | None: ...


class FixedPosition:
    def __init__(self, position: Position) -> None:
        self.position = position

    def position_at(self, when: float) -> Position | None:
        return self.position


class NoPosition:
    def position_at(self, when: float) -> Position | None:
        return None


def parse_position(text: str) -> Position:
    """`LAT,LON` or `LAT,LON,ACCURACY_M`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError("position must be LAT,LON or LAT,LON,ACCURACY_M")
    lat, lon = float(parts[0]), float(parts[1])
    _check_lat_lon(lat, lon)
    accuracy = float(parts[2]) if len(parts) == 3 else None
    return Position(lat, lon, accuracy)


def _check_lat_lon(lat: float, lon: float) -> None:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"latitude/longitude out of range: {lat}, {lon}")


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def load_route(path: Path) -> list[tuple[float, float]]:
    """(lat, lon) points from a GeoJSON LineString (bare, Feature or FeatureCollection) or a lat,lon CSV."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".geojson", ".json"} or text.lstrip().startswith("{"):
        points = _geojson_points(json.loads(text))
    else:
        points = _csv_points(text)
    if len(points) < 2:
        raise ValueError(f"a route needs at least two points, {path} has {len(points)}")
    for lat, lon in points:
        _check_lat_lon(lat, lon)
    return points


def _geojson_points(data: dict[str, Any]) -> list[tuple[float, float]]:
    kind = data.get("type")
    if kind == "FeatureCollection":
        for feature in data.get("features", []):
            if (feature.get("geometry") or {}).get("type") == "LineString":
                return _geojson_points(feature["geometry"])
        raise ValueError("the FeatureCollection has no LineString")
    if kind == "Feature":
        return _geojson_points(data.get("geometry") or {})
    if kind != "LineString":
        raise ValueError(f"expected a GeoJSON LineString, got {kind!r}")
    # GeoJSON orders coordinates longitude first.
    return [(float(c[1]), float(c[0])) for c in data["coordinates"]]


def _csv_points(text: str) -> list[tuple[float, float]]:
    points = []
    for row in csv.reader(text.splitlines()):
        if not row or row[0].strip().startswith("#"):
            continue
        try:
            points.append((float(row[0]), float(row[1])))
        except (ValueError, IndexError):
            if points:
                raise ValueError(f"bad route row: {row}") from None
            continue  # a header line
    return points


class RouteProvider:
    """A vehicle driving along a route at constant speed from the first time it is asked; it stays at the
    end. ``time_scale`` > 1 makes it drive faster, to match audio replayed faster than real time."""

    def __init__(
        self,
        points: list[tuple[float, float]],
        *,
        speed_mps: float,
        time_scale: float = 1.0,
        accuracy_m: float = 5.0,
    ) -> None:
        if speed_mps <= 0:
            raise ValueError("route speed must be positive")
        self.points = points
        self.speed_mps = speed_mps
        self.time_scale = time_scale
        self.accuracy_m = accuracy_m
        self._cumulative = [0.0]
        for a, b in itertools.pairwise(points):
            self._cumulative.append(self._cumulative[-1] + haversine_m(a, b))
        self._start: float | None = None

    @property
    def length_m(self) -> float:
        return self._cumulative[-1]

    def position_at(self, when: float) -> Position:
        if self._start is None:
            self._start = when
        travelled = max(0.0, when - self._start) * self.time_scale * self.speed_mps
        return self._at_distance(min(travelled, self.length_m))

    def _at_distance(self, distance: float) -> Position:
        for i in range(1, len(self._cumulative)):
            if distance <= self._cumulative[i] or i == len(self._cumulative) - 1:
                seg = self._cumulative[i] - self._cumulative[i - 1]
                frac = 0.0 if seg == 0 else (distance - self._cumulative[i - 1]) / seg
                (lat1, lon1), (lat2, lon2) = self.points[i - 1], self.points[i]
                # Linear in lat/lon is accurate to centimetres over the short segments of a road route.
                return Position(lat1 + frac * (lat2 - lat1), lon1 + frac * (lon2 - lon1), self.accuracy_m)
        raise AssertionError("unreachable")


class GpsdProvider:
    """Last fix from a local gpsd (JSON protocol on TCP 2947), read in a background thread.

    gpsd is optional: when it is not running the provider simply has no position and retries slowly.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2947,
        *,
        max_age_s: float = 10.0,
        retry_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.max_age_s = max_age_s
        self.retry_s = retry_s
        self._fix: tuple[Position, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpsd", daemon=True)

    def start(self) -> GpsdProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def position_at(self, when: float) -> Position | None:
        fix = self._fix
        if fix is None or time.monotonic() - fix[1] > self.max_age_s:
            return None
        return fix[0]

    def handle_report(self, report: dict[str, Any]) -> None:
        if report.get("class") != "TPV" or int(report.get("mode", 0)) < 2:
            return
        if "lat" not in report or "lon" not in report:
            return
        errors = [float(report[k]) for k in ("eph", "epx", "epy") if k in report]
        accuracy = max(errors) if errors else None
        self._fix = (Position(float(report["lat"]), float(report["lon"]), accuracy), time.monotonic())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=5) as sock:
                    sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
                    sock.settimeout(5)
                    self._read(sock.makefile("r", encoding="utf-8", errors="replace"))
            except OSError as exc:
                log.debug("gpsd unavailable at %s:%s: %s", self.host, self.port, exc)
            self._stop.wait(self.retry_s)

    def _read(self, lines: Any) -> None:
        for line in lines:
            if self._stop.is_set():
                return
            try:
                self.handle_report(json.loads(line))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
