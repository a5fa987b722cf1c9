"""The one task path: the embedded runner honours retry countdowns; run_periodic runs beat's schedule."""

from __future__ import annotations

import threading
import time
from io import StringIO
from typing import Any
from unittest import mock

import pytest
from celery import shared_task
from django.conf import settings as django_settings
from django.core.management import call_command

from gunwatch import tasks as gunwatch_tasks

attempts: list[tuple[float, int, str]] = []
second_attempt = threading.Event()


@shared_task(bind=True, name="tests.flaky_once", max_retries=3)
def flaky_once(self: Any, key: str) -> str:
    attempts.append((time.monotonic(), self.request.retries, threading.current_thread().name))
    if self.request.retries == 0:
        raise self.retry(countdown=0.3)
    second_attempt.set()
    return key


def test_the_embedded_runner_retries_after_the_countdown(settings: Any, caplog: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.GUNWATCH_EAGER_IN_THREAD = True
    attempts.clear()
    second_attempt.clear()
    future = gunwatch_tasks.enqueue(flaky_once, "x")
    assert future is not None
    assert future.result(timeout=10) is None  # this attempt asked for a retry
    assert second_attempt.wait(10)
    (first_at, first_retries, first_thread), (second_at, second_retries, second_thread) = attempts
    assert (first_retries, second_retries) == (0, 1)
    assert second_at - first_at >= 0.3
    assert first_thread.startswith("gunwatch-eager-default") and second_thread.startswith("gunwatch-eager-default")
    assert "tests.flaky_once" in caplog.text and "asked to retry" in caplog.text


def test_enqueue_on_commit_waits_for_the_commit(
    settings: Any, django_capture_on_commit_callbacks: Any, db: None
) -> None:
    settings.GUNWATCH_EAGER_IN_THREAD = False
    with mock.patch.object(flaky_once, "apply_async") as apply_async:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            gunwatch_tasks.enqueue_on_commit(flaky_once, "y", countdown=5)
        apply_async.assert_not_called()
        callbacks[0]()
    apply_async.assert_called_once_with(args=("y",), kwargs={}, countdown=5)


def test_run_periodic_runs_every_job_of_beats_schedule(db: None) -> None:
    names = [name for name, _, _ in gunwatch_tasks.periodic_jobs()]
    assert names == list(django_settings.CELERY_BEAT_SCHEDULE)
    called: list[str] = []
    patches = [
        mock.patch.object(task, "run", side_effect=lambda *a, name=name, **k: called.append(name))
        for name, task, _ in gunwatch_tasks.periodic_jobs()
    ]
    for patch in patches:
        patch.start()
    try:
        err = StringIO()
        call_command("run_periodic", "--once", stderr=err)
    finally:
        for patch in patches:
            patch.stop()
    assert called == names and err.getvalue() == ""


@pytest.mark.parametrize("schedule", [30, 30.0])
def test_a_numeric_beat_interval_is_seconds(settings: Any, schedule: float) -> None:
    settings.CELERY_BEAT_SCHEDULE = {"job": {"task": "tests.test_task_runner.flaky_once", "schedule": schedule}}
    assert gunwatch_tasks.periodic_jobs() == [("job", flaky_once, 30.0)]
