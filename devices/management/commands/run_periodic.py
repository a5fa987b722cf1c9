"""Run the periodic jobs in a loop: Celery beat's stand-in for the embedded (no Redis) mode.

The schedule is beat's own (``CELERY_BEAT_SCHEDULE``, read through ``gunwatch.tasks.periodic_jobs``),
so the two can never disagree about what runs or how often.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand

from gunwatch.tasks import periodic_jobs


class Command(BaseCommand):
    help = "Call every task in CELERY_BEAT_SCHEDULE at its interval, in this process (no broker needed)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Run each job once and exit")

    def handle(self, *args: Any, once: bool, **options: Any) -> None:
        jobs = periodic_jobs()
        next_run = dict.fromkeys((name for name, _, _ in jobs), 0.0)
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopping:
            now = time.monotonic()
            for name, task, interval in jobs:
                if now >= next_run[name]:
                    try:
                        task()
                    except Exception as exc:  # one failing job must not stop the others
                        self.stderr.write(f"{name} failed: {exc!r}")
                    next_run[name] = now + interval
            if once:
                return
            time.sleep(1)
