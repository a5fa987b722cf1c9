"""Detection services: upload edge cases, the model registry (register, activate, roll back)."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.weights import sha256_file
from detection import services
from detection.models import Clip, ModelVersion
from detection.services import clips
from devices.models import Device
from gunwatch.exceptions import ApplicationError
from tests.core.helpers_audio import make_weights
from tests.detection.pipeline import encode, media_files, sine

pytestmark = pytest.mark.django_db


def upload(device: Device, data: bytes, client_id: uuid.UUID | None = None, **fields: Any) -> services.ClipUploadResult:
    return services.clip_upload(
        device=device,
        audio_file=io.BytesIO(data),
        audio_size=len(data),
        client_id=client_id or uuid.uuid4(),
        recorded_at=timezone.now(),
        **fields,
    )


# --- Upload ---------------------------------------------------------------------------------------


def test_upload_enqueues_classification_on_commit(
    device: Device, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr("gunwatch.tasks.enqueue", lambda task, *args: queued.append((task.name, *args)))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = upload(device, encode(sine()))
    assert queued == []  # nothing leaves before the row is committed
    assert len(callbacks) == 1
    callbacks[0]()
    assert queued == [("detection.tasks.classify_clip", result.clip.pk)]


def test_a_lost_race_on_client_id_returns_the_winner_and_leaves_no_file(device: Device, monkeypatch: Any) -> None:
    data, client_id = encode(sine()), uuid.uuid4()
    inspect = services.audio_inspect
    winner: dict[str, Clip] = {}

    def inspect_while_a_competitor_commits(upload: Any, **kwargs: Any) -> Any:
        # Another request with the same client_id commits between our check and our insert.
        winner["clip"] = Clip.objects.create(
            device=device,
            client_id=client_id,
            audio_sha256=clips.hashlib.sha256(data).hexdigest(),
            recorded_at=timezone.now(),
        )
        return inspect(upload, **kwargs)

    monkeypatch.setattr(clips, "audio_inspect", inspect_while_a_competitor_commits)
    result = upload(device, data, client_id=client_id)
    assert result.created is False
    assert result.clip.pk == winner["clip"].pk
    assert Clip.objects.count() == 1
    assert media_files(Path(django_settings.MEDIA_ROOT) / "clips") == []


def test_a_database_failure_after_storing_the_audio_removes_the_file(device: Device, monkeypatch: Any) -> None:
    def broken_save(self: Clip, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(Clip, "save", broken_save)
    with pytest.raises(RuntimeError):
        upload(device, encode(sine()))
    assert media_files(Path(django_settings.MEDIA_ROOT) / "clips") == []


def test_home_device_without_installed_location_falls_back_to_its_last_fix(owner: Any) -> None:
    bare = Device.objects.create(owner=owner, name="Bare", status=Device.Status.ACTIVE)
    assert upload(bare, encode(sine())).clip.latitude is None
    Device.objects.filter(pk=bare.pk).update(last_latitude=1.0, last_longitude=2.0, last_accuracy_m=7.0)
    bare.refresh_from_db()
    fallback = upload(bare, encode(sine())).clip
    assert (fallback.latitude, fallback.longitude, fallback.accuracy_m) == (1.0, 2.0, 7.0)
    clip = upload(bare, encode(sine()), latitude=10.0, longitude=20.0, accuracy_m=5.0).clip
    assert (clip.latitude, clip.longitude, clip.accuracy_m) == (10.0, 20.0, 5.0)


def test_a_naive_timestamp_is_refused_by_the_service_too(device: Device) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.clip_upload(
            device=device,
            audio_file=io.BytesIO(encode(sine())),
            audio_size=None,
            client_id=uuid.uuid4(),
            recorded_at=timezone.now().replace(tzinfo=None),
        )
    assert caught.value.code == "naive_timestamp"


# --- Model registry -------------------------------------------------------------------------------


def test_register_reads_everything_from_the_weights_file(tmp_path: Path, admin_user: Any) -> None:
    path = make_weights(tmp_path / "m.pt", threshold=0.37, meta={"metrics": {"recall": 0.9}, "model_card": "# Card"})
    version = services.model_version_register(weights_path=path, name="gwcnn", version="2.0", created_by=admin_user)
    assert version.sha256 == sha256_file(path)
    assert (version.architecture, version.threshold, version.sample_rate) == ("gwcnn-tiny", 0.37, 16000)
    assert version.feature_params["n_mels"] == 40 and version.feature_params["fmax"] == 4000.0
    assert version.metrics == {"recall": 0.9} and version.model_card == "# Card"
    assert version.status == ModelVersion.Status.CANDIDATE and version.created_by == admin_user
    with default_storage.open(version.weights.name, "rb") as stored:
        assert stored.read() == path.read_bytes()


def test_explicit_metrics_and_card_win_over_the_files(tmp_path: Path) -> None:
    path = make_weights(tmp_path / "m.pt", meta={"metrics": {"recall": 0.9}, "model_card": "old"})
    version = services.model_version_register(
        weights_path=path, name="g", version="1", metrics={"auc": 0.99}, model_card="new"
    )
    assert (version.metrics, version.model_card) == ({"auc": 0.99}, "new")


def test_register_from_an_uploaded_file_object(tmp_path: Path) -> None:
    path = make_weights(tmp_path / "m.pt")
    with path.open("rb") as handle:
        version = services.model_version_register(file=handle, name="g", version="1")
    assert version.sha256 == sha256_file(path)


@pytest.mark.parametrize("content", [b"", b"definitely not torch", b"PK\x03\x04broken zip"])
def test_register_refuses_unusable_files_and_writes_nothing(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ApplicationError) as caught:
        services.model_version_register(weights_path=path, name="junk", version="1")
    assert caught.value.code == "model_incompatible"
    assert ModelVersion.objects.count() == 0
    assert media_files(Path(django_settings.MEDIA_ROOT)) == []


def test_register_refuses_a_weights_dict_for_an_unknown_architecture(tmp_path: Path) -> None:
    import torch

    path = make_weights(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["architecture"] = "resnet-9000"
    torch.save(payload, path)
    with pytest.raises(ApplicationError, match="unknown architecture"):
        services.model_version_register(weights_path=path, name="x", version="1")


def test_register_refuses_a_duplicate_name_and_version(model_factory: Callable[..., ModelVersion]) -> None:
    model_factory(name="dup", version="1", activate=False)
    with pytest.raises(ApplicationError) as caught:
        model_factory(name="dup", version="1", activate=False)
    assert caught.value.status_code == 409
    assert ModelVersion.objects.count() == 1


def test_register_validates_the_fields(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        services.model_version_register(weights_path=make_weights(tmp_path / "m.pt"), name="", version="1")
    assert media_files(Path(django_settings.MEDIA_ROOT)) == []


def test_activate_retires_the_previous_version(model_factory: Callable[..., ModelVersion]) -> None:
    first = model_factory()
    second = model_factory(activate=False)
    assert second.status == ModelVersion.Status.CANDIDATE
    services.model_version_activate(model_version=second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == ModelVersion.Status.RETIRED
    assert second.status == ModelVersion.Status.ACTIVE and second.activated_at is not None
    assert second.previous_active == first
    assert ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).count() == 1


def test_activating_the_active_version_changes_nothing(model_factory: Callable[..., ModelVersion]) -> None:
    first = model_factory()
    services.model_version_activate(model_version=first)
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.ACTIVE and first.previous_active is None


def test_two_active_versions_are_impossible_in_the_database(model_factory: Callable[..., ModelVersion]) -> None:
    model_factory()
    second = model_factory(activate=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=second.pk).update(status=ModelVersion.Status.ACTIVE)


def test_a_version_whose_file_is_broken_cannot_be_activated(model_factory: Callable[..., ModelVersion]) -> None:
    first = model_factory()
    second = model_factory(activate=False)
    Path(second.weights.path).write_bytes(b"tampered")
    with pytest.raises(ApplicationError) as caught:
        services.model_version_activate(model_version=second)
    assert caught.value.code == "model_incompatible"
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.ACTIVE


def test_roll_back_steps_back_through_the_activation_history(model_factory: Callable[..., ModelVersion]) -> None:
    a = model_factory(version="a")
    b = model_factory(version="b")
    c = model_factory(version="c")
    assert services.model_version_rollback() == b
    assert services.model_version_rollback() == a
    for version, status in ((a, "active"), (b, "retired"), (c, "retired")):
        version.refresh_from_db()
        assert version.status == status
    with pytest.raises(ApplicationError) as caught:
        services.model_version_rollback()
    assert caught.value.code == "no_rollback"


def test_roll_back_without_any_active_version_is_refused(db: None) -> None:
    with pytest.raises(ApplicationError):
        services.model_version_rollback()


# --- Management commands --------------------------------------------------------------------------


def test_register_model_version_command(tmp_path: Path) -> None:
    from django.core.management import call_command

    path = make_weights(tmp_path / "m.pt", threshold=0.61)
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Model card: m")
    metrics = tmp_path / "val_metrics.json"
    metrics.write_text('{"recall": 0.93, "scores": [{"file": "a", "score": 0.1}]}')
    out = io.StringIO()
    call_command(
        "register_model_version",
        str(path),
        "--name",
        "gwcnn",
        "--version",
        "4.1",
        "--activate",
        "--card",
        str(card),
        "--metrics",
        str(metrics),
        stdout=out,
    )
    version = ModelVersion.objects.get()
    assert (version.label, version.status, version.threshold) == ("gwcnn:4.1", "active", 0.61)
    assert version.model_card == "# Model card: m"
    assert version.metrics == {"recall": 0.93}  # the per-clip score list is data, not a metric
    assert version.sha256 in out.getvalue() and "active" in out.getvalue()


def test_register_model_version_command_reports_bad_input(tmp_path: Path) -> None:
    from django.core.management import CommandError, call_command

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(CommandError, match="cannot be used"):
        call_command("register_model_version", str(junk), "--name", "x", "--version", "1")
    with pytest.raises(CommandError, match="No weights file"):
        call_command("register_model_version", str(tmp_path / "absent.pt"), "--name", "x", "--version", "1")
    assert ModelVersion.objects.count() == 0


def test_register_bundled_model_is_idempotent(tmp_path: Path, model_factory: Callable[..., ModelVersion]) -> None:
    from django.core.management import call_command

    weights = make_weights(tmp_path / "bundle" / "gwcnn-1.pt", threshold=0.7)
    (tmp_path / "bundle" / "MODEL_CARD.md").write_text("# Shipped")
    (tmp_path / "bundle" / "model_card.json").write_text('{"validation": {"auc": 0.98, "scores": []}}')
    call_command("register_bundled_model", "--path", str(weights), stdout=io.StringIO())
    bundled = ModelVersion.objects.get(status="active")
    assert (bundled.name, bundled.version) == ("gwcnn-1", bundled.sha256[:8])  # no trained_at in this file's meta
    assert (bundled.model_card, bundled.metrics, bundled.threshold) == ("# Shipped", {"auc": 0.98}, 0.7)
    out = io.StringIO()
    call_command("register_bundled_model", "--path", str(weights), stdout=out)
    assert "already active" in out.getvalue()
    assert ModelVersion.objects.count() == 1
    # Another model took over and was then retired: the bundle's row comes back instead of a duplicate.
    other = model_factory()
    ModelVersion.objects.filter(pk=other.pk).update(status="retired")
    call_command("register_bundled_model", "--path", str(weights), stdout=io.StringIO())
    assert ModelVersion.objects.get(status="active") == bundled
    assert ModelVersion.objects.filter(sha256=bundled.sha256).count() == 1


def test_register_bundled_model_leaves_an_active_model_alone(
    tmp_path: Path, model_factory: Callable[..., ModelVersion]
) -> None:
    from django.core.management import call_command

    active = model_factory()
    call_command("register_bundled_model", "--path", str(tmp_path / "not-even-there.pt"), stdout=io.StringIO())
    assert ModelVersion.objects.get(status="active") == active


def test_register_bundled_model_without_weights_fails_clearly(tmp_path: Path, db: None) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="no bundled weights"):
        call_command("register_bundled_model", "--path", str(tmp_path / "missing.pt"))


def test_concurrent_torchscript_exports_all_succeed(negative_model: ModelVersion) -> None:
    """A fleet downloads a new model at once; every request must get the same export."""
    from concurrent.futures import ThreadPoolExecutor

    from detection.services import model_version_torchscript

    with ThreadPoolExecutor(max_workers=6) as pool:
        exports = list(pool.map(lambda _: model_version_torchscript(model_version=negative_model), range(6)))
    assert len({export.sha256 for export in exports}) == 1
    assert len({export.name for export in exports}) == 1
    for export in exports:
        assert hashlib.sha256(export.handle.read()).hexdigest() == export.sha256
        export.handle.close()
