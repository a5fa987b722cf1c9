"""The Celery worker's consumer, made to survive losing Redis while it holds unacknowledged tasks.

Seen with celery 5.7.0 / kombu 5.7.0 and Redis stopped for 60 s: a worker holding a task it had not
acknowledged yet (a retry waiting out its countdown: a notification's backoff, a clip waiting for a
model) died with ``Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")``. On a lost connection the consumer first collects the connection, which detaches its
transport (``transport.client = None``), then closes it; closing the channel tries to put the
unacknowledged messages back in Redis, and building a Redis client from the detached transport raises
``AttributeError``, which ``ignore_errors`` does not ignore. A worker without the ``AttributeError``
goes on reconnecting as Celery intends. Nothing is lost by skipping that restore: Redis is unreachable
at that moment anyway, the messages stay in its unacked set (restored after the visibility timeout),
and the rows they stand for are picked up by the sweeps (``requeue-stale-notifications``,
``requeue-stuck-clips``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

logger = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            close = connection.close

            def close_detached() -> Any:
                try:
                    return close()
                except AttributeError as error:
                    logger.warning(
                        "Broker connection lost with unacknowledged tasks; they stay in the broker "
                        "for redelivery and the sweeps (%s)",
                        error,
                    )
                    return None

            # ``ignore_errors(connection, connection.close)`` in the base class looks the method up here.
            connection.close = close_detached  # type: ignore[method-assign]
        super().on_connection_error_after_connected(exc)
