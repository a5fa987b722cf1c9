"""The first incident after a start: upload accepted → incident on the police websocket, cold.

    .venv/bin/python bench/first_incident.py --mode worker --rounds 3     # a Celery worker (re)starts
    .venv/bin/python bench/first_incident.py --mode child --rounds 3      # its pool processes are killed
    .venv/bin/python bench/first_incident.py --mode embedded --rounds 3   # ./gw run without Redis
    .venv/bin/python bench/first_incident.py --mode reload --rounds 3     # ./gw reload of a ./gw serve

``worker``: the ASGI server runs (gunicorn + uvicorn, as ./gw serve), then each round starts a fresh
Celery worker and uploads one clip the moment it is started, so the clip waits for the worker's boot
and model load; the worker is stopped after the message. ``child``: one worker stays up, and each round
kills its pool processes (SIGKILL, as a crash or the OOM killer would) and uploads at once, so the clip
waits for Celery to fork new ones from the worker's parent. ``embedded``: each round starts the server
the way ``./gw run`` does with no REDIS_URL (``manage.py runserver``, tasks on its own threads),
uploads as soon as it answers /health and a police websocket is open, and stops it. ``reload``: runs
``./gw serve`` and, each round, ``./gw reload`` (new workers start beside the running ones, which
retire once the new consume) while uploading a clip every --interval s from the moment of the reload
to --after s past its end; prints how long the reload took and the slowest of those uploads. The model is the
shipped mn04-ensemble pinned to "gunshot" (bench/e2e_latency.py's). Target: within 5 s of the upload.
Needs PostgreSQL (DATABASE_URL, default .../gw_bench) and, for ``worker``, Redis (REDIS_URL, default
db 13, which it empties).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e_latency import (
    REPO,
    Run,
    Upload,
    bench_env,
    claim_redis,
    clip_bytes,
    ensure_database,
    free_port,
    listen,
    login,
    match,
    set_up,
    upload,
    wait_http,
)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("a") as handle:
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def watch(base: str, run: Run) -> threading.Event:
    """Log in as the officer and listen on the incidents websocket in a thread; the stop event."""
    cookie = login(base)
    ready, stop_event = threading.Event(), threading.Event()
    ws_url = base.replace("http://", "ws://") + "/ws/incidents/"
    threading.Thread(target=asyncio.run, args=(listen(ws_url, cookie, run, ready, stop_event),), daemon=True).start()
    if not ready.wait(20):
        raise SystemExit("the websocket did not connect")
    return stop_event


def one_upload(base: str, device: dict[str, str], audio: bytes, run: Run, devices: list, timeout: float) -> float:
    item = Upload(device=devices.index(device), recorded_at=datetime.now(UTC) - timedelta(seconds=1), sent=0)
    item.sent = time.perf_counter()
    run.uploads.append(item)
    upload(base, device["token"], audio, item, requests.Session())
    if item.status not in (201, 202):
        raise SystemExit(f"upload answered {item.status}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and item.message_at is None:
        with run.lock:
            match(run, devices)
        time.sleep(0.02)
    assert item.accepted is not None
    return (item.message_at - item.accepted) if item.message_at else float("inf")


def reload_rounds(
    args: argparse.Namespace, env: dict[str, str], work: Path, devices: list, audio: bytes, run: Run
) -> list[float]:
    """Each round: ./gw reload, uploads every --interval s until --after s past it; the slowest → message."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    var = work / "var"
    serve_env = {**env, "GUNWATCH_VAR_DIR": str(var), "HOST": "127.0.0.1", "PORT": str(port)}
    log = work / "serve.log"
    server = start(["bash", str(REPO / "gw"), "serve"], serve_env, log)
    slowest: list[float] = []
    try:
        wait_http(f"{base}/health", server, timeout=300)
        wait_ready(var / "run" / "workers-0", server)
        stop_ws = watch(base, run)
        for n in range(args.rounds):
            ready = var / "run" / f"workers-{n + 1}"
            uploads: list[float] = []
            started = time.perf_counter()
            subprocess.run(["bash", str(REPO / "gw"), "reload"], env=serve_env, check=True, capture_output=True)
            threads, retired, k = [], 0.0, 0
            # Uploads go on until --after s past the moment the old workers were told to stop, so the
            # new workers' first clips are among them.
            while not retired or time.perf_counter() < started + retired + args.after:
                time.sleep(max(0.0, started + k * args.interval - time.perf_counter()))
                thread = threading.Thread(target=timed, args=(uploads, base, devices[k % len(devices)], audio, run,
                                                              devices, args.timeout))  # fmt: skip
                thread.start()
                threads.append(thread)
                k += 1
                if not retired and log.read_text(errors="replace").count("==> Reloaded:") >= n + 1:
                    retired = time.perf_counter() - started
                if time.perf_counter() - started > 300:
                    raise SystemExit("./gw serve did not finish its reload; see " + str(log))
            took = wait_ready(ready, server) - started
            for thread in threads:
                thread.join()
            ordered = sorted(uploads)
            slowest.append(ordered[-1])
            print(
                f"round {n + 1}: new workers consumed {took:.2f} s after ./gw reload, old ones told to stop at "
                f"{retired:.2f} s; {len(ordered)} uploads from the reload to {args.after:.0f} s after: median "
                f"{ordered[len(ordered) // 2]:.2f} s, slowest {ordered[-1]:.2f} s upload -> map message",
                flush=True,
            )
            time.sleep(2)  # the old workers' warm shutdown, out of the next round
        stop_ws.set()
    finally:
        stop(server)
    return slowest


def child_rounds(
    args: argparse.Namespace,
    command: list[str],
    env: dict[str, str],
    work: Path,
    base: str,
    devices: list,
    audio: bytes,
    run: Run,
) -> list[float]:
    """One worker, warm; each round SIGKILLs its pool processes and uploads at once: the clip waits for
    Celery to fork their replacements from the parent (a crashed or OOM-killed child)."""
    worker = start(command, env, work / "worker.log")
    results: list[float] = []
    try:
        first = one_upload(base, devices[-1], audio, run, devices, args.timeout)
        print(f"warm-up: worker started with the upload -> map message {first:.2f} s", flush=True)
        for n in range(args.rounds):
            time.sleep(1)  # the previous round's notifications, out of this one
            children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout
            pids = [int(pid) for pid in children.split()]
            if not pids:
                raise SystemExit("the worker has no pool processes to kill")
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            results.append(one_upload(base, devices[n], audio, run, devices, args.timeout))
            print(
                f"round {n + 1}: {len(pids)} pool processes killed with the upload -> map message {results[-1]:.2f} s",
                flush=True,
            )
    finally:
        stop(worker)
    return results


def timed(into: list[float], *args: Any) -> None:
    into.append(one_upload(*args))


def wait_ready(folder: Path, server: subprocess.Popen[bytes]) -> float:
    """Wait for both workers' ready files (gunwatch/celery.py); when the later one was written."""
    while not all((folder / queue).is_file() for queue in ("audio", "default")):
        if server.poll() is not None:
            raise SystemExit(f"./gw serve exited with {server.returncode}")
        time.sleep(0.05)
    return time.perf_counter() - time.time() + max((folder / q).stat().st_mtime for q in ("audio", "default"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("worker", "child", "embedded", "reload"), default="worker")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a message")
    parser.add_argument("--after", type=float, default=3.0, help="reload: seconds of uploads after it completed")
    parser.add_argument("--interval", type=float, default=0.5, help="reload: seconds between those uploads")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gw_bench")
    if "bench" not in database_url.rsplit("/", 1)[-1]:
        raise SystemExit(f"refusing to run against {database_url!r}: its name lacks 'bench'")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13") if args.mode != "embedded" else None
    ensure_database(database_url)
    work = Path(tempfile.mkdtemp(prefix="gw-first-"))
    env = bench_env(database_url, redis_url, work)
    devices = set_up(env, work, {"reload": 10, "child": args.rounds + 1}.get(args.mode, args.rounds), "mn04-ensemble")
    audio = clip_bytes()
    python = sys.executable
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results: list[float] = []
    run = Run()
    if args.mode == "reload":
        assert redis_url is not None
        claim_redis(redis_url)
        results = reload_rounds(args, env, work, devices, audio, run)
    elif args.mode in ("worker", "child"):
        assert redis_url is not None
        claim_redis(redis_url)
        server = start(
            [python, "-m", "gunicorn", "gunwatch.asgi:application", "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
             "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
            env, work / "server.log",
        )  # fmt: skip
        worker_command = [
            python, "-m", "celery", "-A", "gunwatch", "worker", "-Q", "audio,default", "-c", "2",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        worker_env = {**env, "DB_CONN_MAX_AGE": "300"}
        try:
            wait_http(f"{base}/health", server)
            stop_ws = watch(base, run)
            if args.mode == "child":
                results = child_rounds(args, worker_command, worker_env, work, base, devices, audio, run)
            for n in range(args.rounds if args.mode == "worker" else 0):
                worker = start(worker_command, worker_env, work / "worker.log")
                try:
                    results.append(one_upload(base, devices[n], audio, run, devices, args.timeout))
                finally:
                    stop(worker)
                print(f"round {n + 1}: worker started with the upload -> map message {results[-1]:.2f} s", flush=True)
            stop_ws.set()
        finally:
            stop(server)
    else:
        for n in range(args.rounds):
            server = start(
                [python, str(REPO / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"],
                env, work / "server.log",
            )  # fmt: skip
            started = time.perf_counter()
            try:
                wait_http(f"{base}/health", server)
                up = time.perf_counter() - started
                stop_ws = watch(base, run)
                results.append(one_upload(base, devices[n], audio, run, devices, args.timeout))
                stop_ws.set()
            finally:
                stop(server)
            print(
                f"round {n + 1}: server up in {up:.1f} s, first upload -> map message {results[-1]:.2f} s",
                flush=True,
            )
    ordered = sorted(results)
    print(
        f"mode={args.mode} rounds={len(results)} "
        + (
            "slowest upload -> map message around a reload"
            if args.mode == "reload"
            else "first incident after its upload"
        )
        + ": "
        f"median={ordered[len(ordered) // 2]:.2f} s "
        f"min={ordered[0]:.2f} max={ordered[-1]:.2f} load={os.getloadavg()[0]:.1f} target<=5 s: "
        + ("met" if ordered[-1] <= 5 else "NOT met")
    )
    print(f"logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
