"""One env-driven settings module.

Every value comes from the environment with a default that works on a laptop with nothing installed
(the embedded default: SQLite, a filesystem Celery broker, local AWS and warehouse emulators).
Production is `DEBUG=0`: it refuses to start without a real SECRET_KEY and turns on the secure
cookie/HSTS/SSL settings that `manage.py check --deploy` asks for.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CHATORBIT_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0/true/false/yes/no/on/off, not {raw!r}")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)

DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG and (
    not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters when DEBUG=0 "
        "(for example: python -c 'import secrets; print(secrets.token_urlsafe(64))')."
    )
SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the portal's host names when DEBUG=0.")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "portal",
    "contracts",
    "ingest_workers",
    "warehouse",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

if not DEBUG:
    # Production serves the collected static files itself; in development runserver serves them.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
# Embedded default: one SQLite file shared by the portal and the worker processes.
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # Writers take the lock up front so concurrent processes wait instead of failing.
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Security (production) ------------------------------------------------------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api_errors.api_exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "portal.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ChatOrbit event-contract API",
    "DESCRIPTION": (
        "Sources, event contracts and their versions, the review workflow, the canonical model, and a "
        "compatibility check for CI. Authenticate with `Authorization: Token <token>` "
        "(create one with `manage.py create_api_token <username>`)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI served from the vendored sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Request bodies up to the collectors' limit are read; our own limits then answer with JSON reasons.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("COLLECTOR_MAX_BODY_BYTES", str(5 * 1024 * 1024))) + 65536

# Contracts: the largest schema (or mapping) a version may carry.
CONTRACT_SCHEMA_MAX_BYTES = int(os.environ.get("CONTRACT_SCHEMA_MAX_BYTES", str(256 * 1024)))

# --- Celery ---------------------------------------------------------------------------------------
# Embedded default: kombu's filesystem transport (works across processes, no server to install).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
REDIS_URL = os.environ.get("REDIS_URL", "")

# --- Cache: rate limits (Redis when configured, else per-process memory) ----------------------------
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "chatorbit"}
}

# --- Collectors -----------------------------------------------------------------------------------
COLLECTOR_MAX_BODY_BYTES = int(os.environ.get("COLLECTOR_MAX_BODY_BYTES", str(5 * 1024 * 1024)))
COLLECTOR_MAX_EVENTS_PER_REQUEST = int(os.environ.get("COLLECTOR_MAX_EVENTS_PER_REQUEST", "500"))
COLLECTOR_MAX_EVENT_BYTES = int(os.environ.get("COLLECTOR_MAX_EVENT_BYTES", str(64 * 1024)))
# Events per second per source, enforced over one-second windows (burst = one second's worth).
COLLECTOR_RATE_LIMIT_PER_SOURCE = int(os.environ.get("COLLECTOR_RATE_LIMIT_PER_SOURCE", "5000"))
WEBHOOK_MAX_AGE_SECONDS = int(os.environ.get("WEBHOOK_MAX_AGE_SECONDS", "300"))

# --- AWS (Kinesis, S3) and the raw archive --------------------------------------------------------
# Embedded default: the local AWS emulator (moto) on loopback; production talks to real AWS.
AWS_ENDPOINT_URL = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566" if DEBUG else "") or None
AWS_REGION = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
KINESIS_STREAM_NAME = os.environ.get("KINESIS_STREAM_NAME", "raw-events")
KINESIS_SHARD_COUNT = int(os.environ.get("KINESIS_SHARD_COUNT", "2"))
# A consumer owns a shard this long without renewing; a dead worker's shard is picked up after it.
INGEST_LEASE_SECONDS = int(os.environ.get("INGEST_LEASE_SECONDS", "30"))
# The curated models run at most this long before another run may take over (a crashed run's lease).
MODELS_RUN_LEASE_SECONDS = int(os.environ.get("MODELS_RUN_LEASE_SECONDS", "900"))
# The emulator accepts any credentials; real AWS uses the standard credential chain (roles).
AWS_ACCESS_KEY_ID = os.environ.get("AWS_ACCESS_KEY_ID") or ("test" if AWS_ENDPOINT_URL else None)
AWS_SECRET_ACCESS_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY") or ("test" if AWS_ENDPOINT_URL else None)
RAW_ARCHIVE_URL = os.environ.get("RAW_ARCHIVE_URL", f"file://{VAR_DIR / 'raw-archive'}")
RAW_ARCHIVE_BUCKET = os.environ.get("RAW_ARCHIVE_BUCKET", "chatorbit-raw-archive")

# --- Snowflake (fakesnow's server in the embedded default) ----------------------------------------
SNOWFLAKE = {
    "account": os.environ.get("SNOWFLAKE_ACCOUNT", "fakesnow"),
    "user": os.environ.get("SNOWFLAKE_USER", "fake"),
    "password": os.environ.get("SNOWFLAKE_PASSWORD", "snow"),
    "host": os.environ.get("SNOWFLAKE_HOST", "127.0.0.1"),
    "port": int(os.environ.get("SNOWFLAKE_PORT", "8765")),
    "protocol": os.environ.get("SNOWFLAKE_PROTOCOL", "http"),
    "database": os.environ.get("SNOWFLAKE_DATABASE", "CHATORBIT"),
    "warehouse": os.environ.get("SNOWFLAKE_WAREHOUSE", ""),
    "role": os.environ.get("SNOWFLAKE_ROLE", ""),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # The Snowflake connector logs every login at INFO.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "snowflake.connector": {"level": "WARNING"}},
}
