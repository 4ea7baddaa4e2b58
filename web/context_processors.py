"""What every page's navigation needs to know about the visitor."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from web import selectors


def navigation(request: HttpRequest) -> dict[str, Any]:
    """`can_petition`: the signed-in account has a wallet on this site (staff accounts created with
    createsuperuser have none, so they get no petitioner links). Evaluated only if a template asks."""
    user = getattr(request, "user", None)
    return {"can_petition": SimpleLazyObject(
        lambda: bool(user is not None and user.is_authenticated and selectors.wallet_of(user) is not None))}
