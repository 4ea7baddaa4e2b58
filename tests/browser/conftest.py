"""The browser tests use the site's test settings (static files without a manifest, clean throttles)."""

from tests.web.conftest import _site_settings  # noqa: F401  (an autouse fixture, shared)
