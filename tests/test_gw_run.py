"""``./gw run`` and ``./gw serve`` for real: they start, and Ctrl-C or SIGTERM stops everything they started.

The script runs in a session of its own, like in a terminal; Ctrl-C is SIGINT to that whole
foreground process group, which is what a terminal sends. Every process the script started is
collected from /proc before the signal, and none may be left afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STOP_WITHIN_S = 9.0  # STOP_GRACE_S (5) plus the time bash needs to notice and reap


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _launch(command: str, env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """``./gw <command>`` in a session of its own, as from a terminal; its output goes to a file."""
    out = tmp_path / f"gw-{command}.out"
    process = subprocess.Popen(
        [str(REPO / "gw"), command],
        cwd=REPO,
        env=env,
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return process, out


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, int]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")},
        # The virtualenv running these tests (sys.prefix; its python is a symlink, so no resolve()).
        "GUNWATCH_VENV": os.environ.get("GUNWATCH_VENV") or sys.prefix,
        "GUNWATCH_VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "PORT": str(port),
        "DEMO_DEVICES": "4",
    }
    process, out = _launch("run", env, tmp_path)
    deadline = time.monotonic() + 400
    while "Press Ctrl-C to stop." not in out.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"./gw run did not start:\n{out.read_text()[-3000:]}")
        time.sleep(0.5)
    return process, out, port


def _stop_and_check(process: subprocess.Popen[str], send: Callable[[], None]) -> float:
    started_children = _descendants(process.pid)
    assert len(started_children) >= 3, "expected the web server, the periodic runner and the fleet"
    began = time.monotonic()
    send()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        for pid in started_children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError("./gw run was still running 30 s after the signal") from None
    took = time.monotonic() - began
    time.sleep(0.3)
    left = sorted(pid for pid in started_children if _alive(pid))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left behind: {left}"
    return took


def test_ctrl_c_stops_everything_within_seconds(tmp_path: Path) -> None:
    process, out, port = _start(tmp_path)
    text = out.read_text()
    # The banner is the last thing printed at start, and carries the URL and the logins.
    banner = text[text.index("GunWatch is running at") :]
    assert f"http://127.0.0.1:{port}/" in banner
    assert "admin, police, owner, reviewer" in banner and "gunwatch-demo" in banner
    took = _stop_and_check(process, lambda: os.killpg(process.pid, signal.SIGINT))
    assert took < STOP_WITHIN_S, f"Ctrl-C took {took:.1f} s"
    assert process.returncode != 0
    # The demo's devices were stopped on purpose: nobody is told they went offline.
    mail = tmp_path / "var" / "mail"
    offline_mails = [p for p in mail.glob("*") if "is offline" in p.read_text()] if mail.exists() else []
    assert offline_mails == []


def test_sigterm_stops_everything_within_seconds(tmp_path: Path) -> None:
    process, _, _ = _start(tmp_path)
    # A process manager signals the script alone, not its group.
    took = _stop_and_check(process, lambda: os.kill(process.pid, signal.SIGTERM))
    assert took < STOP_WITHIN_S, f"SIGTERM took {took:.1f} s"


@pytest.fixture
def serve_database() -> Iterator[str]:
    """A PostgreSQL database of its own for ./gw serve (it migrates and registers the model)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres") or not os.environ.get("REDIS_URL"):
        pytest.skip("./gw serve needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL)")
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed")
    import psycopg2

    base, _, name = url.rpartition("/")
    serve_name = f"{name}_gw_serve"
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{serve_name}"')
        cursor.execute(f'CREATE DATABASE "{serve_name}"')
    try:
        yield f"{base}/{serve_name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{serve_name}" WITH (FORCE)')
        admin.close()


def test_gw_reload_without_a_running_serve_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "GUNWATCH_VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run([str(REPO / "gw"), "reload"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "No ./gw serve is running here" in done.stderr


def _worker_pids(folder: Path, timeout: float = 240) -> set[int]:
    """The Celery workers' main pids from their ready files (written once each consumes)."""
    deadline = time.monotonic() + timeout
    files = [folder / "audio", folder / "default"]
    while not all(f.is_file() and f.read_text().strip() for f in files):
        assert time.monotonic() < deadline, f"workers not ready in {folder}"
        time.sleep(0.2)
    return {int(f.read_text()) for f in files}


def test_gw_serve_runs_the_production_tier_reloads_its_workers_and_ctrl_c_stops_all_of_it(
    tmp_path: Path, serve_database: str
) -> None:
    port = _free_port()
    # A Redis database of its own: the suite's Redis database may hold this run's other work.
    redis_url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/14"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        "GUNWATCH_VENV": os.environ.get("GUNWATCH_VENV") or sys.prefix,
        "GUNWATCH_VAR_DIR": str(tmp_path / "var"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": serve_database,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "WEB_PROCESSES": "1",
        "WEB_THREADS": "2",
    }
    process, out = _launch("serve", env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"./gw serve did not start:\n{out.read_text()[-3000:]}")
        time.sleep(0.5)
    assert "nginx" in out.read_text()
    deadline = time.monotonic() + 30  # the announcement polls every 0.5 s
    while "==> Ready: http://127.0.0.1:" not in out.read_text():
        assert time.monotonic() < deadline, out.read_text()[-2000:]
        time.sleep(0.2)
    second = subprocess.run([str(REPO / "gw"), "serve"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert f"./gw serve is already running here (pid {process.pid}" in second.stderr
    # nginx answers the static files and hands the rest to the WSGI pool.
    assert requests.get(f"{base}/static/alerts/map.js", timeout=10).status_code == 200
    assert requests.post(f"{base}/api/v1/devices/heartbeat", json={}, timeout=10).status_code == 401
    # nginx, gunicorn (WSGI and ASGI) and their workers, two Celery workers and beat.
    names = {Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in _descendants(process.pid)}
    assert any(b"nginx" in name for name in names), names
    # ./gw reload: the new workers consume before the old ones are told to stop; then the old ones exit.
    run = tmp_path / "var" / "run"
    old = _worker_pids(run / "workers-0")
    assert all(_alive(pid) for pid in old)
    reload = subprocess.run([str(REPO / "gw"), "reload"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert reload.returncode == 0, reload.stderr
    new = _worker_pids(run / "workers-1")
    assert not new & old
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in old):
        assert time.monotonic() < deadline, "the old workers did not stop after the reload"
        time.sleep(0.2)
    assert all(_alive(pid) for pid in new)
    assert "Reloaded: workers generation 1 consume" in out.read_text()
    assert requests.get(f"{base}/health", timeout=10).status_code == 200
    took = _stop_and_check(process, lambda: os.killpg(process.pid, signal.SIGINT))
    assert took < STOP_WITHIN_S, f"Ctrl-C took {took:.1f} s"
