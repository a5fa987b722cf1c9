from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections


@pytest_asyncio.fixture
async def close_thread_connections() -> AsyncIterator[None]:
    """Leave nothing behind that outlives the test's event loop.

    database_sync_to_async runs in a worker thread whose persistent connection (CONN_MAX_AGE)
    would keep PostgreSQL from dropping the test database; and channels-redis keeps re-issuing its
    blocking receive until its connections close, which would stall the loop's shutdown.
    """
    yield
    await sync_to_async(connections.close_all)()
    # Only this loop's connections: the broadcast thread has its own loop and pool (close_pools()
    # would close those too, from the wrong loop). channels-redis keeps one layer per loop.
    loop_layer = getattr(get_channel_layer(), "_layers", {}).get(asyncio.get_running_loop())
    if loop_layer is not None:
        await loop_layer.flush()
