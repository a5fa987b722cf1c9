"""Outages answer clearly: Redis down still accepts uploads, the database down answers 503, beat stays quiet."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import time_machine
from celery.beat import ScheduleEntry, SchedulingError
from celery.schedules import schedule as every
from django.db import DataError, InterfaceError, OperationalError, connection
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from rest_framework.test import APIClient

from detection import tasks as detection_tasks
from detection.models import Clip
from gunwatch.beat import Scheduler, is_broker_error
from gunwatch.cache import ResilientRedisCache
from gunwatch.celery import app as celery_app
from tests.detection.pipeline import encode, sine, upload_fields

CLIPS = "/api/v1/clips"


def closed_port() -> int:
    """A local port nobody listens on (bound, read, released): connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point the Celery app at ``url`` for real sends (not eager), with fresh connection pools."""
    saved = (celery_app.conf.broker_url, celery_app.conf.task_always_eager)

    def reset_pools() -> None:
        # Forget, never close: the pools live in kombu's process-wide registry, keyed by broker URL, and
        # the next test's sends would find the closed one ("Acquire on closed pool").
        celery_app._pool = None  # type: ignore[attr-defined]  # private pools: see above
        celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]

    reset_pools()
    celery_app.conf.broker_url, celery_app.conf.task_always_eager = url, False  # type: ignore[misc]  # conf is writable at run time
    try:
        yield
    finally:
        reset_pools()
        celery_app.conf.broker_url, celery_app.conf.task_always_eager = saved  # type: ignore[misc]


@pytest.fixture
def redis_down(settings: Any) -> Iterator[str]:
    """Redis, as broker and cache, refusing connections: what stopping redis-server does."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.GUNWATCH_EAGER_IN_THREAD = False
    settings.CACHES = {
        "default": {
            "BACKEND": "gunwatch.cache.ResilientRedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    with broker_at(url):
        yield url


# --- Redis (broker and cache) down -----------------------------------------------------------------


@pytest.mark.usefixtures("redis_down", "negative_model")
def test_upload_is_accepted_while_redis_is_down_and_classified_by_the_sweep_later(
    device_client: APIClient, settings, caplog, django_capture_on_commit_callbacks
) -> None:
    caplog.set_level(logging.WARNING)
    with django_capture_on_commit_callbacks(execute=True):
        response = device_client.post(CLIPS, upload_fields(encode(sine())), format="multipart")
    # The throttle's counter could not be read and the classification could not be sent; neither is the
    # device's problem: the clip is stored and waits in the queue.
    assert response.status_code == 202, response.content
    clip = Clip.objects.get()
    assert clip.status == Clip.Status.QUEUED
    assert "Could not enqueue detection.tasks.classify_clip" in caplog.text
    assert "broker unavailable" in caplog.text
    assert "Traceback" not in caplog.text

    # Redis is back (here: the eager runner), and the periodic sweep finds the clip nobody enqueued.
    settings.CELERY_TASK_ALWAYS_EAGER = True
    celery_app.conf.task_always_eager = True
    later = timezone.now() + settings.CLIP_PROCESSING_STALE_AFTER + timedelta(minutes=1)
    with time_machine.travel(later, tick=False):
        assert detection_tasks.requeue_stuck_clips.apply().get() == 1
    clip.refresh_from_db()
    assert clip.status == Clip.Status.DONE
    celery_app.conf.task_always_eager = False


def test_a_refused_broker_fails_the_send_in_about_a_second(redis_down: str) -> None:
    """The upload waits out kombu's publish retries once, not the OS connect timeout."""
    import time

    started = time.monotonic()
    with pytest.raises(KombuOperationalError):
        detection_tasks.classify_clip.delay(1)
    assert time.monotonic() - started < 5


def test_the_cache_reads_as_empty_while_redis_is_down() -> None:
    cache = ResilientRedisCache(f"redis://127.0.0.1:{closed_port()}/0", {"OPTIONS": {"socket_connect_timeout": 1}})
    assert cache.get("throttle_device_1", []) == []
    cache.set("throttle_device_1", [1.0], 60)
    assert cache.add("k", 1) is False
    assert cache.get_many(["a", "b"]) == {}
    assert cache.has_key("k") is False
    assert cache.delete("k") is False


# --- Database down ---------------------------------------------------------------------------------


@contextmanager
def database_down(exc: Exception) -> Iterator[None]:
    """Every new query fails the way a stopped or restarting PostgreSQL makes it fail."""
    with mock.patch.object(connection, "ensure_connection", side_effect=exc):
        yield


def assert_503(response: Any) -> dict[str, Any]:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "10"
    body = response.json()
    assert set(body) == {"message", "code", "extra"}
    assert body["code"] == "database_unavailable"
    assert body["extra"] == {"retry_after_s": 10}
    return body


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
        OperationalError("FATAL:  the database system is starting up"),
        InterfaceError("connection already closed"),
    ],
)
def test_upload_while_the_database_is_down_is_503_with_retry_after(
    device_client: APIClient, exc: Exception, caplog
) -> None:
    caplog.set_level(logging.WARNING)
    fields = upload_fields(encode(sine()))
    with database_down(exc):
        response = device_client.post(CLIPS, fields, format="multipart")
    assert_503(response)
    assert "Database unavailable, answered 503 to /api/v1/clips" in caplog.text
    assert "Traceback" not in caplog.text
    assert Clip.objects.count() == 0


def test_api_reads_and_pages_answer_503_too(owner_client: APIClient, client, owner) -> None:
    client.force_login(owner)
    outage = OperationalError("server closed the connection unexpectedly")
    with database_down(outage):
        assert_503(owner_client.get("/api/v1/incidents"))
        page = client.get("/dashboard/")
    assert page.status_code == 503
    assert page["Retry-After"] == "10"
    assert "Back in a moment" in page.content.decode()


def test_a_database_error_that_is_not_an_outage_stays_a_500(device_client: APIClient) -> None:
    with database_down(DataError("value too long")):
        response = device_client.post(CLIPS, upload_fields(encode(sine())), format="multipart")
    assert response.status_code == 500
    assert response.json()["code"] == "server_error"
    assert "Retry-After" not in response


# --- Beat and workers through a broker outage ------------------------------------------------------


def refused() -> SchedulingError:
    """What beat's apply_async raises with the broker stopped: the refusal, wrapped twice."""
    try:
        try:
            raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        except KombuOperationalError as exc:
            raise SchedulingError("Couldn't apply scheduled task requeue-stuck-clips") from exc
    except SchedulingError as scheduling_error:
        return scheduling_error


def test_broker_errors_are_recognised_through_the_chain() -> None:
    assert is_broker_error(refused())
    assert is_broker_error(ConnectionRefusedError(111, "Connection refused"))
    assert not is_broker_error(SchedulingError("Couldn't apply scheduled task x: unknown task"))


def test_beat_logs_an_outage_in_two_lines_and_sends_what_it_missed(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="gunwatch.beat")
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "beat"), lazy=True)
    sweep = ScheduleEntry(
        name="requeue-stuck-clips",
        task="detection.tasks.requeue_stuck_clips",
        schedule=every(timedelta(minutes=5)),
        app=celery_app,
    )
    offline = ScheduleEntry(
        name="mark-offline-devices",
        task="devices.tasks.mark_offline_devices",
        schedule=every(timedelta(seconds=30)),
        app=celery_app,
    )
    sent: list[str] = []

    def apply_async(entry: ScheduleEntry, **kwargs: Any) -> None:
        if outage:
            raise refused()
        sent.append(entry.name)

    with mock.patch.object(scheduler, "apply_async", side_effect=apply_async):
        outage = True
        for _ in range(5):  # five ticks' worth of due tasks while the broker is down
            scheduler.apply_entry(sweep)
            scheduler.apply_entry(offline)
        outage = False
        scheduler.apply_entry(offline)

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Broker unavailable, scheduled task requeue-stuck-clips not sent")
    assert warnings[1].startswith("Broker back after")
    assert not any(r.exc_info for r in caplog.records)
    # The sweep missed during the outage goes out with the first successful send, not 5 minutes later.
    assert sent == ["mark-offline-devices", "requeue-stuck-clips"]
    scheduler.close()


def test_beat_still_logs_other_failures_in_full(tmp_path, caplog) -> None:
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "beat"), lazy=True)
    entry = ScheduleEntry(name="broken", task="no.such.task", schedule=every(timedelta(minutes=1)), app=celery_app)
    with mock.patch.object(scheduler, "apply_async", side_effect=SchedulingError("unknown task")):
        scheduler.apply_entry(entry)
    assert any(r.exc_info for r in caplog.records if r.getMessage() == "Could not send scheduled task broken")
    scheduler.close()


def test_workers_and_beat_reconnect_for_as_long_as_the_broker_is_down() -> None:
    # Celery's default gives up after 100 reconnection attempts (~50 minutes) and the worker exits.
    assert celery_app.conf.broker_connection_max_retries is None
    assert celery_app.conf.broker_connection_retry_on_startup is True
    assert celery_app.conf.beat_scheduler == "gunwatch.beat:Scheduler"
    assert celery_app.conf.broker_transport_options["socket_connect_timeout"] > 0


# --- A real worker and a real Redis stopped under it ----------------------------------------------


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_a_worker_holding_unacknowledged_tasks_survives_redis_stopping_and_reconnects(tmp_path) -> None:
    """Celery 5.7 / kombu 5.7 workers exited with AttributeError here; gunwatch.worker.Consumer keeps them up."""
    import redis

    port = closed_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: _pings(url), 10, "redis-server to answer")
        return server

    server = start_redis()
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "REDIS_URL": url,
        "GUNWATCH_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "gunwatch.settings",
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }
    env.pop("DATABASE_URL", None)
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "gunwatch",
                "worker",
                "-Q",
                "default",
                "--concurrency",
                "1",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(lambda: b"ready." in log.read_bytes(), 90, "the worker to start")
        client = redis.Redis.from_url(url)
        # A task due in five minutes, as a notification's retry is: the worker takes it and holds it unacked.
        with broker_at(url):
            detection_tasks.purge_expired_audio.apply_async(countdown=300)
        _wait_for(lambda: client.hlen("unacked") == 1, 30, "the worker to hold the task")
        client.close()

        server.terminate()
        server.wait(10)
        _wait_for(lambda: b"Connection to broker lost" in log.read_bytes(), 30, "the worker to notice")
        import time

        time.sleep(3)
        assert worker.poll() is None, log.read_text()[-3000:]

        server = start_redis()
        _wait_for(lambda: log.read_bytes().count(b"Connected to redis://") >= 2, 60, "the worker to reconnect")
        assert worker.poll() is None
        assert b"Unrecoverable error" not in log.read_bytes()
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.terminate()
        server.wait(10)


def _pings(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.exceptions.ConnectionError:
        return False


def test_the_schema_documents_the_503(client) -> None:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    responses = schema["paths"]["/api/v1/clips"]["post"]["responses"]
    assert responses["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
