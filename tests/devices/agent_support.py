"""Generated audio and a fake device API for the device-agent tests (no recordings are committed)."""

from __future__ import annotations

import email.policy
import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SR = 48000


def db(level_dbfs: float) -> float:
    return float(10 ** (level_dbfs / 20))


def noise(seconds: float, level_dbfs: float = -50.0, *, sr: int = SR, seed: int = 0) -> np.ndarray:
    """White noise whose RMS is `level_dbfs`."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * sr)) * db(level_dbfs)).astype(np.float32)


def gunshot(*, sr: int = SR, peak: float = 0.7, tau_s: float = 0.02, seconds: float = 0.4, seed: int = 1) -> np.ndarray:
    """A crude muzzle blast: a one-sample attack to `peak`, then noise under an exponential decay."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    envelope = np.exp(-np.arange(n) / (tau_s * sr))
    burst = rng.standard_normal(n) * envelope
    burst[0] = np.max(np.abs(burst))  # a sharp attack: the very first sample is the loudest
    return (burst * peak / burst[0]).astype(np.float32)


def place(background: np.ndarray, event: np.ndarray, at_s: float, *, sr: int = SR) -> np.ndarray:
    start = round(at_s * sr)
    stop = min(len(background), start + len(event))
    background[start:stop] += event[: stop - start]
    return background


def shots_in_noise(times_s: list[float], seconds: float, *, sr: int = SR, level_dbfs: float = -50.0) -> np.ndarray:
    y = noise(seconds, level_dbfs, sr=sr)
    for k, t in enumerate(times_s):
        place(y, gunshot(sr=sr, seed=10 + k), t, sr=sr)
    return y


def sine(seconds: float, *, freq: float = 440.0, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech_like(seconds: float, *, level_dbfs: float = -20.0, sr: int = SR, seed: int = 3) -> np.ndarray:
    """Noise under a syllabic envelope: ~4 syllables a second of random length and loudness, with pauses,
    low-passed by a moving average so most energy sits below ~2 kHz as in speech."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    envelope = np.zeros(n)
    t = 0.2
    while t < seconds - 0.3:
        length = rng.uniform(0.12, 0.3)
        i, m = round(t * sr), round(length * sr)
        # Syllables swell and fade over tens of milliseconds (sin² of the syllable length).
        envelope[i : i + m] = rng.uniform(0.5, 1.0) * np.sin(np.linspace(0, np.pi, m)) ** 2
        t += length + rng.uniform(0.02, 0.25)
    carrier = rng.standard_normal(n + 12)
    carrier = np.convolve(carrier, np.ones(12) / 12, mode="valid")[:n]
    carrier /= np.sqrt(np.mean(carrier**2))
    y = carrier * envelope
    return (y * db(level_dbfs) / np.sqrt(np.mean(y**2))).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, *, sr: int = SR) -> Path:
    sf.write(path, samples, sr, subtype="PCM_16")
    return path


# -- a stand-in for the server's device API, for tests that must not need Django ----------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


class FakeGunWatch:
    """Speaks the device API contract: pairing, heartbeats, idempotent clip uploads, model download.

    `clip_responses` queues canned answers (status, headers, body) for the next clip uploads; a status of
    "lost" stores the clip but answers 500, as when the acknowledgement is lost on the way back.
    With `poison_first_clip` set, the first clip uploaded is one the server always fails on (500), as a
    server bug triggered by that clip's data would.
    """

    good_code = "PAIR1234"

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.token = "gw_testkey.s3cr3t-value"
        self.device_id = str(uuid.uuid4())
        self.revoked = False
        self.clips: dict[str, int] = {}  # client_id -> clip id
        self.clip_responses: list[tuple[int | str, dict[str, str], Any]] = []
        self.poison_first_clip = False
        self.poisoned: str | None = None
        self.settings: dict[str, Any] = {"heartbeat_interval_s": 60, "sensitivity_threshold": None}
        self.active_model: dict[str, Any] | None = None
        self.model_bytes = b""
        self.model_sha_header: str | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeGunWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def uploads(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/v1/clips"]

    def heartbeats(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/v1/devices/heartbeat"]

    # -- request handling ----------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._dispatch(self, "GET")

            def do_POST(self) -> None:
                fake._dispatch(self, "POST")

        return Handler

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        record = Recorded(method, h.path, {k.lower(): v for k, v in h.headers.items()})
        content_type = h.headers.get("Content-Type") or ""
        if content_type.startswith("application/json"):
            record.json = json.loads(raw)
        elif content_type.startswith("multipart/form-data"):
            record.fields, record.files = _parse_multipart(content_type, raw)
        with self._lock:
            self.requests.append(record)
            status, headers, body = self._answer(record)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(payload)

    def _answer(self, r: Recorded) -> tuple[int, dict[str, str], Any]:
        if r.path == "/api/v1/devices/pair":
            if r.json.get("pairing_code") != self.good_code:
                return 400, {}, _error("Unknown, expired or used pairing code.", "invalid_pairing_code")
            self.revoked = False
            return 201, {}, {"device_id": self.device_id, "token": self.token}
        if self.revoked or r.headers.get("authorization") != f"Device {self.token}":
            return 401, {"WWW-Authenticate": "Device"}, _error("Invalid or revoked device token.", "auth")
        if r.path == "/api/v1/devices/heartbeat":
            return (
                200,
                {},
                {
                    "device_id": self.device_id,
                    "status": "active",
                    "settings": self.settings,
                    "active_model": self.active_model,
                    "server_time": datetime.now(UTC).isoformat(),
                },
            )
        if r.path == "/api/v1/clips":
            return self._clip(r)
        if r.path == "/api/v1/models/active/download" and self.active_model:
            return 200, {"X-Model-SHA256": self.model_sha_header or ""}, self.model_bytes
        return 404, {}, _error("Not found.", "not_found")

    def _clip(self, r: Recorded) -> tuple[int, dict[str, str], Any]:
        client_id = r.fields["client_id"]
        if self.poison_first_clip and self.poisoned is None:
            self.poisoned = client_id
        if client_id == self.poisoned:
            return 500, {}, _error("Server error.", "server_error")
        if self.clip_responses:
            status, headers, body = self.clip_responses.pop(0)
            if status != "lost":
                return int(status), headers, body
            self._store(client_id)
            return 500, {}, _error("Server error.", "server_error")
        known = client_id in self.clips
        clip_id = self._store(client_id)
        return (200 if known else 202), {}, {"id": clip_id, "status": "queued", "url": f"/api/v1/clips/{clip_id}"}

    def _store(self, client_id: str) -> int:
        return self.clips.setdefault(client_id, len(self.clips) + 1)


def _error(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "code": code, "extra": {}}


def _parse_multipart(content_type: str, raw: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files[str(name)] = payload
        else:
            fields[str(name)] = payload.decode()
    return fields, files


def closed_port_url() -> str:
    """A URL on which nothing listens: connections are refused at once, like a server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
