"""Settings for Llama Fed: one module, every value from the environment (see .env.example)."""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from .env import ConfigError, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("LLAMAFED_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if len(SECRET_KEY) < 32:
    raise ConfigError("DJANGO_SECRET_KEY must be at least 32 characters")
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
    "django_htmx",
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

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
}
SPECTACULAR_SETTINGS = {"TITLE": "Llama Fed API", "VERSION": "0.1.0"}
# Per-client request rates of the API's write endpoints (DRF syntax, e.g. "10/hour"); the per-account
# limits below are enforced by the services whatever the entry point.
API_THROTTLE_RATES = {
    "petition": env_str("API_PETITION_RATE", "20/hour"),
    "faucet": env_str("API_FAUCET_RATE", "10/hour"),
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

# AO units. Keys are files under DATA_DIR/keys unless overridden; `manage.py ao init`
# creates any that are missing.
AO = {
    "OPERATOR_WALLET": env_str("AO_OPERATOR_WALLET", str(DATA_DIR / "keys" / "operator.json")),
    "SU_KEY": env_str("AO_SU_KEY", str(DATA_DIR / "keys" / "su.json")),
    "MU_KEY": env_str("AO_MU_KEY", str(DATA_DIR / "keys" / "mu.json")),
    "BLOB_DIR": env_str("AO_BLOB_DIR", str(DATA_DIR / "blobs")),
    # Built modules and compiled (.cwasm) code, keyed by content: safe to share between runs.
    "BUILD_CACHE": env_str("AO_BUILD_CACHE", str(DATA_DIR / "cache")),
    "PUBLIC_URL": env_str("AO_PUBLIC_URL", "http://127.0.0.1:8000"),
    # AO's scheduler refuses messages over 100 KiB.
    "MAX_MESSAGE_BYTES": env_int("AO_MAX_MESSAGE_BYTES", 100 * 1024),
    # llama.cpp threads per worker; outputs do not depend on it (tests check), 1 is robust on 2 cores.
    "LLM_THREADS": env_int("AO_LLM_THREADS", 1),
    # How long a silent worker keeps a process's evaluation lease (renewed at a third of it while it works), and a
    # delivery claim; how old a queued-task mark must be before the sweeper queues the task again. None of these
    # changes a result: they decide how soon work a killed worker or a broker outage dropped is taken up again.
    "LEASE_S": env_int("AO_LEASE_S", 15),
    "CLAIM_S": env_int("AO_CLAIM_S", 15),
    "QUEUE_GRACE_S": env_int("AO_QUEUE_GRACE_S", 20),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
