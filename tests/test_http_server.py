"""daphne itself, as production runs it, meeting requests that never reach Django intact (issue 13, item 5)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def daphne_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    var = tmp_path_factory.mktemp("daphne-var")
    port = _free_port()
    env = {**os.environ, "GUNWATCH_VAR_DIR": str(var), "DEBUG": "true", "PYTHONPATH": str(REPO_ROOT)}
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO_ROOT, env=env, check=True)
    daphne = Path(sys.executable).parent / "daphne"
    log = (var / "daphne.log").open("wb")
    process = subprocess.Popen(
        [str(daphne), "-b", "127.0.0.1", "-p", str(port), "gunwatch.asgi:application"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (var / "daphne.log").read_text()
                time.sleep(0.2)
        else:
            pytest.fail("daphne did not start")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a loaded machine; the server's state no longer matters
            process.kill()
            process.wait(timeout=10)
        log.close()


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer; (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # The server may answer and half-close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
            if sep and b"content-length" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    raw = b"".join(chunks)
    assert raw, "the connection was closed without an answer"
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("size", [20_000, 60_000, 600_000])
def test_an_oversized_authorization_header_gets_a_431(daphne_port: int, size: int) -> None:
    request = b"GET /api/v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token " + b"a" * size + b"\r\n\r\n"
    status, _, body = _exchange(daphne_port, request)
    assert status == 431
    assert json.loads(body)["code"] == "headers_too_large"


def test_many_headers_adding_up_past_the_limit_get_a_431(daphne_port: int) -> None:
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"b" * 1000) for i in range(30))
    status, _, body = _exchange(daphne_port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    assert status == 431 and json.loads(body)["code"] == "headers_too_large"


def test_normal_headers_still_reach_django(daphne_port: int) -> None:
    request = b"GET /api/v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token " + b"a" * 8000 + b"\r\n\r\n"
    status, _, body = _exchange(daphne_port, request)
    assert status == 401 and json.loads(body)["code"] == "authentication_failed"


@pytest.mark.parametrize(
    "content_type", [b"multipart/form-data", b"multipart/form-data; boundary=", b'multipart/form-data; boundary="\xff"']
)
def test_a_broken_multipart_boundary_is_answered_by_django_in_the_error_shape(
    daphne_port: int, content_type: bytes
) -> None:
    body = b'--xx\r\nContent-Disposition: form-data; name="pairing_code"\r\n\r\nABCD'
    request = (
        b"POST /api/v1/devices/pair HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    status, headers, answer = _exchange(daphne_port, request)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(answer)["code"] == "parse_error"
