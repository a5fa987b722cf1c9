"""The one way work reaches a task runner: ``enqueue`` (now) and ``enqueue_on_commit`` (after the commit).

With a broker, ``delay``/``apply_async``. Without one (the embedded demo, ``CELERY_TASK_ALWAYS_EAGER``)
there is no worker, and Celery's eager mode would make an upload wait for its classification and
cannot wait out a retry's countdown. There ``GUNWATCH_EAGER_IN_THREAD`` hands the task to the
embedded runner below, which both apps share: one background thread per Celery queue (so a slow mail
server never holds up classification on the ``audio`` queue, and tasks of one queue run one after
another as a worker with concurrency 1 would run them), and a task that asks to be retried
(``self.retry(countdown=...)``) is run again on its queue once the countdown has passed.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from celery import Task
from celery.exceptions import Retry
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from kombu.exceptions import OperationalError as KombuOperationalError

logger = logging.getLogger(__name__)

# What a send raises when the broker cannot be reached: kombu wraps the transport's connection errors in
# its OperationalError once the publish retries are spent; a refused or reset socket may surface as OSError.
BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuOperationalError, ConnectionError, TimeoutError, OSError)

_executors: dict[str, ThreadPoolExecutor] = {}
_executor_lock = threading.Lock()


def _queue(task: Task) -> str:
    route = settings.CELERY_TASK_ROUTES.get(task.name, {})
    return str(route.get("queue") or getattr(task, "queue", None) or settings.CELERY_TASK_DEFAULT_QUEUE)


def _background(queue: str = "default") -> ThreadPoolExecutor:
    with _executor_lock:
        if queue not in _executors:
            _executors[queue] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gunwatch-eager-{queue}")
        return _executors[queue]


def _countdown_s(when: Any) -> float:
    if isinstance(when, datetime):
        return max((when - timezone.now()).total_seconds(), 0.0)
    return float(when or 0.0)


def _run_embedded(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], retries: int = 0) -> Any:
    """Run one attempt the way a worker would; a requested retry is scheduled, anything else logged."""
    # The worker thread keeps its own database connection; drop it when it has gone stale.
    close_old_connections()
    # is_eager makes self.retry raise Retry back to us instead of sending to a broker nobody reads;
    # embedded tells tasks that a retry will be honoured here (Celery's own eager mode cannot wait).
    task.push_request(
        id=str(uuid.uuid4()),
        args=list(args),
        kwargs=kwargs,
        retries=retries,
        is_eager=True,
        embedded=True,
        called_directly=False,
        delivery_info={"is_eager": True},
    )
    try:
        return task.run(*args, **kwargs)
    except Retry as retry:
        countdown = _countdown_s(retry.when)
        logger.warning("Background task %s%r asked to retry in %.1f s: %s", task.name, args, countdown, retry.exc)
        _schedule(task, args, kwargs, countdown=countdown, retries=retries + 1)
        return None
    except Exception:
        logger.exception("Background task %s%r failed", task.name, args)
        return None
    finally:
        task.pop_request()
        close_old_connections()


def _schedule(
    task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], *, countdown: float | None, retries: int = 0
) -> Future[Any] | None:
    executor = _background(_queue(task))
    if not countdown:
        return executor.submit(_run_embedded, task, args, kwargs, retries)
    timer = threading.Timer(countdown, lambda: executor.submit(_run_embedded, task, args, kwargs, retries))
    timer.daemon = True  # a pending retry must not keep the process alive at exit
    timer.start()
    return None


def enqueue(task: Task, *args: Any, countdown: float | None = None, **kwargs: Any) -> Future[Any] | None:
    """Run ``task`` asynchronously now; never raise (a lost enqueue is logged, and sweeps pick work up).

    Returns the Future in the embedded thread mode (for a task without countdown) so callers that
    care (tests, scripts) can wait for it.
    """
    try:
        if settings.CELERY_TASK_ALWAYS_EAGER:
            if settings.GUNWATCH_EAGER_IN_THREAD:
                return _schedule(task, args, kwargs, countdown=countdown)
            if not task.app.conf.task_always_eager:
                # The setting was switched on after Celery read its configuration (a test, a script):
                # there is no worker behind the broker, so apply the task here.
                task.apply(args=args, kwargs=kwargs)
                return None
        if countdown is None:
            task.delay(*args, **kwargs)
        else:
            task.apply_async(args=args, kwargs=kwargs, countdown=countdown)
    except BROKER_ERRORS as exc:
        # The caller's transaction has committed; failing the request now would make the device retry
        # an upload we already hold. The row stays queued for the requeue sweep. One line, no traceback:
        # a broker outage produces one of these per request and the cause is not in our code.
        logger.warning(
            "Could not enqueue %s%r (broker unavailable: %s); its sweep sends it later", task.name, args, exc
        )
    except Exception:
        logger.exception("Could not enqueue %s%r", task.name, args)
    return None


def enqueue_on_commit(task: Task, *args: Any, countdown: float | None = None, **kwargs: Any) -> None:
    """``enqueue`` once the current transaction commits (at once outside one): a worker must find the row.

    What services call. ``enqueue`` itself stays immediate for callers already past their commit
    (sweeps, on-commit callbacks) and for tests that wait on its Future.
    """
    options: dict[str, Any] = {} if countdown is None else {"countdown": countdown}
    transaction.on_commit(lambda: enqueue(task, *args, **options, **kwargs))


def warm_embedded_runner() -> Future[Any] | None:
    """In the embedded mode (``./gw run`` without Redis), load and warm the model at server start.

    The audio queue's thread does it, before any clip: the first upload then waits for whatever is left
    of the load instead of paying all of it (16.6 s to the first incident in the demo, measured).
    Workers do the same in ``worker_process_init``; with a broker there is nothing to do here.
    """
    if not (settings.CELERY_TASK_ALWAYS_EAGER and settings.GUNWATCH_EAGER_IN_THREAD):
        return None

    def warm() -> None:
        from detection import inference

        try:
            inference.warm_features()
            inference.warm_up()
        except Exception:
            logger.exception("Warming the model at start failed; the first clip loads it")
        finally:
            close_old_connections()

    return _background("audio").submit(warm)


def periodic_jobs() -> list[tuple[str, Task, float]]:
    """Beat's schedule as (name, task, interval in seconds): what ``manage.py run_periodic`` runs."""
    jobs: list[tuple[str, Task, float]] = []
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        schedule = entry["schedule"]
        seconds = schedule.total_seconds() if hasattr(schedule, "total_seconds") else float(schedule)
        jobs.append((name, import_string(entry["task"]), seconds))
    return jobs
