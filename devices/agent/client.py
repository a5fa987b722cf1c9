"""HTTP client for the GunWatch device API, and the one place that decides what an error means.

* :class:`TransientError` — connection trouble, timeouts, 5xx, 408 and 429: try again later (honouring
  ``Retry-After``).
* :class:`AuthError` — 401: the token was revoked or the device disabled. Nothing will work until the device
  is paired again, so the agent stops talking to the server but keeps everything it recorded.
* :class:`PermanentError` — any other 4xx: this exact request will never succeed, so it must not be retried.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests

from devices.agent import FIRMWARE_VERSION

RETRYABLE_4XX = {408, 429}


class ApiError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, "body": self.body}


class TransientError(ApiError):
    pass


class PermanentError(ApiError):
    pass


class AuthError(PermanentError):
    pass


class ChecksumError(PermanentError):
    pass


@dataclass
class Backoff:
    """Exponential backoff with full jitter (each wait uniform in [0, min(cap, base * 2**n)]).

    Full jitter spreads a fleet that lost the server at the same moment, so they do not all come back in
    lock-step when it returns.
    """

    base_s: float = 1.0
    cap_s: float = 300.0
    failures: int = 0
    rng: random.Random | None = None

    def next_delay(self, retry_after: float | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 30))
        self.failures += 1
        delay = (self.rng or random).uniform(0, ceiling)
        if retry_after is not None:
            # The server asked for at least this long; never come back sooner.
            delay = max(delay, min(retry_after, self.cap_s))
        return delay

    def reset(self) -> None:
        self.failures = 0


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"gunwatch-agent/{FIRMWARE_VERSION}"

    # -- endpoints -----------------------------------------------------------------------------------

    def pair(self, code: str) -> dict[str, Any]:
        body = {"pairing_code": code, "firmware_version": FIRMWARE_VERSION}
        return self._json("POST", "/api/v1/devices/pair", json=body, auth=False)

    def heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in payload.items() if v is not None}
        return self._json("POST", "/api/v1/devices/heartbeat", json=body)

    def upload_clip(self, audio_path: Path, fields: dict[str, Any]) -> dict[str, Any]:
        data = {k: _form_value(v) for k, v in fields.items() if v is not None}
        mime = "audio/flac" if audio_path.suffix.lower() == ".flac" else "audio/wav"
        with audio_path.open("rb") as handle:
            files = {"audio": (audio_path.name, handle, mime)}
            return self._json("POST", "/api/v1/clips", data=data, files=files)

    def active_model(self) -> dict[str, Any] | None:
        try:
            return self._json("GET", "/api/v1/models/active")
        except PermanentError as exc:
            if exc.status == 404 and not isinstance(exc, AuthError):
                return None
            raise

    def download_model(self, destination: Path, *, expected_sha256: str | None = None) -> str:
        """Stream the active model to `destination` atomically; verify its sha256; return the digest.

        A file whose digest does not match never replaces `destination`.
        """
        response = self._request("GET", "/api/v1/models/active/download", stream=True)
        announced = (response.headers.get("X-Model-SHA256") or "").lower() or None
        destination.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    handle.write(chunk)
                    digest.update(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            actual = digest.hexdigest()
            # The header describes exactly these bytes; the registry's sha256 is only a fallback because the
            # server may serve a TorchScript export of the weights it hashed.
            wanted = announced or (expected_sha256 or "").lower()
            if not wanted:
                raise ChecksumError("the model download carried no X-Model-SHA256 header to verify it against")
            if wanted != actual:
                raise ChecksumError(f"model sha256 {actual} does not match the announced {wanted}")
            os.replace(tmp_name, destination)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        finally:
            response.close()
        return actual

    # -- plumbing ------------------------------------------------------------------------------------

    def _json(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, auth=auth, **kwargs)
        try:
            return response.json() if response.content else {}
        except ValueError as exc:
            raise TransientError(f"{method} {path}: the server sent invalid JSON", status=response.status_code) from exc

    def _request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if auth:
            if not self.token:
                raise AuthError("this device is not paired (no token)")
            headers["Authorization"] = f"Device {self.token}"
        try:
            response = self.session.request(
                method, self.base_url + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise TransientError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code < 400:
            return response
        raise _error_for(method, path, response)


def _error_for(method: str, path: str, response: requests.Response) -> ApiError:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    message, code = f"{method} {path} -> HTTP {status}", None
    if isinstance(body, dict):
        code = body.get("code")
        detail = body.get("message") or body.get("detail")
        if detail:
            message = f"{message}: {detail}"
    retry_after = _retry_after(response.headers.get("Retry-After"))
    kwargs: dict[str, Any] = {"status": status, "code": code, "body": body, "retry_after": retry_after}
    response.close()
    if status == 401:
        return AuthError(message, **kwargs)
    if status >= 500 or status in RETRYABLE_4XX:
        return TransientError(message, **kwargs)
    return PermanentError(message, **kwargs)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 7))
    return str(value)
