"""Settings for Llama Fed: one module, every value from the environment (see .env.example)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dj_database_url
from dotenv import load_dotenv

from .env import ConfigError, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
# manage.py, gunicorn and Celery read the checkout's .env (written by scripts/setup) as scripts/run does; a variable
# already in the environment wins. LLAMAFED_ENV_FILE names another file.
load_dotenv(env_str("LLAMAFED_ENV_FILE", str(BASE_DIR / ".env")), override=False)
DATA_DIR = Path(env_str("LLAMAFED_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if len(SECRET_KEY) < 32:
    raise ConfigError("DJANGO_SECRET_KEY must be at least 32 characters")
# Older secrets, newest first, still accepted for sessions, signed values and the custodial wallets' encryption:
# rotate by moving the old key here, then `manage.py web rotate-wallet-keys` re-encrypts every wallet.
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", "")
if any(len(k) < 32 for k in SECRET_KEY_FALLBACKS):
    raise ConfigError("every DJANGO_SECRET_KEY_FALLBACKS entry must be at least 32 characters")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from static (no CDN)
    "django_htmx",
    "axes",
    "ao",
    "ledger",
    "policy",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "web.middleware.OneLoginAtATime",
    # Last, as django-axes asks: it turns a locked-out login into the lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "llamafed.urls"
WSGI_APPLICATION = "llamafed.wsgi.application"
ASGI_APPLICATION = "llamafed.asgi.application"

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
                "web.context_processors.navigation",
            ],
        },
    },
]

# The embedded default is SQLite under DATA_DIR; DATABASE_URL switches to PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'llamafed.sqlite3'}"),
        # Persistent connections (checked before reuse): a new PostgreSQL connection per request cost ~7 ms of a
        # petition's ~29 (bench/submit_load.py).
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent writers queue
    # on the busy timeout instead of failing with "database is locked" mid-transaction.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(DATA_DIR / "test.sqlite3")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "web:login"
LOGIN_REDIRECT_URL = "web:account"
LOGOUT_REDIRECT_URL = "web:home"

# --- behind TLS (README, "Production") ------------------------------------------------------------------------
# DJANGO_HTTPS=1 when the site is served over HTTPS: secure cookies, HSTS, and HTTP redirected to HTTPS. Behind a
# TLS-terminating proxy, DJANGO_PROXY_SSL_HEADER names the header it sets (e.g. X-Forwarded-Proto) so Django
# knows a request came in over HTTPS; set it only if the proxy always overwrites that header.
HTTPS = env_bool("DJANGO_HTTPS", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = HTTPS and env_bool("DJANGO_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
_proxy_header = env_str("DJANGO_PROXY_SSL_HEADER", "")
SECURE_PROXY_SSL_HEADER = (f"HTTP_{_proxy_header.upper().replace('-', '_')}", "https") if _proxy_header else None
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Content-Security-Policy (django-csp): only this origin's scripts, styles and images; no inline script, no
# framing, forms post only here.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

# --- accounts -------------------------------------------------------------------------------------------------
# Password reset mails go through EMAIL_BACKEND: printed on the console by default (no mail server needed);
# set DJANGO_EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and the EMAIL_* variables to send them.
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "llamafed@localhost")
PASSWORD_RESET_TIMEOUT = 3600

# Clients behind this many trusted proxies: their address is read from X-Forwarded-For (the proxies' own
# entries); 0 trusts no header, only the connection's address.
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)

# Failed logins (site and admin), django-axes: after AXES_FAILURE_LIMIT failures for one username, or from one
# address, that username or address is locked for LOGIN_LOCKOUT_S seconds after the last failure (429 with
# Retry-After). Staff unlock with `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS`; every attempt is
# kept for the admin. A success does not wipe the count: otherwise a guesser would log into an account of their own
# between guesses to clear their address's failures.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_LOCKOUT_S = env_int("LOGIN_LOCKOUT_S", 900)
AXES_COOLOFF_TIME = dt.timedelta(seconds=LOGIN_LOCKOUT_S)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "web.views.login_locked_out"
AXES_CLIENT_IP_CALLABLE = "ao.limits.client_ip"  # the same client address every limit counts
AXES_VERBOSE = False

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "NUM_PROXIES": TRUSTED_PROXIES,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Llama Fed API", "VERSION": "0.1.0",
    "DESCRIPTION": "Petitions, grants, supply and balances of this Llama Fed node. The AO units (messenger, "
                   "scheduler, compute unit, gateway) have their own base URLs: see the README.",
    "SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}
CSRF_FAILURE_VIEW = "web.views.csrf_failure"
# Request limits per client, counted in the shared cache (below) by every web worker alike (ao/limits.py):
# "N/unit" with unit s, min, hour or day, or a multiple ("10/15min"). Over a limit: 429 with Retry-After and a
# message saying when to come back. The per-account rules after these (faucet drips, petitions per hour, the
# Fed's cooldown) are kept in the database whatever the entry point.
LIMITS = {
    # Sign-ups from one address (each costs ~0.7 s of RSA key generation and gets faucet wAR).
    "signup_ip": env_str("LIMIT_SIGNUP_PER_IP", "5/hour"),
    # Faucet requests from one address (site and API), beside FAUCET_PER_ACCOUNT per account.
    "faucet_ip": env_str("LIMIT_FAUCET_PER_IP", "10/hour"),
    # Petition submissions per account (or per address when anonymous: the signed API), site and API.
    "petition_client": env_str("LIMIT_PETITIONS_PER_CLIENT", "20/hour"),
    # Password-reset requests from one address.
    "password_reset_ip": env_str("LIMIT_PASSWORD_RESET_PER_IP", "5/hour"),
    # Items posted to the messenger or the scheduler (POST, assign): per address before the item is read, per
    # signer once its signature verifies.
    "intake_ip": env_str("LIMIT_INTAKE_PER_IP", "300/min"),
    "intake_signer": env_str("LIMIT_INTAKE_PER_SIGNER", "120/min"),
    # Spawns per signer outside AO_SPAWN_ALLOWLIST.
    "spawn_signer": env_str("LIMIT_SPAWNS_PER_SIGNER", "10/hour"),
    # Compute-unit reads that may wait or evaluate (result, dry-run), per address.
    "cu_ip": env_str("LIMIT_CU_PER_IP", "120/min"),
}

# Demo wAR faucet: the operator wallet (wAR's owner) mints FAUCET_AMOUNT base units to an account,
# at most FAUCET_PER_ACCOUNT times per FAUCET_WINDOW seconds.
FAUCET_ENABLED = env_bool("FAUCET_ENABLED", True)
FAUCET_AMOUNT = env_int("FAUCET_AMOUNT", 100_000_000_000)  # 0.1 wAR: four petitions at 0.025
FAUCET_PER_ACCOUNT = env_int("FAUCET_PER_ACCOUNT", 3)
FAUCET_WINDOW = env_int("FAUCET_WINDOW", 24 * 3600)
# Petitions per account per hour through this site (the Fed itself allows one per address per cooldown).
PETITIONS_PER_HOUR = env_int("PETITIONS_PER_HOUR", 3)
if min(FAUCET_AMOUNT, FAUCET_PER_ACCOUNT, FAUCET_WINDOW, PETITIONS_PER_HOUR) <= 0:
    raise ConfigError("FAUCET_AMOUNT, FAUCET_PER_ACCOUNT, FAUCET_WINDOW and PETITIONS_PER_HOUR must be positive")

# Celery: the embedded default is kombu's filesystem transport under DATA_DIR;
# CELERY_BROKER_URL (redis://...) switches to Redis. Results live in the database,
# so no result backend is used.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = DATA_DIR / "broker"
    # The transport needs its folder before the first publish, from any entry point.
    _queue_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "llamafed")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = False  # the idempotent tasks (ao.tasks) ack late and are rejected when their worker dies
# The database is the truth about pending work; the sweeper re-queues what the broker lost. Beat runs it (the
# worker is started with -B by scripts/run), and every worker runs it once when it starts.
SWEEP_S = env_int("AO_SWEEP_S", 10)
CELERY_BEAT_SCHEDULE = {
    "ao-sweep": {"task": "ao.sweep", "schedule": float(SWEEP_S)},
    "web-project": {"task": "web.project", "schedule": float(max(SWEEP_S, 30))},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Keep trying when the broker is away at start-up or during work, instead of giving up.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None

# One cache shared by every web worker and Celery worker: it holds the request limits' windows and dry-run
# answers computed by workers. Redis when CACHE_URL (or else a redis:// CELERY_BROKER_URL) names one, Django's
# database cache on the embedded default (its table is made by `migrate`).
_cache_url = env_str("CACHE_URL", CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "")
_cache_prefix = env_str("CACHE_KEY_PREFIX", CELERY_TASK_DEFAULT_QUEUE)
if _cache_url.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url,
                          "KEY_PREFIX": _cache_prefix}}
elif _cache_url:
    raise ConfigError(f"CACHE_URL={_cache_url!r}: use redis://HOST:PORT/DB, or leave it empty for the database cache")
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "llamafed_cache",
                          "KEY_PREFIX": _cache_prefix,
                          # Culling would drop live limit windows: keep far more entries than clients.
                          "OPTIONS": {"MAX_ENTRIES": 1_000_000, "CULL_FREQUENCY": 10}}}

# AO units. Keys are files under DATA_DIR/keys unless overridden; `manage.py ao init`
# creates any that are missing.
AO = {
    "OPERATOR_WALLET": env_str("AO_OPERATOR_WALLET", str(DATA_DIR / "keys" / "operator.json")),
    "SU_KEY": env_str("AO_SU_KEY", str(DATA_DIR / "keys" / "su.json")),
    "MU_KEY": env_str("AO_MU_KEY", str(DATA_DIR / "keys" / "mu.json")),
    "BLOB_DIR": env_str("AO_BLOB_DIR", str(DATA_DIR / "blobs")),
    # Where this worker reads module binaries and WeaveDrive data (model weights): empty, the node's own store
    # (BLOB_DIR); the URL of the node's gateway API (http://node:8000/ao/gateway) for a worker on another machine,
    # which then shares only the database and the broker: every chunk is proven against its transaction's
    # data_root (the header's signature checked) before use, and kept under this worker's DATA_DIR/weavedrive.
    "DATA_GATEWAY": env_str("AO_DATA_GATEWAY", ""),
    # Built modules and compiled (.cwasm) code, keyed by content: safe to share between runs.
    "BUILD_CACHE": env_str("AO_BUILD_CACHE", str(DATA_DIR / "cache")),
    "PUBLIC_URL": env_str("AO_PUBLIC_URL", "http://127.0.0.1:8000"),
    # AO's scheduler refuses messages over 100 KiB.
    "MAX_MESSAGE_BYTES": env_int("AO_MAX_MESSAGE_BYTES", 100 * 1024),
    # llama.cpp threads per worker; outputs do not depend on it (tests check), 1 is robust on 2 cores.
    "LLM_THREADS": env_int("AO_LLM_THREADS", 1),
    # Completions a process hints at (llm.prefetch: the Fed's governors) are computed ahead by any free worker and
    # looked up by what determines them; off, each is computed when its message asks. Results are the same.
    "LLM_AHEAD": env_bool("AO_LLM_AHEAD", True),
    # How long a silent worker keeps a process's evaluation lease (renewed at a third of it while it works), and a
    # delivery claim; how old a queued-task mark must be before the sweeper queues the task again. None of these
    # changes a result: they decide how soon work a killed worker or a broker outage dropped is taken up again.
    "LEASE_S": env_int("AO_LEASE_S", 15),
    "CLAIM_S": env_int("AO_CLAIM_S", 15),
    "QUEUE_GRACE_S": env_int("AO_QUEUE_GRACE_S", 20),
    # Spawns from the public endpoints: signers outside this list (the operator wallet is always on it) get at
    # most SPAWN_MAX_FUEL fuel per message and SPAWN_MAX_MEMORY bytes of memory, asked for with Compute-Limit and
    # Memory-Limit tags (or the module's own lower limits); a spawn asking more is refused before it is scheduled.
    "SPAWN_ALLOWLIST": env_list("AO_SPAWN_ALLOWLIST", ""),
    "SPAWN_MAX_FUEL": env_int("AO_SPAWN_MAX_FUEL", 10_000_000_000),
    "SPAWN_MAX_MEMORY": env_int("AO_SPAWN_MAX_MEMORY", 1024**3),
    # How long GET /ao/cu/result waits for a worker before answering 202 "in progress" (AO's busy answer).
    "RESULT_WAIT_S": float(env_int("AO_RESULT_WAIT_S", 5)),
}

# The Fed's queue: a petition that would wait longer than this many seconds for its decision (the backlog times
# the recent decision time) is refused by the site and the API before any wAR moves, saying how long it would wait.
FED_MAX_WAIT_S = env_int("FED_MAX_WAIT_S", 1800)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
