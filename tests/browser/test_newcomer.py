"""The newcomer's flow in a real browser (Playwright driving Debian's Chromium) against the live site and a real
Celery worker: sign up, get demo wAR (the balance updates by itself), read the rule, the offering and the expected
wait before writing, petition, watch the committee deliberate live to the decision, find the grant in balances and
the feed, see when a second petition is possible; then a staff member reaches the audit from the navigation and
sees the replay's result without a reload. Runs on the tiny model; screenshots of every page at desktop and phone
widths land in tests/artifacts/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, in_browser, log_in, reload_until, session, shoot
from web.models import Grant, Petition, VerifyRun

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PETITION = 'I plant <b>trees</b> with kids <script>alert("pwned")</script> & teach them to water them.'
ESCAPED_SCRIPT = '&lt;script&gt;alert("pwned")&lt;/script&gt;'  # as the DOM serializes escaped text
NO_RELOAD = "window.__noReload"  # set on a page; a reload or navigation would clear it


def _markup_is_text(page: Any) -> None:
    """The petition's markup is on the page as text, and no element came of it."""
    assert ESCAPED_SCRIPT in page.content()
    assert page.locator("script", has_text="pwned").count() == 0
    assert page.locator("blockquote b").count() == 0


def _mark(page: Any) -> None:
    page.evaluate(f"{NO_RELOAD} = true")


def _not_reloaded(page: Any) -> bool:
    return page.evaluate(f"{NO_RELOAD} === true")


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
    assert run.status == "match" and run.checked > 0 and run.checked == run.total


def _newcomer_and_auditor(browser: Any, base: str) -> str:
    """The whole flow in the browser; returns the petition id."""
    from playwright.sync_api import expect

    context, page, dialogs = session(browser)
    page.goto(f"{base}/")
    expect(page.get_by_role("link", name="Llama Fed").locator("img")).to_be_visible()  # the SVG logo
    shoot(page, "home")

    # Sign up: the account gets its own wallet and lands on its page.
    page.get_by_role("link", name="Sign up", exact=True).click()
    shoot(page, "signup")
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Create my account").click()
    expect(page).to_have_url(re.compile(r"/account/$"))
    expect(page.get_by_role("heading", name="My account")).to_be_visible()
    address = page.locator("#wallet-title ~ p code.address").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", address)

    # The faucet mints demo wAR; the balance shows by itself once the worker has evaluated the Mint.
    page.get_by_role("button", name=re.compile(r"^Get .* wAR$")).click()
    expect(page.locator(".messages")).to_contain_text("Demo wAR is on its way")
    expect(page.locator("#faucet-title ~ p")).to_contain_text("the next one comes back")
    _mark(page)
    expect(page.locator("#account-balances")).to_contain_text("0.1")
    assert _not_reloaded(page)
    shoot(page, "account")

    # Before writing: the rule, the offering and the expected decision time.
    page.get_by_role("link", name="Petition", exact=True).click()
    rules = page.locator("section.rules")
    expect(rules).to_contain_text("One petition per address every 23 h")
    expect(rules).to_contain_text("The offering: 0.025 wAR")
    expect(rules).to_contain_text(re.compile(r"Expected decision: about \d+ (s|min)"))
    shoot(page, "petition-form")

    # The petition, with markup in it; the site sends it and shows its live status.
    page.get_by_label("Your petition").fill(PETITION)
    page.get_by_label("Your name").fill("Newcomer")
    page.get_by_role("button", name="Send my petition").click()
    expect(page).to_have_url(re.compile(r"/petitions/[A-Za-z0-9_-]{43}/$"))
    petition_id = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.locator("blockquote.petition-text")).to_have_text(PETITION)  # shown as text, not as HTML
    _markup_is_text(page)

    # htmx polls the status region: each governor's step appears with its reason and when it finished, then
    # the grant.
    status = page.locator("#petition-status")
    expect(status).to_contain_text("Received")
    expect(status.locator(".step-done", has_text="Governor 1 of 2 (Ada)")).to_be_visible()
    expect(status.locator(".step-done", has_text="Governor 2 of 2 (Bo)")).to_be_visible()
    expect(status.locator(".step", has_text="Granted")).to_be_visible()
    expect(status).to_contain_text("Final: decided")
    expect(status.locator(".step-done .grade").first).to_contain_text("grade")
    expect(status.locator(".step-done .step-time").first).to_contain_text(re.compile(r"at \d\d:\d\d:\d\d UTC"))
    shoot(page, "petition-status")

    # The decision record: an outcome headline and every governor's reason.
    page.get_by_role("link", name="See the decision record").click()
    headline = page.get_by_role("heading", level=1)
    expect(headline).to_have_text(re.compile(r"^Granted: [\d.,]+ LLAMA$"))
    granted = re.search(r"Granted: ([\d.,]+) LLAMA", headline.inner_text()).group(1)
    expect(page.locator("ol.votes > li")).to_have_count(2)
    expect(page.locator("dl.facts")).to_contain_text("by the Fed's fixed schedule")
    shoot(page, "decision")

    # Balances and the grants feed show the grant; the petition's markup is text there too.
    page.get_by_role("link", name="Balances").click()
    reload_until(page, "table", granted)
    expect(page.locator("table tbody tr td").nth(2)).to_have_text(granted)
    shoot(page, "balances")
    page.get_by_role("link", name="Grants").click()
    feed = page.locator("ul.grants > li").first
    expect(feed).to_contain_text(f"{granted} LLAMA")
    expect(feed.locator("blockquote")).to_have_text(PETITION)
    _markup_is_text(page)
    shoot(page, "grants")
    page.get_by_role("link", name="Supply").click()
    expect(page.locator("figure.chart svg rect.bar")).to_have_count(1)
    shoot(page, "supply")

    # A second petition: the form says when the address may petition again, and offers no form until then.
    page.get_by_role("link", name="Petition", exact=True).click()
    expect(page.locator("#next-petition")).to_have_text(re.compile(r"^2[23] h( \d+ min)?$"))
    expect(page.get_by_label("Your petition")).to_have_count(0)
    shoot(page, "petition-form-cooldown")

    # Linking an address one controls: the page shows the challenge to sign.
    page.goto(f"{base}/account/link/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    shoot(page, "link-address")

    # A member who is not staff is refused the audit; unknown pages are the site's own.
    assert page.goto(f"{base}/audit/petitions/{petition_id}/").status == 403
    assert page.goto(f"{base}/no/such/page/").status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shoot(page, "not-found")
    page.goto(f"{base}/api/docs/")
    expect(page.locator(".swagger-ui .info")).to_contain_text("Llama Fed API")
    shoot(page, "api-docs")
    context.close()

    # Staff reach the audit from the navigation, open the decision's trace and replay the Fed's log: the
    # progress and the result appear without a reload.
    admin, page, admin_dialogs = session(browser)
    page.goto(f"{base}/login/")
    shoot(page, "login")
    log_in(page, base, "auditor")
    page.get_by_role("link", name="My account").click()
    expect(page.locator("#wallet-title ~ p")).to_contain_text("staff account")
    shoot(page, "account-staff")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Petition", exact=True)).to_have_count(0)  # no wallet: no petitioner links
    nav.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit", exact=True)).to_be_visible()
    page.get_by_label("Outcome").select_option("granted")
    page.get_by_role("button", name="Filter").click()
    shoot(page, "audit-list")
    page.locator("table.audit-list a").first.click()
    expect(page.get_by_role("heading", name="Audit of a petition")).to_be_visible()
    summary = page.locator("section[aria-labelledby=summary-title]")
    expect(summary).to_contain_text(f"granted {granted} LLAMA")
    expect(page.locator("article.trace-row h3", has_text=re.compile(r": Deliberate$"))).to_have_count(2)
    expect(page.locator("article.trace-row").first).to_contain_text("the wAR ledger")
    page.locator("details.call summary").first.click()
    expect(page.locator("details.call pre.prompt").first).to_contain_text("system")
    shoot(page, "audit-petition")
    _mark(page)
    page.get_by_role("button", name="Verify: replay the Fed's log").click()
    expect(page.locator("#verify-runs")).to_contain_text("every result and state hash matches")
    assert _not_reloaded(page)
    shoot(page, "audit-verified")
    admin.close()
    assert dialogs == [] and admin_dialogs == []
    return petition_id
