"""Run the periodic jobs in a loop: Celery beat's stand-in for the embedded (no Redis) mode."""

from __future__ import annotations

import signal
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string


class Command(BaseCommand):
    help = "Call every task in CELERY_BEAT_SCHEDULE at its interval, in this process (no broker needed)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="Run each job once and exit")

    def handle(self, *args: Any, once: bool, **options: Any) -> None:
        jobs = [
            (name, import_string(entry["task"]), entry["schedule"].total_seconds())
            for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
        ]
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
