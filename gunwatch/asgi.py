"""ASGI entry point: HTTP through Django, websockets through Channels.

HTTP goes through Django's WSGI handler on a pool of ``WEB_HTTP_THREADS`` long-lived threads (a2wsgi)
when that setting is above 0 (the default with Redis): each thread keeps its database connection for
``DB_CONN_MAX_AGE`` seconds, where Django's ASGI handler would open one per request on a new thread.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gunwatch.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from a2wsgi import WSGIMiddleware  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from gunwatch import http_server  # noqa: E402
from gunwatch.routing import websocket_urlpatterns  # noqa: E402
from gunwatch.tasks import warm_embedded_runner  # noqa: E402

http_server.install()
# The embedded demo server classifies in-process: load the model now, not on the first clip.
warm_embedded_runner()


def http_application() -> Any:
    if settings.WEB_HTTP_THREADS > 0:
        # Django's handler returns a response object, which is the iterable of bytes WSGI asks for.
        return WSGIMiddleware(get_wsgi_application(), workers=settings.WEB_HTTP_THREADS)  # type: ignore[arg-type]
    return django_asgi_app


application = ProtocolTypeRouter(
    {
        "http": http_application(),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
