"""Command line: ``python -m devices.agent pair CODE --server URL | run [...] | status [--json]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devices.agent import FIRMWARE_VERSION
from devices.agent.client import ApiClient, ApiError
from devices.agent.config import ConfigStore, resolve_config_path
from devices.agent.runner import Agent, RunOptions
from devices.agent.sources import (
    FileReplaySource,
    FixedPosition,
    GpsdProvider,
    MicSource,
    PositionProvider,
    RouteProvider,
    SourceError,
    load_route,
    parse_position,
)
from devices.agent.spool import Spool
from devices.agent.timeutil import CLOCK_SOURCES, iso_utc
from devices.agent.trigger import TriggerSettings

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS lets --config/-v go before or after the sub-command without the sub-parser resetting them.
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="config/state file (default: $GUNWATCH_AGENT_CONFIG or ~/.config/gunwatch-agent/config.json)",
    )
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog="python -m devices.agent", parents=[common], description=f"GunWatch device agent ({FIRMWARE_VERSION})"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    pair = sub.add_parser("pair", parents=[common], help="exchange a pairing code for a device token")
    pair.add_argument("code")
    pair.add_argument("--server", required=True, help="server base URL, e.g. https://gunwatch.example.org")

    run = sub.add_parser("run", parents=[common], help="listen, trigger, queue and upload")
    source = run.add_argument_group("audio")
    source.add_argument("--input", type=Path, help="replay a recording or a directory of recordings")
    source.add_argument("--speed", type=float, default=1.0, help="replay speed; 0 = as fast as possible")
    source.add_argument("--once", action="store_true", help="exit at the end of --input once the queue drains")
    source.add_argument("--drain-timeout", type=float, default=300.0, help="--once: give up waiting after S s")
    source.add_argument("--samplerate", type=int, default=48000, help="microphone sample rate")
    source.add_argument("--mic", default=None, help="microphone device name or index (default: system default)")
    where = run.add_argument_group("position (default: gpsd on localhost:2947 if it answers)")
    where.add_argument("--position", type=parse_position, help="fixed LAT,LON[,ACCURACY_M]")
    where.add_argument("--route", type=Path, help="simulated vehicle route: GeoJSON LineString or lat,lon CSV")
    where.add_argument("--route-speed-kmh", type=float, default=40.0)
    where.add_argument("--gpsd", default="127.0.0.1:2947", help="gpsd HOST:PORT; 'off' to disable")
    tuning = run.add_argument_group("trigger")
    tuning.add_argument(
        "--snr-db", type=float, default=TriggerSettings.snr_db, help="peak above the background needed to fire"
    )
    tuning.add_argument("--min-peak-dbfs", type=float, default=TriggerSettings.min_peak_dbfs)
    tuning.add_argument("--crest-db", type=float, default=TriggerSettings.crest_db)
    tuning.add_argument("--decay-db", type=float, default=TriggerSettings.decay_db)
    tuning.add_argument("--refractory-s", type=float, default=TriggerSettings.refractory_s)
    other = run.add_argument_group("other")
    other.add_argument("--server", help="talk to this server instead of the paired one")
    other.add_argument("--spool", type=Path, help="queue directory (default: next to the config file)")
    other.add_argument("--spool-max-clips", type=int, default=2000)
    other.add_argument("--spool-max-mb", type=float, default=500.0)
    other.add_argument(
        "--clock-source",
        choices=["auto", *CLOCK_SOURCES],
        default="auto",
        help="what disciplines the system clock; 'gps' only if chrony/ntpd is fed by GPS/PPS",
    )
    other.add_argument("--heartbeat-s", type=float, default=60.0, help="until the server sets its own interval")
    other.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        help="failed uploads of one clip before it is set aside (if later clips get through)",
    )

    status = sub.add_parser("status", parents=[common], help="pairing, queue, last heartbeat and upload")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--spool", type=Path)

    requeue = sub.add_parser(
        "requeue-held", parents=[common], help="put clips set aside after server errors back in the queue"
    )
    requeue.add_argument("--spool", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    store = ConfigStore(resolve_config_path(getattr(args, "config", None)))
    handler = {"pair": cmd_pair, "run": cmd_run, "status": cmd_status, "requeue-held": cmd_requeue_held}[args.command]
    return handler(args, store)


# -- pair ------------------------------------------------------------------------------------------------


def cmd_pair(args: argparse.Namespace, store: ConfigStore) -> int:
    client = ApiClient(args.server)
    try:
        body = client.pair(args.code)
    except ApiError as exc:
        print(f"pairing failed: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if not body.get("token") or not body.get("device_id"):
        print(f"pairing failed: unexpected answer from the server: {body}", file=sys.stderr)
        return EXIT_USAGE
    config = store.save_pairing(
        server_url=args.server, device_id=str(body["device_id"]), token=body["token"], paired_at=iso_utc(time.time())
    )
    print(
        f"paired as device {config.device_id} with {config.server_url}; token {config.token_hint} "
        f"stored in {store.path} (mode 0600)"
    )
    return 0


# -- run -------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, store: ConfigStore) -> int:
    if args.once and args.input is None:
        print("--once needs --input (a microphone never ends)", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    try:
        source = _audio_source(args, stop)
        positions = _position_provider(args, getattr(source, "time_scale", 1.0))
    except (SourceError, ValueError, OSError) as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    trigger = TriggerSettings(
        snr_db=args.snr_db,
        min_peak_dbfs=args.min_peak_dbfs,
        crest_db=args.crest_db,
        decay_db=args.decay_db,
        refractory_s=args.refractory_s,
    )
    options = RunOptions(
        spool_dir=args.spool or store.directory / "spool",
        model_dir=store.directory / "models",
        server_url=args.server,
        clock_source=args.clock_source,
        trigger=trigger,
        once=args.once,
        drain_timeout_s=args.drain_timeout,
        heartbeat_interval_s=args.heartbeat_s,
        spool_max_items=args.spool_max_clips,
        spool_max_bytes=int(args.spool_max_mb * 1024 * 1024),
        max_attempts=max(1, args.max_attempts),
    )
    agent = Agent(store, source, options, positions=positions, stop=stop)
    previous_handlers = _stop_on_signals(stop)
    try:
        return agent.run()
    except SourceError as exc:
        print(f"audio input failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        if isinstance(positions, GpsdProvider):
            positions.stop()


def _audio_source(args: argparse.Namespace, stop: threading.Event) -> FileReplaySource | MicSource:
    if args.input is not None:
        return FileReplaySource(args.input, speed=args.speed)
    device: str | int | None = int(args.mic) if args.mic and args.mic.isdigit() else args.mic
    return MicSource(sample_rate=args.samplerate, device=device, stop=stop)


def _position_provider(args: argparse.Namespace, time_scale: float) -> PositionProvider | None:
    if args.position is not None:
        return FixedPosition(args.position)
    if args.route is not None:
        return RouteProvider(load_route(args.route), speed_mps=args.route_speed_kmh / 3.6, time_scale=time_scale)
    if args.gpsd and args.gpsd != "off":
        host, _, port = args.gpsd.rpartition(":")
        return GpsdProvider(host or "127.0.0.1", int(port or 2947)).start()
    return None


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM end the run cleanly (queue kept); returns the previous handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    return previous


# -- requeue-held ----------------------------------------------------------------------------------------


def cmd_requeue_held(args: argparse.Namespace, store: ConfigStore) -> int:
    """After the server was fixed: the set-aside clips go out again with the next run, in their old place."""
    config = store.load()
    spool_path = args.spool or Path(config.state.get("spool_dir") or store.directory / "spool")
    moved = Spool(spool_path).requeue_held() if spool_path.exists() else 0
    print(f"{moved} set-aside clips are back in the queue ({spool_path})")
    return 0


# -- status ----------------------------------------------------------------------------------------------


def status_report(store: ConfigStore, spool_dir: Path | None = None) -> dict[str, Any]:
    config = store.load()
    spool_path = spool_dir or Path(config.state.get("spool_dir") or store.directory / "spool")
    queue = Spool(spool_path).stats().as_dict() if spool_path.exists() else None
    mode = None
    if store.path.exists():
        mode = oct(stat.S_IMODE(os.stat(store.path).st_mode))
    state = config.state
    return {
        "config_path": str(store.path),
        "config_mode": mode,
        "paired": config.is_paired,
        "server_url": config.server_url,
        "device_id": config.device_id,
        "token": config.token_hint,
        "paired_at": config.paired_at,
        "auth_error": state.get("auth_error"),
        "spool_dir": str(spool_path),
        "queue": queue,
        "last_heartbeat": state.get("last_heartbeat"),
        "last_heartbeat_error": state.get("last_heartbeat_error"),
        "last_upload": state.get("last_upload"),
        "last_upload_error": state.get("last_upload_error"),
        "settings": state.get("settings"),
        "server_clock_offset_s": state.get("server_clock_offset_s"),
        "model": (state.get("model") or {}).get("active"),
        "model_error": state.get("model_error"),
        "counters": state.get("counters"),
    }


def cmd_status(args: argparse.Namespace, store: ConfigStore) -> int:
    report = status_report(store, args.spool)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_status(report))
    return 0 if report["paired"] and not report["auth_error"] else 1


def format_status(r: dict[str, Any]) -> str:
    lines = [f"config:          {r['config_path']} ({r['config_mode'] or 'missing'})"]
    if r["paired"]:
        lines.append(
            f"paired:          device {r['device_id']} on {r['server_url']} "
            f"(token {r['token']}, since {r['paired_at']})"
        )
    else:
        lines.append("paired:          no — run: python -m devices.agent pair CODE --server URL")
    if r["auth_error"]:
        err = r["auth_error"]
        lines.append(f"authorisation:   REFUSED since {err.get('at')}: {err.get('message')} (uploads paused)")
    q = r["queue"]
    if q is None:
        lines.append(f"queue:           empty (no spool at {r['spool_dir']} yet)")
    else:
        lines.append(
            f"queue:           {q['count']} clips, {q['bytes'] / 1e6:.2f} MB, oldest {q['oldest_recorded_at'] or '—'}; "
            f"dropped {q['dropped']}, rejected {q['rejected']}, set aside {q.get('set_aside', 0)} "
            f"({r['spool_dir']})"
        )
    lines.append("last heartbeat:  " + _describe(r["last_heartbeat"], r["last_heartbeat_error"]))
    lines.append("last upload:     " + _describe(r["last_upload"], r["last_upload_error"]))
    settings = r["settings"] or {}
    if settings:
        lines.append(
            f"settings:        heartbeat every {settings.get('heartbeat_interval_s')} s, "
            f"sensitivity threshold {settings.get('sensitivity_threshold')}"
        )
    model = r["model"]
    lines.append("model:           " + (f"{model.get('name')} {model.get('version')}" if model else "none"))
    if r["counters"]:
        c = r["counters"]
        lines.append(
            f"last run:        {c.get('triggers')} triggers, {c.get('queued')} queued, "
            f"{c.get('uploaded')} uploaded, {c.get('rejected')} rejected, {c.get('set_aside', 0)} set aside, "
            f"{c.get('filtered_onboard')} filtered on the device"
        )
    return "\n".join(lines)


def _describe(ok: dict[str, Any] | None, error: dict[str, Any] | None) -> str:
    parts = []
    if ok:
        response = ok.get("response") or {}
        extra = f" → clip {response['id']} ({response.get('status')})" if response.get("id") else ""
        status = f" (device status {ok['status']})" if ok.get("status") else ""
        parts.append(f"{ok.get('at')}{status}{extra}")
    else:
        parts.append("never")
    if error and (not ok or str(error.get("at")) > str(ok.get("at"))):
        message = error.get("message") or (error.get("error") or {}).get("message")
        parts.append(f"; last failure {error.get('at')}: {message}")
    return "".join(parts)
