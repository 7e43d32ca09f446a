"""Culprit settings, read from the environment.

With no configuration at all Culprit runs in its *embedded* mode: a SQLite file under ``var/`` and a Celery broker
on the local filesystem, so ``make run`` needs no server.  ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to
PostgreSQL and Redis for a team.  Every variable is listed in ``docker/.env.example``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# litellm fetches a remote price map at import unless told not to; offline that stalls the process.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def env_str(name: str, default: str | Path) -> str:
    """The variable's value; an empty value counts as unset (``X=`` in an .env file means "use the default")."""
    return os.environ.get(name) or str(default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_secret(name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (Docker secrets)."""
    if path := os.environ.get(f"{name}_FILE"):
        return Path(path).read_text().strip()
    return os.environ.get(name) or None


VAR_DIR = Path(env_str("CULPRIT_VAR_DIR", BASE_DIR / "var"))

DEBUG = env_bool("DJANGO_DEBUG", False)
# The embedded default only: a single-user local install (see below).
EMBEDDED_SECRET_KEY = "culprit-embedded-insecure-key-change-me"  # noqa: S105 - public by design, refused in production
SECRET_KEY = env_secret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if env_bool("CULPRIT_REQUIRE_SECRET_KEY", False):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set")
    # The embedded default is a single-user local install; a fixed key is acceptable there only. The team
    # deployment sets CULPRIT_REQUIRE_SECRET_KEY=true so a missing secret stops the server instead.
    SECRET_KEY = EMBEDDED_SECRET_KEY

ALLOWED_HOSTS = [h.strip() for h in env_str("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "template_partials",
    "ninja",  # serves the API docs' JavaScript from our own static files instead of a CDN
    "tracing",
    "attribution",
    "annotations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.HtmxMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "config.navigation.section",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'culprit.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60))
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The web server and the worker share the file: wait for a lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The trace table's covering index (ids included for index-only counts, tracing migration 0020) is a plain index
    # on SQLite, which has no INCLUDE: correct, only not covering; no warning on every start of the embedded mode.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
EMBEDDED_DATABASE = DATABASES["default"]["ENGINE"].endswith("sqlite3")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "tracing:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", VAR_DIR / "staticfiles"))  # made at start (TracingConfig.ready)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", VAR_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve files straight from static/ without collectstatic in development and tests.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Uploads larger than this are rejected per file with a message naming the file; the request itself may carry
# many files, so Django's own request cap is set well above one file's limit.
CULPRIT_MAX_UPLOAD_BYTES = env_int("CULPRIT_MAX_UPLOAD_BYTES", 256 * 1024 * 1024)
CULPRIT_MAX_FILES_PER_UPLOAD = env_int("CULPRIT_MAX_FILES_PER_UPLOAD", 500)
# Zip archives: at most this many members, and the same per-file limit applies to each member's unpacked size.
CULPRIT_MAX_ZIP_MEMBERS = env_int("CULPRIT_MAX_ZIP_MEMBERS", 2000)
CULPRIT_MAX_ZIP_TOTAL_BYTES = env_int("CULPRIT_MAX_ZIP_TOTAL_BYTES", 1024 * 1024 * 1024)
CULPRIT_MAX_ZIP_RATIO = env_int("CULPRIT_MAX_ZIP_RATIO", 200)
# An OTLP request body may inflate (gzip) to at most this much; the compressed body itself is capped at 10 MB below.
CULPRIT_OTLP_MAX_INFLATED_BYTES = env_int("CULPRIT_OTLP_MAX_INFLATED_BYTES", 16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = CULPRIT_MAX_FILES_PER_UPLOAD
CULPRIT_STEPS_PER_PAGE = env_int("CULPRIT_STEPS_PER_PAGE", 50)
# The trace page reads at most this many characters of each step's text; "Show all" fetches the rest in windows of
# CULPRIT_STEP_WINDOW_CHARS, so a 50 MB step never makes a 50 MB page.
CULPRIT_STEP_PREVIEW_CHARS = env_int("CULPRIT_STEP_PREVIEW_CHARS", 20_000)
CULPRIT_STEP_WINDOW_CHARS = env_int("CULPRIT_STEP_WINDOW_CHARS", 200_000)

# --- Celery -----------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "filesystem://"
EMBEDDED_BROKER = CELERY_BROKER_URL.startswith("filesystem")
if EMBEDDED_BROKER:
    _broker_dir = (
        VAR_DIR / "broker"
    )  # its folders are made when a worker starts or a task is sent (config/celery.py)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    # The filesystem transport cannot broadcast, so remote control (and with it mingle/gossip) is off.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
else:
    # A task whose worker died stays unacknowledged in Redis; after the visibility timeout a live worker puts it back.
    # Workers look for such tasks every interval x throttle seconds (kombu's defaults: 10 x 10).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
        "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10),
        "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 10),
        # The lock a worker holds while it puts such tasks back. A worker killed while holding it (SIGKILL, OOM)
        # leaves it in Redis until it expires, and no worker restores anything meanwhile: kombu's default is 300 s.
        "unacked_mutex_expire": env_int("CELERY_UNACKED_MUTEX_EXPIRE", 60),
    }
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "culprit")
# Job state lives in the database (IngestJob and friends), never in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# A task is acknowledged only after it finished, and re-queued if its worker dies: every task is idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 600)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 660)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# The reaper (Celery beat, every CULPRIT_REAP_EVERY seconds) re-enqueues jobs whose worker vanished -- killed, out of
# memory, or a broker that lost the message -- and fails those out of attempts with a readable reason. A job counts as
# abandoned after this many seconds without a sign of life: longer than its task may run, so a live worker is never
# doubled.
CULPRIT_REAP_INGEST_AFTER = env_int("CULPRIT_REAP_INGEST_AFTER", CELERY_TASK_TIME_LIMIT + 240)
# A running job's heartbeat (ingest, attribution run, injection campaign, export: tracing.jobs.Job) is moved by a
# thread every CULPRIT_JOB_HEARTBEAT_EVERY seconds while a worker works on it, so one older than
# CULPRIT_REAP_RUNNING_AFTER means the worker died: the job is queued again (about a minute after a kill -9, not
# after the broker's visibility timeout). Keep it several beats long.
CULPRIT_JOB_HEARTBEAT_EVERY = env_int("CULPRIT_JOB_HEARTBEAT_EVERY", 10)
CULPRIT_REAP_RUNNING_AFTER = env_int("CULPRIT_REAP_RUNNING_AFTER", 45)
CULPRIT_REAP_RUN_AFTER = env_int(
    "CULPRIT_REAP_RUN_AFTER", 3660 + 240
)  # one trace or injection may take an hour
CULPRIT_REAP_EXPORT_AFTER = env_int("CULPRIT_REAP_EXPORT_AFTER", 3660 + 240)  # an export may take an hour
CELERY_BEAT_SCHEDULE = {
    f"reap-{app}": {
        "task": f"{app}.reap_jobs",
        "schedule": env_int("CULPRIT_REAP_EVERY", 15),
        "kwargs": {"stale_after": stale_after},
    }
    for app, stale_after in (
        ("tracing", CULPRIT_REAP_INGEST_AFTER),
        ("attribution", CULPRIT_REAP_RUN_AFTER),
        ("annotations", CULPRIT_REAP_EXPORT_AFTER),
    )
}
# The raw bytes of uploads that produced nothing (every job failed) are kept this long to look into, then deleted.
CULPRIT_KEEP_FAILED_UPLOADS_FOR = env_int("CULPRIT_KEEP_FAILED_UPLOADS_FOR", 24 * 3600)
CELERY_BEAT_SCHEDULE["purge-failed-uploads"] = {"task": "tracing.purge_failed_uploads", "schedule": 3600}
# Search documents are written after each import or OTLP build commits (tracing.services.search_index); this sweep
# picks up whatever a lost message or a killed worker left marked. Searches are exact meanwhile, only slower.
CELERY_BEAT_SCHEDULE["search-index"] = {"task": "tracing.search_index", "schedule": 60}
# A project's default learned model is retrained once enough new labels arrived (attribution.learning.services).
CELERY_BEAT_SCHEDULE["retrain-due"] = {
    "task": "attribution.retrain_due",
    "schedule": env_int("CULPRIT_RETRAIN_EVERY", 300),
}
# Traces that arrive in a project that attributes new traces automatically are attributed by one run per sweep
# (attribution.services.auto); an OTLP trace once it is this many seconds old and no build of it is waiting.
CULPRIT_AUTO_ATTRIBUTE_SETTLE = env_int("CULPRIT_AUTO_ATTRIBUTE_SETTLE", 20)
# Pages warn that no worker may be running once work has waited this long for one: an import, run or export job no
# worker has started (a free worker starts one within a second), OTLP spans not built yet (a build takes seconds;
# 100,000 spans of one trace about 30).
CULPRIT_WORKER_STALLED_AFTER = env_int("CULPRIT_WORKER_STALLED_AFTER", 60)
CELERY_BEAT_SCHEDULE["auto-attribute"] = {
    "task": "attribution.auto_attribute",
    "schedule": env_int("CULPRIT_AUTO_ATTRIBUTE_EVERY", 10),
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Django's cache: rate-limit counters (config.ratelimit) and the like. Redis when CULPRIT_CACHE_URL is set (the team
# deployment gives it a database of its own) or when the broker is Redis; in-process in the embedded mode.
CULPRIT_CACHE_URL = os.environ.get("CULPRIT_CACHE_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else ""
)
CACHES = {
    "default": (
        {
            # clear() deletes the cache's own keys, never the broker's queues beside them (Django's flushes the db)
            "BACKEND": "config.cache.PrefixedRedisCache",
            "LOCATION": CULPRIT_CACHE_URL,
            "KEY_PREFIX": "culprit",
        }
        if CULPRIT_CACHE_URL.startswith("redis")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
CULPRIT_RATE_LIMITS = {
    "login": "10/m",
    "login_ip": "60/m",
    "upload": "120/m",
    "api": "600/m",
    "otlp": "1200/m",
} | {
    scope.strip(): rate.strip()
    for scope, _, rate in (
        item.partition("=") for item in env_str("CULPRIT_RATE_LIMITS", "").split(",") if item
    )
}

# LLM response cache (Redis). Default: the broker when it is Redis; "off" disables it.
CULPRIT_LLM_CACHE_URL = os.environ.get("CULPRIT_LLM_CACHE_URL") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else ""
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Logs go to stderr, always: stdout belongs to the commands (`--json` prints pure JSON there).
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}}
    | {
        # litellm logs every request at INFO through its own handler, which writes INFO to stdout; keep its
        # warnings and errors only (attribution.llm logs one line per call itself, and drops litellm's handler).
        name: {"level": env_str("LITELLM_LOG_LEVEL", "WARNING")}
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
    },
}

# --- security ---------------------------------------------------------------------------------------------------
# CULPRIT_PRODUCTION=true (the team deployment, docker/compose.yaml) turns on everything `check --deploy` asks for:
# a real secret required, HTTPS only (redirect, HSTS, secure cookies), and the proxy's X-Forwarded-Proto trusted.
# The embedded mode serves plain HTTP on 127.0.0.1 for one person and leaves them off.
PRODUCTION = env_bool("CULPRIT_PRODUCTION", False)
if PRODUCTION and SECRET_KEY == EMBEDDED_SECRET_KEY:
    raise ImproperlyConfigured(
        "CULPRIT_PRODUCTION is set: DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set"
    )
_behind_proxy = env_bool("CULPRIT_BEHIND_PROXY", PRODUCTION)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _behind_proxy else None
SECURE_SSL_REDIRECT = env_bool("CULPRIT_SSL_REDIRECT", PRODUCTION)
# The health check answers over plain HTTP inside the container network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("CULPRIT_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CULPRIT_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("CULPRIT_HSTS_PRELOAD", PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("CULPRIT_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (config.middleware.ContentSecurityPolicyMiddleware): only the app's own scripts, styles,
# images and connections; nothing may frame the app; forms post only to it.
CULPRIT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
# The API docs page (Swagger UI, served from our own static files) sets inline styles as it renders.
CULPRIT_CSP_DOCS = CULPRIT_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

# --- outbound requests (attribution.outbound) --------------------------------------------------------------------
# Replay hooks, model api_base URLs and providers are reached only at public addresses. CULPRIT_OUTBOUND_ALLOW lists
# what the deployment allows besides: host names, addresses or CIDRs, each optionally with ":port"
# (e.g. "ollama:11434,10.2.0.0/16"). Loopback is allowed by default only in the embedded single-user mode (SQLite and
# the filesystem broker, not CULPRIT_PRODUCTION), so a local Ollama or vLLM works after `make run`.
EMBEDDED = EMBEDDED_DATABASE and EMBEDDED_BROKER and not PRODUCTION
CULPRIT_OUTBOUND_ALLOW = [
    e.strip() for e in os.environ.get("CULPRIT_OUTBOUND_ALLOW", "").split(",") if e.strip()
]
CULPRIT_OUTBOUND_ALLOW_LOOPBACK = env_bool("CULPRIT_OUTBOUND_ALLOW_LOOPBACK", EMBEDDED)
# Providers whose key in the server's environment (OPENAI_API_KEY, ...) projects without a key of their own may use,
# e.g. "openai,anthropic". Empty: every project brings its own key. Never used for a project with a custom api_base.
CULPRIT_SERVER_KEYS_FOR = frozenset(
    p.strip().lower() for p in os.environ.get("CULPRIT_SERVER_KEYS_FOR", "").split(",") if p.strip()
)
# Behind this many reverse proxies (each appends the address it saw to X-Forwarded-For) the client's address is the
# N-th entry from the right; 0 trusts no header and uses the socket's peer. Default: 1 when behind a proxy.
CULPRIT_TRUSTED_PROXIES = env_int("CULPRIT_TRUSTED_PROXIES", 1 if _behind_proxy else 0)
