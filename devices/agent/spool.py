"""The on-disk upload queue: one FLAC file plus one JSON sidecar per clip.

Named ``spool`` rather than ``queue`` so that it does not shadow the standard library module.

Every file is written under a temporary name, fsynced and renamed into place, and the sidecar is renamed
last: a clip exists for the uploader only once both files are complete, so a power cut leaves either a
whole clip or debris that :meth:`Spool.recover` sweeps away. Names start with a nanosecond timestamp, so
sorting by name is delivery order (oldest first). When the queue is full the oldest clips are dropped and
counted in ``state.json``; that count is what heartbeats and ``status`` report.

A clip leaves the queue without being delivered in two other ways, and stays on disk in both: ``rejected/``
holds clips the server refused for good (a 4xx), ``held/`` those set aside after the server failed on them
again and again while it took later clips (a poison clip must not hold back the gunshots behind it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf

from devices.agent.timeutil import iso_utc

AUDIO_SUFFIX = ".flac"
META_SUFFIX = ".json"
STATE_FILE = "state.json"
REJECTED_DIR = "rejected"
HELD_DIR = "held"


@dataclass(frozen=True)
class SpoolItem:
    name: str
    audio_path: Path
    meta_path: Path
    meta: dict[str, Any]

    @property
    def client_id(self) -> str:
        return str(self.meta["client_id"])

    @property
    def failures(self) -> int:
        """Failed attempts the server (or the way to it) is to blame for, not the device."""
        return int(self.meta.get("failures", 0))

    def size_bytes(self) -> int:
        total = 0
        for path in (self.audio_path, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total


@dataclass(frozen=True)
class SpoolStats:
    count: int
    bytes: int
    dropped: int
    rejected: int
    set_aside: int
    oldest_recorded_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "bytes": self.bytes,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "set_aside": self.set_aside,
            "oldest_recorded_at": self.oldest_recorded_at,
        }


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        max_items: int = 2000,
        max_bytes: int = 500 * 1024 * 1024,
        max_rejected: int = 200,
    ) -> None:
        self.directory = directory
        self.rejected_dir = directory / REJECTED_DIR
        self.held_dir = directory / HELD_DIR
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_rejected = max_rejected
        # put() from the capture thread and remove() from the uploader may race on the same oldest item.
        self._lock = threading.RLock()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.rejected_dir.mkdir(exist_ok=True, mode=0o700)
        self.held_dir.mkdir(exist_ok=True, mode=0o700)

    # -- writing -------------------------------------------------------------------------------------

    def put(self, samples: np.ndarray, sample_rate: int, meta: dict[str, Any]) -> SpoolItem:
        """Store one clip durably; drops the oldest clips if this one makes the queue exceed its bounds."""
        if "client_id" not in meta:
            raise ValueError("a spooled clip needs a client_id so that retries are idempotent")
        name = f"{time.time_ns():020d}-{meta['client_id']}"
        audio_path = self.directory / (name + AUDIO_SUFFIX)
        meta_path = self.directory / (name + META_SUFFIX)
        clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        with self._lock:
            _atomic_write(
                audio_path,
                lambda fh: sf.write(fh, clipped, sample_rate, format="FLAC", subtype="PCM_16"),
            )
            _atomic_write(meta_path, lambda fh: fh.write(_json_bytes(meta)))
            _fsync_dir(self.directory)
            item = SpoolItem(name, audio_path, meta_path, dict(meta))
            self._enforce_bounds(keep=name)
        return item

    def _enforce_bounds(self, *, keep: str) -> None:
        items = self.items()
        sizes = {item.name: item.size_bytes() for item in items}
        count, total = len(items), sum(sizes.values())
        dropped = 0
        for item in items:
            if count <= self.max_items and total <= self.max_bytes:
                break
            if item.name == keep:
                continue
            self._delete(item)
            count -= 1
            total -= sizes[item.name]
            dropped += 1
        if dropped:
            self._add_dropped(dropped)

    # -- reading -------------------------------------------------------------------------------------

    def items(self) -> list[SpoolItem]:
        """Complete clips, oldest first."""
        result = []
        for meta_path in sorted(self.directory.glob("*" + META_SUFFIX)):
            if meta_path.name == STATE_FILE:
                continue
            audio_path = meta_path.with_suffix(AUDIO_SUFFIX)
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if audio_path.exists():
                result.append(SpoolItem(meta_path.stem, audio_path, meta_path, meta))
        return result

    def oldest(self) -> SpoolItem | None:
        items = self.items()
        return items[0] if items else None

    def __len__(self) -> int:
        # Cheap enough to poll: counts complete clips without parsing their sidecars.
        return sum(
            1
            for meta_path in self.directory.glob("*" + META_SUFFIX)
            if meta_path.name != STATE_FILE and meta_path.with_suffix(AUDIO_SUFFIX).exists()
        )

    def stats(self) -> SpoolStats:
        items = self.items()
        return SpoolStats(
            count=len(items),
            bytes=sum(item.size_bytes() for item in items),
            dropped=self.dropped,
            rejected=len(list(self.rejected_dir.glob("*" + META_SUFFIX))),
            set_aside=len(list(self.held_dir.glob("*" + META_SUFFIX))),
            oldest_recorded_at=items[0].meta.get("recorded_at") if items else None,
        )

    @property
    def dropped(self) -> int:
        return int(self._read_state().get("dropped", 0))

    # -- finishing -----------------------------------------------------------------------------------

    def remove(self, item: SpoolItem) -> None:
        """Forget a delivered clip. Missing files are fine: the clip may have been dropped meanwhile."""
        with self._lock:
            self._delete(item)

    def reject(self, item: SpoolItem, error: dict[str, Any]) -> Path | None:
        """Park a clip the server refused for good, with the reason, so that it is not retried forever."""
        return self._move_aside(item, self.rejected_dir, rejected_at=_utc_now_iso(), error=error)

    def set_aside(self, item: SpoolItem, error: dict[str, Any] | None = None) -> Path | None:
        """Move a clip the server keeps failing on out of the queue (into ``held/``), so later clips go out."""
        error = error or item.meta.get("last_error")
        return self._move_aside(item, self.held_dir, set_aside_at=_utc_now_iso(), error=error)

    def note_failure(self, item: SpoolItem, error: dict[str, Any]) -> SpoolItem:
        """Count one more failed attempt in the clip's sidecar, so the count survives a restart."""
        return self.update_meta(item, failures=item.failures + 1, last_error=error, last_failed_at=_utc_now_iso())

    def update_meta(self, item: SpoolItem, **changes: Any) -> SpoolItem:
        """Rewrite a queued clip's sidecar (atomically) with ``changes``."""
        meta = dict(item.meta, **changes)
        with self._lock:
            if not item.meta_path.exists():
                return item  # dropped for space meanwhile
            _atomic_write(item.meta_path, lambda fh: fh.write(_json_bytes(meta)))
        return SpoolItem(item.name, item.audio_path, item.meta_path, meta)

    def rejected(self) -> list[dict[str, Any]]:
        return _read_metas(self.rejected_dir)

    def held(self) -> list[dict[str, Any]]:
        return _read_metas(self.held_dir)

    def requeue_held(self) -> int:
        """Put every set-aside clip back in the queue, in its old place (e.g. after a server fix)."""
        moved = 0
        with self._lock:
            for meta_path in sorted(self.held_dir.glob("*" + META_SUFFIX)):
                audio_path = meta_path.with_suffix(AUDIO_SUFFIX)
                if not audio_path.exists():
                    meta_path.unlink(missing_ok=True)
                    continue
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                for key in ("failures", "last_error", "last_failed_at", "set_aside_at", "error"):
                    meta.pop(key, None)
                os.replace(audio_path, self.directory / audio_path.name)
                # The sidecar last: only then is the clip visible to the uploader again.
                _atomic_write(self.directory / meta_path.name, partial(_write_json, meta))
                meta_path.unlink(missing_ok=True)
                moved += 1
            _fsync_dir(self.directory)
        return moved

    def recover(self) -> int:
        """Delete debris of interrupted writes (temporary files, half clips). Call once at start-up."""
        removed = 0
        with self._lock:
            for path in self.directory.glob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed += 1
            for audio_path in self.directory.glob("*" + AUDIO_SUFFIX):
                if not audio_path.with_suffix(META_SUFFIX).exists():
                    audio_path.unlink(missing_ok=True)
                    removed += 1
            for meta_path in self.directory.glob("*" + META_SUFFIX):
                if meta_path.name != STATE_FILE and not meta_path.with_suffix(AUDIO_SUFFIX).exists():
                    meta_path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- internals -----------------------------------------------------------------------------------

    def _delete(self, item: SpoolItem) -> None:
        # Sidecar first: without it the clip is invisible, so a crash here cannot resurrect half a clip.
        item.meta_path.unlink(missing_ok=True)
        item.audio_path.unlink(missing_ok=True)

    def _move_aside(self, item: SpoolItem, folder: Path, **extra: Any) -> Path | None:
        with self._lock:
            if not item.audio_path.exists():
                return None
            meta = dict(item.meta, **extra)
            target_meta = folder / item.meta_path.name
            _atomic_write(target_meta, lambda fh: fh.write(_json_bytes(meta)))
            os.replace(item.audio_path, folder / item.audio_path.name)
            with contextlib.suppress(FileNotFoundError):
                item.meta_path.unlink()
            _fsync_dir(self.directory)
            self._prune(folder)
        return target_meta

    def _prune(self, folder: Path) -> None:
        metas = sorted(folder.glob("*" + META_SUFFIX))
        for meta_path in metas[: max(0, len(metas) - self.max_rejected)]:
            meta_path.unlink(missing_ok=True)
            meta_path.with_suffix(AUDIO_SUFFIX).unlink(missing_ok=True)

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / STATE_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _add_dropped(self, count: int) -> None:
        state = self._read_state()
        state["dropped"] = int(state.get("dropped", 0)) + count
        state["last_dropped_at"] = _utc_now_iso()
        _atomic_write(self.directory / STATE_FILE, lambda fh: fh.write(_json_bytes(state)))


def _read_metas(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*" + META_SUFFIX))]


def disk_free_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / (1024 * 1024)


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode("utf-8")


def _write_json(data: dict[str, Any], handle: BinaryIO) -> None:
    handle.write(_json_bytes(data))


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _fsync_dir(directory: Path) -> None:
    # Renames are durable only once the directory entry itself is on disk (matters on a Pi's SD card).
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc_now_iso() -> str:
    return iso_utc(time.time())
