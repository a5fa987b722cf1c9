"""GunWatch settings.

Everything is read from environment variables through the small typed helpers below. With no
environment at all the platform runs on embedded defaults (SQLite, in-memory channel layer,
local-memory cache, Celery tasks executed in-process), which is what a newcomer's laptop and the
service-less test run have. ``DATABASE_URL`` and ``REDIS_URL`` switch to the real services.
``.env.example`` lists every variable. (Long because every setting carries the reason for its default.)
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    # A typo such as DEBUG=Flase must not silently enable or disable something.
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_secret(name: str, default: str = "") -> str:
    """Read NAME, or the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE points to {file_name!r}, which cannot be read") from exc
    return os.environ.get(name, default)


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off")
    # Development only: a fixed key keeps sessions valid across restarts of the demo.
    SECRET_KEY = "gunwatch-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
# Links in emails and SMS; by default the address ``./gw run`` serves on (HOST/PORT). A wildcard
# bind address is no place to send a person, so it becomes localhost in the link.
_LINK_HOST = env_str("HOST", "127.0.0.1")
_LINK_HOST = "127.0.0.1" if _LINK_HOST in ("0.0.0.0", "::", "[::]", "") else _LINK_HOST
SITE_URL = env_str("SITE_URL", f"http://{_LINK_HOST}:{env_str('PORT', '8000')}").rstrip("/")

# daphne's app only replaces `runserver` with its ASGI server (./gw run); elsewhere it would import
# Twisted into every process, ~0.25 s of a Celery worker's start (production serves with gunicorn).
INSTALLED_APPS = (["daphne"] if "runserver" in sys.argv[1:2] else []) + [
    "gunwatch.apps.GunWatchAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "leaflet",
    "channels",
    "accounts",
    "devices",
    "detection",
    "alerts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees a view's exception first: a database outage answers 503 + Retry-After, not 500.
    "gunwatch.outages.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "gunwatch.urls"
WSGI_APPLICATION = "gunwatch.wsgi.application"
ASGI_APPLICATION = "gunwatch.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["gunwatch.timefmt"],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATA_DIR = Path(env_str("GUNWATCH_VAR_DIR", str(BASE_DIR / "var")))
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    # 0 by default: under an ASGI server every request runs on a fresh thread, so kept-alive
    # connections pile up until PostgreSQL refuses clients. Raise it for WSGI servers and workers
    # (./gw serve gives its Celery workers 300: a prefork child is one thread, and a new PostgreSQL
    # connection per task cost the worker and the database more than the task's own queries).
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
            # A kept connection is checked once per request or task, so a PostgreSQL restart costs no
            # failed request; gunwatch.postgresql makes that check a read of the socket, not a SELECT 1.
            conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", True),
        )
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "gunwatch.postgresql"
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "gunwatch.sqlite3"),
            # The in-process worker thread, request threads and the fleet simulator write
            # concurrently in the embedded mode. WAL lets readers run beside a writer; IMMEDIATE
            # transactions take the write lock up front, so a writer waits out the busy timeout
            # instead of failing at once with "database is locked" when it upgrades a read lock.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not the default shared-cache memory database: live-server tests run the
            # server, agents and workers on several threads, and shared-cache SQLite locks whole
            # tables ("database table is locked") where a file database just waits its turn. One
            # file per process, so two test runs side by side never share one.
            "TEST": {"NAME": str(Path(tempfile.gettempdir()) / f"gunwatch-test-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Redis: cache, Celery, Channels ---------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    # Throttle counters and geocoding results may be lost: with Redis down the cache reads as empty and
    # requests go on (gunwatch.cache) instead of failing with 500. Short timeouts keep a hung Redis from
    # holding requests; one shared pool per process (gunwatch.redis_pool) spares a connection per request.
    CACHES = {
        "default": {
            "BACKEND": "gunwatch.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "pool_class": "gunwatch.redis_pool.SharedConnectionPool",
                "socket_connect_timeout": 1,
                "socket_timeout": 2,
            },
        }
    }
    # redis-py 8 reads with a 5 s socket timeout by default, the same length as channels-redis's
    # blocking receive, so idle websockets died with 1011 every 5 s; give the read more room.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}]},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# HTTP on a pool of kept threads (gunwatch.asgi): Django's ASGI handler runs every request on a new
# thread, so each one opened a new database connection (a quarter of a heartbeat's CPU, measured). 0
# keeps Django's handler, as the in-memory channel layer needs: its queues live on the server's event
# loop, which only Django's handler lets a view publish on.
WEB_HTTP_THREADS = env_int("WEB_HTTP_THREADS", 8 if REDIS_URL else 0)

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "memory://")
# Outcomes live on the rows (clip status, notification status), so no task result is ever read;
# storing them would cost a Redis round trip per task for nothing.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
# Without a broker there is no worker to hand work to, so tasks run in the calling process.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
# In the embedded mode eager tasks are handed to a background thread so that an upload still
# answers 202 at once; the test settings (gunwatch/settings_test.py) switch this off to observe
# results deterministically.
GUNWATCH_EAGER_IN_THREAD = env_bool("GUNWATCH_EAGER_IN_THREAD", True)
CELERY_TASK_ACKS_LATE = True
# Surviving a broker outage. Workers and beat reconnect for as long as it takes (the default gives up,
# and the worker exits, after 100 tries); uploads and other senders give up after about a second (the
# enqueue is logged and the row waits for its sweep). Timeouts make a hung Redis fail like a stopped one.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# Survives losing Redis while it holds unacknowledged tasks (gunwatch/worker.py says how it died before).
CELERY_WORKER_CONSUMER = "gunwatch.worker:Consumer"
# A task running when the connection drops finishes and writes its result to the database; its message is
# delivered again later and the claim makes that copy a no-op (cancelling it would only redo the work).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
    "socket_keepalive": True,
    # Notice a dead connection between polls instead of on the next command.
    "health_check_interval": 25,
}
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# librosa/numba grow memory slowly; recycling children keeps a long-running worker flat.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 2000)
# A pool child loads and warms the model in worker_process_init before it reports up; Celery kills a
# child silent for longer than this (default 4 s), and the shipped model can take longer on a busy host.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env_float("CELERY_WORKER_PROC_ALIVE_TIMEOUT", 60.0)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"detection.tasks.classify_clip": {"queue": "audio"}}
CELERY_TIMEZONE = "UTC"
# Beat's file-backed scheduler, logging a broker outage in two lines instead of a traceback per due task.
CELERY_BEAT_SCHEDULER = "gunwatch.beat:Scheduler"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "mark-offline-devices": {"task": "devices.tasks.mark_offline_devices", "schedule": timedelta(seconds=30)},
    "purge-expired-audio": {"task": "detection.tasks.purge_expired_audio", "schedule": timedelta(hours=1)},
    "requeue-stale-notifications": {
        "task": "alerts.tasks.requeue_stale_notifications",
        "schedule": timedelta(minutes=1),
    },
    # With CLIP_CLAIM_LEASE_S a killed worker's clips are back in work within lease + interval (~1 min).
    "requeue-stuck-clips": {
        "task": "detection.tasks.requeue_stuck_clips",
        "schedule": timedelta(seconds=env_int("CLIP_REQUEUE_EVERY_S", 15)),
    },
    # The incident outbox: positive verdicts whose incident step a dead worker never finished.
    "record-pending-incidents": {"task": "detection.tasks.record_pending_incidents", "schedule": timedelta(seconds=15)},
    # Backs up the per-incident countdown: an incident past its review deadline is dispatched unreviewed.
    "escalate-overdue-reviews": {"task": "alerts.tasks.escalate_overdue_reviews", "schedule": timedelta(seconds=10)},
    "calibrate-devices": {"task": "alerts.tasks.calibrate_devices", "schedule": timedelta(hours=1)},
}

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Email ----------------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# With the file backend (what ./gw run uses) each email is a file here, not a screenful of console.
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(DATA_DIR / "mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "GunWatch <alerts@gunwatch.local>")

# --- I18N, static, media --------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
DATA_UPLOAD_MAX_MEMORY_SIZE = 12 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 12 * 1024 * 1024

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Last, so that a device token reaching a user endpoint is recognised and refused with a
        # clear 403 instead of looking anonymous.
        "devices.auth.DeviceTokenAuthentication",
    ],
    # People only by default: a device must be let in explicitly (devices.auth.IsDevice).
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.IsPerson"],
    "DEFAULT_PAGINATION_CLASS": "gunwatch.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # gunwatch.api.exception_handler (the one error shape), behind the database-outage answer (503).
    "EXCEPTION_HANDLER": "gunwatch.outages.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "device": env_str("THROTTLE_DEVICE", "600/min"),
        "pairing": env_str("THROTTLE_PAIRING", "30/min"),
        "predict": env_str("THROTTLE_PREDICT", "60/min"),
        "login": env_str("THROTTLE_LOGIN", "30/min"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "GunWatch API",
    "DESCRIPTION": "Open acoustic gunshot detection: devices, clips, detections, incidents.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from our own static files (drf-spectacular-sidecar), not a CDN: docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "status"; name each enum after its model instead of a hash.
    "ENUM_NAME_OVERRIDES": {
        "DeviceStatusEnum": "devices.models.Device.Status",
        "ClipStatusEnum": "detection.models.Clip.Status",
        "IncidentStatusEnum": "alerts.models.Incident.Status",
        "NotificationStatusEnum": "alerts.models.Notification.Status",
    },
}

# --- Detection ------------------------------------------------------------------------------
CLIP_MAX_BYTES = env_int("CLIP_MAX_BYTES", 10 * 1024 * 1024)
CLIP_MAX_SECONDS = env_float("CLIP_MAX_SECONDS", 30.0)
CLIP_MIN_SECONDS = env_float("CLIP_MIN_SECONDS", 0.1)
# Checked from the header before decoding: outside these the detector learns nothing, and the decoded size grows.
CLIP_MIN_SAMPLE_RATE = env_int("CLIP_MIN_SAMPLE_RATE", 8_000)
CLIP_MAX_SAMPLE_RATE = env_int("CLIP_MAX_SAMPLE_RATE", 192_000)
CLIP_MAX_CHANNELS = env_int("CLIP_MAX_CHANNELS", 2)
# A device clock this far ahead of ours is wrong, and its timestamps would mislead localisation.
CLIP_MAX_CLOCK_SKEW = timedelta(seconds=env_int("CLIP_MAX_CLOCK_SKEW_S", 300))
# Older than this is a wrong clock, not a queue: a device offline for a week still gets through, a clock
# that never got set (1970) does not open an incident in the past.
CLIP_MAX_AGE = timedelta(hours=env_int("CLIP_MAX_AGE_H", 7 * 24))
# A claim is a lease: a worker renews it every third of this while it classifies, so a clip still
# 'processing' with an older claim lost its worker and another task may take it over.
CLIP_PROCESSING_STALE_AFTER = timedelta(seconds=env_int("CLIP_CLAIM_LEASE_S", 45))
# A worker claims up to this many queued clips at once and classifies them in one forward pass;
# it waits at most CLIP_BATCH_WAIT_MS for more to arrive when it has fewer (0: take what is there).
CLIP_BATCH_SIZE = env_int("CLIP_BATCH_SIZE", 16)
CLIP_BATCH_WAIT_MS = env_int("CLIP_BATCH_WAIT_MS", 0)
# A positive verdict whose incident step is still pending after this long is finished by the sweep.
INCIDENT_OUTBOX_GRACE_S = env_int("INCIDENT_OUTBOX_GRACE_S", 10)
CLIP_MAX_ATTEMPTS = env_int("CLIP_MAX_ATTEMPTS", 3)
# Gunshot audio is kept as evidence this long; all other audio is deleted once classified.
EVIDENCE_RETENTION_DAYS = env_int("EVIDENCE_RETENTION_DAYS", 90)
# How long a worker trusts its idea of the active model before asking the database again.
MODEL_ACTIVE_CHECK_TTL_S = env_float("MODEL_ACTIVE_CHECK_TTL_S", 2.0)
# Torch threads per process: Celery runs several processes, and oversubscribing cores only slows them.
INFERENCE_TORCH_THREADS = env_int("INFERENCE_TORCH_THREADS", 1)
# Serve each model from a frozen TorchScript graph (core.classifier.Classifier.compile_for_serving), kept
# per weights file and torch version in this folder so a restarted worker loads it instead of tracing.
INFERENCE_COMPILE = env_bool("INFERENCE_COMPILE", True)
INFERENCE_COMPILED_DIR = Path(env_str("INFERENCE_COMPILED_DIR") or str(DATA_DIR / "compiled"))

# --- Map ------------------------------------------------------------------------------------
MAP_TILE_URL = env_str("MAP_TILE_URL", "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png")
MAP_ATTRIBUTION = env_str("MAP_ATTRIBUTION", "&copy; OpenStreetMap contributors")
# Reverse geocoding for the police map (a Nominatim-compatible /reverse endpoint, e.g. a local
# Nominatim at http://nominatim.local/reverse). Empty: the map shows coordinates.
GEOCODER_URL = env_str("GEOCODER_URL")
GEOCODER_TIMEOUT_S = env_float("GEOCODER_TIMEOUT_S", 3.0)
LEAFLET_CONFIG = {
    "DEFAULT_CENTER": (env_float("MAP_CENTER_LAT", 52.52), env_float("MAP_CENTER_LON", 13.405)),
    "DEFAULT_ZOOM": env_int("MAP_ZOOM", 12),
    "TILES": [("OpenStreetMap", MAP_TILE_URL, {"attribution": MAP_ATTRIBUTION, "maxZoom": 19})],
    "RESET_VIEW": False,
}

# --- Devices --------------------------------------------------------------------------------
DEVICE_PAIRING_CODE_TTL = timedelta(minutes=env_int("DEVICE_PAIRING_CODE_TTL_MIN", 15))
DEVICE_DEFAULT_HEARTBEAT_S = env_int("DEVICE_DEFAULT_HEARTBEAT_S", 60)
# A device is offline after this many missed heartbeat intervals.
DEVICE_MISSED_HEARTBEATS = env_int("DEVICE_MISSED_HEARTBEATS", 3)

# --- Incidents and alerts -------------------------------------------------------------------
# How far a device hears a gunshot; sets join distances and single-device uncertainty radii.
ALERT_HEARING_RANGE_M = env_float("ALERT_HEARING_RANGE_M", 1500.0)
# Clock error allowed between two devices hearing the same shot, on top of sound's travel time.
ALERT_JOIN_SLACK_S = env_float("ALERT_JOIN_SLACK_S", 1.0)
# Detections this soon after an incident's latest one, in earshot of it, join it as follow-ups (one
# shooting's volleys); later ones open a new incident and notify again, because renewed gunfire a
# minute on, or a second shooting nearby, is news police need. Shots seconds apart stay one event.
ALERT_QUIET_WINDOW_S = env_int("ALERT_QUIET_WINDOW_S", 60)
# GPS accuracy assumed when neither the clip nor the device reports one.
ALERT_DEFAULT_ACCURACY_M = env_float("ALERT_DEFAULT_ACCURACY_M", 25.0)
# Clock sources trusted to millisecond precision, the precondition for TDOA.
ALERT_TDOA_CLOCK_SOURCES = env_list("ALERT_TDOA_CLOCK_SOURCES", "gps,ntp")
ALERT_NEAREST_STATIONS = env_int("ALERT_NEAREST_STATIONS", 2)
ALERT_NOTIFY_MAX_RETRIES = env_int("ALERT_NOTIFY_MAX_RETRIES", 6)
ALERT_NOTIFY_BACKOFF_S = env_int("ALERT_NOTIFY_BACKOFF_S", 5)
# Police alerts outlast a dispatch system's outage: retried (backoff capped at the second value) for
# this many hours after they were raised, then failed. Their last error is on the station's outage row.
ALERT_NOTIFY_POLICE_RETRY_HOURS = env_float("ALERT_NOTIFY_POLICE_RETRY_HOURS", 6.0)
ALERT_NOTIFY_POLICE_BACKOFF_MAX_S = env_int("ALERT_NOTIFY_POLICE_BACKOFF_MAX_S", 60)
# A receiver's Retry-After is honoured up to this many seconds (a typo of a day must not park an alert).
ALERT_NOTIFY_RETRY_AFTER_MAX_S = env_int("ALERT_NOTIFY_RETRY_AFTER_MAX_S", 600)
# Failed attempts to one station's channel before the administrators are emailed (once per outage).
ALERT_OUTAGE_ADMIN_AFTER_FAILURES = env_int("ALERT_OUTAGE_ADMIN_AFTER_FAILURES", 3)
# What a request answers while the database is down: 503 with this Retry-After (seconds).
DATABASE_UNAVAILABLE_RETRY_AFTER_S = env_int("DATABASE_UNAVAILABLE_RETRY_AFTER_S", 10)
# Contacts and owners get the location rounded to this many decimals (2 is about 1 km).
ALERT_COARSE_DECIMALS = env_int("ALERT_COARSE_DECIMALS", 2)
ALERT_WEBHOOK_TIMEOUT_S = env_float("ALERT_WEBHOOK_TIMEOUT_S", 5.0)
# How far back the police map loads incidents when it opens.
ALERT_MAP_HOURS = env_int("ALERT_MAP_HOURS", 24)
# --- Trust: evidence, dispatch policy, review, calibration (README "Alerts police can trust") ---
# Stations without a DispatchPolicy: "immediate" (every incident at once), "evidence" or "review_all".
ALERT_DISPATCH_DEFAULT_MODE = env_str("ALERT_DISPATCH_DEFAULT_MODE", "immediate")
ALERT_STRONG_EVIDENCE = env_float("ALERT_STRONG_EVIDENCE", 0.9)
# Seconds a reviewer has before an incident is dispatched marked "unreviewed".
ALERT_REVIEW_DEADLINE_S = env_int("ALERT_REVIEW_DEADLINE_S", 45)
# Devices closer than this to each other count as one witness (two units in one flat hear the same thing).
ALERT_INDEPENDENT_M = env_float("ALERT_INDEPENDENT_M", 30.0)
# TDOA residual at which "positions agree" halves the evidence.
ALERT_RESIDUAL_SCALE_M = env_float("ALERT_RESIDUAL_SCALE_M", 50.0)
ALERT_FALSE_ALARM_BUDGET_PER_DAY = env_float("ALERT_FALSE_ALARM_BUDGET_PER_DAY", 1.0)
ALERT_CALIBRATION_DAYS = env_int("ALERT_CALIBRATION_DAYS", 14)
# A calibrated threshold never goes above this, so a noisy device is never silently muted.
ALERT_THRESHOLD_MAX = env_float("ALERT_THRESHOLD_MAX", 0.97)
# A threshold move of at least this share of the adjustable range (model threshold to ALERT_THRESHOLD_MAX)
# is flagged to the owner and the administrators.
ALERT_THRESHOLD_FLAG_SHIFT = env_float("ALERT_THRESHOLD_FLAG_SHIFT", 0.5)
POLICE_SEE_ALL_INCIDENTS = env_bool("POLICE_SEE_ALL_INCIDENTS", False)
SMS_BACKEND = env_str("SMS_BACKEND", "alerts.transports.ConsoleSmsBackend")
SMS_GATEWAY_URL = env_str("SMS_GATEWAY_URL")
SMS_GATEWAY_USER = env_str("SMS_GATEWAY_USER")
SMS_GATEWAY_PASSWORD = env_secret("SMS_GATEWAY_PASSWORD")
SMS_SENDER = env_str("SMS_SENDER", "GunWatch")
if SMS_BACKEND.endswith("HttpSmsBackend") and not SMS_GATEWAY_URL:
    raise ImproperlyConfigured("SMS_BACKEND is the HTTP gateway but SMS_GATEWAY_URL is empty")

LOGGING: dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        # Django's default config gives "django" a console handler of its own, and it also propagates
        # to root's: every request line was printed twice. Root's handler alone prints it once.
        "django": {"level": env_str("LOG_LEVEL", "INFO"), "propagate": True},
        # One "Task ... succeeded" line per uploaded clip says nothing a newcomer needs.
        "celery.app.trace": {"level": "WARNING"},
    },
}
# ACCESS_LOG=path sends the web server's one-line-per-request log to a file instead of the console.
ACCESS_LOG = env_str("ACCESS_LOG")
if ACCESS_LOG:
    LOGGING["handlers"]["access"] = {"class": "logging.FileHandler", "filename": ACCESS_LOG, "formatter": "plain"}
    LOGGING["loggers"]["django.channels.server"] = {"handlers": ["access"], "level": "INFO", "propagate": False}

# --- Hostile input, proxies and TLS ---------------------------------------------------------
# JSON nested deep enough to exhaust the stack answers 400 instead of 500.
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = [
    "gunwatch.parsers.SafeJSONParser",
    "rest_framework.parsers.FormParser",
    "rest_framework.parsers.MultiPartParser",
]
# Every operation's schema lists the error answers it can give (401, 403, 429, ...).
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "gunwatch.schema.AutoSchema"
# Proxies in front of the app that append to X-Forwarded-For. 0 (the default) ignores the header: a
# client could otherwise pick a new address per request and never meet the per-address throttles.
REST_FRAMEWORK["NUM_PROXIES"] = env_int("NUM_PROXIES", 0)
# Budgets that do not depend on the address: per account for logins, per code for pairing.
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].update(
    {
        "login_account": env_str("THROTTLE_LOGIN_ACCOUNT", "10/min"),
        "pairing_code": env_str("THROTTLE_PAIRING_CODE", "10/min"),
    }
)
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    # Production runs behind a TLS-terminating proxy that sets X-Forwarded-Proto (and must overwrite
    # a client's own); plain-HTTP requests are redirected and browsers told to stay on HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # The load balancer's health probe often speaks plain HTTP on the private side.
    SECURE_REDIRECT_EXEMPT = [r"^health$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a commitment only the domain's owner can make (it is hard to undo), so it is
        # opt-in, and check --deploy's reminder about it (W021) is silenced until then.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
