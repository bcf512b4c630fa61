"""The one settings module. Precedence: environment > config/orchestrator.yaml > defaults.

docs/CONFIGURATION.md lists every key and environment variable.
"""

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.management.utils import get_random_secret_key

from gaiaorch.config import (
    choice_parser,
    database_from_url,
    int_parser,
    parse_bool,
    parse_list,
    parse_secret,
    source_from_environment,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
CONFIG = source_from_environment(BASE_DIR)

VAR_DIR = Path(CONFIG.get("GAIAORCH_VAR_DIR", "orchestrator.var_dir", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = CONFIG.get("GAIAORCH_DEBUG", "orchestrator.debug", False, parse_bool)
PORT = CONFIG.get("GAIAORCH_PORT", "orchestrator.port", 6410, int_parser(1, 65535))
BIND = CONFIG.get("GAIAORCH_BIND", "orchestrator.bind", "127.0.0.1")


def _secret_key() -> str:
    configured = CONFIG.get("GAIAORCH_SECRET_KEY", "orchestrator.secret_key", None, parse_secret)
    if configured:
        return configured
    # Without a configured key, keep a generated one under var/ so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(get_random_secret_key())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = CONFIG.get(
    "GAIAORCH_ALLOWED_HOSTS", "orchestrator.allowed_hosts", ["127.0.0.1", "localhost", "[::1]"], parse_list
)
CSRF_TRUSTED_ORIGINS = CONFIG.get(
    "GAIAORCH_CSRF_TRUSTED_ORIGINS", "orchestrator.csrf_trusted_origins", [], parse_list
)
OPEN_READS = CONFIG.get("GAIAORCH_OPEN_READS", "orchestrator.open_reads", True, parse_bool)
SECURE_COOKIES = CONFIG.get("GAIAORCH_SECURE_COOKIES", "orchestrator.secure_cookies", False, parse_bool)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
X_FRAME_OPTIONS = "DENY"
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
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "gaiaorch",
    "notifications",
    "leases",
    "containers",
    "handoffs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "gaiaorch.middleware.StaticFilesMiddleware",
    "gaiaorch.middleware.RequestBodyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gaiaorch.urls"
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
ASGI_APPLICATION = "gaiaorch.asgi.application"

DATABASE_URL = CONFIG.get("DATABASE_URL", "database.url", None)
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else sqlite_database(
        Path(CONFIG.get("GAIAORCH_SQLITE_PATH", "database.sqlite_path", str(VAR_DIR / "gaiaorch.sqlite3")))
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = CONFIG.get("REDIS_URL", "redis.url", None)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1500, "expiry": 30},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The worker runs only long work that moves GPUs (handoffs, container operations) and the tiny
# heartbeat; webhook deliveries run in the ticker. Three workers: a handoff, the container
# operation it follows, and one left for the heartbeat and the next job.
WORKER_COUNT = CONFIG.get("GAIAORCH_WORKERS", "worker.count", 3, int_parser(1, 64))
TASK_TIMEOUT = CONFIG.get("GAIAORCH_TASK_TIMEOUT", "worker.task_timeout_seconds", 900, int_parser(10))


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
    "poll": 0.2,
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

# Webhook attempts the ticker makes at once; one webhook never takes the last of them.
WEBHOOK_DELIVERY_CONCURRENCY = CONFIG.get(
    "GAIAORCH_WEBHOOK_CONCURRENCY", "notifications.delivery_concurrency", 4, int_parser(2, 64)
)

# The ticker enqueues a tiny task this often; the worker stamps it, so the stamp's age proves that
# the worker consumes tasks. Readiness fails once the stamp is older than the maximum age.
WORKER_HEARTBEAT_INTERVAL_SECONDS = CONFIG.get(
    "GAIAORCH_WORKER_HEARTBEAT_INTERVAL", "worker.heartbeat_interval_seconds", 5, int_parser(1, 300)
)
WORKER_HEARTBEAT_MAX_AGE_SECONDS = CONFIG.get(
    "GAIAORCH_WORKER_HEARTBEAT_MAX_AGE", "worker.heartbeat_max_age_seconds", 30, int_parser(2, 3600)
)

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
DATA_UPLOAD_MAX_MEMORY_SIZE = CONFIG.get(
    "GAIAORCH_MAX_BODY_BYTES", "orchestrator.max_body_bytes", 256 * 1024, int_parser(1024)
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes unauthenticated calls answer 401.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["gaiaorch.auth.ReadOpenWriteAuthenticated"],
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
    # The docs page loads its JavaScript from this server, not from a CDN (boxes may be offline).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
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
        "level": CONFIG.get("GAIAORCH_LOG_LEVEL", "orchestrator.log_level", "INFO"),
    },
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

SERVICE_NAME = "gaia-orchestrator"
VERSION = "0.1.0"

# The GAIA stack description (services, stacks, gpu, handoffs) as read from the YAML file;
# each app parses its own section of it.
GAIAORCH = CONFIG.yaml_data
GPU_BACKEND = CONFIG.get("GAIAORCH_GPU_BACKEND", "gpu.backend", "none", choice_parser("nvml", "fake", "none"))
GPU_COUNT = CONFIG.get("GAIAORCH_GPU_COUNT", "gpu.count", 1, int_parser(0, 64))
FAKE_GPU_FILE = CONFIG.get("GAIAORCH_FAKE_GPU_FILE", "gpu.fake_file", str(VAR_DIR / "fake-gpu.json"))

# GPU leases: a lease without ttl_seconds gets this TTL (None: lives until released).
LEASE_DEFAULT_TTL_SECONDS = CONFIG.get(
    "GAIAORCH_LEASE_DEFAULT_TTL", "leases.default_ttl_seconds", None, int_parser(1, 7 * 24 * 3600)
)
LEASE_REAPER_INTERVAL_SECONDS = CONFIG.get(
    "GAIAORCH_LEASE_REAPER_INTERVAL", "leases.reaper_interval_seconds", 1, int_parser(1, 60)
)

# The Docker Engine the containers app drives (unix:///…, tcp://127.0.0.1:2375, …).
DOCKER_URL = CONFIG.get("GAIAORCH_DOCKER_URL", "docker.url", "unix:///var/run/docker.sock")
DOCKER_TIMEOUT_SECONDS = CONFIG.get(
    "GAIAORCH_DOCKER_TIMEOUT", "docker.timeout_seconds", 10, int_parser(1, 600)
)
