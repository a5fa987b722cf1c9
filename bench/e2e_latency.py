"""End-to-end alert latency: device upload accepted → incident on the police map's websocket.

Starts the real stack against PostgreSQL and Redis (a Celery worker on the audio and default
queues and the web tier in one of ./gw serve's shapes: --server nginx (nginx, a WSGI pool for HTTP,
an ASGI process for websockets), gunicorn (uvicorn workers alone) or daphne (./gw run's server)),
logs a police officer in over a websocket, and has N simulated devices upload clips at a fixed
total rate (open loop: uploads are sent on schedule whether or not earlier ones are done). Every
upload is a gunshot, because the active model is the shipped one (mn04-ensemble, its weights and
feature parameters) with its output layers pinned to "gunshot": the network still runs in full, so
inference costs what it costs (``--architecture gwcnn-1`` measures the earlier, cheaper network). Devices stand
5 km apart so each upload opens or updates its own device's incident.

    .venv/bin/python bench/e2e_latency.py --devices 20 --rate 20 --duration 30

Prints p50/p95/p99 of (websocket message received - upload response received), the upload
response times, and the sustained upload and message rates. Target: p95 ≤ 300 ms at 20 uploads/s.
Needs: PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/gw_bench, created if
missing) and Redis (REDIS_URL, default redis://127.0.0.1:6379/13: a database of its own, since a worker of
anyone else's on the same database would take this run's tasks); the `websockets` package.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.webtier import SHAPES, start_web_tier  # noqa: E402
from bench.webtier import stop as stop_processes  # noqa: E402

PASSWORD = "bench-password-123"

SETUP = r"""
import json, sys
from pathlib import Path

import torch
from django.db import connection

from accounts.models import User
from alerts.models import Detection, Incident, Notification, PoliceStation
from core.features import FeatureParams
from core.geo import destination_point
from core.networks import build
from core.weights import load_weights, save_weights
from detection import services as detection_services
from detection.models import Classification, Clip, ModelVersion
from devices import services as device_services
from devices.models import Device

work, password, count, architecture = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
# A clean slate so earlier runs do not join or skew anything.
Notification.objects.all().delete(); Detection.objects.all().delete(); Incident.objects.all().delete()
Classification.objects.all().delete(); Clip.objects.all().delete(); Device.objects.all().delete()
User.objects.filter(username__startswith="bench-").delete(); PoliceStation.objects.filter(name="Bench").delete()
station = PoliceStation.objects.create(name="Bench", latitude=52.52, longitude=13.405, jurisdiction_radius_km=200,
                                       contact_email="bench-station@example.org")
User.objects.create_user("bench-officer", password=password, role="police", police_approved=True,
                         police_station=station)
owner = User.objects.create_user("bench-owner", email="bench-owner@example.org", password=password)
devices = []
for i in range(count):
    # A 5 km grid: further apart than two hearing ranges, so no two devices share an incident.
    row_start = destination_point(52.52, 13.405, 0.0, 5000.0 * (i // 10))
    lat, lon = destination_point(*row_start, 90.0, 5000.0 * (i % 10))
    device, issued = device_services.device_create(owner=owner, name=f"bench-{i}", kind=Device.Kind.HOME,
                                                  latitude=lat, longitude=lon)
    token = device_services.device_pair(pairing_code=issued.code).token
    devices.append({"token": token, "lat": lat, "lon": lon})
ModelVersion.objects.filter(name="bench-always").delete()
weights = work / "bench-always.pt"
if architecture == "mn04-ensemble":
    # The shipped weights and feature parameters, with both output layers pinned to "gunshot": every
    # layer still runs, so a clip costs what the shipped model costs.
    shipped = load_weights(Path("detection/weights/mn04-ensemble.pt"))
    network, params = shipped.network, shipped.params
    with torch.no_grad():
        for head in (network.tuned.out, network.probe):
            head.weight.zero_()
            head.bias.fill_(8.0)
else:
    params = FeatureParams()
    torch.manual_seed(0)
    network = build(architecture, params)
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.fill_(8.0)
save_weights(weights, architecture=architecture, params=params, threshold=0.5, state_dict=network.state_dict(),
             meta={"purpose": "e2e latency benchmark: always gunshot"})
detection_services.model_version_register(weights_path=weights, name="bench-always", version=str(work.name),
                                          activate=True)
# As ./gw serve does before starting workers: trace the model's frozen graph once, outside the timing.
from detection.inference import compile_active_model
compile_active_model()
print("SETUP " + json.dumps(devices))
"""


@dataclass
class Upload:
    device: int
    recorded_at: datetime
    sent: float
    accepted: float | None = None
    status: int | None = None
    message_at: float | None = None


@dataclass
class Run:
    uploads: list[Upload] = field(default_factory=list)
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clip_bytes(seconds: float = 2.0, sr: int = 16000) -> bytes:
    rng = np.random.default_rng(0)
    y = 0.01 * rng.standard_normal(int(seconds * sr))
    decay = np.exp(-np.arange(int(0.1 * sr)) / (0.01 * sr))
    y[8000 : 8000 + decay.size] += 0.9 * rng.standard_normal(decay.size) * decay
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(y, -1, 1), sr, format="FLAC")
    return buffer.getvalue()


def ensure_database(url: str) -> None:
    import psycopg2

    match = re.match(r"postgres(?:ql)?://(?P<rest>[^/]*)/(?P<name>[^?]+)", url)
    if not match:
        raise SystemExit(f"DATABASE_URL must be a PostgreSQL URL, got {url!r}")
    admin = psycopg2.connect(url.replace(f"/{match['name']}", "/postgres", 1))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [match["name"]])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{match["name"]}"')
    admin.close()


BENCH_MARKER = "gunwatch:e2e-latency-bench"


def claim_redis(url: str) -> None:
    """Empty the Redis database for this run, but only if it is empty or a previous run's."""
    import redis

    client = redis.Redis.from_url(url)
    if client.dbsize() and not client.exists(BENCH_MARKER):
        raise SystemExit(f"{url} holds someone else's keys; point REDIS_URL at a free database")
    client.flushdb()
    client.set(BENCH_MARKER, "1")


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def login(base: str) -> str:
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the login page"
    response = session.post(
        f"{base}/accounts/login/",
        data={"username": "bench-officer", "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=10,
        allow_redirects=False,
    )
    assert response.status_code == 302, f"login failed: {response.status_code}"
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


async def listen(ws_url: str, cookie: str, run: Run, ready: threading.Event, stop: threading.Event) -> None:
    import websockets

    try:
        await _listen(websockets, ws_url, cookie, run, ready, stop)
    except websockets.ConnectionClosed:
        if not stop.is_set():
            raise


async def _listen(
    websockets: Any, ws_url: str, cookie: str, run: Run, ready: threading.Event, stop: threading.Event
) -> None:
    async with websockets.connect(
        ws_url, additional_headers={"Cookie": cookie, "Origin": ws_url.replace("ws://", "http://").split("/ws/")[0]}
    ) as socket_:
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(socket_.recv(), timeout=0.5)
            except TimeoutError:
                continue
            received = time.perf_counter()
            message = json.loads(raw)
            if message.get("type") in ("incident.opened", "incident.updated"):
                with run.lock:
                    run.messages.append((received, message["incident"]))


def upload(base: str, token: str, audio: bytes, item: Upload, session: requests.Session) -> None:
    response = session.post(
        f"{base}/api/v1/clips",
        headers={"Authorization": f"Device {token}"},
        files={"audio": ("clip.flac", audio, "audio/flac")},
        data={
            "client_id": str(uuid.uuid4()),
            "recorded_at": item.recorded_at.isoformat(timespec="milliseconds"),
            "clock_source": "ntp",
        },
        timeout=30,
    )
    item.accepted = time.perf_counter()
    item.status = response.status_code


def match(run: Run, devices: list[dict[str, Any]]) -> None:
    """Pair each message with the upload it reports: same device, latest recording not after it."""
    by_position = {(round(d["lat"], 6), round(d["lon"], 6)): i for i, d in enumerate(devices)}
    pending: dict[int, list[Upload]] = {}
    for item in run.uploads:
        pending.setdefault(item.device, []).append(item)
    for received, incident in sorted(run.messages, key=lambda m: m[0]):
        if incident.get("latitude") is None:
            continue
        device = by_position.get((round(incident["latitude"], 6), round(incident["longitude"], 6)))
        if device is None:
            continue
        heard = datetime.fromisoformat(incident["last_detected_at"])
        candidates = [u for u in pending.get(device, []) if u.message_at is None and u.recorded_at <= heard]
        if candidates:
            max(candidates, key=lambda u: u.recorded_at).message_at = received


STAGES_SQL = """
SELECT d.name, c.recorded_at, c.received_at, c.processing_started_at, c.finished_at, det.created_at
FROM detection_clip c JOIN devices_device d ON d.id = c.device_id
LEFT JOIN alerts_detection det ON det.clip_id = c.id
WHERE d.name LIKE 'bench-%%'
"""


def stages(database_url: str, measured: list[Upload], wall_offset: float) -> None:
    """Where each upload's latency went, from the clips' own timestamps: the profile behind the p95.

    queue: accepted → claimed by a worker (broker delivery, a busy pool); classify: claimed → verdict
    stored (features and the forward pass of its whole batch); record: verdict → detection row (the
    incident step, after the batch's earlier positives); deliver: detection → websocket message (commit,
    channel layer, ASGI). Batch: clips that shared one claim.
    """
    import psycopg2

    connection = psycopg2.connect(database_url)
    with connection, connection.cursor() as cursor:
        cursor.execute(STAGES_SQL)
        rows = cursor.fetchall()
    connection.close()
    # The upload sent recorded_at to the millisecond: that and the device name find its clip.
    by_key = {(name, recorded): rest for name, recorded, *rest in rows}
    claims: dict[Any, int] = {}
    for row in rows:
        if row[3] is not None:
            claims[row[3]] = claims.get(row[3], 0) + 1
    parts: dict[str, list[float]] = {"queue": [], "classify": [], "record": [], "deliver": []}
    batches: list[int] = []
    for item in measured:
        key = (
            f"bench-{item.device}",
            item.recorded_at.replace(microsecond=item.recorded_at.microsecond // 1000 * 1000),
        )
        row = by_key.get(key)
        if row is None or item.accepted is None or item.message_at is None or None in row:
            continue
        _received, claimed, finished, detected = row
        accepted = item.accepted + wall_offset
        parts["queue"].append((claimed.timestamp() - accepted) * 1000)
        parts["classify"].append((finished - claimed).total_seconds() * 1000)
        parts["record"].append((detected - finished).total_seconds() * 1000)
        parts["deliver"].append((item.message_at + wall_offset - detected.timestamp()) * 1000)
        batches.append(claims[claimed])
    if not batches:
        print("stages: no upload could be matched to its clip")
        return
    print(
        f"stages (ms, n={len(batches)}): "
        + " ".join(
            f"{name} p50={percentile(values, 50):.0f}/p95={percentile(values, 95):.0f}"
            for name, values in parts.items()
        )
        + f"; clips per claim p50={percentile([float(b) for b in batches], 50):.0f} max={max(batches)}"
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_env(database_url: str, redis_url: str | None, work: Path) -> dict[str, str]:
    """The servers' environment: production settings (DEBUG off) on plain loopback HTTP."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gunwatch.settings",
        "DATABASE_URL": database_url,
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-" + uuid.uuid4().hex,
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        # Plain HTTP on loopback: production (DEBUG off) would redirect every request to HTTPS.
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "MEDIA_ROOT": str(work / "media"),
        "LOG_LEVEL": "WARNING",
        "THROTTLE_DEVICE": "100000/min",
        "PYTHONPATH": str(REPO),
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)  # the embedded mode: tasks on the server's own threads
    return env


def set_up(env: dict[str, str], work: Path, devices: int, architecture: str) -> list[dict[str, Any]]:
    """Migrate, empty the tables, make the station, officer, devices and the pinned model; the devices."""
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, cwd=REPO, check=True)
    setup = subprocess.run(
        [
            *manage,
            "shell",
            "-c",
            f"import sys; sys.argv = ['', {str(work)!r}, {PASSWORD!r}, '{devices}', {architecture!r}]\n" + SETUP,
        ],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return list(json.loads(next(line for line in setup.stdout.splitlines() if line.startswith("SETUP "))[6:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="uploads per second, all devices together")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds at the start left out of the figures")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--clients", type=int, default=32, help="upload threads")
    parser.add_argument(
        "--server",
        choices=SHAPES,
        default="nginx" if shutil.which("nginx") else "gunicorn",
        help="the web tier (bench/webtier.py): nginx + WSGI pool + ASGI for websockets (./gw serve with nginx), "
        "gunicorn (uvicorn workers alone), daphne (one process)",
    )
    parser.add_argument("--web-processes", type=int, default=2)
    parser.add_argument(
        "--architecture",
        choices=("mn04-ensemble", "gwcnn-1"),
        default="mn04-ensemble",
        help="the network the pinned model runs: the shipped one (default) or the earlier, 8x cheaper gwcnn-1",
    )
    parser.add_argument(
        "--any-database",
        action="store_true",
        help="allow a database whose name lacks 'bench' (its devices and incidents are deleted)",
    )
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gw_bench")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
    if "bench" not in database_url.rsplit("/", 1)[-1] and not args.any_database:
        # The setup empties the incident, clip and device tables.
        raise SystemExit(f"refusing to run against {database_url!r}: its name lacks 'bench' (see --any-database)")
    ensure_database(database_url)
    work = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    env = bench_env(database_url, redis_url, work)
    python = sys.executable
    devices = set_up(env, work, args.devices, args.architecture)
    # As ./gw serve starts them: a worker keeps its database connection (the web processes cannot).
    worker_env = {**env, "DB_CONN_MAX_AGE": os.environ.get("WORKER_DB_CONN_MAX_AGE", "300")}
    claim_redis(redis_url)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = {name: (work / f"{name}.log").open("w") for name in ("worker",)}
    worker = subprocess.Popen(
        [
            python,
            "-m",
            "celery",
            "-A",
            "gunwatch",
            "worker",
            "-Q",
            "audio,default",
            "-c",
            str(args.concurrency),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env=worker_env,
        cwd=REPO,
        stdout=logs["worker"],
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    web = start_web_tier(args.server, env, "127.0.0.1", port, work, args.web_processes)
    run = Run()
    stop = threading.Event()
    try:
        wait_http(f"{base}/health", web[-1])
        cookie = login(base)
        ready = threading.Event()
        listener = threading.Thread(
            target=asyncio.run,
            args=(listen(f"ws://127.0.0.1:{port}/ws/incidents/", cookie, run, ready, stop),),
            daemon=True,
        )
        listener.start()
        if not ready.wait(10):
            raise SystemExit("the websocket did not connect")
        audio = clip_bytes()
        # One untimed upload per worker process loads the model before the clock starts.
        sessions = threading.local()

        def session() -> requests.Session:
            if not hasattr(sessions, "s"):
                sessions.s = requests.Session()
            return sessions.s

        for i in range(args.concurrency):
            warm = Upload(device=i % len(devices), recorded_at=datetime.now(UTC) - timedelta(seconds=5), sent=0)
            upload(base, devices[warm.device]["token"], audio, warm, requests.Session())
        time.sleep(8)
        with run.lock:
            run.messages.clear()

        total = int(args.rate * args.duration)
        start = time.perf_counter()
        # perf_counter → wall clock, to line the client's times up with the database's timestamps.
        wall_offset = time.time() - start
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            for i in range(total):
                due = start + i / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                item = Upload(device=i % len(devices), recorded_at=datetime.now(UTC), sent=time.perf_counter())
                run.uploads.append(item)
                pool.submit(upload, base, devices[item.device]["token"], audio, item, session())
        sent_done = time.perf_counter()
        # Let the tail drain: wait until every accepted upload has its message or 15 s pass.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with run.lock:
                match(run, devices)
            if all(u.message_at is not None for u in run.uploads if u.status in (201, 202)):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        stop_processes([*web, worker])
        for handle in logs.values():
            handle.close()

    with run.lock:
        match(run, devices)
    accepted = [u for u in run.uploads if u.status in (201, 202)]
    measured = [u for u in accepted if u.sent - start >= args.warmup]
    latencies = [(u.message_at - u.accepted) * 1000 for u in measured if u.message_at and u.accepted]
    upload_ms = [(u.accepted - u.sent) * 1000 for u in measured if u.accepted]
    statuses: dict[int | None, int] = {}
    for item in run.uploads:
        statuses[item.status] = statuses.get(item.status, 0) + 1
    last_accept = max((u.accepted for u in accepted if u.accepted), default=sent_done)
    received = [u.message_at for u in accepted if u.message_at]
    print(
        f"devices={args.devices} target_rate={args.rate}/s duration={args.duration}s "
        f"worker_processes={args.concurrency} model={args.architecture} server={args.server}"
        + (f" x{args.web_processes}" if args.server != "daphne" else "")
        + f" load={os.getloadavg()[0]:.1f}"
    )
    print(
        f"uploads sent={len(run.uploads)} statuses={statuses} "
        f"accepted_rate={len(accepted) / (last_accept - start):.1f}/s"
    )
    if received:
        print(
            f"map messages matched={len(received)}/{len(accepted)} "
            f"message_rate={len(received) / (max(received) - start):.1f}/s"
        )
    print(
        f"upload accepted -> map message (ms, n={len(latencies)} after {args.warmup:.0f}s warm-up): "
        f"p50={percentile(latencies, 50):.0f} p95={percentile(latencies, 95):.0f} "
        f"p99={percentile(latencies, 99):.0f} max={max(latencies, default=float('nan')):.0f}"
    )
    print(
        f"upload response time (ms): p50={percentile(upload_ms, 50):.0f} p95={percentile(upload_ms, 95):.0f} "
        f"p99={percentile(upload_ms, 99):.0f}"
    )
    stages(database_url, measured, wall_offset)
    if latencies:
        verdict = "met" if percentile(latencies, 95) <= 300 and len(latencies) == len(measured) else "NOT met"
        print(f"target p95 <= 300 ms at {args.rate:g} uploads/s: {verdict}")
    print(f"logs: {work}")
    return 0 if latencies and statistics.fmean(latencies) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
