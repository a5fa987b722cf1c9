"""`run`: capture → trigger → spool on the main thread; upload and heartbeat on two background threads.

(Just over 500 lines: the three loops share the agent's state and are easier to check side by side.)

The spool is the hand-over point: a clip is on disk before anything tries to send it, and it leaves the
disk only after the server acknowledged it (or refused it for good), so a crash, a reboot or an outage
at any moment loses nothing that was already captured.

Clips go out oldest first, but one clip the server cannot take must not hold back the rest (gunshots
included): once the oldest clip has failed ``max_attempts`` times, the next clip is sent at once. If that
one fails too, it is an outage and the order stays. If it gets through, the old clip is tried once more
straight away, and failing then, next to a success, it is set aside (``held/``: kept, counted, reported in
heartbeats) and the rest go out.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.agent import FIRMWARE_VERSION
from devices.agent.client import ApiClient, ApiError, AuthError, Backoff, PermanentError, TransientError
from devices.agent.config import AgentConfig, ConfigStore
from devices.agent.health import LevelMeter, read_battery_pct, system_uptime_s
from devices.agent.model import ModelStore, OnboardScorer, model_identity
from devices.agent.sources import AudioBlock, NoPosition, PositionProvider
from devices.agent.spool import Spool, SpoolItem, disk_free_mb
from devices.agent.timeutil import boot_id, clock_plausible, detect_clock_source, iso_utc, parse_iso
from devices.agent.trigger import Capture, ClipCapture, TriggerSettings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_NOT_DRAINED = 3
EXIT_AUTH = 4
MIN_HEARTBEAT_S = 1.0


@dataclass
class RunOptions:
    spool_dir: Path
    model_dir: Path
    server_url: str | None = None  # overrides the paired server (moving a device, tests)
    clock_source: str = "auto"
    trigger: TriggerSettings = field(default_factory=TriggerSettings)
    pre_s: float = 0.5
    post_s: float = 1.5
    once: bool = False
    drain_timeout_s: float = 300.0
    heartbeat_interval_s: float = 60.0
    spool_max_items: int = 2000
    spool_max_bytes: int = 500 * 1024 * 1024
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    auth_recheck_s: float = 30.0
    max_attempts: int = 5


@dataclass
class Counters:
    triggers: int = 0
    filtered_onboard: int = 0
    queued: int = 0
    uploaded: int = 0
    rejected: int = 0
    set_aside: int = 0


class Agent:
    def __init__(
        self,
        store: ConfigStore,
        source: Iterable[AudioBlock],
        options: RunOptions,
        *,
        positions: PositionProvider | None = None,
        client_factory: Callable[[str, str | None], ApiClient] = ApiClient,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.options = options
        self.positions = positions or NoPosition()
        self.client_factory = client_factory
        self.stop = stop or threading.Event()
        store.ensure_directory()  # before the spool, so the private config directory gets mode 0700
        self.spool = Spool(options.spool_dir, max_items=options.spool_max_items, max_bytes=options.spool_max_bytes)
        self.models = ModelStore(options.model_dir)
        self.meter = LevelMeter()
        self.counters = Counters()
        self.clock_source = detect_clock_source(options.clock_source)
        self.heartbeat_interval_s = options.heartbeat_interval_s
        self.sensitivity_threshold: float | None = None
        self.scorer: OnboardScorer | None = None
        self._model_identity: str | None = None
        self._model_version: str | None = None
        self._wake_uploader = threading.Event()
        self._auth_failed = threading.Event()
        self._client_lock = threading.Lock()
        self._client_token: str | None = None
        self._client: ApiClient | None = None
        self._started = time.monotonic()
        self._boot_id = boot_id()
        self._capture: ClipCapture | None = None
        # The oldest clip once it failed max_attempts times: the next upload probes with a later clip.
        self._suspect: str | None = None
        # The suspect after a later clip got through: one more failure and it is set aside.
        self._confirming: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def run(self) -> int:
        self.spool.recover()
        config = self.store.update_state(spool_dir=str(self.options.spool_dir), agent_started_at=_now())
        self._restore_settings(config)
        self._restore_model(config)
        self._refresh_client(config)
        threads = [
            threading.Thread(target=self._upload_loop, name="uploader", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            self._capture_loop()
            code = self._drain() if self.options.once else EXIT_OK
        finally:
            self.stop.set()
            self._wake_uploader.set()
            for thread in threads:
                thread.join(timeout=35)
        if self.options.once and code != EXIT_AUTH:
            self._heartbeat_once()  # a last report so the server sees the final queue state
        self._save_counters()
        return code

    def _drain(self) -> int:
        deadline = time.monotonic() + self.options.drain_timeout_s
        while True:
            if len(self.spool) == 0:
                return EXIT_OK
            if self._auth_failed.is_set():
                log.error("the server refuses this device's token; %d clips stay queued", len(self.spool))
                return EXIT_AUTH
            if time.monotonic() >= deadline:
                log.warning(
                    "queue not drained after %.0f s; %d clips stay queued on disk",
                    self.options.drain_timeout_s,
                    len(self.spool),
                )
                return EXIT_NOT_DRAINED
            self.stop.wait(0.05)

    # -- capture -------------------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        for block in self.source:
            if self.stop.is_set():
                break
            self.meter.update(block.samples)
            capture = self._capture_for(block.sample_rate)
            for clip in capture.feed(block.samples, block.start_time):
                self._keep(clip)
        if self._capture is not None:
            for clip in self._capture.flush():
                self._keep(clip)

    def _capture_for(self, sample_rate: int) -> ClipCapture:
        if self._capture is not None and self._capture.sample_rate == sample_rate:
            return self._capture
        if self._capture is not None:
            # Replayed files may change rate; finish the old stream's clips before starting over.
            for clip in self._capture.flush():
                self._keep(clip)
        self._capture = ClipCapture(
            sample_rate, self.options.trigger, pre_s=self.options.pre_s, post_s=self.options.post_s
        )
        return self._capture

    def _keep(self, clip: Capture) -> None:
        self.counters.triggers += 1
        score = None
        scorer = self.scorer
        if scorer is not None:
            score = scorer.score(clip.samples, clip.sample_rate)
            threshold = self.sensitivity_threshold if self.sensitivity_threshold is not None else scorer.threshold
            if score is not None and score < threshold:
                self.counters.filtered_onboard += 1
                log.info(
                    "onset at %s scored %.3f < %.3f on the device: not uploaded",
                    iso_utc(clip.onset_time),
                    score,
                    threshold,
                )
                return
        position = self.positions.position_at(clip.onset_time)
        meta: dict[str, Any] = {
            "client_id": str(uuid.uuid4()),
            "recorded_at": iso_utc(clip.start_time),
            "trigger_offset_s": round(clip.trigger_offset_s, 4),
            "clock_source": self.clock_source,
            "latitude": position.latitude if position else None,
            "longitude": position.longitude if position else None,
            "accuracy_m": position.accuracy_m if position else None,
            "sample_rate": clip.sample_rate,
            "duration_s": round(clip.duration_s, 4),
            "onset": dataclasses.asdict(clip.onset),
            "onboard_score": score,
            "model_version": self._model_version if score is not None else None,
            "captured_at": _now(),
            # With these a stamp from a clock that was not set yet can be corrected once it is (same boot).
            "monotonic_start_s": round(clip.start_time - (time.time() - time.monotonic()), 6),
            "boot_id": self._boot_id,
        }
        self.spool.put(clip.samples, clip.sample_rate, meta)
        self.counters.queued += 1
        log.info(
            "onset at %s (snr %.1f dB, rise %.1f ms, decay %.1f dB) queued as %s",
            iso_utc(clip.onset_time),
            clip.onset.snr_db,
            clip.onset.rise_s * 1000,
            clip.onset.decay_db,
            meta["client_id"],
        )
        self._wake_uploader.set()

    # -- server connection ---------------------------------------------------------------------------

    def _refresh_client(self, config: AgentConfig | None = None) -> ApiClient | None:
        """(Re)build the HTTP client from the stored pairing; a new token lifts an auth failure."""
        config = config or self.store.load()
        server = self.options.server_url or config.server_url
        with self._client_lock:
            token_changed = config.token != self._client_token
            if self._client is None or token_changed:
                self._client = self.client_factory(server, config.token) if server and config.token else None
                self._client_token = config.token
                if token_changed and self._client is not None:
                    if self._auth_failed.is_set():
                        log.info("new device token found: resuming uploads")
                    self._auth_failed.clear()
            return self._client

    def _on_auth_error(self, exc: ApiError) -> None:
        if not self._auth_failed.is_set():
            log.error("%s — uploads paused, clips stay queued; pair again to resume", exc)
        self._auth_failed.set()
        self.store.update_state(auth_error={"at": _now(), "message": exc.message, "status": exc.status})

    def _client_or_wait(self) -> ApiClient | None:
        if self._auth_failed.is_set():
            self.stop.wait(self.options.auth_recheck_s)
            client = self._refresh_client()
            return None if self._auth_failed.is_set() else client
        client = self._client
        if client is None:
            self._on_auth_error(AuthError("this device is not paired (run: pair CODE --server URL)"))
        return client

    # -- uploads -------------------------------------------------------------------------------------

    def _upload_loop(self) -> None:
        backoff = Backoff(self.options.backoff_base_s, self.options.backoff_cap_s)
        while not self.stop.is_set():
            client = self._client_or_wait()
            if client is None:
                continue
            items = self.spool.items()
            if not items:
                self._wake_uploader.wait(1.0)
                self._wake_uploader.clear()
                continue
            head = items[0]
            if self._suspect != head.name:
                self._suspect = None
            if self._confirming != head.name:
                self._confirming = None
            probing = self._suspect is not None and len(items) > 1
            item = self._clock_checked(items[1] if probing else head)
            if item is None:
                self.stop.wait(min(10.0, self.options.backoff_cap_s))  # the clock is not set: no stamp is right
                continue
            try:
                body = client.upload_clip(item.audio_path, _upload_fields(item.meta))
            except FileNotFoundError:
                continue  # dropped for space while we were about to send it
            except AuthError as exc:
                self._on_auth_error(exc)
                continue
            except PermanentError as exc:
                log.error("server refused clip %s for good: %s", item.client_id, exc)
                self.spool.reject(item, exc.as_dict())
                self.counters.rejected += 1
                self._record_upload(item.meta, ok=False, error=exc.as_dict())
                if probing:
                    self._suspect, self._confirming = None, head.name  # the server is up and judging clips
                continue
            except TransientError as exc:
                if probing:
                    self._suspect = None  # a later clip fails too: an outage, not a poison clip; keep the order
                elif self._confirming == item.name and _blames_the_clip(exc):
                    self._set_aside(self.spool.note_failure(item, exc.as_dict()))
                    continue
                elif _blames_the_clip(exc):
                    item = self.spool.note_failure(item, exc.as_dict())
                    if item.failures >= self.options.max_attempts and len(items) > 1:
                        self._suspect = item.name
                        log.warning(
                            "clip %s failed %d times (%s); trying the next clip", item.client_id, item.failures, exc
                        )
                        self._record_upload(item.meta, ok=False, error=exc.as_dict(), retry_in_s=0.0)
                        continue  # probe at once, while the server is in the state that just failed this clip
                delay = backoff.next_delay(exc.retry_after)
                log.warning("upload of %s failed (%s); retrying in %.1f s", item.client_id, exc, delay)
                self._record_upload(item.meta, ok=False, error=exc.as_dict(), retry_in_s=round(delay, 1))
                self.stop.wait(delay)
                continue
            backoff.reset()
            self.spool.remove(item)
            self.counters.uploaded += 1
            self._record_upload(item.meta, ok=True, response=body)
            if probing:
                self._suspect, self._confirming = None, head.name
            elif self._confirming == item.name:
                self._confirming = None  # it went through after all: the failures were an outage's

    def _clock_checked(self, item: SpoolItem) -> SpoolItem | None:
        """The clip with a true recorded_at, or None while the device clock is still unset.

        A clip stamped before the clock was set (1970) is re-stamped from the monotonic clock once the wall
        clock is right, if it was captured in this boot. From an earlier boot nothing can correct it: it is
        sent as it is and the server refuses it for good (recorded_too_old), so it ends in rejected/, kept.
        """
        try:
            stamped = parse_iso(item.meta["recorded_at"]).timestamp()
        except (KeyError, ValueError):
            return item
        if clock_plausible(stamped):
            return item
        same_boot = self._boot_id is not None and item.meta.get("boot_id") == self._boot_id
        monotonic_start = item.meta.get("monotonic_start_s")
        if not same_boot or not isinstance(monotonic_start, int | float):
            return item
        now = time.time()
        if not clock_plausible(now):
            log.warning("the device clock is not set (%s); clips wait until it is", iso_utc(now))
            return None
        corrected = iso_utc(monotonic_start + (now - time.monotonic()))
        log.info("clip %s stamped %s by an unset clock: now %s", item.client_id, item.meta["recorded_at"], corrected)
        return self.spool.update_meta(item, recorded_at=corrected, recorded_at_unset_clock=item.meta["recorded_at"])

    def _set_aside(self, item: SpoolItem) -> None:
        log.error(
            "clip %s set aside after %d failed attempts while later clips got through; it stays in %s",
            item.client_id,
            item.failures,
            self.spool.held_dir,
        )
        self.spool.set_aside(item)
        self._suspect = self._confirming = None
        self.counters.set_aside += 1
        self.store.update_state(
            last_set_aside={
                "at": _now(),
                "client_id": item.client_id,
                "recorded_at": item.meta.get("recorded_at"),
                "failures": item.failures,
                "error": item.meta.get("last_error"),
            }
        )

    def _record_upload(self, meta: dict[str, Any], *, ok: bool, **details: Any) -> None:
        entry = {"at": _now(), "ok": ok, "client_id": meta["client_id"], "recorded_at": meta["recorded_at"]}
        entry.update(details)
        key = "last_upload" if ok else "last_upload_error"
        self.store.update_state(**{key: entry})

    # -- heartbeats ----------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        while not self.stop.is_set():
            if self._client_or_wait() is None:
                continue
            self._heartbeat_once()
            self.stop.wait(max(MIN_HEARTBEAT_S, self.heartbeat_interval_s))

    def heartbeat_payload(self) -> dict[str, Any]:
        position = self.positions.position_at(time.time())
        level = self.meter.report()
        stats = self.spool.stats()
        return {
            "latitude": position.latitude if position else None,
            "longitude": position.longitude if position else None,
            "accuracy_m": position.accuracy_m if position else None,
            "battery_pct": read_battery_pct(),
            "firmware_version": FIRMWARE_VERSION,
            "model_version": self._model_version,
            "uptime_s": system_uptime_s(fallback_start=self._started),
            "mic_level_dbfs": level.rms_dbfs,
            "clipping": level.clipping,
            "free_storage_mb": round(disk_free_mb(self.options.spool_dir), 1),
            "queue_length": stats.count,
            "dropped_clips": stats.dropped,
            "rejected_clips": stats.rejected,
            "set_aside_clips": stats.set_aside,
            "clock_source": self.clock_source,
        }

    def _heartbeat_once(self) -> None:
        client = self._client
        if client is None:
            return
        sent_at = time.time()
        try:
            body = client.heartbeat(self.heartbeat_payload())
        except AuthError as exc:
            self._on_auth_error(exc)
            return
        except ApiError as exc:
            log.warning("heartbeat failed: %s", exc)
            self.store.update_state(last_heartbeat_error={"at": _now(), **exc.as_dict()})
            return
        self._apply_heartbeat(body, sent_at)

    def _apply_heartbeat(self, body: dict[str, Any], sent_at: float) -> None:
        settings = body.get("settings") or {}
        interval = settings.get("heartbeat_interval_s")
        if isinstance(interval, int | float) and interval > 0:
            self.heartbeat_interval_s = float(interval)
        self.sensitivity_threshold = settings.get("sensitivity_threshold")
        offset = None
        if body.get("server_time"):
            try:
                offset = round(parse_iso(body["server_time"]).timestamp() - sent_at, 3)
            except ValueError:
                offset = None
        self.store.update_state(
            last_heartbeat={"at": iso_utc(sent_at), "ok": True, "status": body.get("status")},
            last_heartbeat_error=None,
            settings={
                "heartbeat_interval_s": self.heartbeat_interval_s,
                "sensitivity_threshold": self.sensitivity_threshold,
            },
            server_clock_offset_s=offset,
            auth_error=None,
        )
        self._sync_model(body.get("active_model"))

    def _restore_settings(self, config: AgentConfig) -> None:
        """Start with what the server said last time, so a restart without network keeps its settings."""
        saved = config.state.get("settings") or {}
        if saved.get("heartbeat_interval_s"):
            self.heartbeat_interval_s = float(saved["heartbeat_interval_s"])
        self.sensitivity_threshold = saved.get("sensitivity_threshold")

    # -- model ---------------------------------------------------------------------------------------

    def _restore_model(self, config: AgentConfig) -> None:
        saved = config.state.get("model")
        if saved and Path(saved.get("path", "")).exists():
            self._load_model(Path(saved["path"]), saved.get("active") or {})

    def _sync_model(self, active: dict[str, Any] | None) -> None:
        identity = model_identity(active)
        if identity == self._model_identity:
            return
        if active is None:
            self.scorer, self._model_identity, self._model_version = None, None, None
            self.store.update_state(model=None)
            return
        client = self._client
        if client is None:
            return
        try:
            path = self.models.fetch(client, active)
        except ApiError as exc:
            log.warning("could not download model %s: %s", identity, exc)
            self.store.update_state(model_error={"at": _now(), **exc.as_dict()})
            return
        self._load_model(path, active)
        self.store.update_state(model={"path": str(path), "active": active, "downloaded_at": _now()}, model_error=None)

    def _load_model(self, path: Path, active: dict[str, Any]) -> None:
        self._model_identity = model_identity(active)
        self._model_version = active.get("version")
        self.scorer = OnboardScorer.load(path, active)

    def _save_counters(self) -> None:
        self.store.update_state(counters=dataclasses.asdict(self.counters), agent_stopped_at=_now())


def _blames_the_clip(exc: TransientError) -> bool:
    """Whether a failed upload counts against the clip: not when the server said when to come back (a 429
    rate limit, a 503 outage with Retry-After); a 500 or a connection dropped while it read the clip does."""
    return exc.status not in {429, 503} and exc.retry_after is None


def _upload_fields(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("recorded_at", "latitude", "longitude", "accuracy_m", "client_id", "trigger_offset_s", "clock_source")
    return {key: meta.get(key) for key in keys}


def _now() -> str:
    return iso_utc(time.time())
