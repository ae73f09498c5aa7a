"""Django settings: one env-driven module (see the configuration table in README.md).

Defaults are production-safe: DEBUG is off (``make run`` turns it on explicitly), and then SECRET_KEY is
required, cookies are secure, HTTPS is enforced (HSTS, SSL redirect) and the pages get a Content-Security-Policy.
Storage defaults suit a laptop: SQLite under ``var/``, files under ``var/media``, the embedded job runner and
the classical segmenter when no SAM checkpoint is present. Production sets DATABASE_URL (PostgreSQL) and
SECRET_KEY. With DEBUG on, ALLOWED_HOSTS may only name local hosts (a debug page must never face the network).
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from samsite.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
    redis_connection_kwargs,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
TESTING = "pytest" in sys.modules or env_bool("TESTING", False)
#: Production defaults (HTTPS-only cookies, HSTS, SSL redirect) apply when DEBUG is off, except under the test
#: runner, whose clients and live servers speak plain HTTP.
PRODUCTION = not DEBUG and not TESTING

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    # Only ever with DEBUG on (make run) or under the tests; the process refuses it otherwise.
    SECRET_KEY = "dev-only-insecure-key-set-SECRET_KEY-in-production"

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1", "testserver")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
if DEBUG:
    _public = [host for host in ALLOWED_HOSTS if host not in LOCAL_HOSTS and not host.endswith(".localhost")]
    if _public:
        # The debug page shows settings and tracebacks: it must never be reachable under a public name.
        raise ImproperlyConfigured(
            f"DEBUG is on but ALLOWED_HOSTS names non-local hosts ({', '.join(_public)}); "
            "set DEBUG=false to serve them"
        )
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
    "csp",
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
    "csp.middleware.CSPMiddleware",
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
# --- Request bodies (checked by samsite.asgi_limits before the body is read; README "Security") ---------
#: Any request that is not an upload (JSON, forms): base64 masks of legacy save_component fit in it.
MAX_REQUEST_BODY_MB = env_int("MAX_REQUEST_BODY_MB", 16, minimum=1)
#: The whole multipart body of one upload request (all files and fields together).
MAX_UPLOAD_REQUEST_MB = env_int("MAX_UPLOAD_REQUEST_MB", 1024, minimum=1)
# Django's own check on non-file form/JSON data, aligned with the ASGI guard (a second line for WSGI).
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_MB * 1024 * 1024
#: JSON nesting deeper than this is refused (400 invalid_json) by samsite.common.parsers.
MAX_JSON_DEPTH = env_int("MAX_JSON_DEPTH", 32, minimum=4)

# --- Work per request ----------------------------------------------------------------------------------
MAX_POINTS_PER_PROMPT = env_int("MAX_POINTS_PER_PROMPT", 64, minimum=1)
MAX_TEMPLATES_PER_DATASET = env_int("MAX_TEMPLATES_PER_DATASET", 100, minimum=1)
MAX_TEMPLATES_PER_PREVIEW = env_int("MAX_TEMPLATES_PER_PREVIEW", 100, minimum=1)
#: Edit previews of larger images run on a copy downscaled to this longest side (kept next to the thumbnail).
PREVIEW_MAX_SIDE = env_int("PREVIEW_MAX_SIDE", 2048, minimum=256)

# --- Segmentation --------------------------------------------------------------------------------------
SAM_BACKEND = env_choice("SAM_BACKEND", "auto", ["auto", "sam", "classical"])
SAM_CHECKPOINT = env_str("SAM_CHECKPOINT") or None
SAM_MODELS_DIR = Path(env_str("SAM_MODELS_DIR") or BASE_DIR / "models")
SAM_DEVICE = env_str("SAM_DEVICE") or None
# Load the segmenter in a background thread when the web process starts (/health: model_state).
SAM_PRELOAD = env_bool("SAM_PRELOAD", not TESTING)
#: Models each process keeps loaded (LRU) when datasets pick different checkpoints of SAM_MODELS_DIR.
SAM_MAX_LOADED_MODELS = env_int("SAM_MAX_LOADED_MODELS", 2, minimum=1)
EMBED_CACHE_DIR = Path(env_str("EMBED_CACHE_DIR") or VAR_DIR / "embeddings")
EMBED_CACHE_MB = env_int("EMBED_CACHE_MB", 2048, minimum=1)
# Decoded pixels of stored originals, so a re-run or a preview reads raw pixels (a few ms) instead of decoding
# the PNG/JPEG again (~80 ms at 2048x1536). Raw pixels are 3 bytes a pixel: 2048 MB holds ~220 such photos;
# size it to the images re-run together, or a sequential pass over more than it holds never hits. 0: off.
DECODED_CACHE_DIR = Path(env_str("DECODED_CACHE_DIR") or VAR_DIR / "decoded")
DECODED_CACHE_MB = env_int("DECODED_CACHE_MB", 2048, minimum=0)

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

#: Quality flags of annotations (datasets.jobs.quality): a mask covering more than this fraction of its image,
#: an area this many times smaller or larger than on the template's reference image (relative to the image's
#: area), or a centroid this far (normalised coordinates) from the reference mask's is flagged for review.
QUALITY_MAX_AREA_FRACTION = env_float("QUALITY_MAX_AREA_FRACTION", 0.9, minimum=0.0, maximum=1.0)
QUALITY_AREA_DRIFT_RATIO = env_float("QUALITY_AREA_DRIFT_RATIO", 4.0, minimum=1.0)
QUALITY_CENTROID_DRIFT = env_float("QUALITY_CENTROID_DRIFT", 0.25, minimum=0.0)

# --- Live events (django-eventstream) ------------------------------------------------------------------
EVENTSTREAM_STORAGE_CLASS = "datasets.jobs.events.JobEventStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "datasets.jobs.events.JobChannelManager"
#: Open live event streams (API and pages together) a user may hold at once; a crashed process's count expires.
SSE_MAX_CONNECTIONS_PER_USER = env_int("SSE_MAX_CONNECTIONS_PER_USER", 20, minimum=1)
SSE_SLOT_TTL_SECONDS = env_int("SSE_SLOT_TTL_SECONDS", 6 * 3600, minimum=60)
# Workers in other processes (Celery) publish through Redis so every web process's listeners hear them:
# REDIS_URL, else, with the Celery runner, its broker (Redis). Without it a browser would never see a
# worker's events live, so JOB_RUNNER=celery with a non-Redis broker and no REDIS_URL is refused.
_EVENTS_REDIS_URL = REDIS_URL
if JOB_RUNNER == "celery" and not _EVENTS_REDIS_URL:
    if not CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        raise ImproperlyConfigured(
            "JOB_RUNNER=celery needs Redis for live events across processes: set REDIS_URL "
            "(CELERY_BROKER_URL is not a redis:// URL, so it cannot be used instead)"
        )
    _EVENTS_REDIS_URL = CELERY_BROKER_URL
if _EVENTS_REDIS_URL:
    EVENTSTREAM_REDIS = redis_connection_kwargs(_EVENTS_REDIS_URL)

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
    "DEFAULT_PARSER_CLASSES": [
        "samsite.common.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "uploads": env_str("THROTTLE_UPLOADS") or "120/min",
        "previews": env_str("THROTTLE_PREVIEWS") or "1200/min",
        "jobs": env_str("THROTTLE_JOBS") or "30/min",
        "login": env_str("THROTTLE_LOGIN") or "30/min",
        "downloads": env_str("THROTTLE_DOWNLOADS") or "60/min",
    },
    "EXCEPTION_HANDLER": "samsite.common.api.exception_handler",
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

# --- Login lockout (samsite.login_guard, on the shared cache) ------------------------------------------
#: Failed logins of one username from one IP before both are refused for LOGIN_LOCKOUT_SECONDS; an IP is
#: locked out after 4x as many failures across usernames.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
AUTHENTICATION_BACKENDS = ["samsite.login_guard.LockoutBackend"]

# --- HTTPS and browser security (production defaults when DEBUG is off) --------------------------------
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# Load balancers probe /health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    # Only behind a proxy that sets (and strips client copies of) X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The pages' scripts and styles are static files under /static/; masks and previews are data:/blob: images.
# Inline style attributes remain in the templates (and htmx injects its indicator style), hence
# 'unsafe-inline' for styles only: scripts never run inline. Swagger UI ships an inline bootstrap script.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/docs/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
