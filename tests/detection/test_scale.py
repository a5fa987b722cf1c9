"""Start-up for speed: the model is loaded when a server or worker starts, not by the first clip."""

from __future__ import annotations

from typing import Any

import pytest

from detection import inference
from detection.models import ModelVersion
from gunwatch.tasks import warm_embedded_runner


@pytest.mark.django_db(transaction=True)
def test_the_embedded_server_loads_the_active_model_at_start(settings: Any, negative_model: ModelVersion) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.GUNWATCH_EAGER_IN_THREAD = True
    inference.reset()
    future = warm_embedded_runner()
    assert future is not None
    future.result(timeout=120)
    # The audio queue's thread loaded it: the first clip finds it in the cache.
    loaded = inference._state.loaded
    assert loaded is not None and loaded.version_id == negative_model.pk


def test_with_a_broker_the_server_leaves_the_model_to_the_workers(settings: Any, negative_model: ModelVersion) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    inference.reset()
    assert warm_embedded_runner() is None
    assert inference._state.loaded is None
