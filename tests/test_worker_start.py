"""What a Celery worker does between its start and its first clip (issue 14: first incident ≤ 5 s)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.app.amqp import Queues
from kombu import Queue

REPO = Path(__file__).resolve().parents[1]

# What `celery -A gunwatch worker` runs in its parent before the pool forks, up to the task modules.
WORKER_PARENT = """
import json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "gunwatch.settings"
from gunwatch.celery import app
import django.core.checks
ran = []
django.core.checks.run_checks = lambda *args, **kwargs: ran.append(1) or []
from celery.fixups.django import DjangoWorkerFixup
DjangoWorkerFixup(app).validate_models()
app.loader.import_default_modules()
from django.conf import settings
print(json.dumps({"checks_run": len(ran), "daphne_app": "daphne" in settings.INSTALLED_APPS,
                  "twisted": "twisted" in sys.modules, "tasks": "detection.tasks.classify_clip" in app.tasks}))
"""


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_worker_parent_neither_runs_the_checks_nor_loads_daphne() -> None:
    done = _run([sys.executable, "-c", WORKER_PARENT])
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state == {"checks_run": 0, "daphne_app": False, "twisted": False, "tasks": True}


def test_runserver_is_still_daphnes_asgi_server() -> None:
    # ./gw run serves HTTP and the map's websockets from `manage.py runserver`: daphne's, which has --noasgi.
    done = _run([sys.executable, "manage.py", "runserver", "--help"])
    assert done.returncode == 0, done.stderr
    assert "--noasgi" in done.stdout


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.django_db
def test_the_worker_parent_freezes_its_heap_before_the_pool_forks(unfreeze: None) -> None:
    from detection.tasks import _warm_before_fork

    assert gc.get_freeze_count() == 0
    _warm_before_fork()
    frozen = gc.get_freeze_count()
    # Django, numpy, scipy and librosa are imported by then: hundreds of thousands of objects the
    # collector (Celery's gc.collect() before each fork, the children's collections) no longer walks.
    assert frozen > 50_000
    gc.collect()
    # A collection leaves them frozen; only the few freed since by reference counting leave the count.
    assert gc.get_freeze_count() > frozen * 0.99


class _Worker:
    """What the worker_init signal's sender offers: the app, whose queues -Q selected."""

    def __init__(self, *consumed: str) -> None:
        queues = Queues([Queue("default"), Queue("audio")])
        if consumed:
            queues.select(list(consumed))
        self.app = type("App", (), {"amqp": type("AMQP", (), {"queues": queues})()})()


@pytest.mark.django_db
@pytest.mark.parametrize(("consumed", "warms"), [(("audio",), True), (("default",), False), ((), True)])
def test_only_a_worker_consuming_the_audio_queue_warms_the_model(
    consumed: tuple[str, ...], warms: bool, monkeypatch: pytest.MonkeyPatch, unfreeze: None
) -> None:
    from detection import inference, tasks

    calls: list[str] = []
    for name in ("warm_features", "warm_up"):
        monkeypatch.setattr(inference, name, lambda name=name: calls.append(name))
    monkeypatch.setitem(tasks._worker, "classifies", True)
    tasks._warm_before_fork(sender=_Worker(*consumed))
    tasks._load_model_at_start()  # in each pool process, after the fork
    assert calls == (["warm_features", "warm_up", "warm_up"] if warms else [])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the prefork pool needs fork()")
def test_pool_processes_inherit_the_parents_warm_model_and_classify_without_loading_it(
    positive_model: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, unfreeze: None
) -> None:
    import numpy as np

    from detection import inference, tasks

    settings.INFERENCE_COMPILE = True  # the production path: the frozen graph crosses the fork
    settings.MODEL_ACTIVE_CHECK_TTL_S = 3600  # the child must not need the test's database connection
    tasks._warm_before_fork(sender=_Worker("audio"))
    loaded = inference._state.loaded
    assert loaded is not None and loaded.version_id == positive_model.pk

    def no_second_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a pool process loaded the model again")

    monkeypatch.setattr(inference, "load_version", no_second_load)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the pool process: what Celery's prefork does after worker_init
        code = 1
        try:
            tasks._load_model_at_start()
            model = inference.active_model()
            noise = np.random.default_rng(1).standard_normal(16_000).astype(np.float32) * 0.1
            [verdict] = inference.classify_batch(model.classifier, [inference.BatchItem(noise, 16_000, 0.5)])
            assert not isinstance(verdict, Exception)
            os.write(write_end, json.dumps({"same": model is loaded, "label": verdict.label}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_end, 4096)
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(report) == {"same": True, "label": "gunshot"}
