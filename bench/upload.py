"""Upload latency and throughput of POST /api/v1/clips against a running server, and a check that none is lost.

    .venv/bin/python bench/upload.py --url http://127.0.0.1:8011 --clients 16 --uploads 3000
    .venv/bin/python bench/upload.py --url http://127.0.0.1:8011 --clients 16 --rate 100 --seconds 30

Run it with the same DATABASE_URL/REDIS_URL/GUNWATCH_VAR_DIR as the server: it creates its user in
the database (Django, in-process), then does everything else over HTTP: a user token, devices
(one per client, as a fleet would be), pairing, and the uploads of generated 2 s FLAC clips with
impulses in noise. Closed loop by default (each client uploads as fast as answers come back), or
paced at --rate uploads/s in total. It prints p50/p95/p99 latency of the accepted uploads,
uploads/s, the status codes, and then lists every clip through GET /api/v1/clips to verify that
each 202 has its row. Targets: p95 <= 50 ms and >= 100 uploads/s accepted with none lost.
The server's per-device throttle (THROTTLE_DEVICE, 600/min) caps one device at 10 uploads/s; raise
it on the server for capacity runs, or every client beyond that gets 429s (counted, not hidden).
Pairing is throttled too (THROTTLE_PAIRING, 30/min per address): set-up waits it out, or raise it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PASSWORD = "bench-upload-Password-1"


def generated_clips(count: int, *, seconds: float, sample_rate: int) -> list[bytes]:
    """Distinct FLAC clips: a few decaying bangs in background noise (the shape of what devices send)."""
    clips = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        y = 0.01 * rng.standard_normal(int(seconds * sample_rate)).astype(np.float32)
        decay = np.exp(-np.arange(int(0.08 * sample_rate)) / (0.01 * sample_rate)).astype(np.float32)
        for start in rng.uniform(0.1, seconds - 0.2, size=rng.integers(1, 4)):
            i = int(start * sample_rate)
            y[i : i + decay.size] += 0.8 * rng.standard_normal(decay.size).astype(np.float32) * decay
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(y, -1, 1), sample_rate, format="FLAC", subtype="PCM_16")
        clips.append(buffer.getvalue())
    return clips


def create_user(username: str) -> None:
    """The one step not done over HTTP: sign-up is an HTML form, so make the user directly."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gunwatch.settings")
    import django

    django.setup()
    from accounts.models import User

    user, _ = User.objects.get_or_create(username=username, defaults={"role": User.Role.OWNER})
    user.set_password(PASSWORD)
    user.save()


def patiently(send: Any) -> requests.Response:
    """Send, waiting out 429s: pairing is throttled per address (THROTTLE_PAIRING, 30/min)."""
    while True:
        response = send()
        if response.status_code != 429:
            return response
        time.sleep(float(response.headers.get("Retry-After") or 2))


def check(response: requests.Response, expected: int) -> dict[str, Any]:
    if response.status_code != expected:
        raise SystemExit(f"{response.request.method} {response.url} -> {response.status_code}: {response.text[:300]}")
    return response.json()


def set_up_devices(url: str, username: str, count: int) -> tuple[str, list[tuple[str, str]]]:
    """A user token and `count` paired devices [(device id, device token)], all through the API."""
    session = requests.Session()
    token = check(session.post(f"{url}/api/v1/auth/token", json={"username": username, "password": PASSWORD}), 200)[
        "token"
    ]
    owner = {"Authorization": f"Token {token}"}
    devices = []
    for n in range(count):
        created = check(
            patiently(
                lambda n=n: session.post(
                    f"{url}/api/v1/devices",
                    headers=owner,
                    json={"name": f"bench {n}", "kind": "home", "latitude": 52.5 + n / 1000, "longitude": 13.4},
                )
            ),
            201,
        )
        code = created["pairing_code"]
        paired = check(
            patiently(lambda code=code: session.post(f"{url}/api/v1/devices/pair", json={"pairing_code": code})), 201
        )
        devices.append((paired["device_id"], paired["token"]))
    return token, devices


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # clip id -> device id
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_client(
    url: str,
    device: tuple[str, str],
    clips: list[bytes],
    uploads: int,
    interval_s: float | None,
    deadline: float,
    outcome: Outcome,
    worker: int,
    clients: int = 1,
) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Device {device[1]}"
    # Paced clients start out of phase: a fleet's uploads arrive spread out, not in bursts of N at once.
    next_at = time.perf_counter() + (interval_s or 0.0) * worker / clients
    for n in range(uploads):
        if time.perf_counter() >= deadline:
            break
        if interval_s is not None:
            # Open loop: keep the schedule even when answers are slow, like a fleet would.
            next_at += interval_s
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        data = clips[(worker * 7919 + n) % len(clips)]
        fields = {
            "recorded_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client_id": str(uuid.uuid4()),
            "clock_source": "ntp",
        }
        start = time.perf_counter()
        try:
            response = session.post(
                f"{url}/api/v1/clips", data=fields, files={"audio": ("clip.flac", data)}, timeout=30
            )
        except requests.RequestException as exc:
            with outcome.lock:
                outcome.errors[type(exc).__name__] += 1
            continue
        elapsed_ms = (time.perf_counter() - start) * 1000
        with outcome.lock:
            outcome.statuses[response.status_code] += 1
            if response.status_code == 202:
                outcome.latencies_ms.append(elapsed_ms)
                outcome.accepted[response.json()["id"]] = device[0]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of local server processes (and their children), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime are fields 14-17 of stat; index 11-14 after the command name.
        total += sum(int(value) for value in fields[11:15]) / tick
    return total


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def listed_clips(url: str, token: str) -> dict[str, str]:
    """Every clip of the bench user, id -> status, through the owner API."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    found: dict[str, str] = {}
    next_url: str | None = f"{url}/api/v1/clips?page_size=500"
    while next_url:
        page = check(session.get(next_url, timeout=60), 200)
        found.update({row["id"]: row["status"] for row in page["results"]})
        next_url = page["next"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8011")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--uploads", type=int, default=2000, help="total uploads (split over clients)")
    parser.add_argument("--rate", type=float, default=None, help="paced total uploads/s (default: closed loop)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--warmup", type=int, default=50, help="uploads before measuring (not counted)")
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--user", default=f"bench-{uuid.uuid4().hex[:8]}")
    parser.add_argument(
        "--wait-classified",
        type=float,
        default=0.0,
        help="then wait up to this many seconds for the workers to classify everything",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="a local server process to charge CPU time to (repeat for several); gives CPU ms "
        "per upload, which does not depend on what else the machine is doing",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON too")
    args = parser.parse_args()
    url = args.url.rstrip("/")

    clips = generated_clips(64, seconds=args.clip_seconds, sample_rate=args.sample_rate)
    create_user(args.user)
    token, devices = set_up_devices(url, args.user, args.clients)

    warm = Outcome()
    per_client_warmup = max(1, args.warmup // args.clients)
    with ThreadPoolExecutor(args.clients) as pool:
        for i, device in enumerate(devices):
            pool.submit(run_client, url, device, clips, per_client_warmup, None, float("inf"), warm, i)

    outcome = Outcome()
    interval = args.clients / args.rate if args.rate else None
    per_client = args.uploads // args.clients
    deadline = time.perf_counter() + args.seconds if args.seconds else float("inf")
    if args.rate and args.seconds:
        per_client = int(args.rate * args.seconds / args.clients) + 1
    cpu_before = cpu_seconds(args.server_pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        futures = [
            pool.submit(run_client, url, device, clips, per_client, interval, deadline, outcome, i, args.clients)
            for i, device in enumerate(devices)
        ]
        for future in futures:
            future.result()
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(args.server_pid) - cpu_before

    found = listed_clips(url, token)
    expected = set(outcome.accepted) | set(warm.accepted)
    lost = expected - set(found)
    if args.wait_classified:
        until = time.monotonic() + args.wait_classified
        while time.monotonic() < until and any(s in ("queued", "processing") for s in found.values()):
            time.sleep(2)
            found = listed_clips(url, token)
    lat = outcome.latencies_ms
    summary = {
        "url": url,
        "mode": f"paced {args.rate:g}/s" if args.rate else "closed loop",
        "clients": args.clients,
        "clip": f"{args.clip_seconds:g} s FLAC {args.sample_rate} Hz, {statistics.mean(map(len, clips)) / 1000:.1f} kB",
        "uploads": sum(outcome.statuses.values()),
        "accepted_202": outcome.statuses.get(202, 0),
        "statuses": dict(sorted(outcome.statuses.items())),
        "errors": dict(outcome.errors),
        "wall_s": round(wall, 2),
        "accepted_per_s": round(outcome.statuses.get(202, 0) / wall, 1),
        "latency_ms": {
            "p50": round(percentile(lat, 50), 1),
            "p95": round(percentile(lat, 95), 1),
            "p99": round(percentile(lat, 99), 1),
            "max": round(max(lat), 1) if lat else None,
        },
        "server_cpu_ms_per_upload": (
            round(server_cpu * 1000 / max(1, sum(outcome.statuses.values())), 2) if args.server_pid else None
        ),
        "verified_rows": len(expected & set(found)),
        "lost": len(lost),
        "clip_statuses": dict(Counter(found[c] for c in expected if c in found)),
    }
    print(
        f"{summary['mode']}, {args.clients} clients, {summary['clip']}: {summary['accepted_202']} accepted of "
        f"{summary['uploads']} in {summary['wall_s']} s = {summary['accepted_per_s']} uploads/s; latency ms "
        f"p50 {summary['latency_ms']['p50']} p95 {summary['latency_ms']['p95']} p99 {summary['latency_ms']['p99']} "
        f"max {summary['latency_ms']['max']}; statuses {summary['statuses']}; "
        f"server CPU {summary['server_cpu_ms_per_upload']} ms/upload; "
        f"lost {summary['lost']} (verified {summary['verified_rows']} rows incl. warm-up); "
        f"clip statuses {summary['clip_statuses']}"
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    if lost:
        raise SystemExit(f"{len(lost)} accepted uploads have no clip")


if __name__ == "__main__":
    main()
