"""The one settings module: Django's settings, derived from the one configuration model.

gaiaorch.config states the precedence (environment > config/orchestrator.yaml > defaults) and
parses the whole document once; docs/CONFIGURATION.md lists every key and environment variable.
"""

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.management.utils import get_random_secret_key

from gaiaorch import config as gaiaorch_config
from gaiaorch.private_files import create_private, restrict

BASE_DIR = Path(__file__).resolve().parent.parent
# The whole configuration document (YAML with the environment laid over it) and its model.
GAIAORCH = gaiaorch_config.read_document(BASE_DIR, os.environ)
model = gaiaorch_config.startup(GAIAORCH)  # lower case: not itself a Django setting

VAR_DIR = Path(model.orchestrator.var_dir or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = model.orchestrator.debug
PORT = model.orchestrator.port
BIND = model.orchestrator.bind


def _secret_key() -> str:
    if model.orchestrator.secret_key:
        return model.orchestrator.secret_key
    # Without a configured key, keep a generated one under var/ so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not create_private(key_file, get_random_secret_key()):
        restrict(key_file)  # made before, perhaps world-readable by an earlier version
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = list(model.orchestrator.allowed_hosts)
CSRF_TRUSTED_ORIGINS = list(model.orchestrator.csrf_trusted_origins)
OPEN_READS = model.orchestrator.open_reads
SECURE_COOKIES = model.orchestrator.secure_cookies
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
X_FRAME_OPTIONS = "DENY"
# The DEBUG error page hides passwords inside DATABASE_URL / REDIS_URL and every *_URL setting.
DEFAULT_EXCEPTION_REPORTER_FILTER = "gaiaorch.debug.CredentialHidingFilter"
SECURE_CONTENT_TYPE_NOSNIFF = True

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "gaiaorch",
    "notifications",
    "leases",
    "containers",
    "handoffs",
    "console",  # the top layer: it may import every app, no app imports it (docs/DEVELOPING.md)
]

MIDDLEWARE = [
    "gaiaorch.middleware.DeferredAnswerMiddleware",  # outermost: completes an answer after its wait
    "django.middleware.security.SecurityMiddleware",
    "gaiaorch.middleware.StaticFilesMiddleware",
    "gaiaorch.middleware.RequestRefusalMiddleware",
    "gaiaorch.middleware.AuditMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "console.urls"
APPEND_SLASH = False  # seed paths have no trailing slash; never redirect a POST

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
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "console.asgi.application"

DATABASE_URL = model.database.url
DATABASES = {
    "default": gaiaorch_config.database_from_url(DATABASE_URL)
    if DATABASE_URL
    else gaiaorch_config.sqlite_database(model.database.sqlite_path or VAR_DIR / "gaiaorch.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = model.redis.url
# A WebSocket's consumer waits for its next message in a blocking pop of up to the layer's
# brpop_timeout (5 s); its socket must wait longer than that, or an idle connection's read times
# out while the pop still waits (redis-py's default socket timeout is 5 s too) and the consumer dies.
CHANNEL_LAYER_SOCKET_TIMEOUT = 15


def channel_layers(redis_url: str | None) -> dict[str, Any]:
    """The Channels layer: on Redis when it is configured, else in this process's memory."""
    if not redis_url:
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    host = {"address": redis_url, "socket_connect_timeout": 2, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT}
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [host], "capacity": 1500, "expiry": 30},
        }
    }


CHANNEL_LAYERS = channel_layers(REDIS_URL)

# The worker runs only long work that moves GPUs (handoffs, container operations) and the tiny
# heartbeat; webhook deliveries run in the ticker.
WORKER_COUNT = model.worker.count
TASK_TIMEOUT = model.worker.task_timeout_seconds


def redis_with_timeouts(url: str) -> str:
    """The Redis URL with socket timeouts, so a hung or unreachable Redis fails a call within
    seconds instead of blocking it (a request, the ticker) until the kernel gives up."""
    parts = urlsplit(url)
    query = {"socket_connect_timeout": "2", "socket_timeout": "5", **dict(parse_qsl(parts.query))}
    return urlunsplit(parts._replace(query=urlencode(query)))


Q_CLUSTER = {
    "name": "gaiaorch",
    "workers": WORKER_COUNT,
    # timeout < retry, so a task is never handed to a second worker while the first still runs it.
    "timeout": TASK_TIMEOUT,
    "retry": TASK_TIMEOUT + 60,
    "max_attempts": 1,
    "catch_up": False,
    # How often an idle ORM broker reads its table; tasks queued on this host wake it at once
    # (gaiaorch.brokers), so the poll only reaches a pusher a wake-up cannot: on SQLite every
    # process shares one host, on PostgreSQL a worker may run on another one.
    "poll": 0.2 if DATABASE_URL else 1.0,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Worker tasks",
    # The pusher holds no more tasks than there are workers: a task taken off the broker by a
    # cluster that then dies waits `retry` seconds before the broker hands it out again.
    "queue_limit": WORKER_COUNT,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = redis_with_timeouts(REDIS_URL)
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "gaiaorch.brokers.WakeableORM"

# The ticker enqueues a tiny task this often; the worker stamps it, so the stamp's age proves that
# the worker consumes tasks. Readiness fails once the stamp is older than the maximum age.
WORKER_HEARTBEAT_INTERVAL_SECONDS = model.worker.heartbeat_interval_seconds
WORKER_HEARTBEAT_MAX_AGE_SECONDS = model.worker.heartbeat_max_age_seconds

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# daphne serves no files itself: WhiteNoise serves the admin's and the API docs' assets straight
# from the installed apps, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True

# Request bodies: the API takes small JSON documents; anything bigger is refused with 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = model.orchestrator.max_body_bytes

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes unauthenticated calls answer 401.
        "gaiaorch.auth.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        # Last, and only where orchestrator.trusted_networks is set: a request with no credential.
        "gaiaorch.auth.TrustedNetworkAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["gaiaorch.rights.ReadOpenWriteAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "gaiaorch.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "gaiaorch.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "gaiaorch",
    "DESCRIPTION": "GPU and container coordinator for the GAIA stack.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs page are reads like any other: closed when GAIAORCH_OPEN_READS is off.
    "SERVE_PERMISSIONS": ["gaiaorch.rights.ReadOpenWriteAuthenticated"],
    # The docs page loads its JavaScript from this server, not from a CDN (boxes may be offline).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # POST /gpu/wait is a plain async view: its hook adds it, documented, to the DRF endpoints.
    "PREPROCESSING_HOOKS": ["leases.api.wait.document_wait"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gaiaorch.schema.document_refusals",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": model.orchestrator.log_level,
    },
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        # httpx logs every request's full URL at INFO; a webhook's path is its secret.
        "httpx": {"level": "WARNING"},
    },
}

SERVICE_NAME = "gaia-orchestrator"
VERSION = "0.1.0"

# Process-level figures read by the apps through django.conf.settings (tests override them
# there); the stack description is read through gaiaorch.config.current().
GPU_BACKEND = model.gpu.backend
GPU_COUNT = model.gpu.count
FAKE_GPU_FILE = str(model.gpu.fake_file or VAR_DIR / "fake-gpu.json")
LEASE_DEFAULT_TTL_SECONDS = model.leases.default_ttl_seconds
LEASE_REAPER_INTERVAL_SECONDS = model.leases.reaper_interval_seconds
DOCKER_URL = model.docker.url
DOCKER_TIMEOUT_SECONDS = model.docker.timeout_seconds
