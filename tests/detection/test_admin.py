"""The model registry in the admin: upload, refusal of bad files, activate and roll back actions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from core.weights import sha256_file
from detection.models import ModelVersion
from tests.core.helpers_audio import make_weights
from tests.detection.pipeline import media_files

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/detection/modelversion/"


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def add(client: Client, content: bytes, **fields: Any) -> Any:
    data = {
        "name": "gwcnn",
        "version": "3.0",
        "metrics": "",
        "model_card": "",
        "notes": "",
        "weights_file": SimpleUploadedFile("w.pt", content),
        **fields,
    }
    return client.post(f"{CHANGELIST}add/", data)


def test_upload_registers_a_version_from_the_file(admin_client: Client, admin_user: Any, tmp_path: Path) -> None:
    path = make_weights(tmp_path / "w.pt", threshold=0.42, meta={"metrics": {"recall": 0.8}})
    response = add(admin_client, path.read_bytes(), notes="trained on the March set")
    assert response.status_code == 302, response.content.decode()[:2000]
    version = ModelVersion.objects.get()
    assert (version.name, version.version, version.architecture) == ("gwcnn", "3.0", "gwcnn-tiny")
    assert version.sha256 == sha256_file(path) and version.threshold == 0.42
    assert version.metrics == {"recall": 0.8} and version.notes == "trained on the March set"
    assert version.created_by == admin_user and version.status == ModelVersion.Status.CANDIDATE


def test_upload_with_activate(admin_client: Client, tmp_path: Path, model_factory: Callable[..., ModelVersion]) -> None:
    previous = model_factory()
    response = add(admin_client, make_weights(tmp_path / "w.pt").read_bytes(), activate="on", metrics='{"auc": 0.97}')
    assert response.status_code == 302
    new = ModelVersion.objects.get(name="gwcnn")
    previous.refresh_from_db()
    assert new.status == "active" and previous.status == "retired" and new.metrics == {"auc": 0.97}


@pytest.mark.parametrize("content", [b"", b"junk junk junk"])
def test_an_unusable_file_is_a_form_error(admin_client: Client, content: bytes) -> None:
    response = add(admin_client, content)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "weights_file" in errors
    assert ModelVersion.objects.count() == 0
    assert media_files(Path(django_settings.MEDIA_ROOT)) == []


def test_an_incompatible_architecture_is_a_clear_form_error(admin_client: Client, tmp_path: Path) -> None:
    import torch

    path = make_weights(tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    payload["architecture"] = "gwcnn-1"  # a known architecture, but the tiny network's tensors do not fit it
    torch.save(payload, path)
    response = add(admin_client, path.read_bytes())
    assert response.status_code == 200
    message = " ".join(response.context["adminform"].form.errors["weights_file"])
    assert "cannot be used" in message and "do not fit gwcnn-1" in message
    assert ModelVersion.objects.count() == 0


def test_a_duplicate_name_and_version_is_a_form_error(
    admin_client: Client, tmp_path: Path, model_factory: Callable[..., ModelVersion]
) -> None:
    model_factory(name="gwcnn", version="3.0")
    response = add(admin_client, make_weights(tmp_path / "w.pt").read_bytes())
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert ModelVersion.objects.count() == 1


def test_change_page_shows_metrics_card_and_read_only_provenance(
    admin_client: Client, model_factory: Callable[..., ModelVersion]
) -> None:
    version = model_factory(metrics={"recall": 0.91, "fpr": 0.01}, model_card="# Model card: tiny")
    page = admin_client.get(f"{CHANGELIST}{version.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    # Metrics as a table of rounded figures, the card rendered from Markdown (issue 12, item 11).
    assert "<th>recall</th><td>0.91</td>" in html and "<h1>Model card: tiny</h1>" in html and version.sha256 in html
    form_fields = page.context["adminform"].form.fields
    assert "sha256" not in form_fields and "threshold" not in form_fields and "notes" in form_fields
    listing = admin_client.get(CHANGELIST).content.decode()
    assert "recall=0.91" in listing and version.sha256[:12] in listing


def test_activate_action(admin_client: Client, model_factory: Callable[..., ModelVersion]) -> None:
    first = model_factory()
    second = model_factory(activate=False)
    response = admin_client.post(
        CHANGELIST, {"action": "activate_version", "_selected_action": [second.pk]}, follow=True
    )
    assert "is now the active model" in response.content.decode()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("retired", "active")


def test_activate_action_needs_exactly_one(admin_client: Client, model_factory: Callable[..., ModelVersion]) -> None:
    first = model_factory()
    second = model_factory(activate=False)
    third = model_factory(activate=False)
    response = admin_client.post(
        CHANGELIST, {"action": "activate_version", "_selected_action": [second.pk, third.pk]}, follow=True
    )
    assert "Select exactly one version" in response.content.decode()
    first.refresh_from_db()
    assert first.status == "active"


def test_roll_back_action(admin_client: Client, model_factory: Callable[..., ModelVersion]) -> None:
    first = model_factory()
    second = model_factory()
    response = admin_client.post(CHANGELIST, {"action": "roll_back", "_selected_action": [second.pk]}, follow=True)
    assert "Rolled back" in response.content.decode()
    first.refresh_from_db()
    assert first.status == "active"
    # Rolling back the only version left has nowhere to go, and says so.
    response = admin_client.post(CHANGELIST, {"action": "roll_back", "_selected_action": [first.pk]}, follow=True)
    assert "no previously active model version" in response.content.decode()


def test_the_active_version_cannot_be_deleted(admin_client: Client, model_factory: Callable[..., ModelVersion]) -> None:
    active = model_factory()
    assert admin_client.get(f"{CHANGELIST}{active.pk}/delete/").status_code == 403
    candidate = model_factory(activate=False)
    assert admin_client.get(f"{CHANGELIST}{candidate.pk}/delete/").status_code == 200


def test_clip_admin_lists_clips_read_only(admin_client: Client) -> None:
    assert admin_client.get("/admin/detection/clip/").status_code == 200
    assert admin_client.get("/admin/detection/clip/add/").status_code == 403


def test_model_card_renders_plots_rounds_metrics_and_hides_machine_paths(
    admin_client: Client, model_factory: Callable[..., ModelVersion]
) -> None:
    card = (
        "# Card\n\nManifest `/work/shared/data/manifest.csv` (sha).\n\n"
        "Plots: [roc.png](roc.png), [missing.png](missing.png)\n"
    )
    version = model_factory(
        metrics={"auc": 0.998698123, "false_alarms_per_hour": 26.0512, "clips": 453}, model_card=card
    )
    html = admin_client.get(f"{CHANGELIST}{version.pk}/change/").content.decode()
    assert "/work/shared" not in html and "manifest.csv" in html
    assert '<img style="max-width: 100%; height: auto" loading="lazy" alt="roc.png" src="/models/plots/roc.png"' in html
    assert "missing.png" in html and "/models/plots/missing.png" not in html
    assert "<td>0.999</td>" in html and "<td>26.05</td>" in html and "<td>453</td>" in html
    assert admin_client.get("/models/plots/roc.png")["Content-Type"] == "image/png"
    assert admin_client.get("/models/plots/..%2Fgwcnn-1.pt").status_code == 404
    assert Client().get("/models/plots/roc.png").status_code == 404
