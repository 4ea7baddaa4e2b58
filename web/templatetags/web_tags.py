"""Template filters of the site."""

from __future__ import annotations

from decimal import Decimal

from django import template

from ao.limits import describe_seconds
from web.formatting import DEFAULT_DENOMINATION, format_amount

register = template.Library()


@register.filter
def token(value: int | Decimal | str | None, denomination: int = DEFAULT_DENOMINATION) -> str:
    """Base units as a decimal amount: {{ grant.amount|token }}."""
    return format_amount(value, denomination)


@register.filter
def short_id(value: str) -> str:
    """An id or address shortened for narrow screens (the full value stays in the title attribute)."""
    return f"{value[:6]}…{value[-4:]}" if value and len(value) > 12 else value


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as a person reads them, rounded up: {{ estimate|duration }} → "2 min", "21 h 14 min"."""
    return "—" if seconds is None else describe_seconds(seconds)


@register.filter
def intcomma_plain(value: int | None) -> str:
    """An integer with thousands separators: 1234567 → "1,234,567"."""
    return "—" if value is None else f"{int(value):,}"
