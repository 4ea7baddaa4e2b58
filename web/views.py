"""Pages: thin views that check permission, validate, call one service or selector, render."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from ao import limits
from web import charts, forms, selectors, services
from web.errors import InvalidInput, LinkRefused, RateLimited, WebError

POLL_SECONDS = 2

View = Callable[..., HttpResponse]


def staff_only(view: View) -> View:
    """Audit views: 403 for everyone but active staff (anonymous visitors included; the page links to login)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("the audit is for staff members only")
        return view(request, *args, **kwargs)

    return guarded


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """What the Fed is, its supply and the latest grants."""
    return render(request, "web/home.html", {
        "fed": selectors.fed_params(), "supply": selectors.llama_supply(), "grants": selectors.latest_grants(),
        "health": selectors.fed_health(),
    })


def too_many(request: HttpRequest, exc: limits.Limited | RateLimited, *, back: str = "web:home",
             status: int = 429) -> HttpResponse:
    """The page of a refusal over a limit: what happened, when to come back (Retry-After), a way back."""
    response = render(request, "429.html", {"reason": _sentence(str(exc)), "back": back}, status=status)
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _limit(request: HttpRequest, name: str, what: str) -> None:
    """Count one hit of this client's address against settings.LIMITS[name] (raises limits.Limited)."""
    limits.hit(name, limits.client_ip(request), limits.configured(name), what=what)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """The site's page for a form refused by CSRF protection (settings.CSRF_FAILURE_VIEW): 403, what to do."""
    hint = "this browser did not send the site's cookie" if "cookie" in reason.lower() else ""
    return render(request, "403_csrf.html", {"reason_hint": hint}, status=403)


def login_locked_out(request: HttpRequest, response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """django-axes' answer to a locked-out login (site, admin, password checks): 429, when to try again."""
    from axes.models import AccessAttempt

    username = (credentials or {}).get("username") or request.POST.get("username", "")
    cooloff = settings.AXES_COOLOFF_TIME
    attempts = AccessAttempt.objects.filter(failures_since_start__gte=settings.AXES_FAILURE_LIMIT)
    latest = (attempts.filter(username=username) | attempts.filter(ip_address=limits.client_ip(request))).order_by(
        "-attempt_time").values_list("attempt_time", flat=True).first()
    wait = cooloff.total_seconds() if latest is None else (latest + cooloff - timezone.now()).total_seconds()
    exc = RateLimited(
        f"too many failed logins for this account or from this address: logging in is locked for "
        f"{limits.describe_seconds(max(wait, 1))}. If you forgot your password, reset it by email; staff can "
        f"unlock an account at once",
        retry_after=max(int(wait) + 1, 1),
    )
    return too_many(request, exc, back="web:login")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account (with its custodial wallet) and sign in; at most LIMITS["signup_ip"] per address."""
    if request.user.is_authenticated:
        return redirect("web:account")
    form = forms.SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            _limit(request, "signup_ip", "sign-ups from this address")
        except limits.Limited as exc:
            return too_many(request, exc, back="web:signup")
        user = services.account_create(username=form.cleaned_data["username"],
                                       password=form.cleaned_data["password1"], email=form.cleaned_data["email"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome! Your account has its own Arweave wallet. Get demo wAR from the faucet.")
        return redirect("web:account")
    return render(request, "registration/signup.html", {"form": form})


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    """The account: its address, balances, faucet, wallet download, linked addresses, petitions."""
    wallet = selectors.wallet_of(request.user)
    requests = selectors.requests_of(request.user)
    statuses = {r.message_id: selectors.petition_status(r.message_id) for r in requests}
    refill = selectors.faucet_refill_at(request.user)
    return render(request, "web/account.html", {
        **_balances_context(request.user, wallet),
        "linked": [(a, selectors.balances(a)) for a in selectors.addresses_of(request.user)[1 if wallet else 0:]],
        "faucet_enabled": settings.FAUCET_ENABLED,
        "faucet_amount": settings.FAUCET_AMOUNT,
        "faucet_left": selectors.faucet_drips_left(request.user),
        "faucet_refill_at": refill,
        "faucet_refill_in": None if refill is None else (refill - timezone.now()).total_seconds(),
        "requests": [(r, statuses[r.message_id]) for r in requests],
    })


def _balances_context(user: Any, wallet: Any) -> dict[str, Any]:
    return {"wallet": wallet, "balances": selectors.balances(wallet.address) if wallet else {},
            "balances_live": bool(wallet) and selectors.faucet_pending(user), "poll_seconds": POLL_SECONDS}


@login_required
@require_GET
def account_balances(request: HttpRequest) -> HttpResponse:
    """The account's balances alone, polled by htmx while a faucet drip is on its way; 286 stops the polling."""
    context = _balances_context(request.user, selectors.wallet_of(request.user))
    response = render(request, "web/_account_balances.html", context)
    if request.htmx and not context["balances_live"]:
        response.status_code = HTMX_STOP_POLLING
    return response


@login_required
@require_POST
def faucet(request: HttpRequest) -> HttpResponse:
    """Ask the faucet for demo wAR (per account: the service's rule; per address: LIMITS["faucet_ip"])."""
    try:
        _limit(request, "faucet_ip", "faucet requests from this address")
        drip = services.faucet_drip(user=request.user)
    except (limits.Limited, RateLimited) as exc:
        return too_many(request, exc, back="web:account")
    except WebError as exc:
        messages.error(request, f"No wAR this time: {exc}.")
    else:
        messages.success(request, f"Demo wAR is on its way to your address (message {drip.message_id}): your balance "
                                  "updates by itself in a few seconds.")
    return redirect("web:account")


@login_required
@require_POST
def wallet_download(request: HttpRequest) -> HttpResponse:
    """The account's own JWK as a .json attachment: POST with CSRF and the account's password again (a session
    left open is not enough to take the key). Wrong passwords count as failed logins (django-axes)."""
    password = request.POST.get("password", "")
    checked = authenticate(request, username=request.user.get_username(), password=password) if password else None
    if getattr(request, "axes_locked_out", False):
        return login_locked_out(request, credentials={"username": request.user.get_username()})
    if checked is None or checked.pk != request.user.pk:
        messages.error(request, "Enter your password to download the wallet: it was missing or not right, and "
                                "nothing was downloaded.")
        return redirect("web:account")
    try:
        jwk = services.wallet_export(user=request.user)
    except WebError as exc:
        messages.error(request, str(exc))
        return redirect("web:account")
    address = selectors.wallet_of(request.user).address
    response = JsonResponse(jwk)
    response["Content-Disposition"] = f'attachment; filename="llamafed-wallet-{address}.json"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def link_address(request: HttpRequest) -> HttpResponse:
    """Prove control of an address by signing a one-time challenge."""
    form = forms.LinkAddressForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            link = services.address_link(user=request.user, nonce=data["nonce"], data_item=data["raw_item"],
                                         owner=data.get("owner", ""), signature=data.get("signature", ""))
        except LinkRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Address {link.address} is linked to your account.")
            return redirect("web:account")
    # A fresh challenge for every rendering: a failed attempt must sign again.
    challenge = services.link_challenge_issue(user=request.user)
    if form.is_bound:
        form.data = form.data.copy()
        form.data["nonce"] = challenge.nonce
    else:
        form.initial["nonce"] = challenge.nonce
    message = services.link_message(user=request.user, nonce=challenge.nonce).decode()
    return render(request, "web/link_address.html", {"form": form, "challenge": message})


@login_required
@require_http_methods(["GET", "POST"])
def petition_new(request: HttpRequest) -> HttpResponse:
    """Write a petition; the custodial wallet sends it with the offering."""
    params = selectors.fed_params()
    wallet = selectors.wallet_of(request.user)
    form = forms.PetitionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            sent = services.petition_submit(user=request.user, text=form.cleaned_data["text"],
                                            sender_name=form.cleaned_data["sender_name"])
        except InvalidInput as exc:
            for name, error in exc.fields.items():
                form.add_error(name, error)
            if not exc.fields:
                form.add_error(None, str(exc))
        except RateLimited as exc:  # FedBusy too (503)
            return too_many(request, exc, back="web:account", status=exc.status)
        except WebError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("web:petition", petition_id=sent.message_id)
    balance = selectors.balance(params.war, wallet.address) if params and wallet else 0
    outlook = selectors.petition_outlook(params, user=request.user, address=wallet.address if wallet else None) \
        if params else None
    return render(request, "web/petition_new.html", {"form": form, "fed": params, "balance": balance,
                                                     "wallet": wallet, "outlook": outlook})


@require_GET
def petition_wallet(request: HttpRequest) -> HttpResponse:
    """Petition with one's own Arweave wallet: the page's script (web/static/web/wallet.js) asks the browser wallet
    (window.arweaveWallet, as Wander injects it) to sign the wAR Transfer, then posts it to the signed-petition API.
    No account is needed: the signature is the petitioner's."""
    params = selectors.fed_params()
    outlook = selectors.petition_outlook(params, user=None, address=None) if params else None
    return render(request, "web/petition_wallet.html", {
        "fed": params, "outlook": outlook, "form": forms.PetitionForm(), "tags": services.petition_tags_base(),
    })


def _status_or_404(petition_id: str) -> selectors.PetitionStatus:
    status = selectors.petition_status(petition_id)
    if status is None:
        raise Http404("no petition with this id")
    return status


def _status_context(status: selectors.PetitionStatus) -> dict[str, Any]:
    queue = None if status.is_final else selectors.fed_queue()
    return {"status": status, "poll_seconds": POLL_SECONDS, "health": selectors.fed_health(), "queue": queue,
            "estimate": None if queue is None else selectors.petition_estimate_s(status, queue)}


@require_GET
def petition_detail(request: HttpRequest, petition_id: str) -> HttpResponse:
    """A petition's live status: each step as it happens (the status region polls every 2 s until final)."""
    status = _status_or_404(petition_id)
    return render(request, "web/petition.html", _status_context(status))


@require_GET
def petition_status(request: HttpRequest, petition_id: str) -> HttpResponse:
    """The status region alone, for htmx polling; HTTP 286 tells htmx to stop once the petition is final."""
    status = _status_or_404(petition_id)
    response = render(request, "web/_petition_status.html", _status_context(status))
    if status.is_final and request.htmx:
        response.status_code = HTMX_STOP_POLLING
    return response


@require_GET
def petition_decision(request: HttpRequest, petition_id: str) -> HttpResponse:
    """The public record of a decision: the petition, every governor's grade and reason, the payout."""
    status = _status_or_404(petition_id)
    return render(request, "web/decision.html", {"status": status})


@require_GET
def grants(request: HttpRequest) -> HttpResponse:
    """Every grant, newest first."""
    return render(request, "web/grants.html", {"page": selectors.grants_page(request.GET.get("page"))})


@require_GET
def supply(request: HttpRequest) -> HttpResponse:
    """LLAMA's supply and the grants over time, as a server-drawn SVG chart."""
    series = selectors.grant_series()
    return render(request, "web/supply.html", {
        "supply": selectors.llama_supply(), "chart": charts.supply_chart(series), "series": series,
    })


@require_GET
def balances(request: HttpRequest) -> HttpResponse:
    """Balances of the signed-in account's addresses, or of any address looked up."""
    form = forms.AddressForm(request.GET or None)
    rows = []
    if form.is_valid():
        rows.append((form.cleaned_data["address"], selectors.balances(form.cleaned_data["address"])))
    elif request.user.is_authenticated and not form.is_bound:
        rows = [(a, selectors.balances(a)) for a in selectors.addresses_of(request.user)]
    return render(request, "web/balances.html", {"form": form, "rows": rows})


@staff_only
@require_GET
def audit(request: HttpRequest) -> HttpResponse:
    """Staff only: the Fed's petitions, newest first, filtered by outcome or searched; each links to its trace."""
    form = forms.AuditFilterForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    page = selectors.audit_page(outcome=data.get("outcome", ""), query=data.get("q", ""), page=request.GET.get("page"))
    from web.models import VerifyRun

    fed = selectors.fed_process_id()
    latest = VerifyRun.objects.filter(process_id=fed).first() if fed else None
    keep = request.GET.copy()
    keep.pop("page", None)
    return render(request, "web/audit.html", {"form": form, "page": page, "fed": fed, "latest_run": latest,
                                              "query_string": keep.urlencode()})


@staff_only
@require_GET
def audit_petition(request: HttpRequest, petition_id: str) -> HttpResponse:
    """Staff only: a petition's summary and full trace through the Fed's log, and replay-verify with live progress."""
    from web import audit

    fed = selectors.fed_process_id()
    status = selectors.petition_status(petition_id)
    trace = []
    if fed:
        names = audit.process_names(fed_process_id=fed, petitioner=status.petitioner if status else "",
                                    sender_name=status.sender_name if status else "")
        trace = audit.petition_trace(fed_process_id=fed, petition_id=petition_id, names=names,
                                     config=selectors.state_value(fed, "config") or {})
    return render(request, "web/audit_petition.html", {
        "petition_id": petition_id, "fed": fed, "status": status, "trace": trace, **_runs_context(fed, petition_id),
    })


def _runs_context(fed: str | None, petition_id: str) -> dict[str, Any]:
    from web.models import VerifyRun

    runs = list(VerifyRun.objects.filter(process_id=fed).select_related("requested_by")[:5]) if fed else []
    return {"runs": runs, "runs_live": any(not r.is_final for r in runs), "poll_seconds": POLL_SECONDS,
            "petition_id": petition_id}


@staff_only
@require_GET
def audit_runs(request: HttpRequest) -> HttpResponse:
    """Staff only: the replay-verify runs region, for htmx polling; 286 stops the polling once every run is final."""
    petition_id = request.GET.get("petition_id", "")[:43]
    context = _runs_context(selectors.fed_process_id(), petition_id)
    response = render(request, "web/_verify_runs.html", context)
    if request.htmx and not context["runs_live"]:
        response.status_code = HTMX_STOP_POLLING
    return response


@staff_only
@require_POST
def audit_verify(request: HttpRequest) -> HttpResponse:
    """Staff only: replay the Fed's log in a Celery task; the audit page shows its progress, then match or the first
    divergence, without a reload (htmx), or after the redirect without JavaScript."""
    from web import audit

    fed = selectors.fed_process_id()
    if fed is None:
        return HttpResponse("the Fed is not running", status=409)
    audit.verify_request(user=request.user, process_id=fed)
    back = request.POST.get("petition_id", "")
    if request.htmx:
        return render(request, "web/_verify_runs.html", _runs_context(fed, back[:43]))
    if back and len(back) == 43:
        return redirect("web:audit-petition", petition_id=back)
    return redirect("web:audit")


class PasswordResetView(auth_views.PasswordResetView):
    """Ask for a reset link by email (printed on the console by default); at most LIMITS["password_reset_ip"]."""

    template_name = "registration/password_reset.html"
    email_template_name = "registration/password_reset_mail.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("web:password-reset-sent")

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            _limit(request, "password_reset_ip", "password-reset requests from this address")
        except limits.Limited as exc:
            return too_many(request, exc, back="web:login")
        return super().post(request, *args, **kwargs)
