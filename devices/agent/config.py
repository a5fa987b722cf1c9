"""The agent's config/state file: pairing credentials plus the little state that `status` reports.

One JSON file (default ``~/.config/gunwatch-agent/config.json``) holds both, because the device token in it
must be private anyway: it is always written with mode 0600 through a temporary file and ``os.replace``, so a
crash never leaves a half-written token behind. The running agent and a concurrent ``pair`` may both write it,
so every write is a read-modify-write under an advisory lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_CONFIG = "GUNWATCH_AGENT_CONFIG"
DEFAULT_CONFIG = Path("~/.config/gunwatch-agent/config.json")


def resolve_config_path(cli_value: str | None = None) -> Path:
    raw = cli_value or os.environ.get(ENV_CONFIG) or str(DEFAULT_CONFIG)
    return Path(raw).expanduser()


@dataclass
class AgentConfig:
    server_url: str | None = None
    device_id: str | None = None
    token: str | None = None
    paired_at: str | None = None
    # Everything the agent learns while running (last heartbeat/upload, server settings, model, auth state).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def is_paired(self) -> bool:
        return bool(self.server_url and self.token)

    @property
    def token_hint(self) -> str | None:
        """The public key part of the token only; the secret must never be printed."""
        if not self.token:
            return None
        return self.token.split(".", 1)[0] + ".…"

    def to_dict(self) -> dict[str, Any]:
        return {
            "server_url": self.server_url,
            "device_id": self.device_id,
            "token": self.token,
            "paired_at": self.paired_at,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentConfig:
        return cls(
            server_url=data.get("server_url"),
            device_id=data.get("device_id"),
            token=data.get("token"),
            paired_at=data.get("paired_at"),
            state=dict(data.get("state") or {}),
        )


class ConfigStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    @property
    def directory(self) -> Path:
        return self.path.parent

    def load(self) -> AgentConfig:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return AgentConfig()
        return AgentConfig.from_dict(data)

    def save_pairing(self, *, server_url: str, device_id: str, token: str, paired_at: str) -> AgentConfig:
        with self._locked():
            config = self.load()
            config.server_url = server_url.rstrip("/")
            config.device_id = device_id
            config.token = token
            config.paired_at = paired_at
            # A new token means any earlier revocation no longer applies.
            config.state.pop("auth_error", None)
            self._write(config)
        return config

    def update_state(self, **changes: Any) -> AgentConfig:
        """Merge `changes` into the stored state without clobbering a pairing written meanwhile."""
        with self._locked():
            config = self.load()
            for key, value in changes.items():
                if value is None:
                    config.state.pop(key, None)
                else:
                    config.state[key] = value
            self._write(config)
        return config

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.ensure_directory()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def ensure_directory(self) -> None:
        if not self.directory.exists():
            self.directory.mkdir(parents=True, mode=0o700)

    def _write(self, config: AgentConfig) -> None:
        # mkstemp creates the file 0600 from the start, so the token is never briefly world-readable.
        fd, tmp_name = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(config.to_dict(), handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o600)
            os.replace(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
