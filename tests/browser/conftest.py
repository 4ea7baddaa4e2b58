"""Shared by the browser tests: the site's test settings, a real Celery worker, the tiny-model Fed, headless
Debian Chromium in a thread of its own, and screenshots of each page at desktop and phone widths."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from llamafed.celery import app as celery_app
from policy import services as fed_services
from tests import workers
from tests.policy.test_fed import TEST_PARAMS
from tests.web.conftest import _site_settings  # noqa: F401  (an autouse fixture, shared)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
STEP_TIMEOUT_MS = 120_000  # one step of the log: worker pick-up, evaluation, tiny-model deliberation
PASSWORD = "Newcomer-pass-2026!"
# Screenshots of every page the flows visit, for people to look at (git-ignored; CI keeps the folder).
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}
T = TypeVar("T")


@pytest.fixture
def worker(node_keys: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A real Celery worker on a fresh queue: the site sends tasks through the broker instead of running them."""
    queue = workers.new_queue()
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    monkeypatch.setitem(celery_app.conf, "task_default_queue", queue)
    log = tmp_path / "worker.log"
    process = workers.start_worker(queue, log)
    try:
        yield log
    finally:
        workers.stop_worker(process)


@pytest.fixture
def fed_on_tiny_model(worker: Path, tmp_path: Path) -> str:
    """wAR, LLAMA and the Fed on the tiny model, spawned and evaluated by the worker."""
    from ao import models, weave
    from tests.support.tiny_gguf import tiny_gguf_path

    model = weave.weave_upload(path=tiny_gguf_path(tmp_path), tags=[], name="tiny")
    fed = fed_services.fed_bootstrap(model_tx=model, overrides=TEST_PARAMS).process_id
    workers.wait_for(lambda: models.StateEntry.objects.filter(process_id=fed, key="config").exists(),
                     "the Fed's spawn to be evaluated", worker)
    return fed


def in_browser(drive: Callable[[Any], T]) -> T:
    """Run drive(browser) with headless Debian Chromium, in a thread of its own: Playwright's event loop must not
    share a thread with the ORM (Django refuses database calls from a thread running an event loop)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package")

    def run() -> T:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                return drive(browser)
            finally:
                browser.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def session(browser: Any) -> tuple[Any, Any, list[str]]:
    """A fresh browser context (its own cookies), its page, and the JavaScript dialogs the page opens."""
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    opened: list[str] = []

    def record(dialog: Any) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    return context, page, opened


def shoot(page: Any, name: str) -> None:
    """Full-page screenshots of the current page at desktop and phone widths: artifacts/screenshots/NAME-*.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        # The page fits the screen's width: nothing to scroll sideways (wide tables scroll inside their box).
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= size["width"], f"{name} is {scroll_width} px wide at {width} width {size['width']}"
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size(VIEWPORTS["desktop"])


def log_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Log in through the form."""
    from playwright.sync_api import expect

    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login/"))


def reload_until(page: Any, locator: str, text: str, timeout_ms: int = STEP_TIMEOUT_MS) -> None:
    """Reload until an element shows the text (pages without live updates)."""
    from playwright.sync_api import expect

    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            expect(page.locator(locator)).to_contain_text(text, timeout=2_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            page.reload()
