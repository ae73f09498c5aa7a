"""Django settings: one env-driven module (see the configuration table in README.md).

Defaults are safe for a laptop: SQLite under ``var/``, files under ``var/media``, the embedded job runner and
the classical segmenter when no SAM checkpoint is present. Production sets DATABASE_URL (PostgreSQL),
SECRET_KEY and DEBUG=false; with DEBUG off and no SECRET_KEY the process refuses to start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from samsite.env import env_bool, env_choice, env_int, env_list, env_str, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", True)
TESTING = "pytest" in sys.modules or env_bool("TESTING", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-set-SECRET_KEY-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # daphne first: it turns `manage.py runserver` into an ASGI server, which SSE needs.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_eventstream",
    "django_htmx",
    "datasets",
    "templates_app",
    "legacy",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "samsite.urls"
ASGI_APPLICATION = "samsite.asgi.application"
WSGI_APPLICATION = "samsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "frontend.context_processors.segmentation_backend",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if not DATABASE_URL:
    # The embedded default: a SQLite file under var/, created on first use so `make run` works anywhere.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASE_URL = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": parse_database_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dataset-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
# Media is never served publicly: every file goes through an authenticated view (see datasets/views.py).
MEDIA_URL = "/media-not-served/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve app static files straight from the finders so no collectstatic step is needed to run.
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_AUTOREFRESH = DEBUG

# --- Uploads -------------------------------------------------------------------------------------------
MAX_IMAGES_PER_DATASET = env_int("MAX_IMAGES_PER_DATASET", 500, minimum=1)
MAX_UPLOAD_MB = env_int("MAX_UPLOAD_MB", 50, minimum=1)
MAX_IMAGE_MEGAPIXELS = env_int("MAX_IMAGE_MEGAPIXELS", 100, minimum=1)
# A ZIP may hold at most this much uncompressed image data (a zip bomb is refused before extraction).
MAX_ZIP_UNCOMPRESSED_MB = env_int("MAX_ZIP_UNCOMPRESSED_MB", 4096, minimum=1)
# Django refuses more than 100 files per request by default; a dataset upload is allowed its full size.
DATA_UPLOAD_MAX_NUMBER_FILES = MAX_IMAGES_PER_DATASET + 10
# Uploads larger than this spill to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# JSON bodies carry base64 masks (legacy save_component); image uploads are file parts and not counted here.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024

# --- Segmentation --------------------------------------------------------------------------------------
SAM_BACKEND = env_choice("SAM_BACKEND", "auto", ["auto", "sam", "classical"])
SAM_CHECKPOINT = env_str("SAM_CHECKPOINT") or None
SAM_MODELS_DIR = Path(env_str("SAM_MODELS_DIR") or BASE_DIR / "models")
SAM_DEVICE = env_str("SAM_DEVICE") or None
# Load the segmenter in a background thread when the web process starts (/health: model_state).
SAM_PRELOAD = env_bool("SAM_PRELOAD", not TESTING)
EMBED_CACHE_DIR = Path(env_str("EMBED_CACHE_DIR") or VAR_DIR / "embeddings")
EMBED_CACHE_MB = env_int("EMBED_CACHE_MB", 2048, minimum=1)

# --- Jobs ----------------------------------------------------------------------------------------------
# The seed API's apply_stream encodes its events like the old server did by default: WebP at quality 88,
# longest side at most 1600 px (0: full size). A request's own "format" wins; stored jobs stay full size.
SEED_OUTPUT_FORMAT = env_choice("SEED_OUTPUT_FORMAT", "webp", ["png", "jpeg", "webp"])
SEED_OUTPUT_QUALITY = env_int("SEED_OUTPUT_QUALITY", 88, minimum=1)
if SEED_OUTPUT_QUALITY > 100:
    raise ImproperlyConfigured(f"SEED_OUTPUT_QUALITY must be 1..100; got {SEED_OUTPUT_QUALITY}")
SEED_MAX_SIDE = env_int("SEED_MAX_SIDE", 1600, minimum=0)

JOB_RUNNER = env_choice("JOB_RUNNER", "embedded", ["embedded", "celery", "inline"])
#: Items a worker claims at once, and how long its lease on them lasts without a heartbeat (one per image).
JOB_CHUNK_SIZE = env_int("JOB_CHUNK_SIZE", 4, minimum=1)
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 300, minimum=1)
#: ``fair``: round-robin between users, then oldest job first; ``fifo``: oldest job first (a benchmark baseline).
JOB_SCHEDULING = env_choice("JOB_SCHEDULING", "fair", ["fair", "fifo"])
#: Per-user limits on work waiting or running; job creation answers 429 beyond them.
MAX_ACTIVE_JOBS_PER_USER = env_int("MAX_ACTIVE_JOBS_PER_USER", 3, minimum=1)
MAX_QUEUED_ITEMS_PER_USER = env_int("MAX_QUEUED_ITEMS_PER_USER", 5000, minimum=1)
REDIS_URL = env_str("REDIS_URL") or None
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "redis://127.0.0.1:6379/0"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
#: Redis redelivers an unacknowledged task after this; it must exceed the longest chunk (acks_late).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 4 * 3600, minimum=60)
}
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE") or "samgen"
#: torch intra-op threads of each worker process (several processes on one machine share its cores).
WORKER_TORCH_THREADS = env_int("WORKER_TORCH_THREADS", 1, minimum=1)

# --- Live events (django-eventstream) ------------------------------------------------------------------
EVENTSTREAM_STORAGE_CLASS = "datasets.jobs.events.JobEventStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "datasets.jobs.events.JobChannelManager"
#: Open live event streams (API and pages together) a user may hold at once; a crashed process's count expires.
SSE_MAX_CONNECTIONS_PER_USER = env_int("SSE_MAX_CONNECTIONS_PER_USER", 20, minimum=1)
SSE_SLOT_TTL_SECONDS = env_int("SSE_SLOT_TTL_SECONDS", 6 * 3600, minimum=60)
if REDIS_URL:
    # Workers in other processes (Celery) publish through Redis so every web process's listeners hear them.
    from urllib.parse import urlsplit as _urlsplit

    _redis = _urlsplit(REDIS_URL)
    EVENTSTREAM_REDIS = {
        "host": _redis.hostname or "127.0.0.1",
        "port": _redis.port or 6379,
        "db": int((_redis.path or "/0").lstrip("/") or 0),
    }

# --- Caches (throttle counters must be shared by every process: database, or Redis when configured) ----
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"}
    }

# --- REST framework ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes anonymous API calls a 401 rather than a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "uploads": env_str("THROTTLE_UPLOADS") or "120/min",
        "previews": env_str("THROTTLE_PREVIEWS") or "1200/min",
    },
    "EXCEPTION_HANDLER": "samsite.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SAM Bulk Dataset Generator API",
    "DESCRIPTION": "Datasets, templates, segmentation previews and generation jobs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "datasets.models.JobStatus",
        "ItemStatusEnum": "datasets.models.ItemStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {"django.request": {"level": "ERROR"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
