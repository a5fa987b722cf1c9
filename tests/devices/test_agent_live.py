"""The device agent against the real server (pytest-django's live_server): pairing through the owner
API, heartbeats and their settings, the offline queue, exactly-once delivery, revocation, the model."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from detection import services as detection_services
from detection.models import Clip, ModelVersion
from devices.agent.cli import main
from devices.agent.runner import EXIT_AUTH, EXIT_NOT_DRAINED, EXIT_OK
from devices.agent.spool import Spool
from devices.agent.timeutil import parse_iso
from devices.models import Device
from tests.detection.pipeline import clean_inference, eager_celery, model_factory  # noqa: F401 (fixtures)
from tests.devices.agent_support import closed_port_url
from tests.devices.conftest import SHOTS
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

POSITION = "52.5163,13.3777,6"


class Owner:
    """The device owner, driving the real owner API over HTTP like the web app does."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        UserFactory(username="alice")
        response = requests.post(
            f"{base_url}/api/v1/auth/token", data={"username": "alice", "password": "correct-horse-battery"}
        )
        response.raise_for_status()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {response.json()['token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.session.request(method, self.base_url + path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def add_device(self) -> dict[str, Any]:
        body = {"name": "Car", "kind": "vehicle", "latitude": 52.52, "longitude": 13.405}
        return self.call("POST", "/api/v1/devices", json=body)


@pytest.fixture
def owner(live_server: Any) -> Owner:
    return Owner(live_server.url)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "agent" / "config.json"


def agent(config: Path, *args: str) -> int:
    return main([*args, "--config", str(config)])


def run_once(config: Path, wav: Path, *extra: str) -> int:
    return agent(config, "run", "--input", str(wav), "--speed", "0", "--once", "--gpsd", "off", *extra)


def pair(config: Path, server: str, code: str) -> Device:
    assert agent(config, "pair", code, "--server", server) == 0
    return Device.objects.get(code=json.loads(config.read_text())["device_id"])


def state(config: Path) -> dict[str, Any]:
    return json.loads(config.read_text())["state"]


def spooled(config: Path) -> list[dict[str, Any]]:
    return [item.meta for item in Spool(config.parent / "spool").items()]


def test_agent_pairs_with_the_owners_code_and_its_heartbeats_reach_the_server(
    live_server: Any, owner: Owner, config: Path, quiet_wav: Path
) -> None:
    created = owner.add_device()
    device = pair(config, live_server.url, created["pairing_code"])
    assert str(device.code) == created["id"]
    assert device.status == Device.Status.ACTIVE
    assert device.firmware_version.startswith("agent-")

    owner.call(
        "PATCH", f"/api/v1/devices/{created['id']}", json={"heartbeat_interval_s": 45, "sensitivity_threshold": 0.7}
    )
    assert run_once(config, quiet_wav, "--position", POSITION) == EXIT_OK

    device.refresh_from_db()
    assert device.last_heartbeat_at is not None
    assert (device.last_latitude, device.last_longitude) == (52.5163, 13.3777)
    assert device.health["queue_length"] == 0
    assert device.health["dropped_clips"] == 0
    assert "free_storage_mb" in device.health
    assert state(config)["settings"] == {"heartbeat_interval_s": 45.0, "sensitivity_threshold": 0.7}
    assert state(config)["last_heartbeat"]["status"] == device.status


def test_a_used_pairing_code_is_refused(live_server: Any, owner: Owner, config: Path, tmp_path: Path) -> None:
    code = owner.add_device()["pairing_code"]
    pair(config, live_server.url, code)
    assert agent(tmp_path / "second" / "config.json", "pair", code, "--server", live_server.url) == 2
    assert not (tmp_path / "second" / "config.json").exists()


def test_clips_queued_while_the_server_is_down_arrive_exactly_once_when_it_is_back(
    live_server: Any, owner: Owner, config: Path, shots_wav: Path, quiet_wav: Path, tmp_path: Path
) -> None:
    device = pair(config, live_server.url, owner.add_device()["pairing_code"])

    # The server is unreachable while the shots are heard: everything waits on disk.
    down = closed_port_url()
    assert run_once(config, shots_wav, "--server", down, "--position", POSITION, "--drain-timeout", "1") == (
        EXIT_NOT_DRAINED
    )
    queued = spooled(config)
    assert len(queued) == len(SHOTS)
    assert Clip.objects.count() == 0
    backup = tmp_path / "backup"
    shutil.copytree(config.parent / "spool", backup, ignore=shutil.ignore_patterns("rejected", "held", "state.json"))

    # Back online: the next run delivers the backlog, oldest first.
    assert run_once(config, quiet_wav) == EXIT_OK
    clips = list(Clip.objects.filter(device=device).order_by("recorded_at"))
    assert len(clips) == len(SHOTS)
    assert [str(c.client_id) for c in clips] == [m["client_id"] for m in queued]
    for clip, meta in zip(clips, queued, strict=True):
        assert clip.recorded_at == parse_iso(meta["recorded_at"])
        assert clip.trigger_offset_s == pytest.approx(0.5, abs=0.01)
        assert (clip.latitude, clip.longitude, clip.accuracy_m) == (52.5163, 13.3777, 6.0)
        assert clip.sample_rate == 48000
        assert clip.duration_s == pytest.approx(2.0, abs=0.01)
    assert spooled(config) == []

    # Acknowledgements lost on the way back: the same clips are sent again, and the server keeps one each.
    for path in backup.iterdir():
        shutil.copy(path, config.parent / "spool" / path.name)
    assert len(spooled(config)) == len(SHOTS)
    assert run_once(config, quiet_wav) == EXIT_OK
    assert spooled(config) == []
    assert Clip.objects.filter(device=device).count() == len(SHOTS)
    assert Clip.objects.values("client_id").distinct().count() == len(SHOTS)
    uploaded = state(config)["last_upload"]
    assert uploaded["response"]["id"] in {str(c.code) for c in clips}


def test_a_revoked_token_keeps_the_queue_until_the_device_is_paired_again(
    live_server: Any,
    owner: Owner,
    config: Path,
    shots_wav: Path,
    quiet_wav: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    created = owner.add_device()
    device = pair(config, live_server.url, created["pairing_code"])
    owner.call("POST", f"/api/v1/devices/{created['id']}/revoke-token")

    assert run_once(config, shots_wav, "--position", POSITION) == EXIT_AUTH
    assert len(spooled(config)) == len(SHOTS)
    assert Clip.objects.count() == 0
    capsys.readouterr()
    assert agent(config, "status") == 1
    assert "REFUSED" in capsys.readouterr().out

    code = owner.call("POST", f"/api/v1/devices/{created['id']}/pairing-code")["pairing_code"]
    pair(config, live_server.url, code)
    assert run_once(config, quiet_wav) == EXIT_OK
    assert Clip.objects.filter(device=device).count() == len(SHOTS)
    assert state(config).get("auth_error") is None


def test_a_clip_the_server_fails_on_is_set_aside_and_the_later_clips_arrive(
    live_server: Any, owner: Owner, config: Path, shots_wav: Path, quiet_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = pair(config, live_server.url, owner.add_device()["pairing_code"])
    # A server bug that one clip's data triggers: every upload of the first clip seen answers 500.
    real_upload = detection_services.clip_upload
    poisoned: list[uuid.UUID] = []

    def failing_upload(**kwargs: Any) -> Any:
        if not poisoned:
            poisoned.append(kwargs["client_id"])
        if kwargs["client_id"] == poisoned[0]:
            raise RuntimeError("a bug this clip triggers")
        return real_upload(**kwargs)

    monkeypatch.setattr(detection_services, "clip_upload", failing_upload)
    assert run_once(config, shots_wav, "--position", POSITION, "--max-attempts", "2") == EXIT_OK

    stored = {c.client_id for c in Clip.objects.filter(device=device)}
    assert len(stored) == len(SHOTS) - 1  # the later clips (gunshots all) were not held back
    assert poisoned[0] not in stored
    [held] = Spool(config.parent / "spool").held()
    assert held["client_id"] == str(poisoned[0])
    assert held["error"]["status"] == 500
    device.refresh_from_db()
    assert device.health["set_aside_clips"] == 1  # the last heartbeat told the server, which stored it
    assert device.health["rejected_clips"] == 0
    assert device.health["queue_length"] == 0

    # The bug is fixed; the operator puts the clip back and it arrives, once.
    monkeypatch.setattr(detection_services, "clip_upload", real_upload)
    assert agent(config, "requeue-held") == 0
    assert run_once(config, quiet_wav) == EXIT_OK
    assert Clip.objects.filter(device=device).count() == len(SHOTS)
    device.refresh_from_db()
    assert device.health["set_aside_clips"] == 0


def test_a_clip_stamped_by_an_unset_clock_is_refused_for_good_and_does_not_block_the_rest(
    live_server: Any, owner: Owner, config: Path, shots_wav: Path, quiet_wav: Path
) -> None:
    device = pair(config, live_server.url, owner.add_device()["pairing_code"])
    down = closed_port_url()
    assert run_once(config, shots_wav, "--server", down, "--drain-timeout", "1") == EXIT_NOT_DRAINED
    # The first clip was stamped before the clock was set (1970), from an earlier boot: nothing can correct it.
    spool = Spool(config.parent / "spool")
    first = spool.items()[0]
    first.meta_path.write_text(json.dumps(dict(first.meta, recorded_at="1970-01-01T00:00:42.000Z", boot_id="gone")))

    assert run_once(config, quiet_wav) == EXIT_OK
    assert Clip.objects.filter(device=device).count() == len(SHOTS) - 1
    assert not Clip.objects.filter(recorded_at__year__lt=2000).exists()
    [rejected] = spool.rejected()
    assert rejected["client_id"] == first.client_id
    assert (rejected["error"]["status"], rejected["error"]["code"]) == (400, "recorded_too_old")
    device.refresh_from_db()
    assert device.health["rejected_clips"] == 1


def test_the_active_model_is_downloaded_verified_and_filters_on_the_device(
    live_server: Any,
    owner: Owner,
    config: Path,
    shots_wav: Path,
    quiet_wav: Path,
    model_factory: Callable[..., ModelVersion],  # noqa: F811
) -> None:
    model = model_factory(logit=-8.0, name="never")  # scores every window ≈ 0.0003
    created = owner.add_device()
    device = pair(config, live_server.url, created["pairing_code"])

    assert run_once(config, quiet_wav) == EXIT_OK
    installed = Path(state(config)["model"]["path"])
    download = owner.session.get(f"{live_server.url}/api/v1/models/active/download")
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == download.headers["X-Model-SHA256"]
    assert state(config)["model"]["active"]["version"] == model.version
    device.refresh_from_db()
    assert device.model_version == model.version

    # On the device the model rejects all three shots: nothing is uploaded.
    assert run_once(config, shots_wav, "--position", POSITION) == EXIT_OK
    assert Clip.objects.count() == 0
    assert state(config)["counters"]["triggers"] == len(SHOTS)
    assert state(config)["counters"]["filtered_onboard"] == len(SHOTS)

    # The owner lowers this device's threshold; the next heartbeat applies it and the shots go out.
    owner.call("PATCH", f"/api/v1/devices/{created['id']}", json={"sensitivity_threshold": 0.0})
    assert run_once(config, quiet_wav) == EXIT_OK
    assert state(config)["settings"]["sensitivity_threshold"] == 0.0
    assert run_once(config, shots_wav, "--position", POSITION) == EXIT_OK
    assert Clip.objects.filter(device=device).count() == len(SHOTS)
    assert len({c.client_id for c in Clip.objects.all()}) == len(SHOTS)
    assert all(isinstance(c.client_id, uuid.UUID) for c in Clip.objects.all())
