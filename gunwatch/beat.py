"""Celery beat's scheduler, quiet and quick to catch up through a broker outage.

Stock beat logs every scheduled send that fails with two chained tracebacks (the broker's refused
connection and kombu's harmless ``IndexError: pop from empty list`` from its empty channel pool), one
per due task per tick, for as long as the broker is down. The beat process itself survives; the noise
buries everything else. This scheduler logs one line when the broker goes away and one when it is back,
and sends the runs missed in between as soon as a send succeeds again, so the sweeps that pick up work
lost in the outage (``requeue-stuck-clips``, ``requeue-stale-notifications``) do not wait a full interval.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry

from gunwatch.tasks import BROKER_ERRORS

logger = logging.getLogger(__name__)


def is_broker_error(exc: BaseException) -> bool:
    """True when ``exc`` or what it was raised from is a broker connection failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BROKER_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class Scheduler(PersistentScheduler):
    """``PersistentScheduler`` (the schedule file ``--schedule`` names) with outage-aware sending."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.broker_down_since: float | None = None
        self.missed: dict[str, ScheduleEntry] = {}
        super().__init__(*args, **kwargs)

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        logger.debug("Sending due task %s (%s)", entry.name, entry.task)
        if not self._send(entry, producer):
            return
        if self.broker_down_since is not None:
            logger.warning(
                "Broker back after %.0f s; sending the %d scheduled task(s) missed meanwhile",
                time.monotonic() - self.broker_down_since,
                len(self.missed),
            )
            self.broker_down_since = None
        missed, self.missed = self.missed, {}
        for name, missed_entry in missed.items():
            if name != entry.name:
                self._send(missed_entry, producer)

    def _send(self, entry: ScheduleEntry, producer: Any) -> bool:
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:
            if not is_broker_error(exc):
                logger.exception("Could not send scheduled task %s", entry.name)
                return False
            self.missed[str(entry.name)] = entry
            if self.broker_down_since is None:
                self.broker_down_since = time.monotonic()
                logger.warning(
                    "Broker unavailable, scheduled task %s not sent (%s); beat keeps its schedule and sends "
                    "what it missed once the broker is back",
                    entry.name,
                    _first_line(exc),
                )
            return False
        return True


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
