"""Shared set-up for benchmarks: a private data dir and a migrated database (SQLite unless DATABASE_URL)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_ready(*, broker: str = "memory://") -> None:
    """Configure Django on a fresh database (the test database name when on PostgreSQL)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamafed.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-secret-key-not-for-production-0123456789")
    data_dir = tempfile.mkdtemp(prefix="llamafed-bench-")
    os.environ.setdefault("LLAMAFED_DATA_DIR", data_dir)
    os.environ.setdefault("AO_BUILD_CACHE", str(ROOT / "var" / "test-cache"))
    # Tasks are published (by default to an in-process broker) as in production; the bench evaluates explicitly.
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
    os.environ["CELERY_BROKER_URL"] = broker
    child = os.environ.get("LLAMAFED_BENCH_CHILD") == "1"  # a helper process joins the parent's database
    if os.environ.get("DATABASE_URL", "").startswith("postgres") and not child:
        os.environ["DATABASE_URL"] = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/llamafed_bench"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if child:
        return
    if connection.vendor == "postgresql":
        _recreate_pg_database(connection.settings_dict["NAME"])
    call_command("migrate", verbosity=0)
    from ao.effects import keys

    keys.ensure_keys()


def _recreate_pg_database(name: str) -> None:
    import psycopg
    from django.db import connection

    settings = connection.settings_dict
    with psycopg.connect(host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"],
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    connection.close()


def default_model_file() -> Path:
    """The default model's GGUF bytes as one file under var/bench (its packages hold it in parts), made once."""
    import shutil

    sys.path.insert(0, str(ROOT))
    from ao.extensions import default_model

    target = ROOT / "var" / "bench" / "default-model.gguf"
    if not target.exists() or target.stat().st_size != default_model.SIZE:
        target.parent.mkdir(parents=True, exist_ok=True)
        with default_model.open_concatenated() as source, target.open("wb") as out:
            shutil.copyfileobj(source, out, 16 * 1024 * 1024)
    return target
