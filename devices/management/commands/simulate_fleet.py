"""Run a simulated fleet of real agents against a GunWatch server and score what the platform did.

Devices are created and paired for an owner (default: the demo ``owner``), each runs the real agent
(trigger, on-disk queue, uploads, heartbeats) on a simulated microphone, and K gunshots are fired at
random points. At the end — or on Ctrl-C — it prints ground truth against the incidents the server
opened. The command reads incidents from the database, so it must share the server's database
(which it does when started with the same environment, as ``./gw run`` does).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from accounts.models import User
from alerts.models import Incident
from devices.agent.client import ApiClient, ApiError
from devices.agent.config import ConfigStore
from devices.agent.runner import Agent, RunOptions
from devices.models import Device
from devices.replay import ReplayOptions, replay_seeds
from devices.services import device_pairing_code_issue
from devices.simulation import (
    FOLLOW_UP_SHARE_M,
    SITE_DEVICE,
    ObservedIncident,
    SimDevice,
    SimulatedSource,
    SoundBank,
    TruthEvent,
    building_site,
    burst_with,
    ground_truth_report,
    make_fleet,
    nuisance_only,
    random_point,
    schedule_shot,
)

DEFAULT_MANIFEST = Path(settings.BASE_DIR).parent / "shared" / "data" / "manifest.csv"
LOOKAHEAD_S = 3.0  # bursts are scheduled this far ahead so a device has background before the arrival


def _latlon(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise CommandError(f"expected LAT,LON, got {text!r}") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise CommandError(f"{text!r} is not a position on Earth")
    return lat, lon


class Command(BaseCommand):
    help = "Simulate N paired devices hearing K gunshots and report detection, false incidents, error, latency."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--server", default=settings.SITE_URL, help="GunWatch base URL (default SITE_URL)")
        parser.add_argument("--devices", type=int, default=25)
        parser.add_argument("--center", type=_latlon, default=(52.52, 13.405), help="LAT,LON of the area")
        parser.add_argument("--radius-km", type=float, default=3.0)
        parser.add_argument("--events", type=int, default=5, help="gunshots to fire")
        parser.add_argument("--duration", type=float, default=120.0, help="simulated seconds to spread them over")
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="run the quiet time between events X times faster (each event plays in real time)",
        )
        parser.add_argument("--hearing-range-m", type=float, default=1500.0)
        parser.add_argument(
            "--nuisance-per-hour",
            type=float,
            default=6.0,
            help="impulsive non-gunshot sounds (doors, horns, fireworks…) per device and hour",
        )
        parser.add_argument(
            "--building-site",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"add {SITE_DEVICE!r}, a device next to a building site that keeps hearing impulses "
            "(only when --nuisance-per-hour is above 0)",
        )
        parser.add_argument(
            "--site-nuisance-per-hour", type=float, default=90.0, help="the building site's impulses per hour"
        )
        parser.add_argument(
            "--site-review-after",
            type=float,
            default=15.0,
            help="a simulated reviewer (--reviewer, over the review API) dismisses an incident only the "
            "building site heard, and no shot, this many seconds after it opened, unless someone decided "
            "first; 0: nobody does",
        )
        parser.add_argument("--reviewer", default="reviewer", help="the account the simulated reviewer uses")
        parser.add_argument("--vehicle-share", type=float, default=0.3)
        parser.add_argument("--clock-sigma-ms", type=float, default=1.0, help="device clock error (GPS ≈ 1 ms)")
        parser.add_argument("--owner", default="owner", help="username owning the simulated devices")
        parser.add_argument(
            "--manifest",
            type=Path,
            default=DEFAULT_MANIFEST,
            help="labelled audio to play (synthetic sounds when absent)",
        )
        parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait for the last results")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
        parser.add_argument("--quiet", action="store_true", help="print only the final report, not each shot")
        parser.add_argument("--ready-file", type=Path, help="touch this file once every device is paired")
        parser.add_argument(
            "--park-only",
            action="store_true",
            help="mark the owner's simulated devices offline without emails (a stopped demo) and exit",
        )
        parser.add_argument(
            "--stop-grace",
            type=float,
            default=3.0,
            help="seconds the agents get to finish after a stop before the report is printed",
        )
        parser.add_argument(
            "--replay-seeds",
            type=int,
            default=0,
            metavar="N",
            help="no agents, audio or server: fire the shots of N seeds (from --seed) straight into "
            "the server's joining, in a rolled-back transaction, and report every shot",
        )
        parser.add_argument(
            "--miss-rate", type=float, default=0.0, help="with --replay-seeds: share of arrivals a device misses"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        logging.getLogger("devices.agent").setLevel(logging.WARNING)
        if opts["replay_seeds"]:
            self._replay(opts)
            return
        rng = np.random.default_rng(opts["seed"])
        owner = self._owner(opts["owner"])
        if opts["park_only"]:
            # A demo killed hard last time left its devices "online"; the first offline sweep of this
            # run would mail the owner about every one of them.
            self._park(list(Device.objects.filter(owner=owner, name__startswith="Sim ")))
            return
        fleet = make_fleet(
            rng,
            count=opts["devices"],
            center=opts["center"],
            radius_m=opts["radius_km"] * 1000,
            vehicle_share=opts["vehicle_share"],
            clock_sigma_s=opts["clock_sigma_ms"] / 1000,
        )
        site = None
        if opts["building_site"] and opts["nuisance_per_hour"] > 0 and opts["site_nuisance_per_hour"] > 0:
            site = building_site(opts["center"], opts["radius_km"] * 1000)
            fleet.append(site)
        bank = SoundBank.load(opts["manifest"], rng)
        workdir = Path(tempfile.mkdtemp(prefix="gunwatch-fleet-"))
        stop = threading.Event()
        previous_handlers = self._stop_on_signals(stop)

        registered = [self._register(owner, sim) for sim in fleet]
        devices = [device for device, _ in registered]
        sources = [SimulatedSource(sim, stop) for sim in fleet]
        threads = [
            self._start_agent(device, code, sim, source, workdir, opts["server"], stop)
            for (device, code), sim, source in zip(registered, fleet, sources, strict=True)
        ]
        self._say(opts, f"{len(threads)} simulated devices paired and running against {opts['server']}")
        if opts["ready_file"] is not None:
            opts["ready_file"].touch()

        started = time.time()
        site_show = None
        if site is not None:
            site_device = next(device for device, _ in registered if device.name == SITE_DEVICE)
            site_show = SiteShow(
                source=sources[fleet.index(site)],
                device=site_device,
                # Its own generator: the shots and nuisances a seed fires stay what they were without it.
                rng=np.random.default_rng(opts["seed"] + 1),
                per_hour=opts["site_nuisance_per_hour"] * opts["speed"],
                reviewer=self._reviewer(opts, opts["server"]),
                review_after_s=opts["site_review_after"],
                say=lambda message: self._say(opts, message),
            )
        truth = self._play(opts, rng, fleet, sources, bank, stop, site_show)
        if not stop.is_set():
            self._say(opts, f"last event fired; waiting {opts['settle']:.0f} s for the platform to finish")
            stop.wait(opts["settle"])
        stop.set()
        # One deadline for all agents, not one per agent: 25 agents stuck on a dead server must not
        # hold Ctrl-C for minutes. They are daemon threads, so whatever is left dies with the process.
        deadline = time.monotonic() + opts["stop_grace"]
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._park(devices)
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)

        incidents = self._incidents(devices, since=started - 5)
        report = ground_truth_report(truth, incidents)
        report["devices"] = len(devices)
        report["wall_time_s"] = round(time.time() - started, 1)
        if opts["json"]:
            self.stdout.write(json.dumps(report))
        else:
            self._print_report(report)

    # -- setup ------------------------------------------------------------------------------------

    def _owner(self, username: str) -> User:
        owner, created = User.objects.get_or_create(username=username, defaults={"role": User.Role.OWNER})
        if created:
            owner.set_unusable_password()
            owner.save(update_fields=["password"])
        return owner

    def _register(self, owner: User, sim: SimDevice) -> tuple[Device, str]:
        """Create (or reuse, by name) the server-side device and give it a fresh pairing code."""
        lat, lon = sim.route[0]
        device, _ = Device.objects.update_or_create(
            owner=owner,
            name=sim.name,
            defaults={
                "kind": sim.kind,
                "latitude": lat if sim.kind == "home" else None,
                "longitude": lon if sim.kind == "home" else None,
                "heartbeat_interval_s": 30,
                "status": Device.Status.PENDING,
            },
        )
        return device, device_pairing_code_issue(device=device).code

    def _start_agent(
        self,
        device: Device,
        code: str,
        sim: SimDevice,
        source: SimulatedSource,
        workdir: Path,
        server: str,
        stop: threading.Event,
    ) -> threading.Thread:
        home = workdir / str(device.code)
        store = ConfigStore(home / "config.json")
        try:
            paired = ApiClient(server).pair(code)
        except (ApiError, OSError) as exc:
            raise CommandError(f"could not pair {device.name} with {server}: {exc}") from exc
        store.save_pairing(
            server_url=server,
            device_id=paired["device_id"],
            token=paired["token"],
            paired_at=datetime.now(UTC).isoformat(),
        )
        options = RunOptions(
            spool_dir=home / "spool", model_dir=home / "models", clock_source="gps", heartbeat_interval_s=30
        )
        agent = Agent(store, source, options, positions=sim, stop=stop)
        thread = threading.Thread(target=agent.run, name=f"agent-{device.name}", daemon=True)
        thread.start()
        return thread

    def _stop_on_signals(self, stop: threading.Event) -> dict[int, Any]:
        """Ctrl-C ends the show early but still prints the report; a second one exits at once.

        The old handlers come back after.
        """
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():
                os._exit(128 + signum)
            stop.set()

        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        return previous

    def _park(self, devices: list[Device]) -> None:
        """The demo stopped these devices on purpose: mark them offline without telling the owner.

        Otherwise the next offline sweep (or the next ``./gw run``) mails one "is offline" per device.
        """
        Device.objects.filter(pk__in=[device.pk for device in devices]).update(
            connectivity=Device.Connectivity.OFFLINE, offline_after=None
        )

    # -- the show ---------------------------------------------------------------------------------

    def _play(
        self,
        opts: dict[str, Any],
        rng: np.random.Generator,
        fleet: list[SimDevice],
        sources: list[SimulatedSource],
        bank: SoundBank,
        stop: threading.Event,
        site: SiteShow | None = None,
    ) -> list[TruthEvent]:
        count = opts["events"]
        interval = opts["duration"] / max(count, 1) / opts["speed"]
        start = time.time() + LOOKAHEAD_S + 2.0
        shot_times = sorted(start + (k + float(rng.uniform(0.1, 0.9))) * interval for k in range(count))
        nuisance_rate = opts["nuisance_per_hour"] * opts["speed"] / 3600.0 * len(fleet)  # per wall second
        next_nuisance = time.time() + float(rng.exponential(1 / nuisance_rate)) if nuisance_rate > 0 else None
        truth: list[TruthEvent] = []
        for index, shot_time in enumerate(shot_times):
            while not stop.is_set() and time.time() < shot_time - LOOKAHEAD_S:
                if next_nuisance is not None and time.time() >= next_nuisance:
                    self._nuisance(rng, sources, bank)
                    next_nuisance = time.time() + float(rng.exponential(1 / nuisance_rate))
                if site is not None:
                    site.tick(bank, truth)
                stop.wait(0.2)
            if stop.is_set():
                break
            lat, lon = random_point(rng, opts["center"], opts["radius_km"] * 1000)
            event = schedule_shot(
                event=TruthEvent(index, shot_time, lat, lon),
                devices=fleet,
                sources=sources,
                bank=bank,
                rng=rng,
                hearing_range_m=opts["hearing_range_m"],
            )
            truth.append(event)
            self._say(opts, f"shot {index + 1}/{count} at {lat:.5f},{lon:.5f}: in range of {event.audible} device(s)")
        # Let the last shot play out before the settle time starts.
        stop.wait(max(0.0, (shot_times[-1] if shot_times else time.time()) + 6.0 - time.time()))
        return truth

    def _reviewer(self, opts: dict[str, Any], server: str) -> ReviewerClient | None:
        """The simulated reviewer's API client: the ``--reviewer`` account's token, if it may review."""
        from alerts.services.review import user_can_review

        if opts["site_review_after"] <= 0:
            return None
        user = User.objects.filter(username=opts["reviewer"]).first()
        if user is None or not user_can_review(user):
            self._say(opts, f"no reviewer account {opts['reviewer']!r}: nobody dismisses the building site's noise")
            return None
        return ReviewerClient(server, Token.objects.get_or_create(user=user)[0].key)

    def _nuisance(self, rng: np.random.Generator, sources: list[SimulatedSource], bank: SoundBank) -> None:
        """A door, a horn or a firework close to one device: loud, impulsive, and not a gunshot."""
        sound = bank.nuisances[int(rng.integers(len(bank.nuisances)))]
        peak = float(np.max(np.abs(sound))) or 1.0
        level = 10 ** (float(rng.uniform(-18, -3)) / 20)
        source = sources[int(rng.integers(len(sources)))]
        source.schedule(time.time() + 1.0, burst_with(bank, rng, sound * (level / peak)))

    # -- the verdict ------------------------------------------------------------------------------

    def _incidents(self, devices: list[Device], *, since: float) -> list[ObservedIncident]:
        since_dt = datetime.fromtimestamp(since, UTC)
        rows = (
            Incident.objects.filter(detections__device__in=devices, first_detected_at__gte=since_dt)
            .distinct()
            .order_by("first_detected_at")
        )
        return [
            ObservedIncident(
                first_detected_at=row.first_detected_at.timestamp(),
                opened_at=row.opened_at.timestamp(),
                latitude=row.latitude,
                longitude=row.longitude,
                radius_m=row.radius_m,
                method=row.location_method,
                device_count=row.device_count,
                key=row.pk,
                shots=row.shots,
                detections=tuple(
                    (d.device.name, d.event_at.timestamp())
                    for d in row.detections.filter(device__in=devices).select_related("device")
                ),
            )
            for row in rows
        ]

    def _say(self, opts: dict[str, Any], message: str) -> None:
        if not opts["json"] and not opts["quiet"]:
            self.stdout.write(message)

    def _replay(self, opts: dict[str, Any]) -> None:
        options = ReplayOptions(
            devices=opts["devices"],
            center=opts["center"],
            radius_m=opts["radius_km"] * 1000,
            events=opts["events"],
            duration_s=opts["duration"],
            hearing_range_m=opts["hearing_range_m"],
            vehicle_share=opts["vehicle_share"],
            clock_sigma_s=opts["clock_sigma_ms"] / 1000,
            miss_rate=opts["miss_rate"],
        )
        seeds = range(opts["seed"], opts["seed"] + opts["replay_seeds"])
        summary = replay_seeds(seeds, options)
        if opts["json"]:
            self.stdout.write(json.dumps({k: v for k, v in summary.items() if k != "reports"}))
            return
        if not opts["quiet"]:
            for report in summary["reports"]:
                self.stdout.write(f"seed {report['seed']}")
                self._print_shots(report["shots"])
        ok = summary["one_incident"] == summary["heard"]
        style = self.style.SUCCESS if ok else self.style.WARNING
        self.stdout.write(style(f"Replay of {summary['seeds']} seeds through the joining rule"))
        self.stdout.write(
            "\n".join(
                [
                    f"  shots fired           {summary['shots']} ({summary['audible']} within hearing range, "
                    f"{summary['heard']} detected)",
                    f"  one incident each     {summary['one_incident']} of {summary['heard']} "
                    f"({summary['follow_ups']} of them follow-ups within {FOLLOW_UP_SHARE_M:.0f} m of another shot)",
                    f"  ... of them heard by < 3 devices, sharing with a shot further away (no position of their own "
                    f"to tell them from a follow-up): {summary['confusable']}",
                    f"  split over incidents  {summary['split']}",
                    f"  sharing an incident   {summary['shared'] - summary['follow_ups'] - summary['confusable']} "
                    "(placeable shots further apart)",
                    f"  outside the radius    {summary['outside_radius']}",
                    f"  false incidents       {summary['false_incidents']}",
                    f"  location error m      p50 {summary['error_m_p50']}  p95 {summary['error_m_p95']}",
                ]
            )
        )

    def _print_shots(self, verdicts: list[dict[str, Any]]) -> None:
        """One line per fired shot: the incident it became, its devices, the location error."""
        for v in verdicts:
            if not v["devices"]:
                heard = "out of everyone's range" if not v["audible"] else f"MISSED ({v['audible']} in range)"
                self.stdout.write(f"  shot {v['shot']}: {heard}")
                continue
            where = ", ".join(f"#{key}" for key in v["incidents"])
            line = (
                f"  shot {v['shot']}: incident {where}, {v['devices']} of {v['audible']} device(s), "
                f"error {v['error_m']} m ({v['method']} ±{v['radius_m']} m)"
            )
            if v["shared_with"]:
                line += " with shot(s) " + ", ".join(
                    f"{s} ({m} m away)" for s, m in zip(v["shared_with"], v["shared_m"], strict=True)
                )
            if v["confusable_with"]:
                line += " — too few devices to tell apart"
            self.stdout.write(line if v["ok"] else self.style.WARNING(line + "  ✗"))

    def _print_report(self, report: dict[str, Any]) -> None:
        err = report["localisation_error_m"]
        latency = report["shot_to_incident_latency_s"]
        self.stdout.write(self.style.SUCCESS("Ground truth against the platform"))
        lines = [
            f"  devices               {report['devices']}",
            f"  shots fired           {report['events']} ({report['audible_events']} within hearing range)",
            f"  detected              {report['detected']} (rate {report['detection_rate']})",
            f"  missed                {report['missed']}",
            f"  false incidents       {report['false_incidents']}",
            f"  localisation error m  p50 {err['p50']}  p95 {err['p95']}  max {err['max']}",
        ]
        for method, figures in err["by_method"].items():
            lines.append(f"    {method:<19} n={figures['n']}  p50 {figures['p50']}  p95 {figures['p95']}")
        lines.append(f"  shot → incident s     p50 {latency['p50']}  p95 {latency['p95']}")
        lines.append(f"  wall time s           {report['wall_time_s']}")
        self.stdout.write("\n".join(lines))
        if "shots" in report:
            self._print_shots(report["shots"])
            verdict = (
                "every detected shot is exactly one incident"
                if report["one_incident_per_shot"]
                else ("NOT every detected shot is exactly one incident (✗ above)")
            )
            self.stdout.write(f"  {verdict}")


class ReviewerClient:
    """The review API as a reviewer's script would call it (the server then broadcasts the decision)."""

    def __init__(self, server: str, token: str) -> None:
        self.server = server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def dismiss(self, incident_code: str, *, reason: str, note: str) -> int:
        response = self.session.post(
            f"{self.server}/api/v1/review/{incident_code}/dismiss", json={"reason": reason, "note": note}, timeout=10
        )
        return response.status_code


class SiteShow:
    """The building site: its own stream of impulses, and a reviewer who dismisses what only it heard.

    Each dismissal recalibrates the device (``alerts.services.calibration``), so its threshold rises on
    its device page while the demo runs and, once past its false-alarm budget, its noise is held back
    from police; the flag goes to its owner and the administrators.
    """

    def __init__(
        self,
        *,
        source: SimulatedSource,
        device: Device,
        rng: np.random.Generator,
        per_hour: float,
        reviewer: ReviewerClient | None,
        review_after_s: float,
        say: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.source, self.device, self.rng, self.say = source, device, rng, say
        self.rate = per_hour / 3600.0
        self.reviewer, self.review_after_s = reviewer, review_after_s
        self.next_at = time.time() + 5.0 + float(rng.exponential(1 / self.rate))
        self.next_review_at = 0.0
        self.decided: set[int] = set()

    def tick(self, bank: SoundBank, truth: list[TruthEvent]) -> None:
        now = time.time()
        if now >= self.next_at:
            sounds = bank.site_sounds()
            sound = sounds[int(self.rng.integers(len(sounds)))]
            peak = float(np.max(np.abs(sound))) or 1.0
            # Right next to the microphone: loud, often clipping-close, as a jackhammer at 20 m is.
            level = 10 ** (float(self.rng.uniform(-9, -1)) / 20)
            self.source.schedule(now + 1.0, burst_with(bank, self.rng, sound * (level / peak)))
            self.say(f"building site: an impulse at {20 * np.log10(level):.0f} dBFS")
            self.next_at = now + float(self.rng.exponential(1 / self.rate))
        if self.reviewer is not None and now >= self.next_review_at:
            self.next_review_at = now + 2.0
            self._review(truth, now)

    def _review(self, truth: list[TruthEvent], now: float) -> None:
        from alerts.models import WAITING_FOR_REVIEW

        waiting = Incident.objects.filter(
            dispatch__in=WAITING_FOR_REVIEW,
            detections__device=self.device,
            opened_at__lte=datetime.fromtimestamp(now - self.review_after_s, UTC),
        ).distinct()
        for incident in waiting.prefetch_related("detections__device")[:10]:
            if incident.pk in self.decided:
                continue
            heard = [(d.device.name, d.event_at.timestamp()) for d in incident.detections.all()]
            self.decided.add(incident.pk)
            if not nuisance_only(heard, SITE_DEVICE, truth):
                self.say(
                    f"simulated reviewer: incident #{incident.pk} is a shot or was heard elsewhere; left to people"
                )
                continue
            try:
                status = self.reviewer.dismiss(  # type: ignore[union-attr]  # tick() calls this only with a reviewer
                    str(incident.code), reason="other_source", note="building site (the demo's simulated reviewer)"
                )
            except requests.RequestException:
                self.decided.discard(incident.pk)  # the server is busy or stopping; next round
                continue
            self.say(f"simulated reviewer: dismissed incident #{incident.pk} (building site only): HTTP {status}")
