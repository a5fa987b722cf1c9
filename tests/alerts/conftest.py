from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import Permission
from django.db import connections

from accounts.models import User
from alerts.models import DispatchPolicy, PoliceStation
from tests.factories import UserFactory


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


@pytest.fixture
def reviewed_station(station: PoliceStation) -> PoliceStation:
    """The cast's station under the "evidence" policy: single-device incidents wait for a reviewer."""
    station.jurisdiction_radius_km = 10
    station.contact_email = "desk@mitte.example"
    station.save()
    DispatchPolicy.objects.create(station=station, mode="evidence", strong_evidence=0.9)
    return station


@pytest.fixture
def reviewer(reviewed_station: PoliceStation) -> User:
    """An approved officer of that station whom an administrator gave ``alerts.reviewer``."""
    user = UserFactory(
        username="reviewer", role=User.Role.POLICE, police_approved=True, police_station=reviewed_station
    )
    user.user_permissions.add(Permission.objects.get(codename="reviewer", content_type__app_label="alerts"))
    return User.objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance
