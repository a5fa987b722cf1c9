"""Steps the browser tests share: logging in, filling the add-a-device form, uploading a clip as a
device, and running the real ASGI stack in a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from tests.factories import PASSWORD


def log_in(page: Any, base_url: str, username: str) -> None:
    """Submit the login form as a factory-made user (the caller waits for whatever page it expects)."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def add_home_device(page: Any, name: str) -> None:
    """From the dashboard, submit the add-a-device form for a home device in Berlin."""
    page.click("text=Add a device")
    page.fill("input[name=name]", name)
    page.select_option("select[name=kind]", "home")
    page.fill("input[name=latitude]", "52.52")
    page.fill("input[name=longitude]", "13.40")
    page.click("button[type=submit]")


# --- The real ASGI stack in a subprocess (the ``asgi_stack`` fixture in tests/conftest.py) ---------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wav() -> bytes:
    """Two seconds of quiet with one sharp decaying impulse: what the pinned test models call a gunshot."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    samples = 0.01 * rng.standard_normal(32000)
    samples[8000:8800] += 0.9 * np.exp(-np.arange(800) / 120.0) * rng.standard_normal(800)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.clip(-1, 1), 16000, format="WAV")
    return buffer.getvalue()


def upload(base: str, token: str) -> None:
    """A device's clip upload, as the agent sends it."""
    response = requests.post(
        f"{base}/api/v1/clips",
        headers={"Authorization": f"Device {token}"},
        files={"audio": ("clip.wav", wav(), "audio/wav")},
        data={
            "client_id": str(uuid.uuid4()),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "clock_source": "ntp",
        },
        timeout=30,
    )
    assert response.status_code in (201, 202), response.text


@contextlib.contextmanager
def asgi_stack(root: Path, setup: str, extra_env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """``manage.py runserver`` (Daphne: HTTP and websockets) in a subprocess on a file SQLite database,
    with the in-process channel layer and background-thread tasks: the embedded mode a newcomer runs.

    ``setup`` is Python run by ``manage.py shell`` first, with ``sys.argv[1]`` the work folder and
    ``sys.argv[2]`` the factories' password; the JSON object on its last ``{`` line is yielded with
    ``base`` (the server's URL) and ``log`` (its output file).
    """
    repo = Path(__file__).resolve().parents[1]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")},
        "DJANGO_SETTINGS_MODULE": "gunwatch.settings",
        "GUNWATCH_VAR_DIR": str(root),
        "MEDIA_ROOT": str(root / "media"),
        "DEBUG": "true",
        "GUNWATCH_EAGER_IN_THREAD": "true",
        # No network here: a local blank tile instead of OpenStreetMap.
        "MAP_TILE_URL": "/static/alerts/blank-tile.png",
        "PYTHONPATH": str(repo),
        **(extra_env or {}),
    }
    manage = [sys.executable, str(repo / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=repo, timeout=300)
    made = subprocess.run(
        [*manage, "shell", "-c", f"import sys; sys.argv = ['', {str(root)!r}, {PASSWORD!r}]\n{setup}"],
        env=env,
        check=True,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in made.stdout.splitlines() if line.startswith("{")]
    given = json.loads(lines[-1]) if lines else {}
    port = free_port()
    log_path = root / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            env=env,
            cwd=repo,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            yield {**given, "base": base, "log": log_path}
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
