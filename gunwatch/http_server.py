"""Two fixes to how daphne's HTTP layer (Twisted) meets hostile requests, before Django sees them.

- Twisted parses a POSTed multipart body itself and, when it is malformed, writes a bare
  ``400 Bad Request`` with no body and hangs up. Django parses the body anyway (and answers in the
  API's error shape), so Twisted's own parse is switched off.
- A header line longer than Twisted's limit (16 kB) made it close the connection without a word, and a
  request whose headers add up past that limit got a bare 400 that the client often never read (the
  unread rest of its headers turns the close into a reset). Both now get ``431`` in the error shape,
  and the connection is half-closed so the answer arrives before the client's unsent bytes are
  dropped.

``install()`` runs when ``gunwatch.asgi`` is imported, i.e. in ``daphne gunwatch.asgi:application``
and in ``manage.py runserver`` (daphne's). Behind nginx, nginx refuses oversized headers first (400,
``large_client_header_buffers``).
"""

from __future__ import annotations

import json
from typing import Any

HEADERS_TOO_LARGE_BODY = json.dumps(
    {
        "message": "The request headers are too large.",
        "code": "headers_too_large",
        "extra": {},
    }
).encode()
# After answering, the connection is dropped this many seconds later if the client keeps it open.
DRAIN_TIMEOUT_S = 5


def _refuse_oversized_headers(channel: Any) -> None:
    if getattr(channel, "_gunwatch_refused", False):
        return
    channel._gunwatch_refused = True
    channel.transport.write(
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(HEADERS_TOO_LARGE_BODY) + HEADERS_TOO_LARGE_BODY
    )
    # Swallow the rest of the request: answering it is done, and closing with unread input would
    # send a TCP reset that can destroy the answer before the client reads it.
    channel.dataReceived = lambda data: None
    channel.setTimeout(DRAIN_TIMEOUT_S)
    try:
        channel.transport.loseWriteConnection()
    except AttributeError:  # a transport without half-close
        channel.transport.loseConnection()


def install() -> None:
    try:
        from daphne.http_protocol import WebRequest
        from twisted.web.http import HTTPChannel
    except ImportError:  # not running under daphne
        return
    if getattr(HTTPChannel, "_gunwatch_installed", False):
        return
    original_init = WebRequest.__init__

    def request_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        # Twisted's switch for its own form parsing (Request.__init__'s parsePOSTFormSubmission).
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = request_init
    original_line_received = HTTPChannel.lineReceived

    def line_received(self: Any, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            _refuse_oversized_headers(self)
            return
        original_line_received(self, line)

    def line_length_exceeded(self: Any, line: bytes) -> None:
        _refuse_oversized_headers(self)

    HTTPChannel.lineReceived = line_received
    HTTPChannel.lineLengthExceeded = line_length_exceeded
    HTTPChannel._gunwatch_installed = True
