"""One env-driven settings module.

Every value comes from the environment with a default that works on a laptop with nothing installed
(the embedded default: SQLite, a filesystem Celery broker, local AWS and warehouse emulators).
Production is `DEBUG=0`: it has no embedded defaults. A missing SECRET_KEY or ALLOWED_HOSTS, or a
database, broker, cache, archive or warehouse setting that is missing or still at its embedded value,
stops start-up with ONE ImproperlyConfigured listing every such variable (docs/production.md). It
also turns on the secure cookie/HSTS/SSL settings that `manage.py check --deploy` asks for.
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

#: Everything wrong with the configuration, each naming its variable. Collected section by section and
#: raised as one ImproperlyConfigured after the Snowflake section, so a deploy shows every problem at
#: once rather than one per attempt. With DEBUG=0 a missing or embedded value is a problem; an
#: unreadable Snowflake key is one in any mode.
_problems: list[str] = []


def env_embedded(name: str, embedded: str) -> str:
    """The variable, or its embedded default only with DEBUG: production has no silent fallback."""
    return os.environ.get(name, embedded if DEBUG else "")


DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG and (
    not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5
):
    _problems.append(
        "SECRET_KEY must be set to a random value of at least 50 characters when DEBUG=0 "
        "(for example: python -c 'import secrets; print(secrets.token_urlsafe(64))')."
    )
SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
if not DEBUG and not ALLOWED_HOSTS:
    _problems.append("ALLOWED_HOSTS must list the portal's host names when DEBUG=0.")
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
    "quality",
    "deletion",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.RequestGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "portal.middleware.RoleRequiredMiddleware",
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
if not DEBUG and not os.environ.get("DATABASE_URL"):
    _problems.append("DATABASE_URL is not set: production needs the portal's PostgreSQL (postgres://…); "
                     "the SQLite file is the embedded default only.")
elif not DEBUG and DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _problems.append("DATABASE_URL is SQLite: production needs PostgreSQL (postgres://…), shared by the "
                     "portal and every worker.")
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
    # a load balancer's health check comes over plain HTTP from inside: answer it, do not redirect it
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
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
    "DEFAULT_PERMISSION_CLASSES": ["portal.permissions.HasPortalRole"],
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
        "[← Back to the portal](/)\n\n"
        "Sources, event contracts and their versions, the review workflow, the canonical model, and a "
        "compatibility check for CI. Authenticate with `Authorization: Token <token>` "
        "(create one on the portal's [API tokens page](/account/tokens/), where each person creates, lists "
        "and revokes their own).\n\n"
        "Also here: the **collectors** (`/collect/v1/…`, authenticated with a source's write key or the webhook "
        "provider's signature; see docs/ingestion.md) and the **Schema Registry subset** (`/registry/…`, "
        "Confluent's wire format and error body). Every refusal of the REST API is "
        "`{\"error\": code, \"message\": sentence}` (plus `details` for field errors)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # A PATCH body is checked by the same serializer as a full one (a field it requires is required on PATCH
    # too), so the document shows it as it is rather than drf-spectacular's all-optional "Patched" copy.
    "COMPONENT_SPLIT_PATCH": False,
    "ENUM_NAME_OVERRIDES": {"CompatibilityLevelEnum": "contracts.models.CompatibilityLevel"},
    # Swagger UI served from the vendored sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation's refusals (401/403/400/404/415...) with the error body, and the collectors' paths.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.openapi.postprocess_error_responses",
    ],
}

# Request bodies up to the collectors' limit are read; our own limits then answer with JSON reasons.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("COLLECTOR_MAX_BODY_BYTES", str(5 * 1024 * 1024))) + 65536

# Contracts: the largest schema (or mapping) a version may carry.
CONTRACT_SCHEMA_MAX_BYTES = int(os.environ.get("CONTRACT_SCHEMA_MAX_BYTES", str(256 * 1024)))

# --- Celery ---------------------------------------------------------------------------------------
# Embedded default: kombu's filesystem transport (works across processes, no server to install).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if not DEBUG and not os.environ.get("CELERY_BROKER_URL"):
    _problems.append("CELERY_BROKER_URL is not set: production needs Redis (redis://… or rediss://…); the "
                     "filesystem broker is the embedded default only.")
elif not DEBUG and CELERY_BROKER_URL.startswith(("filesystem://", "memory://")):
    _problems.append(f"CELERY_BROKER_URL is {CELERY_BROKER_URL.split('://')[0]}://, which only reaches "
                     "workers on the same machine: production needs Redis (redis://… or rediss://…).")
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's folders and file names, written whole and claimed until acknowledged (portal.embedded_broker)
    CELERY_BROKER_TRANSPORT = "portal.embedded_broker:Transport"
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
if not DEBUG and not REDIS_URL:
    _problems.append("REDIS_URL is not set: the cache would be per-process memory, so each process would "
                     "keep its own collector rate limits and counters.")

# --- Cache: rate limits (Redis when configured, else per-process memory) ----------------------------
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "chatorbit"}
}

# --- Sign-in throttling (portal.login_throttle; docs/decisions.md) ---------------------------------
# Failed sign-ins counted per account and per client address over a window; at the limit, sign-in for
# that account (address) is refused, the right password included, for the lockout. 0 turns a limit off.
LOGIN_FAILURE_LIMIT_PER_ACCOUNT = int(os.environ.get("LOGIN_FAILURE_LIMIT_PER_ACCOUNT", "5"))
LOGIN_FAILURE_LIMIT_PER_ADDRESS = int(os.environ.get("LOGIN_FAILURE_LIMIT_PER_ADDRESS", "20"))
LOGIN_FAILURE_WINDOW_SECONDS = int(os.environ.get("LOGIN_FAILURE_WINDOW_SECONDS", "900"))
LOGIN_LOCKOUT_SECONDS = float(os.environ.get("LOGIN_LOCKOUT_SECONDS", "900"))
# Behind a proxy or load balancer every request comes from its address: name the META key of the header
# it appends the client's address to (e.g. HTTP_X_FORWARDED_FOR; its last entry is used).
LOGIN_CLIENT_ADDRESS_HEADER = os.environ.get("LOGIN_CLIENT_ADDRESS_HEADER", "")

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
# Ingestion (docs/ingestion.md): a caught-up shard is read again after this long (bigger units:
# fewer archive objects and appends); failed units before a shard is parked, and how long it stays
# parked; days of event dates the dedup MERGE covers; how long the stream keeps records.
INGEST_TIP_INTERVAL_SECONDS = float(os.environ.get("INGEST_TIP_INTERVAL_SECONDS", "1"))
INGEST_RETRY_BUDGET = int(os.environ.get("INGEST_RETRY_BUDGET", "8"))
INGEST_PARKED_RETRY_SECONDS = int(os.environ.get("INGEST_PARKED_RETRY_SECONDS", "600"))
INGEST_DEDUP_WINDOW_DAYS = int(os.environ.get("INGEST_DEDUP_WINDOW_DAYS", "3"))
INGEST_MERGER_LEASE_SECONDS = int(os.environ.get("INGEST_MERGER_LEASE_SECONDS", "60"))
KINESIS_RETENTION_HOURS = int(os.environ.get("KINESIS_RETENTION_HOURS", "168"))
RAW_ARCHIVE_TRANSITION_DAYS = int(os.environ.get("RAW_ARCHIVE_TRANSITION_DAYS", "30"))
RAW_ARCHIVE_RETENTION_DAYS = int(os.environ.get("RAW_ARCHIVE_RETENTION_DAYS", "180"))
# Retention jobs (deletion/retention.py, docs/privacy.md "Retention"): the raw archive keeps
# RAW_ARCHIVE_RETENTION_DAYS of dt= partitions; landing rows go once merged and this many days old;
# quarantine payloads are cleared after RETENTION_QUARANTINE_PAYLOAD_DAYS; the canonical and curated
# tables keep RETENTION_CURATED_DAYS (3 years); the purge runs every RETENTION_RUN_INTERVAL_S (portal/celery.py).
RETENTION_LANDING_DAYS = int(os.environ.get("RETENTION_LANDING_DAYS", "7"))
RETENTION_QUARANTINE_PAYLOAD_DAYS = int(os.environ.get("RETENTION_QUARANTINE_PAYLOAD_DAYS", "30"))
RETENTION_CURATED_DAYS = int(os.environ.get("RETENTION_CURATED_DAYS", "1096"))
RETENTION_RUN_INTERVAL_S = float(os.environ.get("RETENTION_RUN_INTERVAL_S", "86400"))
# Identity expansion of a deletion ticket (docs/privacy.md): held for a second officer's review when a
# device or anonymous id was seen with more than this many people or accounts, when a person has more
# than this many identifiers, or when a given value is on this blocklist of defaults (comma-separated).
DELETION_HOLD_SHARED_ID_PEOPLE = int(os.environ.get("DELETION_HOLD_SHARED_ID_PEOPLE", "1"))
DELETION_HOLD_PERSON_IDENTIFIERS = int(os.environ.get("DELETION_HOLD_PERSON_IDENTIFIERS", "25"))
DELETION_HOLD_BLOCKLIST = env_list("DELETION_HOLD_BLOCKLIST",
                                   "00000000-0000-0000-0000-000000000000,test,demo,default,user")
# The curated models' run lease: a live run renews it every third of this (a heartbeat thread), so a
# run whose process died is taken over (and its records marked failed) after at most this long.
MODELS_RUN_LEASE_SECONDS = float(os.environ.get("MODELS_RUN_LEASE_SECONDS", "60"))
# Sessions end after this much inactivity, per platform (docs/analytics.md, Sessions): e.g.
# ANALYTICS_SESSION_GAPS="web=1800,voice=600" (seconds; platforms not named keep their default, "*" sets the
# default of platforms with none). Changing it changes only sessions remodelled later: run
# `manage.py models_run --full-refresh` to apply it to the past.
ANALYTICS_SESSION_GAP_S: dict[str, int] = {}
for _item in env_list("ANALYTICS_SESSION_GAPS", ""):
    _platform, _sep, _seconds = _item.partition("=")
    try:
        from warehouse.modeling.sql import session_gaps_clean

        ANALYTICS_SESSION_GAP_S[_platform.strip()] = session_gaps_clean(
            {_platform.strip(): _seconds.strip() if _sep else ""})[_platform.strip()]
    except ValueError as _err:
        raise ImproperlyConfigured(f"ANALYTICS_SESSION_GAPS: {_err} (write platform=seconds, comma-separated)") \
            from None
# The emulator accepts any credentials; real AWS uses the standard credential chain (roles).
AWS_ACCESS_KEY_ID = os.environ.get("AWS_ACCESS_KEY_ID") or ("test" if AWS_ENDPOINT_URL else None)
AWS_SECRET_ACCESS_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY") or ("test" if AWS_ENDPOINT_URL else None)
RAW_ARCHIVE_URL = env_embedded("RAW_ARCHIVE_URL", f"file://{VAR_DIR / 'raw-archive'}")
if not DEBUG and not RAW_ARCHIVE_URL:
    _problems.append("RAW_ARCHIVE_URL is not set: production archives the raw events to S3 "
                     "(s3://bucket/prefix).")
elif not DEBUG and not RAW_ARCHIVE_URL.startswith("s3://"):
    where = "the container's own disk, lost with it" if RAW_ARCHIVE_URL.startswith("file://") else "not S3"
    _problems.append(f"RAW_ARCHIVE_URL must be s3://bucket/prefix in production; it is {where}.")
RAW_ARCHIVE_BUCKET = os.environ.get("RAW_ARCHIVE_BUCKET", "chatorbit-raw-archive")
# Per-subject encryption of archived records (crypto-shredding, docs/privacy.md): "kms" wraps each
# subject's data key with ARCHIVE_KMS_KEY_ID (production), "local" with a local master key (the
# embedded default: ARCHIVE_LOCAL_MASTER_KEY, base64 of 32 bytes, else a key file created on first
# use), "off" writes lines in clear (benchmarks only; suppression still applies).
ARCHIVE_ENCRYPTION = os.environ.get("ARCHIVE_ENCRYPTION", "local" if DEBUG else "kms")
ARCHIVE_KMS_KEY_ID = os.environ.get("ARCHIVE_KMS_KEY_ID", "")
ARCHIVE_LOCAL_MASTER_KEY = os.environ.get("ARCHIVE_LOCAL_MASTER_KEY", "")
ARCHIVE_LOCAL_MASTER_KEY_FILE = os.environ.get("ARCHIVE_LOCAL_MASTER_KEY_FILE", str(VAR_DIR / "archive-master.key"))
# The secret of the keyed hashes under which subject keys and suppressed identifiers are stored.
# Changing it orphans every key and suppression entry: set it once. Embedded: derived from SECRET_KEY.
SUBJECT_HASH_SECRET = os.environ.get("SUBJECT_HASH_SECRET", "")
if ARCHIVE_ENCRYPTION not in ("kms", "local", "off"):
    _problems.append(f"ARCHIVE_ENCRYPTION must be kms, local or off, not {ARCHIVE_ENCRYPTION!r}.")
elif not DEBUG and ARCHIVE_ENCRYPTION != "kms":
    _problems.append("ARCHIVE_ENCRYPTION must be kms in production (the raw archive's erasure relies on it).")
elif ARCHIVE_ENCRYPTION == "kms" and not ARCHIVE_KMS_KEY_ID:
    _problems.append("ARCHIVE_KMS_KEY_ID is not set: the KMS key (id, ARN or alias/…) that wraps the "
                     "raw archive's per-subject data keys.")
if not DEBUG and len(SUBJECT_HASH_SECRET) < 32:
    _problems.append("SUBJECT_HASH_SECRET must be set to a random value of at least 32 characters "
                     "(the keyed hash of erased subjects' identifiers).")
SUBJECT_HASH_SECRET = SUBJECT_HASH_SECRET or f"derived-from-secret-key:{SECRET_KEY}"
# Archive objects per shard roll when a record arrives in a later window of this many seconds, or
# when their records reach this many MB (before zstd, which keeps about a fifth of this JSON). A
# shard takes at most 1 MB/s, so in production the 5-minute window rolls first (objects of up to
# ~60 MB compressed); the size cap (~100 MB compressed) binds only if the window is made longer.
# The embedded default rolls every minute. 0 seconds rolls at the end of every unit (one object per
# unit: what the test suite uses).
RAW_ARCHIVE_ROLL_SECONDS = float(os.environ.get("RAW_ARCHIVE_ROLL_SECONDS", "60" if DEBUG else "300"))
RAW_ARCHIVE_ROLL_MB = float(os.environ.get("RAW_ARCHIVE_ROLL_MB", "32" if DEBUG else "512"))

# --- Snowflake (fakesnow's server in the embedded default) ----------------------------------------
# The embedded values (account `fakesnow`, 127.0.0.1:8765 over http, fake/snow) apply only with
# DEBUG. In production host, port and protocol default to empty, so the connector derives
# `<account>.snowflakecomputing.com` over https, and the service user signs in with a key pair.
SNOWFLAKE_EMBEDDED_ACCOUNT = "fakesnow"
SNOWFLAKE_EMBEDDED_PORT = 8765
_snowflake_port = env_embedded("SNOWFLAKE_PORT", str(SNOWFLAKE_EMBEDDED_PORT)).strip()
if _snowflake_port and not _snowflake_port.isdigit():
    _problems.append(f"SNOWFLAKE_PORT must be a port number, not {_snowflake_port!r}.")
    _snowflake_port = ""
SNOWFLAKE = {
    "account": env_embedded("SNOWFLAKE_ACCOUNT", SNOWFLAKE_EMBEDDED_ACCOUNT),
    "user": env_embedded("SNOWFLAKE_USER", "fake"),
    "password": env_embedded("SNOWFLAKE_PASSWORD", "snow"),
    "host": env_embedded("SNOWFLAKE_HOST", "127.0.0.1"),
    "port": int(_snowflake_port) if _snowflake_port else None,
    "protocol": env_embedded("SNOWFLAKE_PROTOCOL", "http"),
    "database": os.environ.get("SNOWFLAKE_DATABASE", "CHATORBIT"),
    "warehouse": os.environ.get("SNOWFLAKE_WAREHOUSE", ""),
    "role": os.environ.get("SNOWFLAKE_ROLE", ""),
}

# Key-pair sign-in (authenticator SNOWFLAKE_JWT): a PEM file the connector reads at each connect, or
# the PEM text itself (a secret injected into the environment), optionally encrypted. Either is
# checked here; an unreadable key stops start-up naming the variable (never showing the key).
# With a key the password is not sent.
SNOWFLAKE_ALLOW_PASSWORD = env_bool("SNOWFLAKE_ALLOW_PASSWORD", False)
_key_file = os.environ.get("SNOWFLAKE_PRIVATE_KEY_FILE", "").strip()
_key_pem = os.environ.get("SNOWFLAKE_PRIVATE_KEY", "").strip()
_key_passphrase = os.environ.get("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "") or None


def _snowflake_private_key(pem: bytes, variable: str) -> bytes | None:
    """The key as unencrypted PKCS#8 DER (kept in memory only), or None after recording a problem.
    Messages name the variable and what is wrong, never the key's bytes."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    passphrase = _key_passphrase.encode() if _key_passphrase else None
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError:  # cryptography: encrypted without a passphrase, or a passphrase for a plain key
        _problems.append(
            f"{variable} is an encrypted private key: set SNOWFLAKE_PRIVATE_KEY_PASSPHRASE." if passphrase is None
            else f"{variable} is not encrypted, but SNOWFLAKE_PRIVATE_KEY_PASSPHRASE is set: unset it.")
        return None
    except (ValueError, UnsupportedAlgorithm):
        _problems.append(
            f"{variable} is not a readable PEM private key (expected -----BEGIN PRIVATE KEY----- or "
            "-----BEGIN ENCRYPTED PRIVATE KEY-----"
            + (", or SNOWFLAKE_PRIVATE_KEY_PASSPHRASE is wrong)." if passphrase else ")."))
        return None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        _problems.append(f"{variable} holds a {type(key).__name__.lstrip('_')}: Snowflake key-pair sign-in "
                         "takes an RSA (or EC) key.")
        return None
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


if _key_file and _key_pem:
    _problems.append("SNOWFLAKE_PRIVATE_KEY_FILE and SNOWFLAKE_PRIVATE_KEY are both set: set one of them.")
elif _key_file:
    try:
        _key_bytes = Path(_key_file).expanduser().read_bytes()
    except OSError as err:
        _problems.append(f"SNOWFLAKE_PRIVATE_KEY_FILE cannot be read ({_key_file}: {err.strerror or err}).")
    else:
        if _snowflake_private_key(_key_bytes, "SNOWFLAKE_PRIVATE_KEY_FILE") is not None:
            # the connector reads the file at each connect, so a rotated key is picked up without a restart
            SNOWFLAKE.update(authenticator="SNOWFLAKE_JWT", private_key_file=str(Path(_key_file).expanduser()),
                             private_key_file_pwd=_key_passphrase, password="")
elif _key_pem:
    # a secret store may hand over the PEM with its newlines escaped
    _der = _snowflake_private_key(_key_pem.replace("\\n", "\n").encode(), "SNOWFLAKE_PRIVATE_KEY")
    if _der is not None:
        SNOWFLAKE.update(authenticator="SNOWFLAKE_JWT", private_key=_der, password="")

if not DEBUG:
    if not SNOWFLAKE["account"]:
        _problems.append("SNOWFLAKE_ACCOUNT is not set (the account identifier, e.g. myorg-myaccount).")
    elif SNOWFLAKE["account"].lower() == SNOWFLAKE_EMBEDDED_ACCOUNT:
        _problems.append("SNOWFLAKE_ACCOUNT is 'fakesnow', the embedded warehouse: set the Snowflake account "
                         "identifier.")
    if not SNOWFLAKE["user"]:
        _problems.append("SNOWFLAKE_USER is not set (the platform's service user).")
    elif SNOWFLAKE["user"] == "fake":
        _problems.append("SNOWFLAKE_USER is 'fake', the embedded warehouse's user: set the service user.")
    if _key_file or _key_pem:
        pass  # key pair configured (a problem with it is recorded above)
    elif not SNOWFLAKE["password"]:
        _problems.append("No Snowflake credentials: set SNOWFLAKE_PRIVATE_KEY_FILE (a PEM file) or "
                         "SNOWFLAKE_PRIVATE_KEY (the PEM text) for key-pair sign-in.")
    elif SNOWFLAKE["password"] == "snow":
        _problems.append("SNOWFLAKE_PASSWORD is 'snow', the embedded warehouse's password.")
    elif not SNOWFLAKE_ALLOW_PASSWORD:
        _problems.append("SNOWFLAKE_PASSWORD alone is refused: Snowflake is retiring password-only sign-in "
                         "for service users. Set SNOWFLAKE_PRIVATE_KEY_FILE or SNOWFLAKE_PRIVATE_KEY (key "
                         "pair), or SNOWFLAKE_ALLOW_PASSWORD=1 to accept the password knowingly.")
    if SNOWFLAKE["host"].lower() in {"127.0.0.1", "localhost", "::1"}:
        _problems.append(f"SNOWFLAKE_HOST is {SNOWFLAKE['host']}, the embedded warehouse: leave it unset so the "
                         "connector uses <account>.snowflakecomputing.com.")
    if SNOWFLAKE["port"] == SNOWFLAKE_EMBEDDED_PORT:
        _problems.append(f"SNOWFLAKE_PORT is {SNOWFLAKE_EMBEDDED_PORT}, the embedded warehouse's port: "
                         "leave it unset (443).")
    if SNOWFLAKE["protocol"].lower() == "http":
        _problems.append("SNOWFLAKE_PROTOCOL is http, the embedded warehouse's: Snowflake speaks https only; "
                         "leave it unset.")

#: One virtual warehouse per workload, so landing, merges, model runs and dashboard reads neither
#: queue behind each other nor share a bill: `warehouse_connect(workload="merge")` (warehouse.connection).
#: Each falls back to SNOWFLAKE_WAREHOUSE (and that to the user's default warehouse).
SNOWFLAKE_WORKLOADS = ("ingest", "merge", "models", "dashboards")
SNOWFLAKE_WAREHOUSES = {
    workload: os.environ.get(f"SNOWFLAKE_WAREHOUSE_{workload.upper()}", "") or SNOWFLAKE["warehouse"]
    for workload in SNOWFLAKE_WORKLOADS
}

if _problems:
    raise ImproperlyConfigured(
        ("Production settings (DEBUG=0) are incomplete" if not DEBUG else "The settings are wrong")
        + f": {len(_problems)} problem(s); fix them all (docs/production.md lists every variable).\n"
        + "\n".join(f"  - {problem}" for problem in _problems)
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "access": {"()": "django.utils.log.ServerFormatter", "format": "[{server_time}] {message}",
                              "style": "{"}},
    "filters": {"client_errors_without_traceback": {"()": "portal.logs.ClientErrorsWithoutTraceback"},
                "already_reported": {"()": "portal.logs.AlreadyReportedByDjangoRequest"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"},
                 "access": {"class": "logging.StreamHandler", "formatter": "access"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own console handler (DEBUG) would print every django.* record a second time beside
        # the root's; no ADMINS are configured, so its mail_admins handler has nothing to send either.
        "django": {"handlers": [], "propagate": True},
        # one line per refusal, no traceback (portal.logs)
        "django.request": {"filters": ["client_errors_without_traceback"]},
        # the dev server's access log, minus the 4xx/5xx lines django.request reports already
        "django.server": {"handlers": ["access"], "filters": ["already_reported"], "level": "INFO",
                          "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        # The Snowflake connector logs every login at INFO.
        "snowflake.connector": {"level": "WARNING"},
        # Soda logs every check it evaluates at INFO; the results are stored (quality/)
        "soda": {"level": "WARNING"},
    },
}

# --- Snowpipe Streaming (production landing writer) ---------------------------------------------------
# How shard consumers land rows in RAW.LANDING_EVENTS (DESIGN decision 10, docs/snowpipe-streaming.md):
# `embedded` (the default) through the warehouse connector, one INSERT-only transaction per append;
# `snowpipe` through Snowpipe Streaming's high-performance SDK (warehouse.snowpipe), one channel per shard
# into the pipe RAW.LANDING_EVENTS_STREAMING. Account, user and key pair default to the connector's.
WAREHOUSE_LANDING_WRITERS = ("embedded", "snowpipe")
WAREHOUSE_LANDING_WRITER = os.environ.get("WAREHOUSE_LANDING_WRITER", "embedded").strip().lower()
if WAREHOUSE_LANDING_WRITER not in WAREHOUSE_LANDING_WRITERS:
    raise ImproperlyConfigured(
        f"WAREHOUSE_LANDING_WRITER must be one of {', '.join(WAREHOUSE_LANDING_WRITERS)}, not "
        f"{os.environ.get('WAREHOUSE_LANDING_WRITER')!r} (docs/snowpipe-streaming.md).")
# SNOWPIPE_PRIVATE_KEY_FILE / SNOWPIPE_PRIVATE_KEY (and _PASSPHRASE) replace the SNOWFLAKE_* key as a whole
_snowpipe_key = "SNOWPIPE" if (os.environ.get("SNOWPIPE_PRIVATE_KEY_FILE") or os.environ.get("SNOWPIPE_PRIVATE_KEY")) \
    else "SNOWFLAKE"
SNOWPIPE_STREAMING = {
    "account": os.environ.get("SNOWPIPE_ACCOUNT") or os.environ.get("SNOWFLAKE_ACCOUNT", ""),
    "user": os.environ.get("SNOWPIPE_USER") or os.environ.get("SNOWFLAKE_USER", ""),
    "private_key_file": os.environ.get(f"{_snowpipe_key}_PRIVATE_KEY_FILE", ""),
    "private_key": os.environ.get(f"{_snowpipe_key}_PRIVATE_KEY", ""),
    "private_key_passphrase": os.environ.get(f"{_snowpipe_key}_PRIVATE_KEY_PASSPHRASE", ""),
    # empty: https://<account>.snowflakecomputing.com
    "url": os.environ.get("SNOWPIPE_URL", ""),
    "database": SNOWFLAKE["database"],
    "schema": "RAW",
    "pipe": os.environ.get("SNOWPIPE_PIPE", "LANDING_EVENTS_STREAMING"),
    # empty: chatorbit-ingest-<host>-<pid>
    "client_name": os.environ.get("SNOWPIPE_CLIENT_NAME", ""),
    # a JSON object of SDK tunables, e.g. {"mgmt_retry_total_backoff_seconds": 60} (docs/snowpipe-streaming.md)
    "sdk_properties": os.environ.get("SNOWPIPE_SDK_PROPERTIES", ""),
}

# --- Data quality (quality/, docs/quality.md) ---------------------------------------------------------
# CANONICAL.EVENTS is fresh when its newest event was received less than this many minutes ago; a curated
# table when its newest time value is less than this many hours old. Results are kept 13 months; a run
# still queued or running after QUALITY_RUN_STALE_MINUTES is marked as an error. Failed-row samples keep
# at most this many rows per source and in all. (The schedule, QUALITY_RUN_INTERVAL_S, is in portal/celery.py.)
QUALITY_CANONICAL_FRESHNESS_MINUTES = float(os.environ.get("QUALITY_CANONICAL_FRESHNESS_MINUTES", "3"))
QUALITY_CURATED_FRESHNESS_HOURS = float(os.environ.get("QUALITY_CURATED_FRESHNESS_HOURS", "2"))
QUALITY_RESULTS_RETENTION_DAYS = int(os.environ.get("QUALITY_RESULTS_RETENTION_DAYS", "396"))
QUALITY_RUN_STALE_MINUTES = int(os.environ.get("QUALITY_RUN_STALE_MINUTES", "60"))
QUALITY_SAMPLE_ROWS_PER_SOURCE = int(os.environ.get("QUALITY_SAMPLE_ROWS_PER_SOURCE", "5"))
QUALITY_SAMPLE_ROWS_MAX = int(os.environ.get("QUALITY_SAMPLE_ROWS_MAX", "50"))

# --- Pipeline metrics and /metrics (docs/metrics.md) --------------------------------------------------
# A merged event copy is "late" when its event time is older than this many seconds at merge time; the
# per-minute metric rows (ingest_workers.models.PipelineMetricMinute) are kept this many hours (8 days: the
# same weekday a week back, for the anomaly baselines).
PIPELINE_LATE_AFTER_S = float(os.environ.get("PIPELINE_LATE_AFTER_S", "900"))
PIPELINE_METRICS_KEEP_HOURS = float(os.environ.get("PIPELINE_METRICS_KEEP_HOURS", "192"))
# prometheus_client's multiprocess mode: every portal and worker process on the host writes its counts
# there and /metrics sums them. Read from the environment by prometheus_client itself when imported, so it
# must be set before a process starts (make run / run_embedded sets it to var/prometheus and wipes it).
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:  # a worker container has no gunicorn to create it
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# /metrics answers the loopback, and any client sending "Authorization: Bearer <METRICS_TOKEN>" when set.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# --- Alerts (quality/alerts.py, docs/quality.md "Alerts") ---------------------------------------------
# The rules the engine evaluates (dotted paths of rule(now) -> list[Condition]); other apps append theirs.
QUALITY_ALERT_RULES = env_list("QUALITY_ALERT_RULES", ",".join([
    "quality.alert_rules.shard_lag",
    "quality.alert_rules.e2e_latency",
    "quality.alert_rules.parked_shard",
    "quality.alert_rules.freshness",
    "quality.alert_rules.failing_check",
    "quality.alert_rules.model_run_failed",
    "quality.alert_rules.quarantine_over_limit",
    "quality.anomaly_rules.volume_anomaly",
    "quality.anomaly_rules.quarantine_rate_jump",
    "deletion.alert_rules.deletion_sla",
]))
# Targets: a shard more than this far behind the stream's tip (or not read for this long); the end-to-end
# p99 (collector receipt → merged into CANONICAL.EVENTS) over the last QUALITY_ALERT_E2E_WINDOW_MINUTES.
QUALITY_ALERT_SHARD_LAG_MS = int(os.environ.get("QUALITY_ALERT_SHARD_LAG_MS", "60000"))
QUALITY_ALERT_E2E_P99_MS = int(os.environ.get("QUALITY_ALERT_E2E_P99_MS", "60000"))
QUALITY_ALERT_E2E_WINDOW_MINUTES = int(os.environ.get("QUALITY_ALERT_E2E_WINDOW_MINUTES", "5"))
# Notifications: tries per message, the first retry's delay and the largest (exponential, with jitter),
# the webhook's timeout, the longest silence, and the portal's address used in the messages' links.
QUALITY_ALERT_NOTIFY_ATTEMPTS = int(os.environ.get("QUALITY_ALERT_NOTIFY_ATTEMPTS", "8"))
QUALITY_ALERT_NOTIFY_BACKOFF_S = float(os.environ.get("QUALITY_ALERT_NOTIFY_BACKOFF_S", "30"))
QUALITY_ALERT_NOTIFY_BACKOFF_MAX_S = float(os.environ.get("QUALITY_ALERT_NOTIFY_BACKOFF_MAX_S", "1800"))
QUALITY_ALERT_WEBHOOK_TIMEOUT_S = float(os.environ.get("QUALITY_ALERT_WEBHOOK_TIMEOUT_S", "5"))
QUALITY_ALERT_SILENCE_MAX_MINUTES = int(os.environ.get("QUALITY_ALERT_SILENCE_MAX_MINUTES", str(7 * 24 * 60)))
# (production default: https:// and the first ALLOWED_HOSTS name)
PORTAL_BASE_URL = os.environ.get("PORTAL_BASE_URL") or (
    "http://127.0.0.1:8000" if DEBUG or not ALLOWED_HOSTS else f"https://{ALLOWED_HOSTS[0].lstrip('.')}")
# Email goes through Django's mail backend: the console in the embedded default, SMTP when EMAIL_HOST is set
# or in production (Django's default host, localhost:25, when EMAIL_HOST is not set).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "" if DEBUG else "localhost")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "ChatOrbit alerts <alerts@chatorbit.invalid>")
# /healthz: each dependency's check gives up after this many seconds.
HEALTHZ_TIMEOUT_S = float(os.environ.get("HEALTHZ_TIMEOUT_S", "3"))
# /healthz answers from one check of every dependency per this many seconds (anyone may call it).
HEALTHZ_CACHE_S = float(os.environ.get("HEALTHZ_CACHE_S", "2"))
# The dependencies whose outage makes /healthz answer 503 (the others are reported only). Every one by
# default: this platform is its pipeline. A load balancer in front of the portal alone may want fewer.
HEALTHZ_REQUIRED = env_list("HEALTHZ_REQUIRED", "database,broker,stream,archive,warehouse")
# Scorecards (docs/quality.md, "Scorecards"): a snapshot per scorecard after each check cycle, kept this many
# days (the pages chart 30); the hourly rollup per source behind the anomaly baselines is kept this many days,
# and the baselines compare an hour with the same hour of the past QUALITY_ANOMALY_WEEKS weeks. Quarantine
# rates over these shares of a window's records turn a scorecard amber / red; a shard lag over these seconds
# turns the platform's amber / red; a source that sent today and nothing for this many minutes is amber.
QUALITY_SCORECARD_RETENTION_DAYS = int(os.environ.get("QUALITY_SCORECARD_RETENTION_DAYS", "35"))
QUALITY_SOURCE_HOURS_KEEP_DAYS = int(os.environ.get("QUALITY_SOURCE_HOURS_KEEP_DAYS", "56"))
QUALITY_ANOMALY_WEEKS = int(os.environ.get("QUALITY_ANOMALY_WEEKS", "8"))
QUALITY_SCORECARD_QUARANTINE_AMBER = float(os.environ.get("QUALITY_SCORECARD_QUARANTINE_AMBER", "0.01"))
QUALITY_SCORECARD_QUARANTINE_RED = float(os.environ.get("QUALITY_SCORECARD_QUARANTINE_RED", "0.05"))
QUALITY_SCORECARD_LAG_AMBER_S = float(os.environ.get("QUALITY_SCORECARD_LAG_AMBER_S", "60"))
QUALITY_SCORECARD_LAG_RED_S = float(os.environ.get("QUALITY_SCORECARD_LAG_RED_S", "180"))
QUALITY_SCORECARD_SILENT_MINUTES = float(os.environ.get("QUALITY_SCORECARD_SILENT_MINUTES", "15"))
# A source whose last 5 minutes' records per minute fell this share under the hour before's is amber (no history
# needed; the weekly volume anomaly takes over once there is some).
QUALITY_SCORECARD_VOLUME_DROP = float(os.environ.get("QUALITY_SCORECARD_VOLUME_DROP", "0.5"))
# --- Deletion requests (deletion/; docs/privacy.md "Deletion requests", "Evidence and SLA") -----------------
# The SLA per regulation, in elapsed hours from received to done. 72 h for both: CCPA allows longer, but 72 h is
# the platform's own target (issue 12).
DELETION_SLA_HOURS = {
    "gdpr": float(os.environ.get("DELETION_SLA_HOURS_GDPR", "72")),
    "ccpa": float(os.environ.get("DELETION_SLA_HOURS_CCPA", "72")),
}
for _regulation, _hours in DELETION_SLA_HOURS.items():
    if not 0 < _hours < 24 * 366:
        raise ImproperlyConfigured(f"DELETION_SLA_HOURS_{_regulation.upper()} must be a number of hours above 0 "
                                   f"(and under a year), not {_hours}.")
# The identity expansion (identity graph) a ticket shows before it runs: a dotted path to
# expand_identifiers(identifiers) -> deletion.erasure_types.Expansion.
DELETION_EXPANDER = os.environ.get("DELETION_EXPANDER", "deletion.identity_expansion.expand_identifiers")
# The erasure steps, in order: dotted paths of functions returning list[deletion.erasure_types.ErasureStep].
DELETION_STEP_PROVIDERS = env_list("DELETION_STEP_PROVIDERS", ",".join([
    "deletion.shredding.archive_steps",
    "deletion.warehouse_erasure.warehouse_steps",
    "deletion.platform_stores.platform_steps",
]))
# A running ticket's lease: renewed every third of it while a worker runs it; once it lapses (the worker died)
# the sweeper (beat, every DELETION_RESUME_INTERVAL_S) queues the ticket again and the next worker resumes it.
DELETION_LEASE_SECONDS = float(os.environ.get("DELETION_LEASE_SECONDS", "60"))
# A queued ticket (confirmed, its task on the deletion queue) is not queued again by the sweeper for this long:
# a task waiting behind others is not duplicated every sweep; one lost (a broker restart) is replaced after it.
DELETION_QUEUED_GRACE_SECONDS = float(os.environ.get("DELETION_QUEUED_GRACE_SECONDS", "900"))
# Attempts per step on transient failures (retried with exponential backoff) before the ticket fails.
DELETION_STEP_MAX_ATTEMPTS = int(os.environ.get("DELETION_STEP_MAX_ATTEMPTS", "6"))
# The backoff between those attempts: DELETION_RETRY_BASE_SECONDS, doubled each time, at most _MAX_SECONDS.
DELETION_RETRY_BASE_SECONDS = float(os.environ.get("DELETION_RETRY_BASE_SECONDS", "10"))
DELETION_RETRY_MAX_SECONDS = float(os.environ.get("DELETION_RETRY_MAX_SECONDS", "300"))
