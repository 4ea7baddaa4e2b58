"""The newcomer's flow in a real browser (Playwright driving Debian's Chromium) against the live site and a real
Celery worker: sign up, get demo wAR, petition, watch the committee deliberate live to the decision, find the grant
in balances and the feed; then an admin replays the Fed's log and sees it match. Runs on the tiny model."""

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
from web.models import Grant, Petition, VerifyRun

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
STEP_TIMEOUT_MS = 120_000  # one step of the log: worker pick-up, evaluation, tiny-model deliberation
PETITION = 'I plant <b>trees</b> with kids <script>alert("pwned")</script> & teach them to water them.'
ESCAPED_SCRIPT = '&lt;script&gt;alert("pwned")&lt;/script&gt;'  # as the DOM serializes escaped text
PASSWORD = "Newcomer-pass-2026!"
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


def _session(browser: Any) -> tuple[Any, Any, list[str]]:
    """A fresh browser context (its own cookies), its page, and the JavaScript dialogs the page opens."""
    context = browser.new_context()
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    return context, page, _no_dialogs(page)


def _no_dialogs(page: Any) -> list[str]:
    """Record any JavaScript dialog: escaped markup must never run."""
    opened: list[str] = []

    def record(dialog: Any) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    return opened


def _markup_is_text(page: Any) -> None:
    """The petition's markup is on the page as text, and no element came of it."""
    assert ESCAPED_SCRIPT in page.content()
    assert page.locator("script", has_text="pwned").count() == 0
    assert page.locator("blockquote b").count() == 0


def _reload_until(page: Any, locator: str, text: str, timeout_ms: int = STEP_TIMEOUT_MS) -> None:
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


def test_a_newcomer_petitions_and_an_admin_verifies_the_decision(
    live_server: Any, fed_on_tiny_model: str, django_user_model: Any, worker: Path
) -> None:
    django_user_model.objects.create_user("auditor", password=PASSWORD, is_staff=True)
    petition_id = in_browser(lambda browser: _newcomer_and_auditor(browser, live_server.url))

    # What the browser saw is what the log says.
    petition = Petition.objects.get(id=petition_id)
    assert petition.status == "decided" and petition.text == PETITION
    assert Grant.objects.get(petition=petition).status == "granted"
    run = VerifyRun.objects.get()
    assert run.status == "match" and run.checked > 0


def _newcomer_and_auditor(browser: Any, base: str) -> str:
    """The whole flow in the browser; returns the petition id."""
    from playwright.sync_api import expect

    context, page, dialogs = _session(browser)

    # Sign up: the account gets its own wallet and lands on its page.
    page.goto(f"{base}/signup/")
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    expect(page).to_have_url(re.compile(r"/account/$"))
    expect(page.get_by_role("heading", name="My account")).to_be_visible()
    address = page.locator("#wallet-title ~ p code.address").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", address)

    # The faucet mints demo wAR; the balance shows once the worker has evaluated the Mint.
    page.get_by_role("button", name=re.compile(r"^Get .* wAR$")).click()
    expect(page.locator(".messages")).to_contain_text("Demo wAR is on its way")
    _reload_until(page, "dl.balances", "0.1")

    # The petition, with markup in it; the site sends it and shows its live status.
    page.get_by_role("link", name="Petition", exact=True).click()
    page.get_by_label("Your petition").fill(PETITION)
    page.get_by_label("Your name").fill("Newcomer")
    page.get_by_role("button", name="Send my petition").click()
    expect(page).to_have_url(re.compile(r"/petitions/[A-Za-z0-9_-]{43}/$"))
    petition_id = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.locator("blockquote.petition-text")).to_have_text(PETITION)  # shown as text, not as HTML
    _markup_is_text(page)

    # htmx polls the status region: each governor's step appears with its reason, then the grant.
    status = page.locator("#petition-status")
    expect(status).to_contain_text("Received")
    expect(status.locator(".step-done", has_text="Governor 1 of 2 (Ada)")).to_be_visible()
    expect(status.locator(".step-done", has_text="Governor 2 of 2 (Bo)")).to_be_visible()
    expect(status.locator(".step", has_text="Granted")).to_be_visible()
    expect(status).to_contain_text("Final: decided")
    expect(status.locator(".step-done .grade").first).to_contain_text("grade")

    # The decision record has every governor's reason.
    page.get_by_role("link", name="See the decision record").click()
    expect(page.get_by_role("heading", name="Governors")).to_be_visible()
    expect(page.locator("ol.votes > li")).to_have_count(2)
    expect(page.locator("p.big")).to_contain_text("LLAMA granted")
    granted = page.locator("p.big").inner_text().split(" LLAMA")[0]

    # Balances and the grants feed show the grant; the petition's markup is text there too.
    page.get_by_role("link", name="Balances").click()
    _reload_until(page, "table", granted)
    expect(page.locator("table tbody tr td").nth(2)).to_have_text(granted)
    page.get_by_role("link", name="Grants").click()
    feed = page.locator("ul.grants > li").first
    expect(feed).to_contain_text(f"{granted} LLAMA")
    expect(feed.locator("blockquote")).to_have_text(PETITION)
    _markup_is_text(page)
    # A member who is not staff is refused the audit.
    assert page.goto(f"{base}/audit/petitions/{petition_id}/").status == 403
    context.close()

    # The admin logs in, opens the decision's audit trace and replays the Fed's log in a Celery task.
    admin, page, admin_dialogs = _session(browser)
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("auditor")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{base}/petitions/{petition_id}/decision/")
    page.get_by_role("link", name="audit trace").click()
    expect(page.get_by_role("heading", name=re.compile("Audit of petition"))).to_be_visible()
    expect(page.locator("article.trace-row h3", has_text=re.compile(r": Deliberate$"))).to_have_count(2)
    expect(page.locator("article.trace-row details").first).to_contain_text("sha256")
    page.get_by_role("button", name="Verify: replay the Fed's log").click()
    _reload_until(page, "section[aria-labelledby=runs] table", "every result and state hash matches")
    admin.close()
    assert dialogs == [] and admin_dialogs == []
    return petition_id
