"""The per-process model cache: load once, follow activations, refuse bad files and keep serving."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.classifier import Classifier
from core.weights import sha256_file
from detection import inference, services
from detection.models import ModelVersion
from tests.core.helpers_audio import make_weights

pytestmark = pytest.mark.django_db


@pytest.fixture
def load_calls(monkeypatch: Any) -> list[str]:
    calls: list[str] = []
    original = Classifier.load.__func__  # type: ignore[attr-defined]  # the classmethod's plain function

    def counting(cls: type[Classifier], path: Any, **kwargs: Any) -> Classifier:
        calls.append(str(path))
        return original(cls, path, **kwargs)

    monkeypatch.setattr(Classifier, "load", classmethod(counting))
    return calls


def test_the_model_is_loaded_once_per_process(negative_model: ModelVersion, load_calls: list[str]) -> None:
    load_calls.clear()
    first = inference.active_model()
    second = inference.active_model()
    assert first is second
    assert (first.version_id, first.sha256, first.label) == (
        negative_model.pk,
        negative_model.sha256,
        negative_model.label,
    )
    assert len(load_calls) == 1


def test_activation_switches_the_model_without_a_restart(
    model_factory: Callable[..., ModelVersion], load_calls: list[str]
) -> None:
    old = model_factory(name="old")
    assert inference.active_model().version_id == old.pk
    new = model_factory(name="new", activate=False)
    assert inference.active_model().version_id == old.pk
    # Another process (the admin) activates; this worker notices on its next clip.
    services.model_version_activate(model_version=new)
    inference._state.checked_at = float("-inf")
    assert inference.active_model().version_id == new.pk
    services.model_version_rollback()
    assert inference.active_model().version_id == old.pk


def test_within_the_ttl_the_worker_does_not_ask_the_database(
    model_factory: Callable[..., ModelVersion], settings: Any, django_assert_num_queries: Any
) -> None:
    settings.MODEL_ACTIVE_CHECK_TTL_S = 3600
    old = model_factory(name="old")
    assert inference.active_model().version_id == old.pk
    with django_assert_num_queries(0):
        assert inference.active_model().version_id == old.pk
    # Activation by another process is seen once the TTL runs out (here: forced).
    new = model_factory(name="new", activate=False)
    ModelVersion.objects.filter(pk=old.pk).update(status="retired")
    ModelVersion.objects.filter(pk=new.pk).update(status="active")
    assert inference.active_model().version_id == old.pk
    inference.invalidate()
    assert inference.active_model().version_id == new.pk


def test_one_query_per_call_with_ttl_zero(negative_model: ModelVersion, django_assert_num_queries: Any) -> None:
    inference.active_model()
    with django_assert_num_queries(1):
        inference.active_model()


def test_no_active_model_raises(db: None) -> None:
    with pytest.raises(inference.NoModelAvailable, match="no model version is active"):
        inference.active_model()


def _activate_behind_the_registry(version: ModelVersion) -> None:
    """Flip the active row directly, as a corrupted disk or a hand-edited database would present it."""
    ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).update(status=ModelVersion.Status.RETIRED)
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.ACTIVE)


def test_checksum_mismatch_keeps_the_previous_model_serving(
    model_factory: Callable[..., ModelVersion], tmp_path: Path, caplog: Any
) -> None:
    good = model_factory(name="good")
    assert inference.active_model().version_id == good.pk
    bad = model_factory(name="bad", activate=False)
    # The file changes on disk after registration: another valid weights file, but not the one recorded.
    make_weights(Path(bad.weights.path), seed=99)
    _activate_behind_the_registry(bad)
    with caplog.at_level(logging.ERROR, logger="detection.inference"):
        served = inference.active_model()
    assert served.version_id == good.pk
    assert "ModelChecksumError" in caplog.text
    bad.refresh_from_db()
    assert "refused to load: ModelChecksumError" in bad.notes
    # It is not retried (nor noted again) on every clip.
    caplog.clear()
    assert inference.active_model().version_id == good.pk
    assert caplog.text == ""
    bad.refresh_from_db()
    assert bad.notes.count("refused to load") == 1


def test_an_incompatible_file_is_refused_and_the_previous_model_kept(
    model_factory: Callable[..., ModelVersion], tmp_path: Path
) -> None:
    good = model_factory(name="good")
    inference.active_model()
    bad = model_factory(name="bad", activate=False)
    path = Path(bad.weights.path)
    import torch

    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("head")}
    torch.save(payload, path)
    # Recorded with the matching checksum, so only the architecture check can catch it.
    ModelVersion.objects.filter(pk=bad.pk).update(sha256=sha256_file(path))
    _activate_behind_the_registry(bad)
    assert inference.active_model().version_id == good.pk
    bad.refresh_from_db()
    assert "ModelIncompatibleError" in bad.notes


def test_a_bad_active_model_with_nothing_loaded_before_is_unavailable(
    model_factory: Callable[..., ModelVersion],
) -> None:
    bad = model_factory(name="bad")
    Path(bad.weights.path).write_bytes(b"truncated")
    with pytest.raises(inference.NoModelAvailable, match="cannot be loaded"):
        inference.active_model()


def test_a_refused_version_is_tried_again_later(
    model_factory: Callable[..., ModelVersion], monkeypatch: Any, tmp_path: Path
) -> None:
    version = model_factory(name="flaky")
    path = Path(version.weights.path)
    saved = path.read_bytes()
    path.write_bytes(b"half-copied")
    with pytest.raises(inference.NoModelAvailable):
        inference.active_model()
    path.write_bytes(saved)  # the operator restores the file
    with pytest.raises(inference.NoModelAvailable):
        inference.active_model()  # still within the back-off
    monkeypatch.setattr(inference, "REFUSED_RETRY_S", 0.0)
    assert inference.active_model().version_id == version.pk


def test_classifier_for_reuses_the_cached_model_only_for_its_version(
    model_factory: Callable[..., ModelVersion], load_calls: list[str]
) -> None:
    active = model_factory(name="a")
    other = model_factory(name="b", activate=False)
    load_calls.clear()  # registration loads each file once to check it
    loaded = inference.active_model()
    assert inference.classifier_for(active) is loaded.classifier
    assert inference.classifier_for(other) is not loaded.classifier
    assert len(load_calls) == 2


def test_a_worker_serves_the_active_model_from_its_frozen_graph_kept_per_version(
    model_factory: Callable[..., ModelVersion], settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    settings.INFERENCE_COMPILE = True
    settings.INFERENCE_COMPILED_DIR = tmp_path / "compiled"
    version = model_factory(seed=3)  # random weights: scores that vary from window to window
    noise = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.3
    network_itself = Classifier.load(tmp_path / "weights" / "w1.pt").classify_waveform(noise, 16000)
    with caplog.at_level(logging.INFO, logger="detection.inference"):
        served = inference.active_model().classifier.classify_waveform(noise, 16000)
    assert len({round(w.score, 6) for w in network_itself.windows}) > 1
    assert [w.score for w in served.windows] == pytest.approx([w.score for w in network_itself.windows], abs=1e-5)
    assert (tmp_path / "compiled" / f"{version.sha256}-torch{torch.__version__}.pt").is_file()
    assert "serves from its frozen graph" in caplog.text


def test_the_worker_parent_keeps_the_active_graph_once(
    model_factory: Callable[..., ModelVersion], settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    settings.INFERENCE_COMPILE = True
    settings.INFERENCE_COMPILED_DIR = tmp_path / "compiled"
    version = model_factory(seed=4)
    inference.compile_active_model()
    kept = inference.compiled_path(version)
    assert kept.is_file()
    written = kept.stat().st_mtime_ns

    def no_tracing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("traced again")

    monkeypatch.setattr(torch.jit, "trace", no_tracing)
    inference.compile_active_model()
    assert kept.stat().st_mtime_ns == written
    # The pool process then loads the kept graph rather than tracing.
    assert inference.active_model().classifier.classify_waveform(np.zeros(16000, np.float32), 16000).windows
