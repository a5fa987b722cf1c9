"""Django's PostgreSQL backend, whose kept-connection health check reads the socket instead of querying.

With ``CONN_HEALTH_CHECKS`` Django runs ``SELECT 1`` before the first query of every request and task
on a kept connection: a whole extra round trip to PostgreSQL on a heartbeat whose real work is one
UPDATE (a seventh of its time in the web process, issue 14). A connection PostgreSQL has ended (a
restart, ``pg_terminate_backend``, an idle timeout) has its end waiting on the socket already: the
server's FATAL message and EOF. psycopg2's ``poll()`` reads whatever is pending without blocking, so
it finds that end with no query; a connection that died without a word (a network partition) still
fails its next query, which ``gunwatch.outages`` answers with a 503 and closes.
"""

from __future__ import annotations

import select

import psycopg2
from django.db.backends.postgresql import base


def _readable(fd: int) -> bool:
    poller = select.poll()  # not select.select: a worker's descriptors may pass 1024
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None:
            return False
        poll = getattr(connection, "poll", None)
        if poll is None or getattr(connection, "async_", False):  # psycopg 3, or an async connection: ask
            return super().is_usable()
        try:
            # Ended by the server, the socket holds its FATAL message, then EOF: the first poll reads the
            # message (psycopg2 keeps it as a notice), the second meets the EOF and raises.
            for _ in range(2):
                if not _readable(connection.fileno()):
                    break
                poll()
        except psycopg2.Error:
            return False
        return not connection.closed
