"""The production web tier (issue 14): HTTP on kept threads, and nginx in front of a WSGI pool and ASGI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from a2wsgi import WSGIMiddleware
from asgiref.testing import ApplicationCommunicator

from devices.models import Device
from gunwatch.serving import nginx_command, nginx_conf
from tests.browser import free_port
from tests.conftest import REPO_ROOT


def test_http_runs_on_kept_threads_only_where_every_thread_can_publish(settings: Any) -> None:
    import gunwatch.asgi

    settings.WEB_HTTP_THREADS = 3
    pooled = gunwatch.asgi.http_application()
    assert isinstance(pooled, WSGIMiddleware)
    assert pooled.executor._max_workers == 3
    # The in-memory channel layer (no Redis) needs Django's own ASGI handler: see settings.WEB_HTTP_THREADS.
    settings.WEB_HTTP_THREADS = 0
    assert gunwatch.asgi.http_application() is gunwatch.asgi.django_asgi_app


async def _post(application: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode()), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(10)
    chunks = []
    while True:
        message = await communicator.receive_output(10)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return start["status"], b"".join(chunks)


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_through_the_thread_pool_is_recorded(settings: Any, paired_device: tuple[Device, str]) -> None:
    import gunwatch.asgi

    device, token = paired_device
    settings.WEB_HTTP_THREADS = 2
    application = gunwatch.asgi.http_application()
    headers = [(b"authorization", f"Device {token}".encode()), (b"content-type", b"application/json")]
    status, body = asyncio.run(_post(application, "/api/v1/devices/heartbeat", headers, b'{"battery_pct": 41}'))
    assert status == 200, body
    device.refresh_from_db()
    assert device.battery_pct == 41
    assert device.connectivity == Device.Connectivity.ONLINE
    status, body = asyncio.run(_post(application, "/api/v1/devices/heartbeat", [], b"{}"))
    assert status == 401


def test_the_nginx_config_renders_and_nginx_accepts_it(tmp_path: Path) -> None:
    conf = nginx_conf(tmp_path / "var", "127.0.0.1", 8123, static_root=tmp_path / "static")
    text = conf.read_text()
    assert not re.findall(r"@[A-Z_]+@", text), "a placeholder was left in the config"
    assert "listen 127.0.0.1:8123;" in text
    assert f"server unix:{(tmp_path / 'var' / 'run').resolve()}/wsgi.sock;" in text
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed (./gw serve then serves from ASGI processes alone)")
    checked = subprocess.run([*nginx_command(conf)[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


@pytest.fixture(scope="module")
def nginx_tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """./gw serve's web tier on SQLite: nginx, a gthread WSGI pool and one uvicorn process."""
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed")
    var = tmp_path_factory.mktemp("tier-var")
    port = free_port()
    env = {**os.environ, "GUNWATCH_VAR_DIR": str(var), "DEBUG": "true", "PYTHONPATH": str(REPO_ROOT)}
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    env["NUM_PROXIES"] = "1"
    env["STATIC_ROOT"] = str(var / "static")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO_ROOT, env=env, check=True, timeout=300)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], cwd=REPO_ROOT, env=env, check=True, timeout=300)
    officer = (
        "from accounts.models import User; from alerts.models import PoliceStation; "
        "s = PoliceStation.objects.create(name='Tier', latitude=52.5, longitude=13.4, contact_email='t@example.org'); "
        "User.objects.create_user('tier-officer', password='tier-password-1', role='police', "
        "police_approved=True, police_station=s)"
    )
    subprocess.run([*manage, "shell", "-c", officer], cwd=REPO_ROOT, env=env, check=True, timeout=120)
    conf = nginx_conf(var, "127.0.0.1", port, static_root=var / "static")
    run = var / "run"
    gunicorn = [sys.executable, "-m", "gunicorn", "--log-level", "warning"]
    commands = [
        [
            *gunicorn,
            "gunwatch.wsgi:application",
            "-k",
            "gthread",
            "--threads",
            "2",
            "-w",
            "1",
            "-b",
            f"unix:{run}/wsgi.sock",
        ],
        [
            *gunicorn,
            "gunwatch.asgi:application",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            "1",
            "-b",
            f"unix:{run}/asgi.sock",
        ],
        nginx_command(conf),
    ]
    log = (var / "tier.log").open("wb")
    procs = [
        subprocess.Popen(c, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for c in commands
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail(f"the web tier did not come up: {(var / 'tier.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        log.close()


def test_behind_nginx_a_session_from_the_wsgi_pool_opens_the_police_websocket(nginx_tier: str) -> None:
    import websockets.sync.client
    from websockets.typing import Origin

    session = requests.Session()
    page = session.get(f"{nginx_tier}/accounts/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf
    login = session.post(
        f"{nginx_tier}/accounts/login/",
        data={"username": "tier-officer", "password": "tier-password-1", "csrfmiddlewaretoken": csrf.group(1)},
        headers={"Referer": f"{nginx_tier}/accounts/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert login.status_code == 302
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    ws_url = nginx_tier.replace("http://", "ws://") + "/ws/incidents/"
    with websockets.sync.client.connect(
        ws_url, additional_headers={"Cookie": cookie}, origin=Origin(nginx_tier), open_timeout=10
    ) as socket:
        socket.send('{"type": "ping"}')
        assert socket.recv(timeout=10) == '{"type": "pong"}'
    # Without the session the consumer refuses the handshake, behind nginx as without it.
    with pytest.raises(websockets.exceptions.InvalidStatus):
        websockets.sync.client.connect(ws_url, origin=Origin(nginx_tier), open_timeout=10)


def test_behind_nginx_the_api_answers_in_its_own_error_shape(nginx_tier: str) -> None:
    response = requests.post(f"{nginx_tier}/api/v1/devices/heartbeat", json={}, timeout=10)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["WWW-Authenticate"].startswith("Device")


def test_behind_nginx_the_map_scripts_are_served_by_nginx(nginx_tier: str) -> None:
    # Django serves no static files with DEBUG off (production): without this the police map has no Leaflet.
    response = requests.get(f"{nginx_tier}/static/alerts/map.js", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/javascript"
    assert "WebSocket" in response.text


def test_with_the_wsgi_pool_down_nginx_answers_503_in_the_error_shape(tmp_path: Path) -> None:
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed")
    port = free_port()
    conf = nginx_conf(tmp_path / "var", "127.0.0.1", port, static_root=tmp_path / "static")
    nginx = subprocess.Popen(nginx_command(conf), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = requests.post(f"http://127.0.0.1:{port}/api/v1/devices/heartbeat", json={}, timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json()["code"] == "unavailable"
    finally:
        nginx.terminate()
        nginx.wait(timeout=20)
