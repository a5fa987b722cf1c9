"""Hand a Celery task to whatever runs tasks in this configuration.

With a broker, ``task.delay``. Without one (the embedded demo) Celery runs tasks eagerly in the
calling thread, which would make an upload wait for its classification; there
``GUNWATCH_EAGER_IN_THREAD`` sends the eager task to one background thread instead, so requests
still answer at once and tasks run one after another, as a single worker would run them.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Task
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gunwatch-eager")
        return _executor


def _run_eagerly(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # The worker thread keeps its own database connection; drop it when it has gone stale.
    close_old_connections()
    try:
        return task.apply(args=args, kwargs=kwargs, throw=True).get()
    except Exception:
        logger.exception("Background task %s%r failed", task.name, args)
        return None
    finally:
        close_old_connections()


def enqueue(task: Task, *args: Any, **kwargs: Any) -> Future[Any] | None:
    """Run ``task`` asynchronously; never raise (a lost enqueue is logged, and sweeps pick work up).

    Returns the Future in thread mode so callers that care (tests, scripts) can wait for it.
    """
    try:
        if settings.CELERY_TASK_ALWAYS_EAGER and settings.GUNWATCH_EAGER_IN_THREAD:
            return _background().submit(_run_eagerly, task, args, kwargs)
        task.delay(*args, **kwargs)
    except Exception:
        # The caller's transaction has committed; failing the request now would make the device retry
        # an upload we already hold. The row stays queued for the requeue sweep.
        logger.exception("Could not enqueue %s%r", task.name, args)
    return None
