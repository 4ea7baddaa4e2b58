"""Middleware of the site: one password check at a time per account and per address."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from ao import limits

View = Callable[[HttpRequest], HttpResponse]


class OneLoginAtATime:
    """Serialise password checks (site login, admin login, the wallet download's re-entry) per account and per
    client address, across every worker, so concurrent guesses cannot all be checked before django-axes has
    counted the earlier ones: a lockout after N failures then holds at exactly N."""

    def __init__(self, get_response: View) -> None:
        self.get_response = get_response
        self._paths: frozenset[str] | None = None

    def paths(self) -> frozenset[str]:
        if self._paths is None:
            self._paths = frozenset({reverse("web:login"), reverse("admin:login"), reverse("web:wallet-download")})
        return self._paths

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or request.path not in self.paths():
            return self.get_response(request)
        from web.views import too_many

        user = getattr(request, "user", None)
        username = user.get_username() if user is not None and user.is_authenticated else ""
        username = username or request.POST.get("username", "")
        try:
            with limits.exclusive("login-ip", limits.client_ip(request), what="login from this address"), \
                    limits.exclusive("login-user", username.lower(), what="login for this account"):
                return self.get_response(request)
        except limits.Limited as exc:
            return too_many(request, exc, back="web:login")
