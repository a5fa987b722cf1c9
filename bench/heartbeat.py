"""Heartbeat throughput of POST /api/v1/devices/heartbeat against a running server.

    .venv/bin/python bench/heartbeat.py --url http://127.0.0.1:8011 --clients 16 --seconds 20 --server-pid PID

Run it with the same DATABASE_URL/REDIS_URL as the server (it creates its user in the database like
bench/upload.py, then pairs one device per client over the API). Each client sends heartbeats as fast
as answers come back (closed loop) over a kept-alive connection, with the body an agent sends. Prints
heartbeats/s, latency percentiles, the status codes and, with --server-pid (repeatable: each web
process), the server's CPU ms per heartbeat: 2 cores / that figure is what two cores can take when
nothing else runs, which a shared machine's wall-clock rate cannot show. Target: >= 500 heartbeats/s.
The per-device throttle (THROTTLE_DEVICE) must be raised on the server, and pairing's too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.upload import cpu_seconds, create_user, percentile, set_up_devices

BODY = json.dumps(
    {
        "uptime_s": 3600,
        "battery_pct": 87,
        "mic_level_dbfs": -42.5,
        "clipping": False,
        "free_storage_mb": 900,
        "queue_length": 0,
        "dropped_clips": 0,
        "clock_source": "ntp",
        "firmware_version": "1.4.2",
    }
).encode()


def run_client(
    url: str, token: str, deadline: float, latencies: list[float], statuses: Counter[int], lock: threading.Lock
) -> None:
    # http.client, not requests: the client shares the machine's two cores with the server, so it must be cheap.
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"Authorization": f"Device {token}", "Content-Type": "application/json"}
    mine: list[float] = []
    codes: Counter[int] = Counter()
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            connection.request("POST", "/api/v1/devices/heartbeat", body=BODY, headers=headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            codes[0] += 1
            connection.close()
            connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
            continue
        codes[response.status] += 1
        if response.status == 200:
            mine.append((time.perf_counter() - start) * 1000)
    connection.close()
    with lock:
        latencies.extend(mine)
        statuses.update(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8011")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of heartbeats before measuring")
    parser.add_argument("--user", default=f"bench-{uuid.uuid4().hex[:8]}")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="a local server process (repeat for each); gives server CPU ms per heartbeat",
    )
    args = parser.parse_args()
    url = args.url.rstrip("/")
    create_user(args.user)
    _, devices = set_up_devices(url, args.user, args.clients)

    lock = threading.Lock()
    with ThreadPoolExecutor(args.clients) as pool:
        warm = time.perf_counter() + args.warmup
        for _, token in devices:
            pool.submit(run_client, url, token, warm, [], Counter(), lock)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    cpu_before = cpu_seconds(args.server_pid)
    started = time.perf_counter()
    deadline = started + args.seconds
    with ThreadPoolExecutor(args.clients) as pool:
        for future in [
            pool.submit(run_client, url, token, deadline, latencies, statuses, lock) for _, token in devices
        ]:
            future.result()
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(args.server_pid) - cpu_before
    ok = statuses.get(200, 0)
    cpu_ms = server_cpu * 1000 / max(1, sum(statuses.values())) if args.server_pid else None
    print(
        f"{args.clients} clients, {wall:.1f} s: {ok} heartbeats accepted = {ok / wall:.0f}/s; latency ms "
        f"p50 {percentile(latencies, 50):.1f} p95 {percentile(latencies, 95):.1f} "
        f"p99 {percentile(latencies, 99):.1f}; statuses {dict(sorted(statuses.items()))}"
        + (f"; server CPU {cpu_ms:.2f} ms/heartbeat -> {2000 / cpu_ms:.0f}/s on two idle cores" if cpu_ms else "")
    )


if __name__ == "__main__":
    main()
