"""Test-run environment (a pytest plugin loaded by -p, before Django settings): private data dir, test secret."""

import os
import shutil
import tempfile

_CREATED = None
if not os.environ.get("LLAMAFED_DATA_DIR"):
    _CREATED = tempfile.mkdtemp(prefix="llamafed-test-")
    os.environ["LLAMAFED_DATA_DIR"] = _CREATED
os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
# Built modules and compiled code are keyed by content: keep them between runs.
os.environ.setdefault(
    "AO_BUILD_CACHE", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "test-cache")
)
# The shared cache (Redis in CI's first pass) holds limits' windows: this run's keys apart from any other's.
os.environ.setdefault("CACHE_KEY_PREFIX", f"llamafed-test-{os.getpid()}-{os.urandom(4).hex()}")
# Spawns through the public endpoints get AO's own caps here (tests spawn with module defaults); the node's
# lower caps for signers outside the allow-list are tested by turning them on (tests/ao/test_limits.py).
os.environ.setdefault("AO_SPAWN_MAX_FUEL", str(9_000_000_000_000))
os.environ.setdefault("AO_SPAWN_MAX_MEMORY", str(16 * 1024**3))
# Tasks run inline unless a test runs a real worker (tests/test_celery_worker.py).
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
# WhiteNoise warns (an error under filterwarnings=error) when STATIC_ROOT does not exist.
os.makedirs(os.path.join(os.environ["LLAMAFED_DATA_DIR"], "static"), exist_ok=True)


def pytest_unconfigure(config: object) -> None:
    """Remove the run's data dir (blobs, model copies) when this run made it."""
    if _CREATED and not hasattr(config, "workerinput"):
        shutil.rmtree(_CREATED, ignore_errors=True)
