"""The agent end to end against a fake device API (no Django): pair, run, status, failures, health.

The live tests against the real server are in test_agent_live.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from devices.agent import FIRMWARE_VERSION, runner
from devices.agent.cli import main
from devices.agent.client import (
    ApiClient,
    ApiError,
    AuthError,
    Backoff,
    ChecksumError,
    PermanentError,
    TransientError,
)
from devices.agent.config import ConfigStore
from devices.agent.health import LevelMeter, read_battery_pct
from devices.agent.runner import EXIT_AUTH, EXIT_NOT_DRAINED, EXIT_OK, Agent, RunOptions
from devices.agent.sources import (
    FileReplaySource,
    GpsdProvider,
    MicSource,
    RouteProvider,
    SourceError,
    haversine_m,
    load_route,
    parse_position,
)
from devices.agent.spool import Spool
from devices.agent.timeutil import boot_id, parse_iso
from tests.devices.agent_support import (
    SR,
    FakeGunWatch,
    closed_port_url,
    noise,
    shots_in_noise,
    sine,
    write_wav,
)
from tests.devices.conftest import SHOTS


@pytest.fixture
def fake() -> Any:
    with FakeGunWatch() as server:
        yield server


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "agent" / "config.json"


def cli(config: Path, *args: str) -> int:
    return main([*args, "--config", str(config)])


def pair(config: Path, fake: FakeGunWatch) -> None:
    assert cli(config, "pair", fake.good_code, "--server", fake.url) == 0


def run_once(config: Path, wav: Path, *extra: str) -> int:
    return cli(config, "run", "--input", str(wav), "--speed", "0", "--once", "--gpsd", "off", *extra)


def spool_of(config: Path) -> Spool:
    return Spool(config.parent / "spool")


def make_agent(config: Path, wav: Path, **options: Any) -> Agent:
    opts = RunOptions(
        spool_dir=config.parent / "spool",
        model_dir=config.parent / "models",
        once=True,
        drain_timeout_s=options.pop("drain_timeout_s", 20.0),
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        auth_recheck_s=0.05,
        **options,
    )
    return Agent(ConfigStore(config), FileReplaySource(wav, speed=0), opts)


# -- pair --------------------------------------------------------------------------------------------


def test_pair_stores_the_token_in_a_file_only_its_user_can_read(
    fake: FakeGunWatch, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair(config_path, fake)

    stored = json.loads(config_path.read_text())
    assert stored["token"] == fake.token
    assert stored["device_id"] == fake.device_id
    assert stored["server_url"] == fake.url
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_path.parent.stat().st_mode) == 0o700
    out = capsys.readouterr().out
    assert fake.device_id in out
    assert "s3cr3t" not in out  # the secret half of the token is never printed
    [request] = fake.requests
    assert request.json == {"pairing_code": fake.good_code, "firmware_version": FIRMWARE_VERSION}


def test_pair_with_a_bad_code_reports_the_servers_message_and_stores_nothing(
    fake: FakeGunWatch, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config_path, "pair", "WRONG", "--server", fake.url) == 2
    assert "Unknown, expired or used pairing code" in capsys.readouterr().err
    assert not config_path.exists()


def test_pair_with_the_server_down_fails_cleanly(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config_path, "pair", "PAIR1234", "--server", closed_port_url()) == 2
    assert "pairing failed" in capsys.readouterr().err


def test_config_path_comes_from_the_environment(
    fake: FakeGunWatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "elsewhere" / "agent.json"
    monkeypatch.setenv("GUNWATCH_AGENT_CONFIG", str(target))
    assert main(["pair", fake.good_code, "--server", fake.url]) == 0
    assert json.loads(target.read_text())["token"] == fake.token


# -- run: the happy path -----------------------------------------------------------------------------


def test_run_uploads_one_clip_per_shot_with_time_position_and_a_unique_client_id(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path
) -> None:
    pair(config_path, fake)
    assert run_once(config_path, shots_wav, "--position", "52.52,13.405,8") == EXIT_OK

    uploads = fake.uploads()
    assert len(uploads) == len(SHOTS)
    client_ids = [u.fields["client_id"] for u in uploads]
    assert len(set(client_ids)) == len(SHOTS)
    for upload in uploads:
        fields = upload.fields
        uuid.UUID(fields["client_id"])
        assert fields["recorded_at"].endswith("Z") and len(fields["recorded_at"]) == len("2026-01-01T00:00:00.000Z")
        parse_iso(fields["recorded_at"])
        assert float(fields["trigger_offset_s"]) == pytest.approx(0.5, abs=0.01)
        assert (float(fields["latitude"]), float(fields["longitude"]), float(fields["accuracy_m"])) == (
            52.52,
            13.405,
            8.0,
        )
        assert fields["clock_source"] in {"system", "ntp"}
        assert upload.files["audio"][:4] == b"fLaC"
        assert upload.headers["authorization"] == f"Device {fake.token}"
    assert len(spool_of(config_path)) == 0


def test_run_sends_heartbeats_with_health_and_applies_the_servers_settings(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path
) -> None:
    fake.settings = {"heartbeat_interval_s": 7, "sensitivity_threshold": 0.8}
    pair(config_path, fake)
    assert run_once(config_path, shots_wav) == EXIT_OK

    beats = [h.json for h in fake.heartbeats()]
    assert beats, "at least the start-up and the final heartbeat"
    last = beats[-1]
    assert last["firmware_version"] == FIRMWARE_VERSION
    assert last["queue_length"] == 0
    assert last["dropped_clips"] == 0
    assert last["clock_source"] in {"system", "ntp"}
    assert last["free_storage_mb"] > 0
    assert isinstance(last["clipping"], bool)
    assert last["uptime_s"] >= 0
    assert "latitude" not in last  # no position source: the field is left out, not sent as null
    assert any(isinstance(b.get("mic_level_dbfs"), float) for b in beats)

    state = json.loads(config_path.read_text())["state"]
    assert state["settings"] == {"heartbeat_interval_s": 7.0, "sensitivity_threshold": 0.8}
    assert state["last_heartbeat"]["ok"] is True
    assert state["last_upload"]["client_id"] in fake.clips


def test_status_shows_pairing_queue_last_heartbeat_and_last_upload(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair(config_path, fake)
    run_once(config_path, shots_wav)
    capsys.readouterr()

    assert cli(config_path, "status", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["paired"] is True
    assert report["device_id"] == fake.device_id
    assert report["token"] == "gw_testkey.…"
    assert report["config_mode"] == "0o600"
    assert report["queue"]["count"] == 0
    assert report["last_heartbeat"]["ok"] is True
    assert report["last_upload"]["response"]["status"] == "queued"
    assert report["counters"]["uploaded"] == len(SHOTS)

    assert cli(config_path, "status") == 0
    text = capsys.readouterr().out
    assert f"device {fake.device_id}" in text
    assert "queue:           0 clips" in text
    assert "s3cr3t" not in text


def test_status_of_an_unpaired_agent_says_how_to_pair(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config_path, "status") == 1
    assert "pair CODE --server URL" in capsys.readouterr().out


def test_quiet_input_uploads_nothing(fake: FakeGunWatch, config_path: Path, tmp_path: Path) -> None:
    pair(config_path, fake)
    wav = write_wav(tmp_path / "room.wav", noise(6.0, -45.0) + sine(6.0, amp=0.05))
    assert run_once(config_path, wav) == EXIT_OK
    assert fake.uploads() == []


def test_files_with_different_sample_rates_each_keep_their_rate(
    fake: FakeGunWatch, config_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    write_wav(folder / "a.wav", shots_in_noise([1.0], 2.5, sr=16000), sr=16000)
    write_wav(folder / "b.wav", shots_in_noise([1.0], 2.5), sr=SR)
    pair(config_path, fake)
    assert run_once(config_path, folder) == EXIT_OK
    rates = sorted(sf.info(_as_file(tmp_path, u.files["audio"])).samplerate for u in fake.uploads())
    assert rates == [16000, SR]


def _as_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"{uuid.uuid4()}.flac"
    path.write_bytes(data)
    return path


def test_once_without_input_is_a_usage_error(config_path: Path) -> None:
    assert cli(config_path, "run", "--once") == 2


# -- run: when things go wrong -----------------------------------------------------------------------


def test_clips_wait_on_disk_while_the_server_is_down_and_go_out_exactly_once_when_it_is_back(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path, quiet_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair(config_path, fake)
    down = closed_port_url()
    code = run_once(config_path, shots_wav, "--server", down, "--drain-timeout", "1")
    assert code == EXIT_NOT_DRAINED
    queued = [item.client_id for item in spool_of(config_path).items()]
    assert len(queued) == len(SHOTS)
    capsys.readouterr()
    cli(config_path, "status", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["queue"]["count"] == len(SHOTS)
    assert "ConnectionError" in report["last_upload_error"]["error"]["message"]

    # Back online: a later run (here with nothing new to hear) delivers the backlog.
    assert run_once(config_path, quiet_wav) == EXIT_OK
    delivered = [u.fields["client_id"] for u in fake.uploads()]
    assert sorted(delivered) == sorted(queued)
    assert delivered == queued  # oldest first
    assert len(spool_of(config_path)) == 0


def test_transient_errors_and_a_lost_acknowledgement_are_retried_without_duplicates(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path
) -> None:
    pair(config_path, fake)
    fake.clip_responses = [
        (503, {}, {"message": "down", "code": "unavailable", "extra": {}}),
        (429, {"Retry-After": "0"}, {"message": "slow down", "code": "throttled", "extra": {}}),
        ("lost", {}, None),  # stored, but the 500 makes the agent send the same clip again
        (408, {}, {"message": "timeout", "code": "timeout", "extra": {}}),
    ]
    assert make_agent(config_path, shots_wav).run() == EXIT_OK

    attempts = [u.fields["client_id"] for u in fake.uploads()]
    assert len(attempts) == len(SHOTS) + 4
    assert len(fake.clips) == len(SHOTS)  # one server-side clip per detection
    assert set(fake.clips) == set(attempts)
    assert len(spool_of(config_path)) == 0


def test_a_permanent_client_error_parks_the_clip_in_rejected_and_never_retries_it(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path
) -> None:
    pair(config_path, fake)
    fake.clip_responses = [(400, {}, {"message": "recorded_at is in the future", "code": "invalid", "extra": {}})]
    assert make_agent(config_path, shots_wav).run() == EXIT_OK

    attempts = [u.fields["client_id"] for u in fake.uploads()]
    refused = attempts[0]
    assert attempts.count(refused) == 1
    assert len(fake.clips) == len(SHOTS) - 1
    [rejected] = spool_of(config_path).rejected()
    assert rejected["client_id"] == refused
    assert rejected["error"]["status"] == 400
    assert rejected["error"]["code"] == "invalid"


def test_a_poison_clip_is_set_aside_after_max_attempts_and_the_rest_go_out(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path
) -> None:
    pair(config_path, fake)
    fake.poison_first_clip = True
    agent = make_agent(config_path, shots_wav, max_attempts=3)
    assert agent.run() == EXIT_OK  # the queue drained: the poison clip no longer blocks it

    attempts = [u.fields["client_id"] for u in fake.uploads()]
    assert attempts.count(fake.poisoned) == 4  # max_attempts, then once more right after a later clip got through
    assert len(fake.clips) == len(SHOTS) - 1  # every later clip was delivered
    assert fake.poisoned not in fake.clips
    spool = spool_of(config_path)
    [held] = spool.held()
    assert held["client_id"] == fake.poisoned
    assert held["failures"] == 4
    assert held["error"]["status"] == 500
    assert len(list(spool.held_dir.glob("*.flac"))) == 1  # the audio is kept
    assert agent.counters.set_aside == 1
    payload = agent.heartbeat_payload()
    assert (payload["set_aside_clips"], payload["queue_length"], payload["rejected_clips"]) == (1, 0, 0)
    assert fake.heartbeats()[-1].json["set_aside_clips"] == 1  # the final heartbeat told the server

    # Once the server is fixed, the operator puts it back and it goes out.
    fake.poisoned = "fixed"
    assert spool.requeue_held() == 1
    assert make_agent(config_path, shots_wav).run() == EXIT_OK
    assert held["client_id"] in fake.clips


def test_an_outage_is_not_mistaken_for_a_poison_clip(fake: FakeGunWatch, config_path: Path, shots_wav: Path) -> None:
    # Every upload fails for a while (each clip would reach max_attempts): nothing is set aside, the order holds.
    pair(config_path, fake)
    fake.clip_responses = [(500, {}, {"message": "down", "code": "server_error", "extra": {}})] * 12
    agent = make_agent(config_path, shots_wav, max_attempts=2)
    assert agent.run() == EXIT_OK

    assert spool_of(config_path).held() == []
    assert agent.counters.set_aside == 0
    assert len(fake.clips) == len(SHOTS)
    oldest = fake.uploads()[0].fields["client_id"]
    assert oldest in fake.clips
    # The first 12 uploads failed; the 13th went through. Which clip was at the head then depends on when
    # the capture thread spooled the later clips, so the oldest is either that one or retried right after it.
    assert oldest in [upload.fields["client_id"] for upload in fake.uploads()[12:14]]


def test_rate_limits_and_announced_outages_do_not_count_against_a_clip(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path
) -> None:
    pair(config_path, fake)
    fake.clip_responses = [
        (429, {"Retry-After": "0"}, {"message": "slow down", "code": "throttled", "extra": {}}),
        (503, {"Retry-After": "0"}, {"message": "database down", "code": "unavailable", "extra": {}}),
    ] * 3
    assert make_agent(config_path, shots_wav, max_attempts=1).run() == EXIT_OK
    assert spool_of(config_path).held() == []
    assert len(fake.clips) == len(SHOTS)


def _spool_unset_clock_clip(config: Path, *, boot: str | None, seconds_ago: float = 5.0) -> str:
    meta = {
        "client_id": str(uuid.uuid4()),
        "recorded_at": "1970-01-01T00:01:40.000Z",  # a Pi without a real-time clock, before NTP answered
        "monotonic_start_s": time.monotonic() - seconds_ago,
        "boot_id": boot,
    }
    spool_of(config).put(shots_in_noise([0.5], 2.0), SR, meta)
    return str(meta["client_id"])


def test_a_clip_stamped_before_the_clock_was_set_is_restamped_from_the_monotonic_clock(
    fake: FakeGunWatch, config_path: Path, quiet_wav: Path
) -> None:
    pair(config_path, fake)
    client_id = _spool_unset_clock_clip(config_path, boot=boot_id(), seconds_ago=5.0)
    assert make_agent(config_path, quiet_wav).run() == EXIT_OK

    [upload] = [u for u in fake.uploads() if u.fields["client_id"] == client_id]
    sent = parse_iso(upload.fields["recorded_at"]).timestamp()
    assert time.time() - 30 < sent < time.time() - 4.9


def test_while_the_clock_is_unset_clips_wait_instead_of_being_refused(
    fake: FakeGunWatch, config_path: Path, quiet_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair(config_path, fake)
    _spool_unset_clock_clip(config_path, boot=boot_id())
    monkeypatch.setattr(runner, "clock_plausible", lambda epoch_s: False)
    assert make_agent(config_path, quiet_wav, drain_timeout_s=0.5).run() == EXIT_NOT_DRAINED
    assert fake.uploads() == []
    assert len(spool_of(config_path)) == 1 and spool_of(config_path).rejected() == []


def test_a_clip_from_an_earlier_boot_with_an_unset_clock_is_sent_as_it_is(
    fake: FakeGunWatch, config_path: Path, quiet_wav: Path
) -> None:
    # Nothing on the device can say when it was recorded; the server decides (the real one refuses it).
    pair(config_path, fake)
    client_id = _spool_unset_clock_clip(config_path, boot="an-earlier-boot")
    assert make_agent(config_path, quiet_wav).run() == EXIT_OK
    [upload] = [u for u in fake.uploads() if u.fields["client_id"] == client_id]
    assert upload.fields["recorded_at"] == "1970-01-01T00:01:40.000Z"


def test_a_revoked_token_pauses_uploads_keeps_the_queue_and_resumes_after_pairing_again(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path, quiet_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair(config_path, fake)
    fake.revoked = True
    assert run_once(config_path, shots_wav) == EXIT_AUTH
    assert len(spool_of(config_path)) == len(SHOTS)
    assert fake.clips == {}
    capsys.readouterr()
    assert cli(config_path, "status") == 1
    assert "REFUSED" in capsys.readouterr().out

    fake.token = "gw_testkey.n3w-secret"
    pair(config_path, fake)
    assert run_once(config_path, quiet_wav) == EXIT_OK
    assert len(fake.clips) == len(SHOTS)
    assert json.loads(config_path.read_text())["state"].get("auth_error") is None


def test_an_unpaired_agent_still_records_and_keeps_what_it_hears(config_path: Path, shots_wav: Path) -> None:
    assert run_once(config_path, shots_wav) == EXIT_AUTH
    assert len(spool_of(config_path)) == len(SHOTS)


def test_a_full_queue_drops_the_oldest_and_says_so_in_heartbeats(
    fake: FakeGunWatch, config_path: Path, shots_wav: Path
) -> None:
    pair(config_path, fake)
    agent = make_agent(config_path, shots_wav, server_url=closed_port_url(), spool_max_items=2, drain_timeout_s=0.5)
    assert agent.run() == EXIT_NOT_DRAINED
    payload = agent.heartbeat_payload()
    assert payload["queue_length"] == 2
    assert payload["dropped_clips"] == 1
    newest_two = [item.meta["recorded_at"] for item in spool_of(config_path).items()]
    assert newest_two == sorted(newest_two)


# -- model download ----------------------------------------------------------------------------------


def test_a_new_active_model_is_downloaded_and_verified(fake: FakeGunWatch, config_path: Path, quiet_wav: Path) -> None:
    fake.model_bytes = b"torchscript bytes"
    digest = hashlib.sha256(fake.model_bytes).hexdigest()
    fake.model_sha_header = digest
    fake.active_model = {"id": 3, "name": "gwcnn", "version": "1.2.0", "sha256": "f" * 64}
    pair(config_path, fake)
    assert run_once(config_path, quiet_wav) == EXIT_OK

    state = json.loads(config_path.read_text())["state"]
    path = Path(state["model"]["path"])
    assert path.read_bytes() == fake.model_bytes
    assert state["model"]["active"]["version"] == "1.2.0"
    assert fake.heartbeats()[-1].json["model_version"] == "1.2.0"
    assert not list(path.parent.glob(".*.tmp"))


def test_a_model_whose_checksum_does_not_match_is_not_installed(
    fake: FakeGunWatch, config_path: Path, quiet_wav: Path
) -> None:
    fake.model_bytes = b"tampered"
    fake.model_sha_header = "0" * 64
    fake.active_model = {"id": 3, "name": "gwcnn", "version": "1.2.0", "sha256": "0" * 64}
    pair(config_path, fake)
    assert run_once(config_path, quiet_wav) == EXIT_OK

    state = json.loads(config_path.read_text())["state"]
    assert "model" not in state
    assert "does not match" in state["model_error"]["message"]
    assert list((config_path.parent / "models").glob("*")) == []


def test_download_refuses_a_model_without_any_checksum(fake: FakeGunWatch, tmp_path: Path) -> None:
    fake.model_bytes = b"anything"
    fake.active_model = {"id": 1, "name": "m", "version": "1", "sha256": ""}
    client = ApiClient(fake.url, fake.token)
    with pytest.raises(ChecksumError):
        client.download_model(tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


# -- client: what each answer means ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PermanentError),
        (403, PermanentError),
        (404, PermanentError),
        (413, PermanentError),
        (401, AuthError),
        (408, TransientError),
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
    ],
)
def test_http_errors_are_classified_for_retrying(
    fake: FakeGunWatch, tmp_path: Path, status: int, error: type[ApiError]
) -> None:
    fake.clip_responses = [(status, {"Retry-After": "12"}, {"message": "nope", "code": "c", "extra": {}})]
    audio = write_wav(tmp_path / "a.wav", noise(0.1))
    with pytest.raises(error) as info:
        ApiClient(fake.url, fake.token).upload_clip(audio, {"client_id": str(uuid.uuid4())})
    assert info.value.status == status
    assert info.value.code == "c"
    assert info.value.retry_after == 12.0
    assert "nope" in info.value.message


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with pytest.raises(TransientError):
        ApiClient(closed_port_url(), "gw_x.y").heartbeat({})


def test_retry_after_may_be_an_http_date() -> None:
    from devices.agent.client import _retry_after

    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: go now
    assert _retry_after("30") == 30.0
    assert _retry_after("soon") is None


def test_backoff_grows_exponentially_with_full_jitter_up_to_a_cap() -> None:
    import random

    backoff = Backoff(base_s=1.0, cap_s=10.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 10, 10, 10, 10]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_backoff_never_retries_sooner_than_retry_after() -> None:
    backoff = Backoff(base_s=0.001, cap_s=60.0)
    assert backoff.next_delay(retry_after=5.0) >= 5.0
    assert backoff.next_delay(retry_after=3600.0) == 60.0  # but never beyond the cap


def test_heartbeat_leaves_out_unknown_fields(fake: FakeGunWatch) -> None:
    ApiClient(fake.url, fake.token).heartbeat({"battery_pct": None, "queue_length": 0})
    assert fake.heartbeats()[0].json == {"queue_length": 0}


# -- positions ---------------------------------------------------------------------------------------


def test_parse_position_accepts_an_optional_accuracy_and_checks_ranges() -> None:
    assert parse_position("52.5, 13.4") == parse_position("52.5,13.4")
    assert parse_position("52.5,13.4,12").accuracy_m == 12.0
    with pytest.raises(ValueError):
        parse_position("95,13")
    with pytest.raises(ValueError):
        parse_position("52.5")


def test_route_from_geojson_is_driven_at_the_given_speed_and_holds_at_the_end(tmp_path: Path) -> None:
    # GeoJSON is lon,lat: two legs of ~111 m each going north, then east.
    geojson = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[13.4, 52.5], [13.4, 52.501], [13.401637, 52.501]]},
    }
    path = tmp_path / "route.geojson"
    path.write_text(json.dumps(geojson))
    points = load_route(path)
    assert points[0] == (52.5, 13.4)
    route = RouteProvider(points, speed_mps=10.0)
    start = route.position_at(1000.0)
    assert (start.latitude, start.longitude) == (52.5, 13.4)
    leg = haversine_m(points[0], points[1])
    halfway = route.position_at(1000.0 + leg / 2 / 10.0)
    assert halfway.latitude == pytest.approx(52.5005, abs=1e-6)
    assert halfway.longitude == pytest.approx(13.4)
    end = route.position_at(1000.0 + 3600)
    assert (end.latitude, end.longitude) == pytest.approx(points[-1])


def test_route_from_csv_with_a_header_and_time_scaled_for_fast_replay(tmp_path: Path) -> None:
    path = tmp_path / "route.csv"
    path.write_text("lat,lon\n52.5,13.4\n52.51,13.4\n")
    points = load_route(path)
    assert points == [(52.5, 13.4), (52.51, 13.4)]
    length = haversine_m(points[0], points[1])
    route = RouteProvider(points, speed_mps=20.0, time_scale=10.0)
    route.position_at(0.0)
    quarter = route.position_at(length / 4 / 20.0 / 10.0)
    assert quarter.latitude == pytest.approx(52.5025, abs=1e-6)


def test_a_route_needs_two_points(tmp_path: Path) -> None:
    path = tmp_path / "route.csv"
    path.write_text("52.5,13.4\n")
    with pytest.raises(ValueError):
        load_route(path)


def test_gpsd_fix_is_read_from_its_json_stream() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    watched = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)  # the ?WATCH command
            watched.set()
            conn.sendall(b'{"class":"VERSION","release":"3.25"}\n')
            conn.sendall(b'{"class":"TPV","mode":1}\n')
            conn.sendall(b'{"class":"TPV","mode":3,"lat":52.52,"lon":13.405,"epx":4.0,"epy":6.5}\n')
            threading.Event().wait(1.0)

    threading.Thread(target=serve, daemon=True).start()
    gps = GpsdProvider("127.0.0.1", port, retry_s=0.1).start()
    try:
        for _ in range(100):
            if gps.position_at(0.0) is not None:
                break
            threading.Event().wait(0.02)
        position = gps.position_at(0.0)
    finally:
        gps.stop()
        listener.close()
    assert watched.is_set()
    assert position is not None
    assert (position.latitude, position.longitude, position.accuracy_m) == (52.52, 13.405, 6.5)


def test_without_gpsd_there_is_simply_no_position() -> None:
    gps = GpsdProvider("127.0.0.1", int(closed_port_url().rsplit(":", 1)[1]), retry_s=60).start()
    try:
        assert gps.position_at(0.0) is None
    finally:
        gps.stop()


# -- health and sources ------------------------------------------------------------------------------


def test_battery_is_read_from_the_first_battery_in_sysfs(tmp_path: Path) -> None:
    (tmp_path / "AC").mkdir()
    (tmp_path / "AC" / "type").write_text("Mains\n")
    (tmp_path / "BAT0").mkdir()
    (tmp_path / "BAT0" / "type").write_text("Battery\n")
    (tmp_path / "BAT0" / "capacity").write_text("87\n")
    assert read_battery_pct(tmp_path) == 87.0
    assert read_battery_pct(tmp_path / "missing") is None


def test_level_meter_reports_dbfs_and_clipping_per_interval() -> None:
    meter = LevelMeter()
    meter.update(sine(1.0, amp=0.5))
    report = meter.report()
    assert report.rms_dbfs == pytest.approx(-9.0, abs=0.1)  # 0.5 peak sine: -6 dB, minus 3 dB for RMS
    assert report.clipping is False
    meter.update(np.array([0.2, 1.0, -1.0, 0.1], dtype=np.float32))
    assert meter.report().clipped_samples == 2
    assert meter.report().rms_dbfs is None  # nothing since the last report


def test_recording_from_the_microphone_without_sounddevice_explains_what_to_install() -> None:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        pass
    else:
        pytest.skip("sounddevice is installed here")
    with pytest.raises(SourceError, match="sounddevice"):
        next(iter(MicSource()))


def test_the_package_does_not_import_django() -> None:
    import subprocess
    import sys

    code = (
        "import sys, devices.agent.cli, devices.agent.runner; "
        "print(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
