"""The agent's on-disk upload queue: durable, ordered, bounded, and honest about what it dropped."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from devices.agent.spool import Spool
from tests.devices.agent_support import SR, shots_in_noise


def meta(**extra: object) -> dict:
    return {"client_id": str(uuid.uuid4()), "recorded_at": "2026-01-02T03:04:05.678Z", **extra}


def clip(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * SR)) * 0.1).astype(np.float32)


def test_a_clip_round_trips_as_flac_with_its_sidecar(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    samples = shots_in_noise([0.5], 2.0)
    item = spool.put(samples, SR, meta(trigger_offset_s=0.5))

    [stored] = spool.items()
    assert stored.client_id == item.client_id
    assert stored.meta["trigger_offset_s"] == 0.5
    assert stored.audio_path.suffix == ".flac"
    audio, sr = sf.read(stored.audio_path, dtype="float32")
    assert sr == SR
    assert sf.info(stored.audio_path).format == "FLAC"
    np.testing.assert_allclose(audio, samples, atol=1 / 32768 + 1e-6)  # 16-bit quantisation only
    assert json.loads(stored.meta_path.read_text())["client_id"] == item.client_id


def test_items_come_back_oldest_first_and_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ids = [spool.put(clip(0.2, k), SR, meta()).client_id for k in range(4)]
    assert [item.client_id for item in Spool(tmp_path).items()] == ids
    assert Spool(tmp_path).oldest().client_id == ids[0]  # type: ignore[union-attr]


def test_writes_leave_no_temporary_files_behind(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(clip(), SR, meta())
    assert sorted(p.suffix for p in tmp_path.iterdir() if p.is_file()) == [".flac", ".json"]
    assert not list(tmp_path.glob(".*"))


def test_a_clip_without_client_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="client_id"):
        Spool(tmp_path).put(clip(), SR, {"recorded_at": "2026-01-01T00:00:00.000Z"})


def test_half_written_clips_are_invisible_and_swept_on_recover(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    kept = spool.put(clip(), SR, meta())
    # Debris of a power cut at each step of a write.
    (tmp_path / ".00000000000000000001-x.flac.abc.tmp").write_bytes(b"partial")
    sf.write(tmp_path / "00000000000000000002-orphan.flac", clip(0.1), SR, format="FLAC")
    (tmp_path / "00000000000000000003-lonely.json").write_text(json.dumps(meta()))

    assert [item.client_id for item in spool.items()] == [kept.client_id]
    assert spool.recover() == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        kept.audio_path.name,
        kept.meta_path.name,
    ]


def test_when_full_by_count_the_oldest_are_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_items=3)
    ids = [spool.put(clip(0.2, k), SR, meta()).client_id for k in range(5)]
    assert [item.client_id for item in spool.items()] == ids[2:]
    assert spool.dropped == 2
    assert Spool(tmp_path).stats().dropped == 2  # persisted for heartbeats and `status`


def test_when_full_by_bytes_the_oldest_are_dropped_but_never_the_new_clip(tmp_path: Path) -> None:
    probe = Spool(tmp_path / "probe")
    size = probe.put(clip(1.0), SR, meta()).size_bytes()
    spool = Spool(tmp_path / "real", max_bytes=int(size * 2.5))
    ids = [spool.put(clip(1.0, k), SR, meta()).client_id for k in range(4)]
    assert [item.client_id for item in spool.items()] == ids[2:]
    assert spool.stats().bytes <= size * 2.5
    assert spool.dropped == 2

    tiny = Spool(tmp_path / "tiny", max_bytes=10)
    only = tiny.put(clip(1.0), SR, meta())
    assert [item.client_id for item in tiny.items()] == [only.client_id]
    assert tiny.dropped == 0


def test_reject_moves_the_clip_aside_with_the_servers_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    item = spool.put(clip(), SR, meta())
    error = {"status": 400, "code": "invalid", "message": "recorded_at is in the future"}
    spool.reject(item, error)

    assert spool.items() == []
    [rejected] = spool.rejected()
    assert rejected["client_id"] == item.client_id
    assert rejected["error"] == error
    assert (tmp_path / "rejected" / item.audio_path.name).exists()
    assert spool.stats().rejected == 1
    assert spool.stats().count == 0


def test_rejected_folder_is_bounded_too(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_rejected=2)
    items = [spool.put(clip(0.1, k), SR, meta()) for k in range(4)]
    for item in items:
        spool.reject(item, {"status": 400})
    assert [r["client_id"] for r in spool.rejected()] == [i.client_id for i in items[2:]]


def test_failures_are_counted_in_the_sidecar_and_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    item = spool.put(clip(), SR, meta())
    error = {"status": 500, "code": "server_error", "message": "boom"}
    item = spool.note_failure(spool.note_failure(item, error), error)
    [again] = Spool(tmp_path).items()
    assert (item.failures, again.failures) == (2, 2)
    assert again.meta["last_error"] == error


def test_set_aside_keeps_the_clip_counts_it_and_requeue_puts_it_back_in_its_place(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first, second = spool.put(clip(), SR, meta()), spool.put(clip(seed=1), SR, meta())
    first = spool.note_failure(first, {"status": 500})
    spool.set_aside(first)

    assert [i.client_id for i in spool.items()] == [second.client_id]
    [held] = spool.held()
    assert (held["client_id"], held["failures"], held["error"]) == (first.client_id, 1, {"status": 500})
    assert (tmp_path / "held" / first.audio_path.name).exists()
    assert (spool.stats().set_aside, spool.stats().rejected, spool.stats().count) == (1, 0, 1)

    assert spool.requeue_held() == 1
    assert [i.client_id for i in spool.items()] == [first.client_id, second.client_id]  # oldest first again
    assert spool.items()[0].failures == 0
    assert spool.held() == [] and spool.stats().set_aside == 0
    data, sr = sf.read(spool.items()[0].audio_path)
    assert sr == SR and len(data) == 2 * SR


def test_remove_is_idempotent_for_clips_already_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    item = spool.put(clip(), SR, meta())
    spool.remove(item)
    spool.remove(item)
    assert len(spool) == 0
    assert list(tmp_path.glob("*.flac")) == []


def test_stats_report_count_bytes_and_the_oldest_recording(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.put(clip(), SR, meta(recorded_at="2026-05-01T10:00:00.000Z"))
    second = spool.put(clip(seed=1), SR, meta(recorded_at="2026-05-01T10:00:05.000Z"))
    stats = spool.stats()
    assert stats.count == 2
    assert stats.bytes == first.size_bytes() + second.size_bytes()
    assert stats.oldest_recorded_at == "2026-05-01T10:00:00.000Z"
