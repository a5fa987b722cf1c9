"""Heartbeat throughput of POST /api/v1/devices/heartbeat against a running server.

    .venv/bin/python bench/heartbeat.py --url http://127.0.0.1:8011 --clients 16 --seconds 20 --server-pid PID

Run it with the same DATABASE_URL/REDIS_URL as the server (it creates its user in the database like
bench/upload.py, then pairs one device per client over the API). Each client sends heartbeats as fast
as answers come back (closed loop) over a kept-alive connection, with the body an agent sends. Prints
heartbeats/s, latency percentiles, the status codes and, with --server-pid (repeatable: each web
process), the server's CPU ms per heartbeat: 2 cores / that figure is what two cores can take when
nothing else runs, which a shared machine's wall-clock rate cannot show. Target: >= 500 heartbeats/s.
The per-device throttle (THROTTLE_DEVICE) must be raised on the server, and pairing's too.

``--load wrk`` (the default when Debian's wrk is installed) sends the same requests from wrk, a C load
generator, with one connection per client and the devices' tokens in turn: the Python clients cost
about as much CPU as the server they measure, and on two cores that CPU comes out of the server's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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


WRK_SCRIPT = """
tokens = {%(tokens)s}
body = [[%(body)s]]
counter = 0
request = function()
  counter = counter + 1
  local headers = {}
  headers["Authorization"] = "Device " .. tokens[(counter %% #tokens) + 1]
  headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/api/v1/devices/heartbeat", headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def run_wrk(url: str, tokens: list[str], clients: int, seconds: float, server_pids: list[int]) -> str:
    """The closed loop from wrk; returns the printed line (same shape as the Python clients')."""
    script = WRK_SCRIPT % {"tokens": ", ".join(json.dumps(t) for t in tokens), "body": BODY.decode()}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as handle:
        handle.write(script)
        handle.flush()
        # One wrk thread: wrk's own CPU is what the server loses, and one thread drives 16 connections.
        command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", handle.name, url]
        subprocess.run([*command[:3], "-d2s", *command[4:]], check=True, capture_output=True)  # warm-up
        cpu_before = cpu_seconds(server_pids)
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        server_cpu = cpu_seconds(server_pids) - cpu_before
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", output)
    if not found:
        raise SystemExit(f"wrk printed no result:\n{output}")
    total, duration_us, bad_status, socket_errors, p50, p95, p99 = (int(value) for value in found.groups())
    ok = total - bad_status
    wall = duration_us / 1e6
    cpu_ms = server_cpu * 1000 / max(1, total) if server_pids else None
    return (
        f"wrk, {clients} connections, {wall:.1f} s: {ok} heartbeats accepted = {ok / wall:.0f}/s; latency ms "
        f"p50 {p50 / 1000:.1f} p95 {p95 / 1000:.1f} p99 {p99 / 1000:.1f}; non-2xx {bad_status}, "
        f"socket errors {socket_errors}"
        + (f"; server CPU {cpu_ms:.2f} ms/heartbeat -> {2000 / cpu_ms:.0f}/s on two idle cores" if cpu_ms else "")
    )


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
    parser.add_argument(
        "--load",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="the load generator (wrk: Debian's package, C; python: threads of http.client)",
    )
    args = parser.parse_args()
    url = args.url.rstrip("/")
    create_user(args.user)
    _, devices = set_up_devices(url, args.user, args.clients)
    print(f"load {os.getloadavg()[0]:.2f} before the run")
    if args.load == "wrk":
        print(run_wrk(url, [token for _, token in devices], args.clients, args.seconds, args.server_pid))
        return

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
